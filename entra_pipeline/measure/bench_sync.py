"""One measured sync for ``make bench``: the integration's two runs (source job, then contacts
job) through the same Dagster job as ``make sync``, in a fresh child process.

The child prints one JSON line: the job's wall time, the whole process's CPU (user + system of
the process and of any process it waited for: imports and Dagster's start-up included, as a
sync process really costs), the job's own CPU, per-step seconds, the steps' numeric metadata and
the process's peak RSS (VmHWM). Run as ``python -m entra_pipeline.measure.bench_sync CONFIG
WAREHOUSE DEMO_DIR``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from entra_pipeline.process import peak_rss_mb

TENANT_ID = "00000000-0000-0000-0000-0000000be7c4"
CLIENT_ID = "00000000-0000-0000-0000-00000000c11e"
SECRET_ENV = "ENTRA_BENCH_CLIENT_SECRET"


def cpu_seconds() -> float:
    """User + system CPU of this process and of the children it has waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def child(config: str, warehouse: str, demo_dir: str) -> None:
    """Runs one sync and prints a JSON line with its measurements."""
    import dagster as dg

    from entra_pipeline.definitions import build_defs, run_sync

    defs = build_defs(config, warehouse, demo_dir)
    instance = dg.DagsterInstance.ephemeral()
    cpu_before = cpu_seconds()
    started = time.monotonic()
    result = run_sync(defs, "bench", instance)
    wall = time.monotonic() - started
    job_cpu = cpu_seconds() - cpu_before
    metadata: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        metadata[event.asset_key.path[-1]] = {k: v.value for k, v in event.materialization.metadata.items()
                                              if isinstance(v.value, (int, float))}
    steps: dict[str, float] = {}
    starts: dict[str, float] = {}
    for entry in (entry for run_id in result.run_ids for entry in instance.all_logs(run_id)):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            steps[event.step_key] = round(entry.timestamp - starts.get(event.step_key, entry.timestamp), 2)
    failures = [event.step_failure_data.error.message.strip() for event in result.get_step_failure_events()
                if event.step_failure_data and event.step_failure_data.error]
    print(json.dumps({
        "success": result.success, "failures": failures, "wall_s": round(wall, 2), "cpu_s": round(cpu_seconds(), 2),
        "job_cpu_s": round(job_cpu, 2), "steps_s": steps, "metadata": metadata, "peak_rss_mb": peak_rss_mb(),
    }))


def run_child(module: str, args: list[str], what: str, env: dict | None = None) -> dict:
    """Run ``python -m module args`` and return the JSON line it printed last."""
    process = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, check=False,
                             env=env)
    lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise SystemExit(f"benchmark {what} failed:\n{process.stderr[-3000:]}")
    return json.loads(lines[-1])


def sync(config_path: Path, warehouse: Path, demo_dir: Path, what: str) -> dict:
    measured = run_child("entra_pipeline.measure.bench_sync", [str(config_path), str(warehouse), str(demo_dir)], what)
    if not measured["success"]:
        raise SystemExit(f"benchmark {what} did not succeed: {' / '.join(measured['failures'])[:2000]}")
    return measured


def graph_reads(log: list[tuple[str, str, int]]) -> dict:
    """What a slice of the emulator's request log shows of one read: Graph requests, the pages of
    the users and groups delta chains, the ``$select`` each round started with, and whether the two
    chains overlapped in time (read concurrently)."""
    pages = {"users": 0, "groups": 0}
    selects: dict[str, str] = {}
    order: list[str] = []
    graph = 0
    for _method, target, _status in log:
        parts = urlsplit(target)
        if not parts.path.startswith("/v1.0/"):
            continue
        graph += 1
        resource_name = _delta_resource(parts.path)
        if resource_name is None:
            continue
        pages[resource_name] += 1
        order.append(resource_name)
        select = parse_qs(parts.query).get("$select")
        if select and resource_name not in selects:
            selects[resource_name] = select[0]
    # The two chains overlapped when each began before the other ended.
    spans = {name: (order.index(name), len(order) - 1 - order[::-1].index(name)) for name in set(order)}
    concurrent = len(spans) == 2 and spans["users"][0] < spans["groups"][1] and spans["groups"][0] < spans["users"][1]
    return {"requests": graph, "pages": pages, "selects": selects, "concurrent": concurrent}


def _delta_resource(path: str) -> str | None:
    """``users``/``groups`` for any of Graph's spellings of their delta function, else None."""
    segments = [unquote(s) for s in path.split("/")]
    if len(segments) != 4 or segments[2] not in ("users", "groups"):
        return None
    return segments[2] if segments[3] in ("delta", "delta()", "microsoft.graph.delta",
                                          "microsoft.graph.delta()") else None


if __name__ == "__main__":
    child(*sys.argv[1:4])
