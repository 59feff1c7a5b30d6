"""``make reliability``: does the sync give the same warehouse under faults and after being killed?

Fault runs: each syncs a fresh warehouse from the demo-sized tenant while the emulator answers a
seeded share of Graph requests with 429 (with Retry-After), 503 (with and without Retry-After) or a
connection dropped in the middle of the body, and access tokens expire long before the client
expects; the warehouse must equal a clean run's, table by table.

Kill runs: each starts from a copy of a synced warehouse, changes the directory, and SIGKILLs a
sync at a seeded moment. Every table must then be exactly as before the run or exactly as after
an uninterrupted run (each stage commits its tables in one transaction), and the next sync must
succeed and give the uninterrupted run's warehouse.

Kill-then-sync runs: ``python -m entra_pipeline sync`` on one persistent Dagster instance (the
project's dagster-instance.yaml: the warehouse pool holds one writer), SIGKILLed at a seeded moment,
then synced again: the next sync must not wait on the killed run (it frees the pool of a run whose
process is gone) and must complete.

Hostile network (:mod:`entra_pipeline.measure.hostile`): redirects to other hosts, a foreign
discovery document, nextLink loops, deep JSON, a negative Retry-After and bad values, each on a copy
of a synced warehouse: one line, nothing sent off-origin, the warehouse as it must be.
``--hostile-only`` runs only that series and rewrites only its section of the doc.

Like the benchmark this is a harness: it drives the emulator directly; the pipeline code it
exercises never imports the emulator. Figures go to stdout and ``docs/reliability.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from entra_pipeline.config import PROJECT_ROOT
from entra_pipeline.warehouse.connection import connect

SECRET_ENV = "ENTRA_RELIABILITY_CLIENT_SECRET"
TENANT_ID = "00000000-0000-0000-0000-0000000a11ab"
CLIENT_ID = "00000000-0000-0000-0000-00000000c11e"
DOC = PROJECT_ROOT / "docs" / "reliability.md"
USERS, GROUPS = 3000, 120
FAULTS = {"throttle": 0.10, "unavailable": 0.03, "drop": 0.01}
# The token the client caches says it lives an hour; the emulator rejects it after 10 seconds, so
# every fault run (about 20 s) meets 401 InvalidAuthenticationToken mid-run, some during retries.
TOKEN_TTL_SECONDS, TOKEN_REPORTED_TTL_SECONDS = 10, 3600
# Tables that record the run rather than the directory (compared separately or not at all).
RUN_LOG = {"sync_run_stages", "sync_runs", "delta_state", "stage_state", "stage_changes", "sync_preview"}
RUN_COLUMNS = {"run_id", "synced_at", "created_at", "changed_at", "started_at", "finished_at"}


def _config(base_url: str, ca_path: str) -> dict:
    return {"runs": {"step_retries": 0}, "integrations": [{
        "key": "reliability", "title": "Reliability runs",
        "source": {"tenant_id": TENANT_ID, "client_id": CLIENT_ID, "client_secret_env": SECRET_ENV,
                   "graph_base_url": base_url, "authority_host": base_url, "ca_bundle": ca_path,
                   "max_retries": 6, "max_retry_after_seconds": 5},
        "mapping": {"fields": {**{f"extensionAttribute{i}": "skip" for i in range(1, 16)},
                               "extensionAttribute2": "division", "managerMail": "manager_email"},
                    "custom_fields": {"division": "Text"}},
        "exclusions": {"rules": [{"name": "On leave", "field": "extensionAttribute1", "equals": "Inactive"}]},
        "distribution_lists": {"select": "all",
                               "custom": [{"name": "Sales", "when": {"contact_field": "department",
                                                                      "equals": "Sales"}}]},
    }]}


# The order a sync of an Entra ID integration runs its steps in: the source run's two, then the
# contacts run's four (the harness checks it).
STEP_ORDER = ["raw_graph_groups", "raw_graph_users", "mapped_contacts", "filtered_contacts", "all_contacts",
              "distribution_lists"]


def _child(config: str, warehouse: str, steps: str = "") -> None:
    """One sync (or only ``steps``, comma-separated), as ``make sync`` runs it; prints a JSON line
    when it ends."""
    import dagster as dg

    from entra_pipeline.definitions import build_defs, run_sync

    defs = build_defs(config, warehouse)
    result = run_sync(defs, "reliability", dg.DagsterInstance.ephemeral(), stages=steps.split(",") if steps else None)
    order = [e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"]
    failures = [e.step_key for e in result.get_step_failure_events()]
    print(json.dumps({"success": result.success, "failed_steps": failures, "order": order}), flush=True)


def _sync(config: Path, warehouse: Path, kill_after: float | None = None, steps: list[str] | None = None) -> dict:
    command = [sys.executable, "-m", "entra_pipeline.measure.reliability", "--child", str(config), str(warehouse),
               ",".join(steps or [])]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            child.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            child.communicate()
            return {"killed": True}
    out, err = child.communicate()
    lines = [l for l in out.splitlines() if l.startswith("{")]
    if not lines:
        return {"killed": kill_after is not None, "success": False, "error": err[-2000:]}
    return {"killed": False, **json.loads(lines[-1])}


def snapshot(warehouse: Path) -> dict[str, list[str]]:
    """Every directory-derived table's rows, without run ids and timestamps, sorted."""
    con = connect(warehouse, read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1").fetchall()]
        result = {}
        for table in tables:
            if table in RUN_LOG:
                continue
            columns = [r[0] for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index",
                [table]).fetchall() if r[0] not in RUN_COLUMNS]
            quoted = ", ".join(f'"{c}"' for c in columns)
            result[table] = sorted(map(repr, con.execute(f'SELECT {quoted} FROM "{table}"').fetchall()))
        return result
    finally:
        con.close()


