"""Command line: ``python -m entra_pipeline sync | preview | query | explain | login | delete-integration |
check-config | reclaim | demo-tenant stop``.

``sync`` runs, per integration, the same two Dagster jobs as a schedule and its sensor (the source
job, then the contacts job), in this process, recorded in the Dagster instance at $DAGSTER_HOME (the
one ``make ui`` shows), then prints a summary. ``preview`` runs the source job, then the preview
job: what a sync would change, without changing contacts or lists. ``login``
signs a delegated integration's service account in once (device code); scheduled runs then renew
its tokens silently.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import uuid
from pathlib import Path

from entra_pipeline.config import CONFIG_PATH_ENV, ConfigError, credentials, load_integrations


# Progress lines (users: 40,000 of 100,000 (40%)) and failures on the console; the UI keeps the debug events.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _failure_lines(result) -> list[str]:
    from entra_pipeline.sync.checks import APPROVE_HINT

    lines = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        # Failure(description=...) arrives wrapped; its own message is the useful one.
        while error is not None and error.cause is not None and "Failure" not in error.cls_name:
            error = error.cause
        message = (error.message if error else "unknown error").strip().splitlines()[0]
        message = message.removeprefix('dagster._core.definitions.events.Failure: ')
        # The launchpad's spelling of an approval, as this command spells it.
        message = message.replace(APPROVE_HINT, "re-run with sync --allow-removals to approve")
        lines.append(f"{event.step_key}: {message}")
    return lines


def _summary(database: str, key: str) -> str:
    from entra_pipeline.warehouse import schema as s
    from entra_pipeline.warehouse.connection import connect

    con = connect(database, read_only=True)
    try:
        def count(table: str) -> int:
            return con.execute(f'SELECT count(*) FROM "{table}" WHERE integration = ?', [key]).fetchone()[0]

        errors = con.execute(
            f'SELECT code, count(*) FROM "{s.IMPORT_ERRORS}" WHERE integration = ? GROUP BY code ORDER BY code',
            [key]).fetchall()
        error_text = ", ".join(f"{code} {n:,}" for code, n in errors) or "none"
        run = con.execute(f'SELECT read_mode, contacts_added, contacts_updated, contacts_removed, graph_requests '
                          f'FROM "{s.SYNC_RUNS}" WHERE integration = ? ORDER BY finished_at DESC LIMIT 1',
                          [key]).fetchone()
        workers = count(s.RAW_WORKDAY_WORKERS)
        source = (f"Workday workers {workers:,}" if workers else
                  f"directory users {count(s.RAW_GRAPH_USERS):,}, groups {count(s.RAW_GRAPH_GROUPS):,}")
        last = (f"  last committed run: {run[0] or '?'} read, contacts +{run[1] or 0:,} ~{run[2] or 0:,} "
                f"-{run[3] or 0:,}, {run[4] or 0:,} {'Workday' if workers else 'Graph'} requests\n") if run else ""
        people, shared = con.execute(f'SELECT count(*), count(*) FILTER (WHERE len(integrations) > 1) '
                                     f'FROM "{s.ALL_CONTACTS}"').fetchone()
        return (f"{last}  contacts {count(s.CONTACTS):,} (excluded {count(s.EXCLUDED_CONTACTS):,}), "
                f"lists {count(s.DISTRIBUTION_LISTS):,} with {count(s.DISTRIBUTION_LIST_MEMBERS):,} memberships, "
                f"{source}\n  import errors: {error_text}\n"
                f"  merged directory (all_contacts): {people:,} people, {shared:,} of them in several integrations")
    finally:
        con.close()


def sync(keys: list[str], allow_removals: bool = False, full_resync: bool = False, preview: bool = False) -> int:
    from entra_pipeline.definitions import build_defs, run_sync
    from entra_pipeline.defs.jobs import SyncResult
    from entra_pipeline.defs.resources import WAREHOUSE_POOL
    from entra_pipeline.instance import open_instance
    from entra_pipeline.pool import PoolWatch, wait_for_pool
    from entra_pipeline.run_locks import hold_run_lock, process_tags, release_run_lock
    from entra_pipeline.sync import names
    from entra_pipeline.warehouse.connection import warehouse_path

    all_keys = load_integrations().keys  # strict: a broken integration stops the CLI with its line
    defs = build_defs()
    unknown = [k for k in keys if k not in all_keys]
    if unknown:
        print(f"unknown integration(s): {', '.join(unknown)} (configured: {', '.join(all_keys)})", file=sys.stderr)
        return 2
    instance = open_instance()
    failed = 0
    for key in keys or all_keys:
        started = time.monotonic()
        verb = "preview" if preview else "sync"
        print(f"{verb} {key}: running", flush=True)
        run_config: dict = {**QUIET, "ops": {}}
        if allow_removals and not preview:
            # The operator's approval of this run's removals (the deletion guard), for these steps only.
            run_config["ops"].update({step: {"config": {"allow_removals": True}}
                                      for step in names.GUARDED_STAGES})
        if full_resync:
            run_config["ops"].update({step: {"config": {"full_resync": True}}
                                      for step in names.GRAPH_STAGES + names.WORKDAY_STAGES})
        tags = {"integration": key, "started_by": f"entra-pipeline {verb}"}
        tags.update({name: "true" for name, on in (("allow_removals", allow_removals), ("full_resync", full_resync))
                     if on})
        watches: list[PoolWatch] = []
        done: list = []  # the runs of this sync so far

        def say(line: str) -> None:
            print(f"{verb} {key}: {line}", flush=True)

        def execute(job, **kwargs):
            """One of the sync's runs, holding its run lock from before it exists until it has ended."""
            if watches and watches[-1].signalled:
                raise _Stopped
            run_id = kwargs.pop("run_id", None) or str(uuid.uuid4())

            def stopped(signum: int) -> str:
                return (f"stopped by {signal.Signals(signum).name} while waiting for the warehouse "
                        f"(run {run_id} canceled)")

            wait_for_pool(instance, WAREHOUSE_POOL, say)
            # While it is held, no sync or sensor takes the run for dead; once this process dies, the
            # kernel lets it go. Which process runs it (for runs without a lock file) is in its tags.
            hold_run_lock(instance, run_id)
            try:
                with PoolWatch(instance, WAREHOUSE_POOL, run_id, say, stopped) as watch:
                    watches.append(watch)
                    done.append(job.execute_in_process(
                        **{**kwargs, "tags": {**kwargs["tags"], **process_tags(run_id)}}, run_id=run_id))
                    return done[-1]
            finally:
                release_run_lock(instance, run_id)

        try:
            result = run_sync(defs, key, instance, preview=preview, run_config=run_config, tags=tags, execute=execute)
        except _Stopped:
            result = SyncResult(done)
        seconds = time.monotonic() - started
        if result.results:
            checks = result.get_asset_check_evaluations()
            bad_checks = [f"{e.check_name} ({e.severity.value}): {e.description}" for e in checks if not e.passed]
            if result.success:
                print(f"{verb} {key}: ok in {seconds:.1f} s (run {result.run_id})")
            else:
                failed += 1
                print(f"{verb} {key}: FAILED in {seconds:.1f} s (run {result.run_id})")
                for line in _failure_lines(result):
                    print(f"  {line}")
            for line in bad_checks:
                print(f"  check {line}")
            try:
                print(_preview_summary(str(warehouse_path()), key) if preview
                      else _summary(str(warehouse_path()), key))
            except Exception as exc:  # noqa: BLE001 - the summary must not hide the sync's own outcome
                print(f"  (no summary: {type(exc).__name__}: {str(exc).splitlines()[0]})")
        signalled = next((w.signalled for w in watches if w.signalled), 0)
        if signalled:
            # Stopped on purpose (Ctrl-C, docker stop, systemd): no further run or integration is started.
            print(f"{verb}: stopped by {signal.Signals(signalled).name}; the other integrations were not "
                  "started", file=sys.stderr)
            return 128 + signalled
    return 1 if failed else 0


