"""The sync's stages, without Dagster: each stage reads its inputs, evaluates its checks and, when
no blocking check fails, writes its integration's rows in one transaction. A stage returns a plain
``StageOutcome`` or raises ``StageBlocked`` / ``StageFailed``; the Dagster layer (``defs/``) only
turns those into materializations, check results and failures."""