def _differences(a: dict, b: dict) -> list[str]:
    return sorted(t for t in set(a) | set(b) if a.get(t) != b.get(t))


def fault_runs(emulator, workdir: Path, config: Path, clean: dict, runs: int) -> list[dict]:
    from entra_pipeline.emulator.faults import FaultProfile

    results = []
    for n in range(1, runs + 1):
        warehouse = workdir / f"fault-{n}.duckdb"
        emulator.faults.profile = FaultProfile(seed=n, **FAULTS)
        started = time.monotonic()
        outcome = _sync(config, warehouse)
        seconds = time.monotonic() - started
        hits = dict(emulator.faults.profile_hits)
        emulator.faults.clear()
        differing = _differences(snapshot(warehouse), clean) if outcome.get("success") else ["(sync failed)"]
        results.append({"run": n, "success": bool(outcome.get("success")), "identical": not differing,
                        "differing": differing, "faults": hits, "seconds": round(seconds, 1),
                        "failed_steps": outcome.get("failed_steps", [])})
        print(f"  fault run {n}: {'identical' if not differing else 'DIFFERENT: ' + ', '.join(differing)} "
              f"({hits}, {seconds:.1f} s)", flush=True)
    return results


def _change(emulator, rng: random.Random) -> None:
    """A few ordinary changes: updates, a new user, a deletion, a group move."""
    directory = emulator.directory
    users = [u["id"] for u in directory.users]
    for uid in rng.sample(users, 20):
        emulator.update_user(uid, {"jobTitle": f"Title {rng.randrange(50)}"})
    emulator.hard_delete_user(rng.choice(users))
    groups = [g["id"] for g in directory.groups if directory.members.get(g["id"])]
    # The kill series and the kill-then-sync series draw from equal seeds: a drawn id or name may
    # already be taken by then (the emulator refuses it); draw again.
    while True:
        try:
            new = emulator.add_user({"id": f"00000000-0000-4000-8000-{rng.randrange(10**12):012d}",
                                     "userPrincipalName": f"kill.{rng.randrange(10**9)}@contoso.com",
                                     "displayName": "Kill Run", "mail": f"kill.{rng.randrange(10**9)}@contoso.com"})
            break
        except ValueError as exc:
            if "already" not in str(exc):
                raise
    emulator.add_member(rng.choice(groups), new["id"])


def kill_runs(emulator, workdir: Path, config: Path, base: Path, runs: int, seed: int,
              window: float) -> list[dict]:
    rng = random.Random(seed)
    results = []
    for n in range(1, runs + 1):
        _change(emulator, rng)
        before = snapshot(base)
        reference, killed = workdir / f"ref-{n}.duckdb", workdir / f"kill-{n}.duckdb"
        for target in (reference, killed):
            shutil.copyfile(base, target)
        # The committed states a killed run may leave: before it, and after each step in turn.
        states = [before]
        for step in STEP_ORDER:
            outcome = _sync(config, reference, steps=[step])
            if not outcome.get("success"):
                raise SystemExit(f"reference step {step} of kill run {n} failed: {outcome}")
            states.append(snapshot(reference))
        after = states[-1]
        kill_after = rng.uniform(0.5, window)
        outcome = _sync(config, killed, kill_after)
        if not outcome.get("killed") and outcome.get("order") != STEP_ORDER:
            raise SystemExit(f"the sync ran its steps as {outcome.get('order')}, not {STEP_ORDER}")
        state = snapshot(killed)
        matches = [k for k, s in enumerate(states) if not _differences(state, s)]
        resumed = _sync(config, killed)
        differing = _differences(snapshot(killed), after) if resumed.get("success") else ["(next sync failed)"]
        ok = bool(matches) and not differing
        last = ("nothing" if matches[-1] == 0 else STEP_ORDER[matches[-1] - 1]) if matches else None
        results.append({"run": n, "kill_after_s": round(kill_after, 2), "killed": outcome.get("killed", False),
                        "last_committed": last, "next_sync_ok": bool(resumed.get("success")),
                        "next_sync_identical": not differing, "ok": ok})
        print(f"  kill run {n}: killed at {kill_after:.2f} s ({'killed' if outcome.get('killed') else 'had finished'}), "
              f"warehouse as committed after: {last or 'NONE OF THE COMMITTED STATES'}, next sync "
              f"{'identical' if not differing else 'DIFFERENT: ' + ', '.join(differing)}", flush=True)
        # The next kill run starts from this run's result: directory and warehouse move on together.
        shutil.copyfile(reference, base)
    return results


