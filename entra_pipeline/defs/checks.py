"""The checks as Dagster sees them: one AssetCheckSpec per check (its logic and severities are in
entra_pipeline.sync.checks), and a stage's check outcomes as AssetCheckResults."""

from __future__ import annotations

import warnings

import dagster as dg

from entra_pipeline.sync.checks import CHECKS, CheckOutcome
from entra_pipeline.sync.outcome import Json, Markdown


def metadata_value(value):
    """A stage's plain metadata value as Dagster shows it."""
    if isinstance(value, Json):
        return dg.MetadataValue.json(value.value)
    if isinstance(value, Markdown):
        return dg.MetadataValue.md(value.text)
    return value


def specs(*names: str, partitions_def: dg.PartitionsDefinition | None = None) -> list[dg.AssetCheckSpec]:
    """Check specs for an asset. Checks run inside the asset, before it writes: a failing blocking
    check means the asset wrote nothing and downstream assets do not run."""
    with warnings.catch_warnings():
        # Partitioned checks (one status and history per integration) are a preview feature in
        # Dagster 1.13; its warning says only that, on every spec.
        warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec is currently "
                                                  "in preview")
        return [dg.AssetCheckSpec(name, asset=CHECKS[name][0], blocking=CHECKS[name][1],
                                  description=CHECKS[name][2], partitions_def=partitions_def) for name in names]


def check_result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=outcome.asset, check_name=outcome.check_name, passed=outcome.passed,
        severity=dg.AssetCheckSeverity(outcome.severity.value), description=outcome.description,
        metadata={name: metadata_value(value) for name, value in outcome.metadata.items()})
