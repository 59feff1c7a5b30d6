"""Start (or reuse) the built-in demo tenant for integrations with ``source.demo_tenant``.

The demo tenant is the Graph emulator in ``entra_pipeline.emulator``, run as a separate process
(pipeline code never imports it). One emulator per directory size and seed is shared by all runs
and steps through a state file; it stops itself after ``IDLE_TIMEOUT`` seconds without requests.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from entra_pipeline.config import PROJECT_ROOT, DemoTenant
from entra_pipeline.errors import PipelineError
from entra_pipeline.process import is_recorded_process, process_identity, signal_recorded_process

DEMO_DIR_ENV = "ENTRA_PIPELINE_DEMO_DIR"
IDLE_TIMEOUT = 900
START_TIMEOUT = 180  # a 100k-user directory takes a few seconds to generate
SECRET_ENV = "ENTRA_EMULATOR_CLIENT_SECRET"
# The shipped demo's app registration (data/integrations.yaml), for a tenant a Workday integration starts.
DEMO_APP = ("00000000-0000-0000-0000-0000000de770", "00000000-0000-0000-0000-00000000c11e")
DEMO_SECRET_ENV = "ENTRA_DEMO_CLIENT_SECRET"
DEMO_APP_SECRET = "demo-client-secret"
# The demo Workday's ISU password: what the shipped demo_workday integration names, and the
# emulator's own default; passed to the emulator process in WORKDAY_PASSWORD_ENV.
DEMO_WORKDAY_PASSWORD_ENV = "ENTRA_DEMO_WORKDAY_PASSWORD"
DEMO_WORKDAY_PASSWORD = "demo-isu-password"
WORKDAY_PASSWORD_ENV = "ENTRA_EMULATOR_WORKDAY_PASSWORD"
_PASSED_ENV = {"PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "SYSTEMROOT"}


class DemoTenantError(PipelineError):
    pass


@dataclass(frozen=True)
class DemoEndpoint:
    base_url: str
    ca_path: str
    pid: int


def demo_root() -> Path:
    return Path(os.environ.get(DEMO_DIR_ENV) or PROJECT_ROOT / "data" / ".demo-tenant")


def _state_dir(spec: DemoTenant, root: Path) -> Path:
    return root / f"{spec.users}u-{spec.groups}g-s{spec.seed}"


def _fingerprint(directory: Path, tenant_id: str, client_id: str, secret: str) -> str:
    """Lets a later sync notice that the running emulator was given another app registration.
    Keyed with a random local key, so the state file does not help anyone guess the secret."""
    key_file = directory / "fingerprint.key"
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(os.urandom(32))
    return hmac.new(key_file.read_bytes(), f"{tenant_id}\0{client_id}\0{secret}".encode(), hashlib.sha256).hexdigest()


def _running(state: dict) -> bool:
    """The state file's emulator still runs: its pid is still the process recorded with it (start
    time and command line). Pids are recycled, so a live pid alone may be anyone's."""
    return is_recorded_process(state.get("pid"), state.get("process"))


def _healthy(state: dict) -> bool:
    try:
        with requests.Session() as session:
            session.trust_env = False  # a proxy from the environment must not see loopback traffic
            response = session.get(f"{state['authority']}/v2.0/.well-known/openid-configuration",
                                   verify=state["ca_path"], timeout=5)
        return response.status_code == 200
    except (requests.RequestException, KeyError, OSError):
        return False


