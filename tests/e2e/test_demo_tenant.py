"""The demo tenant's processes: started and stopped by the pipeline, and a pid in a state file is
signalled only while it is still the emulator that wrote it (pids are recycled)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from entra_pipeline.config import DemoTenant
from entra_pipeline.demo_tenant import ensure_demo_tenant, stop_all
from entra_pipeline.emulator.__main__ import main as emulator_main
from entra_pipeline.process import process_identity, signal_recorded_process

SPEC = DemoTenant(users=30, groups=20, seed=3)
TENANT = "11111111-2222-3333-4444-555555555555"
APP = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


#: The bystander records a SIGTERM in ``<dir>/sigterm`` and lives on; it answers a SIGWINCH by
#: writing ``<dir>/probed``. Python runs pending handlers in signal order, SIGTERM (15) before
#: SIGWINCH (28): once "probed" appears, any SIGTERM sent before the probe has been recorded.
BYSTANDER = """
import pathlib, signal, sys, time
where = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *_: (where / "sigterm").touch())
signal.signal(signal.SIGWINCH, lambda *_: (where / "probed").touch())
(where / "ready").touch()
while True:
    time.sleep(60)
"""


@pytest.fixture
def bystander(tmp_path):
    """A live process that is not the emulator, though its command line names it (as a pid
    recycled by another Python program might)."""
    where = tmp_path / "bystander"
    where.mkdir()
    process = subprocess.Popen([sys.executable, "-c", BYSTANDER, str(where), "entra_pipeline.emulator", "serve"])
    process.where = where
    assert appeared(where / "ready")
    yield process
    process.kill()
    process.wait()


def state_dir(root: Path) -> Path:
    return root / f"{SPEC.users}u-{SPEC.groups}g-s{SPEC.seed}"


def appeared(path: Path) -> bool:
    for _ in range(400):
        if path.exists():
            return True
        time.sleep(0.05)
    return False


def never_signalled(process: subprocess.Popen) -> bool:
    """True when no SIGTERM reached the bystander: a probe sent now is handled after any SIGTERM
    sent before it, so no marker once the probe is answered means none was sent."""
    probed = process.where / "probed"
    probed.unlink(missing_ok=True)
    process.send_signal(signal.SIGWINCH)
    assert appeared(probed), "the bystander did not answer the probe"
    return process.poll() is None and not (process.where / "sigterm").exists()


def gone(pid: int) -> bool:
    for _ in range(100):
        if process_identity(pid) is None:  # exited (a zombie until reaped counts as gone)
            return True
        time.sleep(0.05)
    return False


def answers(endpoint) -> bool:
    url = f"{endpoint.base_url}/{TENANT}/v2.0/.well-known/openid-configuration"
    with requests.Session() as session:
        session.trust_env = False
        return session.get(url, verify=endpoint.ca_path, timeout=5).status_code == 200


def test_stop_never_signals_a_process_that_is_not_the_recorded_emulator(tmp_path, bystander):
    directory = state_dir(tmp_path)
    directory.mkdir(parents=True)
    state = directory / "state.json"
    # A state file from an emulator that exited long ago, whose pid now belongs to another program:
    # written by an older version (no identity), or naming another process's start time.
    for recorded in ({"pid": bystander.pid},
                     {"pid": bystander.pid, "process": {"start_time": 1, "cmdline": process_identity(bystander.pid)["cmdline"]}}):
        state.write_text(json.dumps(recorded))
        assert stop_all(tmp_path) == 0
        assert not state.exists()  # treated as gone
        assert never_signalled(bystander)

        state.write_text(json.dumps(recorded))
        assert emulator_main(["stop", "--state-dir", str(directory), "--timeout", "1"]) == 0
        assert not state.exists()
        assert never_signalled(bystander)


def test_a_started_demo_tenant_is_stopped_and_a_recycled_pid_is_left_alone(tmp_path, bystander):
    endpoint = ensure_demo_tenant(SPEC, tenant_id=TENANT, client_id=APP, client_secret="first", root=tmp_path)
    state_file = state_dir(tmp_path) / "state.json"
    state = json.loads(state_file.read_text())
    assert state["pid"] == endpoint.pid and state["process"] == process_identity(endpoint.pid)
    assert answers(endpoint)
    try:
        # The same tenant is reused while it runs.
        assert ensure_demo_tenant(SPEC, tenant_id=TENANT, client_id=APP, client_secret="first",
                                  root=tmp_path).pid == endpoint.pid

        # The emulator answers, but the state file's pid is now another program's: a sync that needs
        # another app registration (a restart) must start a new tenant and signal nobody.
        state_file.write_text(json.dumps({**state, "pid": bystander.pid}))
        second = ensure_demo_tenant(SPEC, tenant_id=TENANT, client_id=APP, client_secret="second", root=tmp_path)
        assert never_signalled(bystander)
        assert second.pid not in (endpoint.pid, bystander.pid) and answers(second)
        assert process_identity(endpoint.pid) is not None  # not ours to stop any more: left running

        assert stop_all(tmp_path) == 1
        assert gone(second.pid) and not state_file.exists()
        assert never_signalled(bystander)
    finally:
        signal_recorded_process(endpoint.pid, state["process"])
        assert gone(endpoint.pid)


def test_the_emulator_stop_command_stops_the_emulator_it_recorded(tmp_path):
    env_dir = tmp_path / "state"
    process = subprocess.Popen([sys.executable, "-m", "entra_pipeline.emulator", "serve", "--users", "30",
                                "--groups", "20", "--no-workday", "--state-dir", str(env_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if (env_dir / "state.json").exists():
                break
            time.sleep(0.05)
        state = json.loads((env_dir / "state.json").read_text())
        assert state["pid"] == process.pid and state["process"] == process_identity(process.pid)
        assert emulator_main(["stop", "--state-dir", str(env_dir)]) == 0
        assert process.wait(timeout=10) == 0
        assert not (env_dir / "state.json").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_standalone_emulator_prints_a_source_that_syncs_as_pasted(tmp_path, monkeypatch):
    """`make emulator` prints an integration's source; pasted into an integrations file, it syncs."""
    import yaml

    from entra_pipeline.emulator.population import generate_directory

    from tests.support.integrations import write_config
    from tests.support.runs import Sync, failure_messages

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "entra_pipeline.emulator", "serve", "--users", "40", "--groups",
                             "18", "--seed", "3", "--state-dir", str(tmp_path / "state"), "--idle-timeout", "120"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:  # ends at the process's end, should it fail
            lines.append(line.rstrip("\n"))
            if line.startswith("Stop with"):
                break
        start = next(i for i, line in enumerate(lines) if line.startswith("An integration's source"))
        source = yaml.safe_load("\n".join(line[4:] for line in lines[start + 1:-1]))
        assert source["graph_base_url"] == source["authority_host"] and not source["graph_base_url"].endswith("/v1.0")
        monkeypatch.setenv(source["client_secret_env"], "demo-client-secret")
        config = write_config(tmp_path / "integrations.yaml", {"key": "pasted", "title": "Pasted", "source": source})
        result = Sync(config, tmp_path / "warehouse.duckdb").run("pasted")
        assert result.success, failure_messages(result)
        directory = generate_directory(users=40, groups=18, seed=3)
        assert {r[0] for r in Sync(config, tmp_path / "warehouse.duckdb").query("SELECT source_id FROM contacts")} == {
            u["id"] for u in directory.users if u["mail"] and u["accountEnabled"] and u["userType"] != "Guest"}
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
