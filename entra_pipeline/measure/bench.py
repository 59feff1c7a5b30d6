"""``make bench``: syncs of generated tenants measured against their floor, in the same run.

For each size the Graph emulator is started in this process (its directory generation timed on
its own), then the floor (``floor.py``: a plain loop downloading and parsing the same delta
pages, sequential and concurrent) and a full sync (``bench_sync.py``, a fresh child process
each, into a fresh warehouse) alternate ``--runs`` times, so load on the machine affects both
alike; the medians and their ratios are reported. Then 1% of the users are changed through the
emulator's change API, and the incremental floor (the two delta rounds of changes) and an
incremental sync run. On the latency size, one more full sync runs with 200 ms added to every
Graph request, against the longest page chain it must follow. Then the Workday report. Results
go to stdout and to ``docs/benchmarks.md`` (``bench_doc.py``).

The benchmark is a harness like the tests: it drives the emulator directly; the pipeline code it
measures never imports the emulator. Graph requests and pages are counted by the emulator (its
request log), not by the pipeline's own metadata.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from entra_pipeline.config import PROJECT_ROOT
from entra_pipeline.measure import bench_doc
from entra_pipeline.measure.bench_sync import CLIENT_ID, SECRET_ENV, TENANT_ID, graph_reads, run_child, sync
from entra_pipeline.process import peak_rss_mb

#: name -> (users, groups, default runs). 1M users take minutes per run: one by default.
SIZES = {"10k": (10_000, 500, 2), "100k": (100_000, 5_000, 2), "1m": (1_000_000, 50_000, 1)}
LATENCY_SECONDS = 0.2
CHANGED_SHARE = 0.01
#: Delta rounds the emulator keeps for skiptokens: each full round of a million users holds about
#: a gigabyte of projected objects, and the default 16 would keep every run's rounds alive. Two are
#: enough for the two chains a sync or floor reads at once (a retried page is in the same round).
ROUNDS_KEPT = 2


def _config(users: int, groups: int, base_url: str, ca_path: str) -> dict:
    return {"integrations": [{
        "key": "bench",
        "title": f"Benchmark {users:,} users / {groups:,} groups",
        "source": {
            "tenant_id": TENANT_ID,
            "client_id": CLIENT_ID,
            "client_secret_env": SECRET_ENV,
            "graph_base_url": base_url,
            "authority_host": base_url,
            "ca_bundle": ca_path,
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
        # The churn of a million users removes 2,000 of them: past the default 500 the guard would
        # hold the incremental sync for an operator. The 10% limit stays.
        "deletion_guard": {"max_removed": None},
    }]}


def change_users(emulator, share: float = CHANGED_SHARE, seed: int = 2) -> dict[str, int]:
    """Change ``share`` of the users as a working day would: 60% updated (department, title or an
    extension attribute), 10% new (each joining a group), 10% soft-deleted, 10% hard-deleted and
    10% moved from one group to another."""
    import random

    rng = random.Random(seed)
    directory = emulator.directory
    total = max(10, round(len(directory.users) * share))
    picked = rng.sample([u["id"] for u in directory.users], total)
    tenth = total // 10
    updates, soft, hard, moves = (picked[:total - 4 * tenth], picked[-4 * tenth:-3 * tenth],
                                  picked[-3 * tenth:-2 * tenth], picked[-2 * tenth:-tenth])
    groups = [g["id"] for g in directory.groups if directory.members.get(g["id"])]
    position = {g: i for i, g in enumerate(groups)}
    for n, uid in enumerate(updates):
        change = [{"department": f"Reorganised {n % 7}"}, {"jobTitle": f"Senior title {n % 5}"},
                  {"onPremisesExtensionAttributes": {"extensionAttribute2": f"Division {n % 3}"}}][n % 3]
        emulator.update_user(uid, change)
    for uid in soft:
        emulator.soft_delete_user(uid)
    for uid in hard:
        emulator.hard_delete_user(uid)
    for uid in moves:
        # The user's groups in the order of ``groups`` (from the directory's membership index: a
        # scan of every member list per user would take hours at a million users).
        member_of = sorted((g for g in directory.groups_of(uid) if g in position), key=position.__getitem__)
        if member_of:
            emulator.remove_member(member_of[0], uid)
        emulator.add_member(rng.choice([g for g in groups if g not in member_of]), uid)
    for n in range(tenth):
        user = emulator.add_user({
            "id": f"00000000-0000-4000-8000-{n:012d}", "userPrincipalName": f"bench.new{n}@contoso.com",
            "displayName": f"Bench New {n}", "givenName": "Bench", "surname": f"New {n}",
            "mail": f"bench.new{n}@contoso.com", "department": "Sales", "country": "DE"})
        emulator.add_member(rng.choice(groups), user["id"])
    return {"users_changed": total, "updated": len(updates), "new": tenth, "soft_deleted": len(soft),
            "hard_deleted": len(hard), "moved": len(moves)}


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def floor(emulator, selects: dict[str, str], mode: str, what: str, links_in: Path | None = None,
          links_out: Path | None = None) -> dict:
    args = ["--base-url", emulator.base_url, "--tenant-id", TENANT_ID, "--client-id", CLIENT_ID,
            "--secret-env", SECRET_ENV, "--ca", emulator.ca_path, "--users-select", selects["users"],
            "--groups-select", selects["groups"], "--mode", mode]
    args += ["--links-in", str(links_in)] if links_in else []
    args += ["--links-out", str(links_out)] if links_out else []
    return run_child("entra_pipeline.measure.floor", args, f"floor ({what})")


def measured_sync(emulator, config: Path, warehouse: Path, workdir: Path, what: str) -> dict:
    """One sync, with what the emulator saw of it (requests, pages per chain, $select, overlap)."""
    mark = len(emulator.request_log)
    result = sync(config, warehouse, workdir / "demo", what)
    result["reads"] = graph_reads(emulator.request_log[mark:])
    return result


def medians(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in ("wall_s", "cpu_s", "peak_rss_mb")}


def run_size(name: str, users: int, groups: int, runs: int, workdir: Path, latency: bool) -> dict:
    from entra_pipeline.emulator import FaultProfile
    from entra_pipeline.emulator.population import generate_directory
    from entra_pipeline.emulator.server import Emulator

    rss_before, started = current_rss_mb(), time.monotonic()
    directory = generate_directory(users=users, groups=groups, seed=1)
    generation = {"seconds": round(time.monotonic() - started, 1),
                  "rss_mb": round(current_rss_mb() - rss_before, 1)}
    print(f"  directory generated in {generation['seconds']:.1f} s, {generation['rss_mb']:,.0f} MB", flush=True)
    emulator = Emulator(directory, tenant_id=TENANT_ID, client_id=CLIENT_ID, client_secret=os.environ[SECRET_ENV],
                        cert_dir=workdir / f"certs-{users}")
    emulator.delta_rounds_kept = ROUNDS_KEPT
    emulator.start()
    result: dict = {"name": name, "users": users, "groups": groups, "runs": runs, "generation": generation}
    # The machine may be shared: the load says how quiet it was (ratios matter, seconds vary).
    result["load"] = [round(os.getloadavg()[0], 1)]
    try:
        config = workdir / f"bench-{users}.yaml"
        config.write_text(yaml.safe_dump(_config(users, groups, emulator.base_url, emulator.ca_path)))
        links = workdir / f"links-{users}.json"
        selects: dict[str, str] | None = None
        floors: dict[str, list[dict]] = {"sequential": [], "concurrent": []}
        syncs: list[dict] = []
        warehouse = None
        for i in range(runs):
            if selects is not None:
                for mode in floors:
                    floors[mode].append(floor(emulator, selects, mode, f"{users:,} users, {mode}",
                                              links_out=links if mode == "sequential" else None))
                    _say(f"floor {mode}", floors[mode][-1])
            if warehouse is not None:
                warehouse.unlink(missing_ok=True)  # each full sync starts from an empty warehouse
            warehouse = workdir / f"warehouse-{users}-{i}.duckdb"
            syncs.append(measured_sync(emulator, config, warehouse, workdir, f"full sync of {users:,} users"))
            _say("sync", syncs[-1])
            # The floor reads with the $select the sync sent (seen by the emulator): known only after
            # the first sync, so the first pair runs sync first, then floor.
            learned = syncs[-1]["reads"]["selects"]
            if selects is None:
                selects = {"users": learned["users"], "groups": learned["groups"]}
                for mode in floors:
                    floors[mode].append(floor(emulator, selects, mode, f"{users:,} users, {mode}",
                                              links_out=links if mode == "sequential" else None))
                    _say(f"floor {mode}", floors[mode][-1])
        result.update(floors=floors, syncs=syncs, selects=selects,
                      floor={mode: medians(f) for mode, f in floors.items()}, sync=medians(syncs))
        result["changes"] = change_users(emulator)
        result["incremental_floor"] = floor(emulator, selects, "sequential", f"{users:,} users, changes",
                                            links_in=links)
        _say("floor of the changes", result["incremental_floor"])
        result["incremental"] = measured_sync(emulator, config, warehouse, workdir,
                                              f"incremental sync of {users:,} users")
        _say("incremental sync", result["incremental"])
        if latency:
            warehouse.unlink(missing_ok=True)
            emulator.faults.profile = FaultProfile(seed=0, slow=1.0, slow_seconds=LATENCY_SECONDS)
            try:
                result["latency"] = measured_sync(emulator, config, workdir / f"warehouse-{users}-latency.duckdb",
                                                  workdir, f"sync of {users:,} users with {LATENCY_SECONDS} s latency")
            finally:
                emulator.faults.profile = None
            result["latency"]["latency_s"] = LATENCY_SECONDS
            _say(f"sync, {LATENCY_SECONDS * 1000:.0f} ms per request", result["latency"])
        result["emulator_peak_rss_mb"] = peak_rss_mb()
        result["load"].append(round(os.getloadavg()[0], 1))
    finally:
        emulator.stop()
        del emulator, directory
        gc.collect()
    return result


def _say(what: str, m: dict) -> None:
    reads = m.get("reads") or {"requests": m.get("requests"), "pages": {k: c["pages"] for k, c in m["chains"].items()}}
    print(f"  {what}: wall {m['wall_s']:.1f} s, CPU {m['cpu_s']:.1f} s, peak RSS {m['peak_rss_mb']:,.0f} MB, "
          f"{reads['requests']:,} Graph requests (delta pages: users {reads['pages']['users']:,}, "
          f"groups {reads['pages']['groups']:,})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,100k,1m",
                        help=f"comma-separated sizes among {', '.join(SIZES)} (default: all)")
    parser.add_argument("--runs", type=int, help="floor/sync pairs per size (default: 2, 1 for 1m)")
    parser.add_argument("--latency-size", default="100k",
                        help="the size of the run with 200 ms per request ('none' to skip; default 100k)")
    parser.add_argument("--no-workday", action="store_true", help="skip the Workday report benchmark")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--results", type=Path, help="also keep the raw results here (JSON)")
    parser.add_argument("--from-results", type=Path, help="write the targets and the doc from kept results")
    args = parser.parse_args(argv)
    if args.from_results:
        kept = json.loads(args.from_results.read_text())
        return _conclude(kept["sizes"], kept["workday"], args.no_doc)
    names = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        parser.error(f"unknown size {', '.join(unknown)}: choose among {', '.join(SIZES)}")
    os.environ.setdefault(SECRET_ENV, "bench-client-secret")
    results = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="entra-bench-") as tmp:
        for name in names:
            users, groups, runs = SIZES[name]
            runs = args.runs or runs
            print(f"bench: {users:,} users, {groups:,} groups, {runs} floor/sync pairs ...", flush=True)
            size_started = time.monotonic()
            try:
                results.append(run_size(name, users, groups, runs, Path(tmp), latency=name == args.latency_size))
            except SystemExit as exc:  # one size failing leaves the others' figures standing
                print(f"  {users:,} users: {exc}", flush=True)
                continue
            results[-1]["seconds"] = round(time.monotonic() - size_started)
            if args.results:  # kept after every size: a later size failing loses nothing
                args.results.write_text(json.dumps({"sizes": results, "workday": None}))
            size = results[-1]
            mode = bench_doc.comparable_floor(size)
            print(f"  medians: sync {size['sync']['wall_s']:.1f} s, {size['sync']['cpu_s']:.1f} CPU-s; {mode} floor "
                  f"{size['floor'][mode]['wall_s']:.1f} s, {size['floor'][mode]['cpu_s']:.1f} CPU-s: "
                  f"{size['sync']['wall_s'] / size['floor'][mode]['wall_s']:.1f}x wall, "
                  f"{size['sync']['cpu_s'] / size['floor'][mode]['cpu_s']:.1f}x CPU", flush=True)
        workday = None
        if not args.no_workday:
            from entra_pipeline.measure.bench_workday import WORKDAY_WORKERS, run_workday, workday_lines

            print(f"bench: Workday report of {WORKDAY_WORKERS:,} workers ...", flush=True)
            workday = run_workday(Path(tmp))
            for line in workday_lines(workday):
                if line.startswith("|") and not line.startswith("|---"):
                    print(f"  {line}", flush=True)
    print(f"bench took {time.monotonic() - started:,.0f} s")
    if args.results:
        args.results.write_text(json.dumps({"sizes": results, "workday": workday}))
    return _conclude(results, workday, args.no_doc)


def _conclude(results: list[dict], workday: dict | None, no_doc: bool) -> int:
    targets = bench_doc.targets(results)
    print("targets (issue 15):")
    for line in bench_doc.target_lines(targets):
        print(f"  {line}")
    if not no_doc:
        bench_doc.write(results, targets, workday)
        print(f"wrote {bench_doc.DOC.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
