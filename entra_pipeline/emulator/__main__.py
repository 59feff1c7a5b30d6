"""Command line for the demo tenant.

``python -m entra_pipeline.emulator serve`` generates the directory, serves it
until SIGTERM/SIGINT (or ``--idle-timeout``) and publishes how to reach it in
``{state-dir}/state.json``. ``stop --state-dir DIR`` ends that process.

The client secret is read from ``ENTRA_EMULATOR_CLIENT_SECRET`` and never from
the command line, because other users can read process lists. ``--certificate
PEM`` (repeatable) registers a public certificate for certificate credentials;
device-code sign-ins are approved on the page at ``{base_url}/devicelogin``.

The same server also serves the demo Workday tenant (Report-as-a-Service and its
OAuth token endpoint, see :mod:`.workday`) unless ``--no-workday`` is given: its
report overlaps the generated directory (``--workday-workers N`` serves N
synthetic workers instead, for benchmarks). The Integration System User's
password, the API client's secret and the refresh token are read from
``ENTRA_EMULATOR_WORKDAY_PASSWORD``, ``ENTRA_EMULATOR_WORKDAY_CLIENT_SECRET`` and
``ENTRA_EMULATOR_WORKDAY_REFRESH_TOKEN`` (built-in demo values when unset), never
from the command line. ``state.json`` gains ``workday_*`` keys (report and token
URLs, tenant, owner, report, user name, client id, the variables' names, worker
count); without Workday they are absent.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from . import CLIENT_SECRET_ENV, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TENANT_ID
from .population import generate_directory
from .processes import is_recorded_process, process_identity, signal_recorded_process
from .server import Emulator
from .workday import (
    DEMO_WORKDAY_CLIENT_ID,
    DEMO_WORKDAY_CLIENT_SECRET,
    DEMO_WORKDAY_OWNER,
    DEMO_WORKDAY_PASSWORD,
    DEMO_WORKDAY_REFRESH_TOKEN,
    DEMO_WORKDAY_REPORT,
    DEMO_WORKDAY_TENANT,
    DEMO_WORKDAY_USERNAME,
    WORKDAY_CLIENT_SECRET_ENV,
    WORKDAY_PASSWORD_ENV,
    WORKDAY_REFRESH_TOKEN_ENV,
    WorkdayTenant,
)
from .workday_workers import WorkerReport

STATE_FILE = "state.json"


def _write_state(path: Path, state: dict) -> None:
    """Atomic: readers see the old file, no file, or the complete new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_state(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _recorded_emulator(state: dict) -> int | None:
    """The pid in ``state`` while it is still the emulator that wrote it, else None. Pids are
    recycled: a pid with another start time or command line is another program's (and a state
    file without the recorded identity, or a system without /proc, cannot prove it is ours)."""
    pid = state.get("pid")
    return pid if isinstance(pid, int) and is_recorded_process(pid, state.get("process")) else None


def _serve(args: argparse.Namespace) -> int:
    env_secret = os.environ.get(CLIENT_SECRET_ENV)
    secret = env_secret or DEMO_CLIENT_SECRET
    if args.state_dir:
        state_dir = Path(args.state_dir).resolve()
        state_dir.mkdir(parents=True, exist_ok=True)
        owns_state_dir = False
    else:
        state_dir = Path(tempfile.mkdtemp(prefix="entra-emulator-"))
        owns_state_dir = True
    state_path = state_dir / STATE_FILE
    previous = _read_state(state_path)
    if previous and previous.get("pid") != os.getpid() and _recorded_emulator(previous):
        print(f"An emulator (pid {previous['pid']}) already uses {state_dir}; stop it first.", file=sys.stderr)
        return 1

    directory = generate_directory(users=args.users, groups=args.groups, seed=args.seed)
    workday = None
    if not args.no_workday:
        if args.workday_workers is not None and args.workday_workers < 20:
            print("--workday-workers must be at least 20.", file=sys.stderr)
            if owns_state_dir:
                shutil.rmtree(state_dir, ignore_errors=True)
            return 2
        # Computed per request, never held: a 100k-worker report costs no memory between requests.
        report = (WorkerReport(directory, seed=args.seed) if args.workday_workers is None
                  else WorkerReport(workers=args.workday_workers, seed=args.seed))
        workday = WorkdayTenant(
            tenant=args.workday_tenant,
            username=args.workday_username,
            password=os.environ.get(WORKDAY_PASSWORD_ENV) or DEMO_WORKDAY_PASSWORD,
            client_id=args.workday_client_id,
            client_secret=os.environ.get(WORKDAY_CLIENT_SECRET_ENV) or DEMO_WORKDAY_CLIENT_SECRET,
            refresh_token=os.environ.get(WORKDAY_REFRESH_TOKEN_ENV) or DEMO_WORKDAY_REFRESH_TOKEN,
            owner=args.workday_owner,
            report=args.workday_report,
            entries=report,
        )
    emulator = Emulator(
        directory,
        tenant_id=args.tenant_id,
        client_id=args.client_id,
        client_secret=secret,
        host=args.host,
        port=args.port,
        cert_dir=state_dir,
        idle_timeout=args.idle_timeout,
        workday=workday,
    )
    thumbprints = []
    for path in args.certificate or ():
        try:
            thumbprints.append(emulator.add_certificate(Path(path).read_bytes()))
        except (OSError, ValueError) as exc:
            print(f"Cannot register certificate {path}: {exc}", file=sys.stderr)
            if owns_state_dir:
                shutil.rmtree(state_dir, ignore_errors=True)
            return 2
    stop_requested: list[int] = []

    def on_signal(signum, _frame) -> None:
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    emulator.start()
    try:
        state = {
            "pid": os.getpid(),
            # Who this pid is: "stop" signals the pid only while it is still this process.
            "process": process_identity(os.getpid()),
            "base_url": emulator.base_url,
            "graph_url": emulator.graph_url,
            "authority": emulator.authority,
            "ca_path": emulator.ca_path,
            "tenant_id": emulator.tenant_id,
            "client_id": emulator.client_id,
            "client_secret_env": CLIENT_SECRET_ENV,
            "certificate_thumbprints": thumbprints,
            "device_login_url": f"{emulator.base_url}/devicelogin",
            "users": args.users,
            "groups": args.groups,
            "seed": args.seed,
            "extension_property": directory.extension_property,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if workday is not None:
            state.update({
                "workday_url": emulator.base_url,
                "workday_report_url": emulator.workday_report_url,
                "workday_token_url": emulator.workday_token_url,
                "workday_tenant": workday.tenant,
                "workday_owner": workday.owner,
                "workday_report": workday.report,
                "workday_username": workday.username,
                "workday_client_id": workday.client_id,
                "workday_password_env": WORKDAY_PASSWORD_ENV,
                "workday_client_secret_env": WORKDAY_CLIENT_SECRET_ENV,
                "workday_refresh_token_env": WORKDAY_REFRESH_TOKEN_ENV,
                "workday_workers": len(workday.entries),
            })
        _write_state(state_path, state)
        if env_secret:
            secret_line = f"in ${CLIENT_SECRET_ENV}"
        else:
            secret_line = (f"'{DEMO_CLIENT_SECRET}' (built-in demo default, because "
                           f"${CLIENT_SECRET_ENV} is unset)")
        idle = f"; stops after {args.idle_timeout:g} s without requests" if args.idle_timeout else ""
        if workday is None:
            workday_lines = "  Workday         not served (--no-workday)\n"
        else:
            def secret(env: str, default: str) -> str:
                if os.environ.get(env):
                    return f"in ${env}"
                return f"'{default}' (built-in demo default, because ${env} is unset)"

            workday_lines = (
                f"  Workday report  {emulator.workday_report_url}?format=json\n"
                f"  Workday token   {emulator.workday_token_url}\n"
                f"  Workday ISU     {workday.username}, password "
                f"{secret(WORKDAY_PASSWORD_ENV, DEMO_WORKDAY_PASSWORD)}\n"
                f"  Workday client  {workday.client_id}, secret "
                f"{secret(WORKDAY_CLIENT_SECRET_ENV, DEMO_WORKDAY_CLIENT_SECRET)}\n"
                f"  Workday refresh token {secret(WORKDAY_REFRESH_TOKEN_ENV, DEMO_WORKDAY_REFRESH_TOKEN)}\n"
                f"  Workday workers {len(workday.entries)}\n"
            )
        print(
            "Demo tenant (Microsoft Graph + identity platform emulator) is running.\n"
            f"  Graph v1.0 API  {emulator.graph_url}\n"
            f"  Authority       {emulator.authority}\n"
            f"  CA certificate  {emulator.ca_path}\n"
            f"  Tenant id       {emulator.tenant_id}\n"
            f"  Client id       {emulator.client_id}\n"
            f"  Client secret   {secret_line}\n"
            f"  Certificates    {', '.join(thumbprints) or 'none (--certificate PEM registers one)'}\n"
            f"  Device sign-in  {emulator.base_url}/devicelogin\n"
            f"  Directory       {args.users} users, {args.groups} groups, seed {args.seed}\n"
            f"{workday_lines}"
            f"  State file      {state_path}\n"
            "An integration's source for it (integrations file; the client secret in that variable):\n"
            f"    tenant_id: {emulator.tenant_id}\n"
            f"    client_id: {emulator.client_id}\n"
            f"    client_secret_env: {CLIENT_SECRET_ENV}\n"
            f"    graph_base_url: {emulator.base_url}\n"
            f"    authority_host: {emulator.base_url}\n"
            f"    ca_bundle: {emulator.ca_path}\n"
            f"Stop with Ctrl+C or: python -m entra_pipeline.emulator stop --state-dir {state_dir}{idle}",
            flush=True,
        )
        while not stop_requested and not emulator.wait(0.25):
            pass
    finally:
        emulator.stop()
        current = _read_state(state_path)
        if current is not None and current.get("pid") == os.getpid():
            state_path.unlink(missing_ok=True)
        if owns_state_dir:
            shutil.rmtree(state_dir, ignore_errors=True)
    reason = "idle timeout" if not stop_requested else signal.Signals(stop_requested[0]).name
    print(f"Demo tenant stopped ({reason}).", flush=True)
    return 0


def _stop(args: argparse.Namespace) -> int:
    state_path = Path(args.state_dir) / STATE_FILE
    state = _read_state(state_path)
    if state is None:
        print(f"No running emulator recorded in {state_path}.", file=sys.stderr)
        return 0
    pid = _recorded_emulator(state)
    if pid is None or not signal_recorded_process(pid, state["process"], signal.SIGTERM):
        print(f"Emulator pid {state.get('pid')} is not running (or is no longer the emulator); removing stale "
              f"{state_path}.", file=sys.stderr)
        state_path.unlink(missing_ok=True)
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not is_recorded_process(pid, state["process"]) or not state_path.exists():
            print(f"Stopped emulator pid {pid}.")
            return 0
        time.sleep(0.05)
    print(f"Emulator pid {pid} did not stop within {args.timeout:g} s.", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m entra_pipeline.emulator",
        description="Demo tenant: a local Microsoft Graph + identity platform emulator.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="generate a directory and serve it over HTTPS",
        description=f"The client secret is read from ${CLIENT_SECRET_ENV} "
                    f"(default '{DEMO_CLIENT_SECRET}'); it is never accepted on the command line.",
    )
    serve.add_argument("--users", type=int, default=2000, help="number of users (default 2000)")
    serve.add_argument("--groups", type=int, default=150, help="number of groups (default 150)")
    serve.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    serve.add_argument("--tenant-id", default=DEMO_TENANT_ID, help="tenant id (default the demo tenant)")
    serve.add_argument("--client-id", default=DEMO_CLIENT_ID, help="app (client) id (default the demo app)")
    serve.add_argument("--state-dir", help="where state.json and the CA go (default: a new temp dir)")
    serve.add_argument("--idle-timeout", type=float, help="stop after this many seconds without requests")
    serve.add_argument("--certificate", action="append", metavar="PEM",
                       help="register this public certificate as a credential of the app (repeatable)")
    serve.add_argument("--no-workday", action="store_true", help="do not serve the demo Workday tenant")
    serve.add_argument("--workday-tenant", default=DEMO_WORKDAY_TENANT,
                       help=f"Workday tenant name (default {DEMO_WORKDAY_TENANT})")
    serve.add_argument("--workday-username", default=DEMO_WORKDAY_USERNAME,
                       help=f"Integration System User (default {DEMO_WORKDAY_USERNAME}); its password is read "
                            f"from ${WORKDAY_PASSWORD_ENV}")
    serve.add_argument("--workday-client-id", default=DEMO_WORKDAY_CLIENT_ID,
                       help=f"API client id (default the demo client); secret and refresh token are read from "
                            f"${WORKDAY_CLIENT_SECRET_ENV} and ${WORKDAY_REFRESH_TOKEN_ENV}")
    serve.add_argument("--workday-owner", default=DEMO_WORKDAY_OWNER,
                       help=f"report owner (default {DEMO_WORKDAY_OWNER})")
    serve.add_argument("--workday-report", default=DEMO_WORKDAY_REPORT,
                       help=f"report name (default {DEMO_WORKDAY_REPORT})")
    serve.add_argument("--workday-workers", type=int, metavar="N",
                       help="serve N synthetic workers instead of the report overlapping the directory")
    stop = commands.add_parser("stop", help="stop the emulator recorded in --state-dir")
    stop.add_argument("--state-dir", required=True)
    stop.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for it to exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _stop(args)


if __name__ == "__main__":
    sys.exit(main())
