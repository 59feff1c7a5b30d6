"""The integrations file as Dagster sees it: an external asset whose check names every integration
the code location left out, each with its one-line error (file, integration, field).

The code location loads the integrations that are valid; a broken one gets no partition and no
schedule, so the others keep syncing. The check tells the operator which one is missing and why:
its sensor evaluates it whenever the file's content changes."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import dagster as dg

from entra_pipeline.config.isolation import LoadedIntegrations, load_for_dagster

INTEGRATIONS_FILE = "integrations_file"
CHECK = "integrations_valid"
CHECK_JOB = "check_integrations_file"
WATCH_SENSOR = "integrations_file_watch"

log = logging.getLogger(__name__)


def report_broken(loaded: LoadedIntegrations) -> None:
    """One warning per integration left out, when the code location loads."""
    for broken in loaded.broken:
        log.warning("integration %s left out of the code location: %s", broken.key, broken.line)


def _fingerprint(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        return f"unreadable-{exc.errno}"


def build(config_file: Path, served: list[str]) -> tuple[dg.AssetSpec, dg.AssetChecksDefinition,
                                                         dg.UnresolvedAssetJobDefinition, dg.SensorDefinition]:
    """The file's asset, its check, the job that runs the check and the sensor that starts it.
    ``served``: the integration keys this code location loaded."""
    spec = dg.AssetSpec(
        INTEGRATIONS_FILE, kinds={"yaml"}, group_name="entra_sync",
        description=f"The integrations file ({config_file}): every integration's source, mapping, exclusions, "
                    "lists and schedule. Edited by hand; reload the code location after a change.",
        metadata={"path": str(config_file)})

    @dg.asset_check(asset=INTEGRATIONS_FILE, name=CHECK, blocking=False,
                    description="Every integration in the file is valid. An invalid one is left out of the "
                                "partitions and schedules (the others keep syncing) and named here with its error.")
    def integrations_valid() -> dg.AssetCheckResult:
        loaded = load_for_dagster(config_file)
        lines = [f"{broken.key}: {broken.line}" for broken in loaded.broken]
        stale = sorted(set(loaded.keys) ^ set(served))
        return dg.AssetCheckResult(
            passed=not lines, severity=dg.AssetCheckSeverity.ERROR,
            description="\n".join(lines) if lines else f"{len(loaded.keys)} integrations, all valid",
            metadata={"left_out": dg.MetadataValue.json([b.key for b in loaded.broken]),
                      "served": dg.MetadataValue.json(served),
                      # Keys the file and the loaded code location disagree on: reload the code location.
                      "reload_needed": bool(stale)})

    job = dg.define_asset_job(CHECK_JOB, selection=dg.AssetSelection.checks(integrations_valid),
                              description="Checks the integrations file and names every invalid integration.")

    @dg.sensor(name=WATCH_SENSOR, job=job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Checks the integrations file each time its content changes.")
    def watch(context: dg.SensorEvaluationContext):
        # The file's content and what this code location serves: a change of either (an edit, a
        # reload), or a return to an earlier content, is checked again.
        seen = f"{_fingerprint(config_file)}:{','.join(served)}"
        if context.cursor == seen:
            return dg.SkipReason("the integrations file has not changed since it was last checked")
        context.update_cursor(seen)
        return dg.RunRequest()

    return spec, integrations_valid, job, watch
