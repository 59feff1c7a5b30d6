"""``make bench``: a full sync of generated tenants through the same job, measured.

For each size the demo tenant (the Graph emulator, its own process) is started first, so its
directory generation is not counted; then the sync runs in a fresh child process, which reports
wall time, per-step time, Graph requests, bytes and its peak RSS. Results go to stdout and to
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from entra_pipeline.config import PROJECT_ROOT

SIZES = [(10_000, 500), (100_000, 5_000)]
TARGET = "full sync of 100k users and 5k groups in at most 60 s wall and 2 GB peak RSS"
# Earlier figures for 100k users / 5k groups on this kind of machine, for comparison.
HISTORY = [
    ("2026-11-26", "core sync, plain default mapping, one request per member page (issue 2)", 17.4, 1000),
    ("2026-11-26", "typed mapping in DuckDB, one request per member page (issue 3)", 16.3, 1050),
]
SECRET_ENV = "ENTRA_BENCH_CLIENT_SECRET"
DOC = PROJECT_ROOT / "docs" / "benchmarks.md"


def _config(users: int, groups: int) -> dict:
    return {"integrations": [{
        "key": "bench",
        "title": f"Benchmark {users:,} users / {groups:,} groups",
        "source": {
            "tenant_id": "00000000-0000-0000-0000-0000000be7c4",
            "client_id": "00000000-0000-0000-0000-00000000c11e",
            "client_secret_env": SECRET_ENV,
            "demo_tenant": {"users": users, "groups": groups, "seed": 1},
        },
        # As an administrator would set it up: every extension attribute decided, typed custom
        # fields (Text, Number, Date), the built-in exclusions plus one rule.
        "mapping": {
            "fields": {**{f"extensionAttribute{i}": "skip" for i in range(1, 16)},
                       "extensionAttribute2": "division", "extensionAttribute3": "building",
                       "extensionAttribute4": "seniority_years", "extensionAttribute5": "contract_start"},
            "custom_fields": {"division": "Text", "building": "Text", "seniority_years": "Number",
                              "contract_start": "Date"},
        },
        "exclusions": {"rules": [{"name": "On leave", "field": "extensionAttribute1", "equals": "Inactive"}]},
        "distribution_lists": {"select": "all"},
    }]}


def _child(config: str, warehouse: str, demo_dir: str) -> None:
    """Runs one sync and prints a JSON line with its measurements."""
    import dagster as dg

    from entra_pipeline.definitions import SYNC_JOB, build_defs

    defs = build_defs(config, warehouse, demo_dir)
    instance = dg.DagsterInstance.ephemeral()
    started = time.monotonic()
    result = defs.resolve_job_def(SYNC_JOB).execute_in_process(partition_key="bench", instance=instance,
                                                               raise_on_error=False)
    wall = time.monotonic() - started
    metadata: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        metadata[event.asset_key.path[-1]] = {k: v.value for k, v in event.materialization.metadata.items()
                                              if isinstance(v.value, (int, float))}
    steps: dict[str, float] = {}
    starts: dict[str, float] = {}
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            steps[event.step_key] = round(entry.timestamp - starts.get(event.step_key, entry.timestamp), 2)
    print(json.dumps({
        "success": result.success, "wall_s": round(wall, 2), "steps_s": steps, "metadata": metadata,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def run_size(users: int, groups: int, workdir: Path) -> dict:
    from entra_pipeline.config import DemoTenant
    from entra_pipeline.demo_tenant import ensure_demo_tenant, stop_all

    config_path = workdir / f"bench-{users}.yaml"
    config = _config(users, groups)
    config_path.write_text(yaml.safe_dump(config))
    source = config["integrations"][0]["source"]
    demo_dir = workdir / "demo"
    started = time.monotonic()
    endpoint = ensure_demo_tenant(DemoTenant(**source["demo_tenant"]), tenant_id=source["tenant_id"],
                                  client_id=source["client_id"], client_secret=os.environ[SECRET_ENV],
                                  root=demo_dir)
    emulator_start = time.monotonic() - started
    try:
        child = subprocess.run(
            [sys.executable, "-m", "entra_pipeline.bench", "--child", str(config_path),
             str(workdir / f"warehouse-{users}.duckdb"), str(demo_dir)],
            capture_output=True, text=True, check=False,
        )
        emulator_rss = _vm_hwm_mb(endpoint.pid)
    finally:
        stop_all(demo_dir)
    lines = [l for l in child.stdout.splitlines() if l.startswith("{")]
    if child.returncode != 0 or not lines:
        raise SystemExit(f"benchmark sync of {users:,} users failed:\n{child.stderr[-3000:]}")
    measured = json.loads(lines[-1])
    if not measured["success"]:
        raise SystemExit(f"benchmark sync of {users:,} users did not succeed:\n{child.stderr[-3000:]}")
    measured.update(users=users, groups=groups, emulator_start_s=round(emulator_start, 2),
                    emulator_peak_rss_mb=emulator_rss)
    return measured


def _graph_total(measured: dict, key: str) -> int:
    return sum(m.get(key, 0) for m in measured["metadata"].values())


def _row(m: dict) -> str:
    md = m["metadata"]
    return (f"| {m['users']:,} | {m['groups']:,} | {m['wall_s']:.1f} | {m['peak_rss_mb']:,.0f} | "
            f"{_graph_total(m, 'graph_requests'):,} | {_graph_total(m, 'graph_bytes') / 1e6:,.1f} | "
            f"{md.get('raw_graph_groups', {}).get('memberships', 0):,} | "
            f"{md.get('raw_graph_groups', {}).get('graph_batched_requests', 0):,} | "
            f"{md.get('raw_graph_groups', {}).get('graph_requests', 0):,} | "
            f"{md.get('filtered_contacts', {}).get('rows', 0):,} | {md.get('distribution_lists', {}).get('lists', 0):,} | "
            f"{m['emulator_peak_rss_mb'] or 0:,.0f} |")


def write_doc(results: list[dict]) -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m entra_pipeline.bench`): a full sync of a generated demo tenant "
        "through the same Dagster job as `make sync`, the Graph emulator running in its own process over "
        "HTTPS on the same machine. Wall time is the job's run (not the emulator's start); peak RSS is the "
        "sync process's.",
        "",
        f"Target: {TARGET}.",
        "",
        "Earlier 100k-user figures: " + "; ".join(f"{day} {what}: {wall} s, {rss:,} MB" for day, what, wall, rss in HISTORY)
        + ". The benchmark now maps typed custom fields (Text, Number, Date) from extension attributes "
        "with every one decided, and applies the built-in exclusions plus one rule.",
        "",
        f"Last run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {cpu}, "
        f"Python {platform.python_version()}.",
        "",
        "| users | groups | wall s | peak RSS MB | Graph requests | Graph MB | memberships | member pages | "
        "group requests | contacts | lists | emulator RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_row(m) for m in results),
        "",
        "Seconds per step:",
        "",
        "| users | " + " | ".join(sorted(results[0]["steps_s"])) + " |",
        "|---:|" + "---:|" * len(results[0]["steps_s"]),
        *(f"| {m['users']:,} | " + " | ".join(f"{m['steps_s'][k]:.1f}" for k in sorted(m["steps_s"])) + " |"
          for m in results),
        "",
        "Where the cost is:",
        "",
        "- Member pages: one per 999 members of each group (the floor without delta); group requests: the "
        "HTTP requests of raw_graph_groups, its /groups pages included.",
        "- Graph requests: users and groups in pages of 999, then every group's members through JSON "
        "`$batch` (20 member pages a request, 4 requests in flight): ceil(groups / 20) batches for first "
        "pages plus rounds of nextLinks for groups over 999 members. The floor without delta is one "
        "member page per 999 members per group; batching carries 20 of them per round trip.",
        "- `raw_graph_users` parses Graph's JSON pages in Python and stores each user's JSON; peak RSS is "
        "reached there and in `raw_graph_groups` (every membership edge as a Python tuple).",
        "- `mapped_contacts` runs in DuckDB (one SQL statement; each user's JSON parsed once), "
        "`filtered_contacts` reads only the fields its rules test and copies kept contacts inside DuckDB.",
        "- The job runs its steps one after another in one process (`execute_in_process`), as `make sync` does.",
        "",
    ]
    text = "\n".join(lines)
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "WAREHOUSE", "DEMO_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--size", action="append", metavar="USERS:GROUPS",
                        help="tenant size to run (repeatable); default 10000:500 and 100000:5000")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    sizes = [tuple(int(n) for n in s.split(":")) for s in args.size] if args.size else SIZES
    os.environ.setdefault(SECRET_ENV, "bench-client-secret")
    results = []
    with tempfile.TemporaryDirectory(prefix="entra-bench-") as tmp:
        for users, groups in sizes:
            print(f"bench: {users:,} users, {groups:,} groups ...", flush=True)
            measured = run_size(users, groups, Path(tmp))
            results.append(measured)
            print(f"  wall {measured['wall_s']:.1f} s, peak RSS {measured['peak_rss_mb']:,.0f} MB, "
                  f"Graph requests {_graph_total(measured, 'graph_requests'):,}, "
                  f"{_graph_total(measured, 'graph_bytes') / 1e6:,.1f} MB; steps {measured['steps_s']}", flush=True)
    if not args.no_doc:
        write_doc(results)
        print(f"wrote {DOC.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