# A later sync that takes this long is waiting on the killed run: counted as a hang.
HANG_SECONDS = 180


def _cli_sync(env: dict, kill_after: float | None = None) -> dict:
    """``python -m entra_pipeline sync`` as an operator runs it; killed after ``kill_after`` s if given."""
    command = [sys.executable, "-m", "entra_pipeline", "sync"]
    started = time.monotonic()
    child = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        out, err = child.communicate(timeout=kill_after if kill_after is not None else HANG_SECONDS)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate()
        return {"pid": child.pid, "killed": kill_after is not None, "hung": kill_after is None, "out": out,
                "seconds": time.monotonic() - started}
    return {"pid": child.pid, "killed": False, "hung": False, "code": child.returncode, "out": out,
            "error": err[-2000:], "seconds": time.monotonic() - started}


def persistent_kill_runs(emulator, workdir: Path, config: Path, runs: int, seed: int) -> tuple[list[dict], float]:
    """SIGKILL a CLI sync on a persistent instance, then sync again, ``runs`` times; and the
    seconds of the uninterrupted first sync."""
    import dagster as dg

    from entra_pipeline.defs.resources import WAREHOUSE_POOL

    home = workdir / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster-instance.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "ENTRA_PIPELINE_CONFIG": str(config),
           "ENTRA_PIPELINE_WAREHOUSE": str(workdir / "persistent.duckdb")}
    first = _cli_sync(env)
    if first.get("code") != 0:
        raise SystemExit(f"the first sync on the persistent instance failed: {first}")
    rng = random.Random(seed)
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    results = []
    try:
        instance = dg.DagsterInstance.get()
        for n in range(1, runs + 1):
            _change(emulator, rng)
            kill_after = rng.uniform(1.0, 0.9 * first["seconds"])
            killed = _cli_sync(env, kill_after)
            held = {slot.run_id for slot in instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots}
            unfinished = [r.run_id for r in instance.get_runs(filters=dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING,
                          dg.DagsterRunStatus.NOT_STARTED]))]
            after = _cli_sync(env)
            recovered = [line for line in after["out"].splitlines() if "recovered run" in line]
            completed = after.get("code") == 0
            results.append({"run": n, "kill_after_s": round(kill_after, 2), "killed": killed["killed"],
                            "held_pool": bool(held), "left_unfinished": len(unfinished),
                            "recovered": len(recovered), "completed": completed, "hung": after["hung"],
                            "seconds": round(after["seconds"], 1)})
            print(f"  kill-then-sync {n}: killed at {kill_after:.2f} s "
                  f"({'holding the pool' if held else 'not holding the pool' if killed['killed'] else 'had finished'}), "
                  f"next sync {'completed' if completed else 'HUNG' if after['hung'] else 'FAILED'} in "
                  f"{after['seconds']:.1f} s, {len(recovered)} run(s) recovered", flush=True)
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous
    return results, first["seconds"]