class _Stopped(Exception):
    """A signal stopped the sync's first run: its second is not started."""


def _preview_summary(database: str, key: str) -> str:
    from entra_pipeline.warehouse import schema as s
    from entra_pipeline.warehouse.connection import connect

    con = connect(database, read_only=True)
    try:
        rows = con.execute(f'SELECT change, count(*) FROM "{s.SYNC_PREVIEW}" WHERE integration = ? '
                           "GROUP BY change ORDER BY change", [key]).fetchall()
    finally:
        con.close()
    counts = ", ".join(f"{change} {n:,}" for change, n in rows) or "no changes"
    return f"  would change: {counts}\n  details: SELECT * FROM {s.SYNC_PREVIEW} WHERE integration = '{key}'"


def _print_rows(columns: list[str], rows: list[tuple], output: str) -> None:
    """Rows as CSV (a header line, then one line per row) or JSON (a list of objects); dates,
    decimals and other values a JSON document has no type for are written as text."""
    import csv
    import json

    if output == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        print(json.dumps([dict(zip(columns, row)) for row in rows], ensure_ascii=False, default=str, indent=1))


def _read_only(wait_seconds: float):
    """The warehouse opened read-only, waiting while a sync writes; None (said on stderr) if it cannot be."""
    import duckdb

    from entra_pipeline.warehouse.connection import connect, warehouse_path

    try:
        return connect(warehouse_path(), read_only=True, wait_seconds=wait_seconds)
    except duckdb.IOException as exc:
        print(f"{warehouse_path()}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return None


def query(sql: str, wait_seconds: float, output: str = "table") -> int:
    """Run one SQL statement on the warehouse read-only and print the result (``output``: table,
    csv or json): waits while a sync writes, and holds the file only as long as the query runs."""
    import duckdb

    con = _read_only(wait_seconds)
    if con is None:
        return 2
    try:
        if output == "table":
            print(con.sql(sql))
        else:
            cursor = con.execute(sql)
            columns = [d[0] for d in cursor.description or []]
            _print_rows(columns, cursor.fetchall(), output)
    except duckdb.Error as exc:
        print(f"query failed: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    finally:
        con.close()
    return 0


def explain(person: str, wanted: str | None, wait_seconds: float) -> int:
    """Why a person is or is not a contact (and on or off a list), from the warehouse, read-only."""
    from entra_pipeline import explain as answers
    from entra_pipeline.config import load_for_dagster
    from entra_pipeline.warehouse import schema
    from entra_pipeline.warehouse.connection import warehouse_path

    con = _read_only(wait_seconds)
    if con is None:
        return 2
    try:
        if not schema.schema_current(con):
            print(f"{warehouse_path()}: no warehouse of this version yet; run a sync first", file=sys.stderr)
            return 2
        status, lines = answers.explain(con, load_for_dagster(), person, wanted)
    finally:
        con.close()
    print("\n".join(lines))
    return status


def delete_integration(key: str, confirm: str | None) -> int:
    """Remove one integration's rows from every warehouse table, in one transaction; the other
    integrations' rows are not touched. Refused without ``--confirm KEY`` repeating the key."""
    from entra_pipeline.warehouse import admin
    from entra_pipeline.warehouse.connection import connect, transaction, warehouse_path

    database = warehouse_path()
    if not database.exists():
        print(f"{database}: no warehouse", file=sys.stderr)
        return 2
    con = connect(database)
    try:
        present = admin.integrations_in_warehouse(con)
        if key not in present:
            print(f"integration {key!r} has no rows in {database} (present: {', '.join(present) or 'none'})",
                  file=sys.stderr)
            return 2
        if confirm != key:
            print(f"integration {key!r} holds {present[key]:,} contacts in {database}; this removes its contacts, "
                  f"lists, errors, history and delta state for good. Repeat the key to confirm: "
                  f"--confirm {key}", file=sys.stderr)
            return 2
        with transaction(con):
            removed = admin.delete_integration(con, key)
    finally:
        con.close()
    configured = key in load_integrations().keys
    print(f"deleted integration {key!r}: {sum(removed.values()):,} rows from "
          f"{sum(1 for n in removed.values() if n)} tables"
          + (f" (it is still in the integrations file: the next sync of {key!r} starts afresh)" if configured else ""))
    return 0


def reclaim(run_id: str, force: bool = False) -> int:
    """Mark failed a run whose process is gone for good where no sync can see it (another machine or
    container) and free its warehouse slots; refused while the run's process holds its lock."""
    from entra_pipeline.instance import open_instance
    from entra_pipeline.pool import reclaim_run

    instance = open_instance()
    if not instance.is_persistent:
        print("reclaim: DAGSTER_HOME is not set: there is no Dagster instance whose runs could be reclaimed",
              file=sys.stderr)
        return 2
    done, line = reclaim_run(instance, run_id, force)
    print(line, file=sys.stdout if done else sys.stderr)
    return 0 if done else 1


def login(key: str) -> int:
    """Device-code sign-in of a delegated integration's service account; the token cache is
    written readable only by its owner."""
    from entra_pipeline.defs.resources import GraphResource
    from entra_pipeline.sources.graph.auth import AuthError

    integration = load_integrations().get(key)
    if integration.source.auth != "delegated":
        print(f"integration {key!r} has auth: {integration.source.auth}; login is for auth: delegated "
              "(a service account that signs in once)", file=sys.stderr)
        return 2
    with GraphResource().client(integration) as client:
        try:
            username = client.sign_in(show=lambda message: print(message, flush=True))
        except AuthError as exc:
            print(f"integration {key!r}: {exc}", file=sys.stderr)
            return 1
    print(f"signed in as {username}; the sign-in is kept in {integration.source.token_cache_path} "
          "(readable only by you). Scheduled syncs renew its tokens on their own.")
    return 0


def _credential_status(integration) -> str:
    """One line on whether the integration can sign in; ConfigError when it cannot."""
    from datetime import datetime, timezone

    from entra_pipeline.sources.graph.auth import AuthError, TokenCacheFile

    source = integration.source
    if integration.kind == "workday":
        credentials.workday_auth(integration)
        return "password set" if source.auth == "basic" else "client secret and refresh token set"
    if source.auth == "client_secret":
        credentials.client_secret(integration)
        return "secret set"
    if source.auth == "certificate":
        _, info = credentials.certificate(integration)
        if info is None:
            return f"certificate key readable (thumbprint {source.certificate_thumbprint.upper()}; expiry unknown)"
        days = (info.not_after - datetime.now(timezone.utc)).days
        if days < 0:
            raise ConfigError(f"integration {integration.key!r}: certificate {info.thumbprint} expired on "
                              f"{info.not_after:%Y-%m-%d}")
        return f"certificate {info.thumbprint} valid until {info.not_after:%Y-%m-%d} ({days} days)"
    try:
        cache = TokenCacheFile(source.token_cache_path, integration.login_command).load()
        accounts = list(cache.search(cache.CredentialType.ACCOUNT))
    except AuthError as exc:
        raise ConfigError(f"integration {integration.key!r}: {exc}") from None
    if not accounts:
        raise ConfigError(f"integration {integration.key!r}: not signed in; run {integration.login_command}")
    return f"signed in as {accounts[0].get('username')} (per the token cache; the next sync verifies it)"


def check_config() -> int:
    integrations = load_integrations()
    problems = 0
    for integration in integrations.integrations:
        try:
            status = _credential_status(integration)
        except ConfigError as exc:
            status, problems = str(exc), problems + 1
        source = ("demo tenant" if integration.source.demo_tenant else
                  integration.source.host if integration.kind == "workday" else integration.source.graph_url)
        print(f"{integration.key}: {integration.title} [{source}; cron {integration.schedule.cron!r}] {status}")
    return 1 if problems else 0


DESCRIPTION = """Keeps an organisation's people, from Microsoft Entra ID and Workday, as contacts and
distribution lists in a DuckDB warehouse. Each command reads the integrations file (--config, or
$ENTRA_PIPELINE_CONFIG, or data/integrations.yaml) and the warehouse ($ENTRA_PIPELINE_WAREHOUSE, or
data/warehouse.duckdb)."""
KEYS_HELP = "integration keys from the integrations file (default: every integration)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m entra_pipeline", description=DESCRIPTION)
    parser.add_argument("--config", metavar="FILE", help="the integrations file (default: $ENTRA_PIPELINE_CONFIG, "
                                                         "or data/integrations.yaml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=description or summary)

    sync_parser = command("sync", "sync integrations now (every one by default)",
                          "Sync integrations now, one after another, as their schedules would: the source run "
                          "(Entra ID or Workday), then the contacts run; prints a summary per integration. "
                          "Exit status 1 if one failed or was blocked.")
    sync_parser.add_argument("integrations", nargs="*", metavar="KEY", help=KEYS_HELP)
    sync_parser.add_argument("--allow-removals", action="store_true",
                             help="approve removing more contacts or list memberships than the deletion guard allows")
    sync_parser.add_argument("--full-resync", action="store_true",
                             help="read the whole directory (a full delta round) and report what it corrected")
    preview_parser = command(
        "preview", "show what a sync would change (table sync_preview), changing no contact or list",
        "Read the directory's changes, then compute what a sync would change in contacts, lists and the merged "
        "directory without changing them; the report goes to the table sync_preview.")
    preview_parser.add_argument("integrations", nargs="*", metavar="KEY", help=KEYS_HELP)
    preview_parser.add_argument("--full-resync", action="store_true", help="read the whole directory first")
    query_parser = command("query", "run one SQL query on the warehouse, read-only",
                           "Run one SQL statement on the warehouse, read-only, waiting while a sync writes.")
    query_parser.add_argument("sql", metavar="SQL")
    query_parser.add_argument("--format", choices=["table", "csv", "json"], default="table", dest="output",
                              help="how to print the rows (default: table)")
    query_parser.add_argument("--wait", type=float, default=300.0, metavar="SECONDS",
                              help="how long to wait while a sync holds the warehouse (default 300)")
    explain_parser = command(
        "explain", "why a person is or is not a contact, and on or off a list",
        "Why a person is or is not a contact, in each integration and in the merged directory, and on or off a "
        "list: the rule and value that excluded them, the nesting path of groups, the condition that failed. "
        "Exit status 1 if no integration read the person, or there is no such list.")
    explain_parser.add_argument("person", metavar="PERSON", help="an e-mail address, a directory object id or an "
                                                                 "employee id")
    explain_parser.add_argument("list", nargs="?", metavar="LIST", help="a list id or display name")
    explain_parser.add_argument("--wait", type=float, default=300.0, metavar="SECONDS",
                                help="how long to wait while a sync holds the warehouse (default 300)")
    delete_parser = command(
        "delete-integration", "remove one integration's rows from the warehouse (asks for --confirm KEY)",
        "Remove every row of one integration from the warehouse, in one transaction; the other integrations' "
        "rows stay as they are. Without --confirm it only says what it would remove.")
    delete_parser.add_argument("integration", metavar="KEY", help="the integration whose rows go")
    delete_parser.add_argument("--confirm", metavar="KEY", help="the same key again: the deletion is for good")
    login_parser = command("login", "sign a delegated integration's service account in (device code), once")
    login_parser.add_argument("integration", metavar="KEY", help="an integration with auth: delegated")
    command("check-config", "validate the integrations file and each integration's credential",
            "Validate the integrations file (one line per problem) and say, per integration, whether its "
            "credential is in place. Exit status 1 if one is not.")
    reclaim_parser = command(
        "reclaim", "mark failed a run whose process is gone for good and free its warehouse slot "
                   "(refused while the run is alive)")
    reclaim_parser.add_argument("run_id", metavar="RUN_ID")
    reclaim_parser.add_argument("--force", action="store_true",
                                help="also a run with neither a run lock nor a recorded process (you know it is gone)")
    demo = command("demo-tenant", "manage the built-in demo tenant")
    demo.add_argument("action", choices=["stop"], help="stop the demo tenant processes this checkout started")
    args = parser.parse_args(argv)
    if args.config:
        # Every reader of the file (the strict loader, the Dagster definitions) takes it from here.
        os.environ[CONFIG_PATH_ENV] = str(Path(args.config).resolve())
    try:
        if args.command == "sync":
            return sync(args.integrations, args.allow_removals, args.full_resync)
        if args.command == "preview":
            return sync(args.integrations, full_resync=args.full_resync, preview=True)
        if args.command == "check-config":
            return check_config()
        if args.command == "query":
            return query(args.sql, args.wait, args.output)
        if args.command == "explain":
            return explain(args.person, args.list, args.wait)
        if args.command == "login":
            return login(args.integration)
        if args.command == "reclaim":
            return reclaim(args.run_id, args.force)
        if args.command == "delete-integration":
            return delete_integration(args.integration, args.confirm)
        from entra_pipeline.demo_tenant import stop_all

        print(f"stopped {stop_all()} demo tenant(s)")
        return 0
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C before a run started (while waiting for the warehouse); a started run reports its own end.
        print(f"{args.command}: interrupted", file=sys.stderr)
        return 130
