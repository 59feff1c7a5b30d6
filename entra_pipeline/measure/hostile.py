"""The hostile-network series of ``make reliability`` (issue 13): what a sync does when the tenant's
answers turn hostile.

Each scenario starts from a copy of a warehouse synced cleanly, arms one hostile answer on the
emulator, and runs one sync of one integration in a child process (as the fault runs do):
redirects of the token endpoint, of Graph and of Workday to another host (plain http, and https
with a certificate the integration's ca_bundle trusts, so TLS alone would let the request
through), a discovery document naming a foreign token endpoint, nextLink loops, JSON nested
200,000 deep, a negative Retry-After, and oversized or invalid values.

Recorded per scenario: whether the run failed or succeeded as it must; the error as the user sees
it (lines, and the line); connections, requests and secrets that reached the foreign servers; any
secret in the run's output; whether the warehouse is as it must be; seconds (a child still running
after :data:`HANG_SECONDS` is killed and counted as a hang).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import trustme
import yaml

from entra_pipeline.measure.hostile_scenarios import (ENTRA, HR, HR_OAUTH, KEYS, LISTED, SCENARIOS, USERS_DELTA,
                                                      WORKDAY_PASSWORD_ENV, WORKDAY_REFRESH_ENV, WORKDAY_SECRET_ENV,
                                                      WORKDAY_SECRETS, Context, Foreign, Scenario, plant)
from entra_pipeline.measure.reliability import CLIENT_ID, GROUPS, SECRET_ENV, TENANT_ID, USERS, snapshot
from entra_pipeline.warehouse.connection import connect

# A child still running after this long is killed and counted as a hang (a clean sync takes seconds).
HANG_SECONDS = 120
# Characters of the user's line shown in the report.
SHOWN = 250
# Step -> the delta_state resource it writes (the raw Entra stages).
RESOURCE = {"raw_graph_users": "users", "raw_graph_groups": "groups"}


# -- the child: one sync per integration key ---------------------------------------------------------------

def _user_errors(result) -> list[dict]:
    """Each failed step and its error as ``python -m entra_pipeline sync`` shows it (the same
    unwrapping as the CLI), whole: the CLI prints only the first line, so more lines are lost."""
    errors = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None and error.cause is not None and "Failure" not in error.cls_name:
            error = error.cause
        message = (error.message if error else "unknown error").strip()
        errors.append({"step": event.step_key,
                       "message": message.removeprefix("dagster._core.definitions.events.Failure: ")})
    return errors


def _child(config: str, warehouse: str, keys: str) -> None:
    import dagster as dg

    from entra_pipeline.definitions import build_defs, run_sync

    defs = build_defs(config, warehouse)
    for key in keys.split(","):
        result = run_sync(defs, key, dg.DagsterInstance.ephemeral())
        print(json.dumps({"key": key, "success": result.success,
                          "succeeded_steps": [e.step_key for e in result.all_events
                                              if e.event_type_value == "STEP_SUCCESS"],
                          "failed_steps": [e.step_key for e in result.get_step_failure_events()],
                          "errors": _user_errors(result)}), flush=True)


def _sync(config: Path, warehouse: Path, keys: list[str]) -> dict:
    command = [sys.executable, "-m", "entra_pipeline.measure.hostile", "--child", str(config), str(warehouse),
               ",".join(keys)]
    started = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    try:
        out, err = child.communicate(timeout=HANG_SECONDS)
        hung = False
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        hung = True
    runs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {"runs": runs, "hung": hung, "output": out + err, "seconds": time.monotonic() - started,
            "code": child.returncode}


# -- checks ------------------------------------------------------------------------------------------------

def _ledger(warehouse: Path, key: str) -> dict[str, list[str]]:
    """Every column of the delta_state and sync_run_stages rows of one integration, by resource and
    stage: what a stage that failed must not have touched (its deltaLink above all)."""
    con = connect(warehouse, read_only=True)
    try:
        rows: dict[str, list[str]] = {}
        for name, column in (("delta_state", "resource"), ("sync_run_stages", "stage")):
            for row in con.execute(f'SELECT "{column}", * FROM "{name}" WHERE integration = ? ORDER BY ALL',
                                   [key]).fetchall():
                rows.setdefault(f"{name}:{row[0]}", []).append(repr(row[1:]))
        return rows
    finally:
        con.close()


def _untouched(before: dict, after: dict, succeeded: list[str]) -> bool:
    """Whether every stage that did not succeed (failed, or skipped after a failure) left its run
    log rows, and a raw Entra stage its delta state, exactly as they were."""
    committed = {f"sync_run_stages:{s}" for s in succeeded} | {f"delta_state:{RESOURCE[s]}" for s in succeeded
                                                                  if s in RESOURCE}
    return all(before.get(n) == after.get(n) for n in (set(before) | set(after)) - committed)


def _secrets(ctx: Context) -> list[str]:
    """Every credential of the series: the client secret, the Workday password, client secret and
    refresh token, and every token and device code the emulator issued so far."""
    return [os.environ[name] for name in (SECRET_ENV, *WORKDAY_SECRETS)] + ctx.emulator.issued_credentials()


def _shown(line: str, ctx: Context) -> str:
    line = (line.replace(ctx.http.origin, "{foreign http}").replace(ctx.https.origin, "{foreign https}")
            .replace(ctx.emulator.authority, "{authority}").replace(ctx.emulator.base_url, "{tenant}"))
    return line if len(line) <= SHOWN else line[:SHOWN - 1] + "…"


def _run(scenario: Scenario, ctx: Context, workdir: Path, config: Path, base: Path, reference: dict | None,
         n: int) -> dict:
    warehouse = workdir / f"hostile-{n}.duckdb"
    shutil.copyfile(base, warehouse)
    before, ledger_before = snapshot(warehouse), _ledger(warehouse, scenario.key)
    for server in (ctx.http, ctx.https):
        server.reset()
    fault = scenario.arm(ctx)
    try:
        outcome = _sync(config, warehouse, [scenario.key])
    finally:
        ctx.emulator.faults.clear()
    run = outcome["runs"][-1] if outcome["runs"] else {"success": False, "succeeded_steps": [], "failed_steps": [],
                                                       "errors": []}
    errors = run["errors"]
    received = ctx.http.requests + ctx.https.requests
    secrets = _secrets(ctx)
    off_origin = sum(any(s in r for r in received) for s in secrets)
    in_output = sum(s in outcome["output"] for s in secrets)
    lines = max((len(e["message"].splitlines()) for e in errors), default=0)
    line = errors[0]["message"].splitlines()[0] if errors else ""
    after = snapshot(warehouse)
    warehouse_ok, warehouse_text = False, ""
    if scenario.outcome == "fails":
        expected_end = (not run["success"] and set(scenario.steps) <= set(run["failed_steps"]))
        says = scenario.says.format(http=ctx.http.origin, https=ctx.https.origin)
        expected_end = expected_end and all(says in e["message"] for e in errors
                                            if e["step"] in scenario.steps)
        differing = sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t))
        ledger_after = _ledger(warehouse, scenario.key)
        untouched = _untouched(ledger_before, ledger_after, run["succeeded_steps"])
        foreign_rows = any("evil.example" in row or "deltatoken=foreign" in row
                           for rows in (*after.values(), *ledger_after.values()) for row in rows)
        warehouse_ok = not differing and untouched and not foreign_rows
        problems = differing + ([] if untouched else ["run log or delta state of a stage that did not commit"])
        warehouse_text = "unchanged" if warehouse_ok else "CHANGED: " + ", ".join(
            problems + (["foreign data"] if foreign_rows else []))
    elif scenario.value is None:
        # Retry-After: the run must retry the 503 once, succeed and store exactly the same directory.
        expected_end = bool(run["success"]) and getattr(fault, "hits", 0) == 1
        differing = sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t))
        warehouse_ok = not differing
        warehouse_text = "as before (same directory)" if warehouse_ok else "CHANGED: " + ", ".join(differing)
    else:
        expected_end = bool(run["success"])
        differing = sorted(t for t in set(reference) | set(after) if reference.get(t) != after.get(t))
        added = Counter(after.get("import_errors", [])) - Counter(reference.get("import_errors", []))
        lost = Counter(reference.get("import_errors", [])) - Counter(after.get("import_errors", []))
        [row] = added.elements() if sum(added.values()) == 1 else [""]
        named = ctx.planted_user in row and "'displayName'" in row and f"'{scenario.value}'" in row
        warehouse_ok = differing == ["import_errors"] and not lost and named
        warehouse_text = ("as the reference + 1 import error" if warehouse_ok else
                          f"DIFFERENT: {', '.join(differing) or 'no import error'} "
                          f"({sum(added.values())} import errors added, {sum(lost.values())} lost)")
    result = {
        "scenario": scenario.name, "outcome": scenario.outcome, "hung": outcome["hung"],
        "succeeded": bool(run["success"]), "failed_steps": run["failed_steps"], "ended_as_expected": expected_end,
        "failures": len(errors), "lines": lines, "line": _shown(line, ctx), "connections": ctx.http.connections
        + ctx.https.connections, "requests": len(received), "secrets_off_origin": off_origin,
        "secrets_in_output": in_output, "warehouse_ok": warehouse_ok, "warehouse": warehouse_text,
        "seconds": round(outcome["seconds"], 1),
    }
    result["ok"] = (expected_end and not outcome["hung"] and result["requests"] == 0 and result["connections"] == 0
                    and off_origin == 0 and in_output == 0 and warehouse_ok
                    and (lines == 1 if scenario.outcome == "fails" else not errors))
    print(f"  hostile {n}: {scenario.name}: {'as expected' if result['ok'] else 'NOT AS EXPECTED'} "
          f"({'hung, killed' if outcome['hung'] else 'failed' if not run['success'] else 'succeeded'}; "
          f"{lines} line(s): {result['line'] or '-'}; {result['connections']} connections, {result['requests']} "
          f"requests, {off_origin} secrets off-origin, {in_output} in the output; warehouse {warehouse_text}; "
          f"{outcome['seconds']:.1f} s)", flush=True)
    return result


# -- the series --------------------------------------------------------------------------------------------

def _config(emulator, bundle: str) -> dict:
    entra = {"tenant_id": TENANT_ID, "client_id": CLIENT_ID, "client_secret_env": SECRET_ENV,
             "graph_base_url": emulator.base_url, "authority_host": emulator.base_url, "ca_bundle": bundle,
             "max_retries": 2, "max_retry_after_seconds": 5}
    workday = {"type": "workday", "host": emulator.base_url, "tenant": "contoso_demo", "report_owner": "lmcneil",
               "report_name": "Contacts_Sync", "ca_bundle": bundle, "max_retries": 1}
    exclusions = {"rules": [{"name": "On leave", "field": "extensionAttribute1", "equals": "Inactive"}]}
    return {"runs": {"step_retries": 0}, "integrations": [
        {"key": ENTRA, "title": "Hostile network (delta)", "source": entra, "exclusions": exclusions,
         "distribution_lists": {"select": "all"}},
        {"key": LISTED, "title": "Hostile network (lists)", "source": {**entra, "read": "list"},
         "exclusions": exclusions, "distribution_lists": {"select": "all"}},
        {"key": HR, "title": "Hostile network (Workday)", "source": {
            **workday, "username": "ISU_Contacts", "password_env": WORKDAY_PASSWORD_ENV}},
        {"key": HR_OAUTH, "title": "Hostile network (Workday OAuth)", "source": {
            **workday, "auth": "oauth_refresh", "client_id": "ZGVtby13b3JrZGF5LWFwaS1jbGllbnQ",
            "client_secret_env": WORKDAY_SECRET_ENV, "refresh_token_env": WORKDAY_REFRESH_ENV}},
    ]}


def hostile_runs(workdir: Path, seed: int) -> list[dict]:
    """The series on a tenant of its own (its directory changes only while the value scenarios run)."""
    from entra_pipeline.emulator.population import generate_directory
    from entra_pipeline.emulator.server import Emulator
    from entra_pipeline.emulator.workday import WorkdayTenant
    from entra_pipeline.emulator.workday_workers import generate_workers

    for name, value in WORKDAY_SECRETS.items():
        os.environ.setdefault(name, value)
    directory = generate_directory(users=USERS, groups=GROUPS, seed=seed)
    tenant = WorkdayTenant(password=os.environ[WORKDAY_PASSWORD_ENV], client_secret=os.environ[WORKDAY_SECRET_ENV],
                           refresh_token=os.environ[WORKDAY_REFRESH_ENV], entries=generate_workers(directory, seed))
    emulator = Emulator(directory, tenant_id=TENANT_ID, client_id=CLIENT_ID, client_secret=os.environ[SECRET_ENV],
                        cert_dir=workdir / "hostile-certs", workday=tenant)
    foreign_ca = trustme.CA(organization_name="another host")
    emulator.start()
    ctx = Context(emulator, Foreign(None), Foreign(foreign_ca))
    try:
        # The emulator's CA and the foreign host's: TLS alone would let a request to it through.
        bundle = workdir / "hostile-bundle.pem"
        bundle.write_bytes(Path(emulator.ca_path).read_bytes() + foreign_ca.cert_pem.bytes())
        config = workdir / "hostile.yaml"
        config.write_text(yaml.safe_dump(_config(emulator, str(bundle))))
        base = workdir / "hostile-clean.duckdb"
        clean = _sync(config, base, list(KEYS))
        if len(clean["runs"]) != len(KEYS) or not all(r["success"] for r in clean["runs"]):
            raise SystemExit(f"the clean sync of the hostile-network series failed: {clean['runs']} "
                             f"{clean['output'][-2000:]}")
        print(f"hostile-network series: clean sync of {len(KEYS)} integrations in {clean['seconds']:.1f} s; "
              f"{len(SCENARIOS)} scenarios ...", flush=True)
        results = []
        values = [s for s in SCENARIOS if s.value is not None]
        for n, scenario in enumerate((s for s in SCENARIOS if s.value is None), 1):
            results.append(_run(scenario, ctx, workdir, config, base, None, n))
        # The value scenarios: one user's displayName changes, so that the next delta round carries
        # it, and the bad value is planted on the wire. The reference is the same round with the
        # name empty (what the pipeline makes of a value it refuses).
        con = connect(base, read_only=True)
        try:
            ctx.planted_user = con.execute("SELECT source_id FROM contacts WHERE integration = ? ORDER BY contact_id "
                                           "LIMIT 1", [ENTRA]).fetchone()[0]
        finally:
            con.close()
        ctx.planted_original = emulator.directory.user_by_id(ctx.planted_user)["displayName"]
        emulator.update_user(ctx.planted_user, {"displayName": "Planted Name"})
        try:
            ref_path = workdir / "hostile-reference.duckdb"
            shutil.copyfile(base, ref_path)
            emulator.faults.rewrite(USERS_DELTA, plant(ctx, None), times=None)
            ref = _sync(config, ref_path, [ENTRA])
            emulator.faults.clear()
            if not ref["runs"] or not ref["runs"][-1]["success"]:
                raise SystemExit(f"the reference sync of the value scenarios failed: {ref['output'][-2000:]}")
            reference = snapshot(ref_path)
            for n, scenario in enumerate(values, len(results) + 1):
                results.append(_run(scenario, ctx, workdir, config, base, reference, n))
        finally:
            emulator.update_user(ctx.planted_user, {"displayName": ctx.planted_original})
        return results
    finally:
        ctx.http.close()
        ctx.https.close()
        emulator.stop()


def summary(results: list[dict]) -> str:
    failing = [r for r in results if r["outcome"] == "fails"]
    values = [r for r in results if r["outcome"] == "succeeds" and r["warehouse"] != "as before (same directory)"]
    return (f"Hostile network: {sum(r['ok'] for r in results)}/{len(results)} scenarios ended as expected, "
            f"{sum(r['connections'] for r in results)} connections, {sum(r['requests'] for r in results)} requests "
            f"and {sum(r['secrets_off_origin'] for r in results)} secrets off-origin "
            f"({sum(r['secrets_in_output'] for r in results)} in the runs' output), "
            f"one-line failures {sum(r['lines'] == 1 and r['failures'] > 0 for r in failing)}/{len(failing)}, "
            f"warehouse unchanged {sum(r['warehouse_ok'] for r in failing)}/{len(failing)}, "
            f"values contained {sum(r['warehouse_ok'] for r in values)}/{len(values)}, "
            f"{sum(r['hung'] for r in results)} hangs")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


HEADING = "## Hostile network"


def doc_section(results: list[dict]) -> list[str]:
    """The section of docs/reliability.md, as lines."""
    return [
        HEADING,
        "",
        f"Last run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. A tenant of its own ({USERS:,} users, "
        f"{GROUPS:,} groups, and a Workday report of the same people) with four integrations: Entra ID read by "
        "delta queries, Entra ID read by lists (`$batch`), Workday signed in with a password and with a refresh "
        "token. Each scenario copies a warehouse synced cleanly, arms one hostile answer on the tenant and runs "
        "one sync of one integration in a child process. Two other hosts of ours ({foreign http} and "
        "{foreign https}, 127.0.0.2 where the system routes it) record every connection and request; the "
        "integrations' ca_bundle trusts the https one, so TLS alone would let a request through. Secrets looked "
        "for in what they received and in the run's whole output: the client secret, the Workday password, "
        "client secret and refresh token, and every token the tenant issued. A failing scenario must fail its "
        "stage with one line naming what was refused and leave the warehouse as it was (every table, the failed "
        "stages' delta state and run log included, nothing of the foreign answers). The value scenarios plant "
        "one bad displayName on a user the round carries; the run must succeed and equal a reference run in "
        "which that name arrives empty, plus exactly one import error naming the user and field. A run still "
        f"going after {HANG_SECONDS} s counts as a hang. The line is the first failure's as "
        "`python -m entra_pipeline sync` prints it; `{tenant}` is the tenant's origin, `{authority}` its "
        "authority (origin and tenant id).",
        "",
        f"**{summary(results)}.**",
        "",
        "| scenario | must | outcome | lines | the line the user sees | connections / requests off-origin | "
        "secrets off-origin / in output | warehouse | seconds |",
        "|---|---|---|---:|---|---|---|---|---:|",
        *(f"| {r['scenario']} | {'fail' if r['outcome'] == 'fails' else 'succeed'} | "
          f"{'HUNG' if r['hung'] else 'failed' if not r['succeeded'] else 'succeeded'}"
          f"{'' if r['ok'] else ' (NOT AS EXPECTED)'} | {r['lines']} | "
          f"{'`' + _cell(r['line']) + '`' if r['line'] else '-'} | {r['connections']} / {r['requests']} | "
          f"{r['secrets_off_origin']} / {r['secrets_in_output']} | {r['warehouse']} | {r['seconds']} |"
          for r in results),
        "",
    ]


def replace_section(text: str, section: list[str]) -> str:
    """``text`` (a whole docs/reliability.md) with its hostile-network section replaced by
    ``section``, or the section added at the end."""
    lines = text.split("\n")
    if HEADING in lines:
        start = lines.index(HEADING)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = section
    else:
        lines += ([""] if lines and lines[-1] else []) + section
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"] and len(sys.argv) == 5:
        _child(*sys.argv[2:5])
    else:
        sys.exit("usage: python -m entra_pipeline.measure.reliability --hostile-only "
                 "(this module runs the series' syncs)")