def write_doc(fault_results: list[dict], kill_results: list[dict], clean_seconds: float,
              persistent: list[dict] | None = None, cli_seconds: float = 0.0,
              hostile: list[dict] | None = None) -> str:
    faults_total: dict[str, int] = {}
    for r in fault_results:
        for kind, count in r["faults"].items():
            faults_total[kind] = faults_total.get(kind, 0) + count
    identical = sum(r["identical"] for r in fault_results)
    kills_ok = sum(r["ok"] for r in kill_results)
    killed = sum(r["killed"] for r in kill_results)
    lines = [
        "# Reliability",
        "",
        "Written by `make reliability` (`python -m entra_pipeline.measure.reliability`). "
        f"Tenant: {USERS:,} users, {GROUPS:,} groups (the emulator, seed 1, delta pages of 50 objects and "
        "200 members), the mapping with a custom field and the manager's mail, an exclusion rule, every "
        "group list plus a custom list.",
        "",
        f"Last run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores. "
        f"A clean sync takes {clean_seconds:.1f} s (child process, imports included).",
        "",
        "## Fault runs",
        "",
        f"Each syncs a fresh warehouse while the emulator answers a seeded share of Graph requests with "
        f"429 + Retry-After ({FAULTS['throttle']:.0%}), 503 with or without Retry-After "
        f"({FAULTS['unavailable']:.0%}) or a connection dropped mid-body ({FAULTS['drop']:.0%}), and tokens "
        f"the client believes valid for {TOKEN_REPORTED_TTL_SECONDS // 60} minutes are rejected after "
        f"{TOKEN_TTL_SECONDS} s. Compared with a clean run, table by table (run ids, timestamps and the "
        "run log left out).",
        "",
        f"**{identical}/{len(fault_results)} identical to the clean run.** Faults injected in all: "
        + ", ".join(f"{n:,} {k}" for k, n in sorted(faults_total.items()) if n) + ".",
        "",
        "| run | identical | faults | seconds | failed steps |",
        "|---:|---|---|---:|---|",
        *(f"| {r['run']} | {'yes' if r['identical'] else 'NO: ' + ', '.join(r['differing'])} | "
          f"{', '.join(f'{k} {v}' for k, v in sorted(r['faults'].items()) if v) or 'none'} | {r['seconds']} | "
          f"{', '.join(r['failed_steps']) or '-'} |" for r in fault_results),
        "",
        "## Kill runs",
        "",
        "Each changes the directory (20 updated users, a deleted one, a new one joining a group), then "
        "SIGKILLs a sync started from the last synced warehouse at a seeded moment between 0.5 s and 90% "
        "of the clean sync's duration (the child process needs about 2 s to start). The killed warehouse must "
        "equal one of the states "
        "the run commits (before it, or after each of its steps in turn, as the same changes synced "
        "step by step give them), and the next sync must give the uninterrupted run's warehouse.",
        "",
        f"**{kills_ok}/{len(kill_results)} kill runs left only whole tables and recovered** "
        f"({killed} were killed mid-run; the others had finished before the signal).",
        "",
        "| run | killed at s | killed | warehouse as committed after | next sync identical |",
        "|---:|---:|---|---|---|",
        *(f"| {r['run']} | {r['kill_after_s']} | {'yes' if r['killed'] else 'finished'} | "
          f"{r['last_committed'] or 'NONE of the committed states'} | "
          f"{'yes' if r['next_sync_identical'] else 'NO'} |" for r in kill_results),
        "",
    ]
    if persistent is not None:
        completed = [r for r in persistent if r["completed"]]
        lines += [
            "## Kill-then-sync on a persistent Dagster instance",
            "",
            "`python -m entra_pipeline sync` on one Dagster instance directory (the project's "
            "`dagster-instance.yaml`: the warehouse pool admits one writer), as `make sync` runs it; each run "
            "changes the directory as above, SIGKILLs a sync at a seeded moment between 1 s and 90% of an "
            f"uninterrupted sync's duration ({cli_seconds:.1f} s, process start included), then syncs again. "
            "A killed run left STARTED keeps its pool slot; the next sync marks it failed and frees the slot "
            f"(\"recovered run ...\"). A next sync still running after {HANG_SECONDS} s counts as hung.",
            "",
            f"**{len(completed)}/{len(persistent)} later syncs completed, {sum(r['hung'] for r in persistent)} "
            f"hung** ({sum(r['held_pool'] for r in persistent)} kills landed while the run held the pool); "
            + (f"they took {min(r['seconds'] for r in completed):.1f} to {max(r['seconds'] for r in completed):.1f} s."
               if completed else "none completed."),
            "",
            "| run | killed at s | killed | held the pool | unfinished runs left | next sync | seconds | runs recovered |",
            "|---:|---:|---|---|---:|---|---:|---:|",
            *(f"| {r['run']} | {r['kill_after_s']} | {'yes' if r['killed'] else 'finished'} | "
              f"{'yes' if r['held_pool'] else 'no'} | {r['left_unfinished']} | "
              f"{'completed' if r['completed'] else 'HUNG' if r['hung'] else 'FAILED'} | {r['seconds']} | "
              f"{r['recovered']} |" for r in persistent),
            "",
        ]
    if hostile is not None:
        from entra_pipeline.measure.hostile import doc_section

        lines += doc_section(hostile)
    text = "\n".join(lines)
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "WAREHOUSE", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("--fault-runs", type=int, default=20)
    parser.add_argument("--kill-runs", type=int, default=20)
    parser.add_argument("--persistent-kill-runs", type=int, default=20,
                        help="SIGKILLed CLI syncs on a persistent Dagster instance, each followed by a sync")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/reliability.md")
    series = parser.add_mutually_exclusive_group()
    series.add_argument("--hostile-only", action="store_true",
                        help="run only the hostile-network series (and rewrite only its section of the doc)")
    series.add_argument("--no-hostile", action="store_true", help="skip the hostile-network series")
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    os.environ.setdefault(SECRET_ENV, "reliability-client-secret")
    if args.hostile_only:
        return _hostile_only(args.seed, args.no_doc)
    from entra_pipeline.emulator.population import generate_directory
    from entra_pipeline.emulator.server import Emulator

    with tempfile.TemporaryDirectory(prefix="entra-reliability-") as tmp:
        workdir = Path(tmp)
        emulator = Emulator(generate_directory(users=USERS, groups=GROUPS, seed=args.seed), tenant_id=TENANT_ID,
                            client_id=CLIENT_ID, client_secret=os.environ[SECRET_ENV], cert_dir=workdir / "certs",
                            token_ttl=TOKEN_TTL_SECONDS)
        emulator.token_reported_ttl = TOKEN_REPORTED_TTL_SECONDS
        # Small delta pages: more requests per sync, so each run meets more faults.
        emulator.delta_page_size, emulator.delta_members_per_page = 50, 200
        emulator.start()
        try:
            config = workdir / "integrations.yaml"
            config.write_text(yaml.safe_dump(_config(emulator.base_url, emulator.ca_path)))
            base = workdir / "clean.duckdb"
            started = time.monotonic()
            outcome = _sync(config, base)
            clean_seconds = time.monotonic() - started
            if not outcome.get("success"):
                raise SystemExit(f"the clean sync failed: {outcome}")
            clean = snapshot(base)
            print(f"clean sync: {clean_seconds:.1f} s; {args.fault_runs} fault runs ...", flush=True)
            faults = fault_runs(emulator, workdir, config, clean, args.fault_runs)
            print(f"{args.kill_runs} kill runs ...", flush=True)
            # Kills land anywhere from the child's start-up to the end of an uninterrupted sync.
            kills = kill_runs(emulator, workdir, config, base, args.kill_runs, args.seed, 0.9 * clean_seconds)
            print(f"{args.persistent_kill_runs} kill-then-sync runs on a persistent Dagster instance ...", flush=True)
            persistent, cli_seconds = persistent_kill_runs(emulator, workdir, config, args.persistent_kill_runs,
                                                           args.seed)
        finally:
            emulator.stop()
        hostile = None if args.no_hostile else _hostile(workdir, args.seed)
    identical = sum(r["identical"] for r in faults)
    recovered = sum(r["ok"] for r in kills)
    completed = sum(r["completed"] for r in persistent)
    print(f"fault runs identical to a clean run: {identical}/{len(faults)}; kill runs whole and recovered: "
          f"{recovered}/{len(kills)}; syncs after a kill on a persistent instance completed: "
          f"{completed}/{len(persistent)}")
    if hostile is not None:
        from entra_pipeline.measure.hostile import summary

        print(summary(hostile))
    if not args.no_doc:
        write_doc(faults, kills, clean_seconds, persistent, cli_seconds, hostile)
        print(f"wrote {DOC.relative_to(PROJECT_ROOT)}")
    hostile_ok = hostile is None or all(r["ok"] for r in hostile)
    return 0 if identical == len(faults) and recovered == len(kills) and completed == len(persistent) \
        and hostile_ok else 1


def _hostile(workdir: Path, seed: int) -> list[dict]:
    from entra_pipeline.measure.hostile import hostile_runs

    (workdir / "hostile").mkdir()
    return hostile_runs(workdir / "hostile", seed)


def _hostile_only(seed: int, no_doc: bool) -> int:
    """The hostile-network series alone; its section of docs/reliability.md is replaced, the
    other series' figures are kept."""
    from entra_pipeline.measure.hostile import doc_section, replace_section, summary

    with tempfile.TemporaryDirectory(prefix="entra-reliability-") as tmp:
        results = _hostile(Path(tmp), seed)
    print(summary(results))
    if not no_doc:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(replace_section(DOC.read_text() if DOC.exists() else "# Reliability\n", doc_section(results)))
        print(f"wrote {DOC.relative_to(PROJECT_ROOT)}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