def _read_state(directory: Path) -> dict | None:
    try:
        state = json.loads((directory / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _stop(directory: Path) -> bool:
    """Stop the emulator recorded in ``directory``; False when none runs. A pid that is no longer
    the recorded emulator is never signalled: its state file is stale and only removed."""
    state = _read_state(directory)
    if not state or not signal_recorded_process(state.get("pid"), state.get("process"), signal.SIGTERM):
        (directory / "state.json").unlink(missing_ok=True)
        return False
    for _ in range(100):
        if not _running(state):
            break
        time.sleep(0.05)
    (directory / "state.json").unlink(missing_ok=True)
    return True


def ensure_demo_tenant(spec: DemoTenant, *, tenant_id: str | None = None, client_id: str | None = None,
                       client_secret: str | None = None, workday_password: str | None = None,
                       root: Path | None = None) -> DemoEndpoint:
    """The running demo tenant for ``spec``, started if needed. Safe to call from parallel steps.

    An Entra integration names its app registration, a Workday integration its ISU password; a
    running tenant made with other credentials for the caller's side is restarted. The side the
    caller does not name takes the shipped demo's values (ENTRA_DEMO_CLIENT_SECRET,
    ENTRA_DEMO_WORKDAY_PASSWORD or the built-in ones), so the demo's two integrations agree and
    never restart the tenant for each other."""
    directory = _state_dir(spec, root or demo_root())
    directory.mkdir(parents=True, exist_ok=True)
    entra_caller = tenant_id is not None
    if not entra_caller:
        tenant_id, client_id = DEMO_APP
        client_secret = os.environ.get(DEMO_SECRET_ENV) or DEMO_APP_SECRET
    if workday_password is None:
        workday_password = os.environ.get(DEMO_WORKDAY_PASSWORD_ENV) or DEMO_WORKDAY_PASSWORD
    with open(directory / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fingerprint = _fingerprint(directory, tenant_id, client_id, client_secret)
        workday_fingerprint = _fingerprint(directory, "workday", "", workday_password)
        state = _read_state(directory)
        if state and _running(state) and _healthy(state):
            if (state.get("fingerprint") == fingerprint if entra_caller else
                    state.get("workday_report_url") and state.get("workday_fingerprint") == workday_fingerprint):
                return DemoEndpoint(state["base_url"], state["ca_path"], state["pid"])
            _stop(directory)
        elif state:
            _stop(directory)
        return _start(spec, directory, tenant_id, client_id, client_secret, workday_password,
                      {"fingerprint": fingerprint, "workday_fingerprint": workday_fingerprint})


def _start(spec: DemoTenant, directory: Path, tenant_id: str, client_id: str, client_secret: str,
           workday_password: str, fingerprints: dict[str, str]) -> DemoEndpoint:
    # Only what Python needs: the environment may hold other integrations' secrets.
    env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV or k.startswith("LC_")}
    env[SECRET_ENV] = client_secret
    env[WORKDAY_PASSWORD_ENV] = workday_password
    log_path = directory / "emulator.log"
    command = [
        sys.executable, "-m", "entra_pipeline.emulator", "serve",
        "--users", str(spec.users), "--groups", str(spec.groups), "--seed", str(spec.seed),
        "--tenant-id", tenant_id, "--client-id", client_id,
        "--state-dir", str(directory), "--idle-timeout", str(IDLE_TIMEOUT),
    ]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        state = _read_state(directory)
        if state and state.get("pid") == process.pid and _healthy(state):
            state.update(fingerprints)
            # Our own child, not yet reaped, so its pid cannot have been reused: its identity is
            # what a later stop checks before signalling.
            state["process"] = process_identity(process.pid) or state.get("process")
            tmp = directory / "state.json.tmp"
            tmp.write_text(json.dumps(state))
            os.replace(tmp, directory / "state.json")
            return DemoEndpoint(state["base_url"], state["ca_path"], process.pid)
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise DemoTenantError(f"demo tenant exited with code {process.returncode}: {' | '.join(tail)}")
        time.sleep(0.1)
    process.terminate()
    raise DemoTenantError(f"demo tenant did not start within {START_TIMEOUT} s (log: {log_path})")


def stop_all(root: Path | None = None) -> int:
    """Stop every demo tenant started under ``root``; returns how many were running."""
    base = root or demo_root()
    if not base.is_dir():
        return 0
    return sum(_stop(d) for d in sorted(base.iterdir()) if d.is_dir())
