"""A sync killed mid-run never blocks the next one, and several first syncs on a new Dagster
instance all start: real `python -m entra_pipeline sync` processes on a persistent DAGSTER_HOME
(the project's dagster-instance.yaml, warehouse pool limit 1), against the emulator over HTTPS."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from conftest import SECRET, SECRET_ENV, Sync, integration, write_config
from entra_pipeline.defs.resources import WAREHOUSE_POOL
from entra_pipeline.emulator.faults import FaultProfile
from entra_pipeline.reliability import snapshot

ROOT = Path(__file__).resolve().parent.parent
KEYS = ["alpha", "beta", "gamma", "delta"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A new instance directory as `make setup` makes it; this test process uses it too."""
    directory = tmp_path / "dagster_home"
    directory.mkdir()
    shutil.copy(ROOT / "dagster-instance.yaml", directory / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(directory))
    return directory


@pytest.fixture
def env(tmp_path, emulator, home):
    config = write_config(tmp_path / "integrations.yaml", *(integration(key, emulator) for key in KEYS))
    return {**os.environ, "DAGSTER_HOME": str(home), "ENTRA_PIPELINE_CONFIG": str(config),
            "ENTRA_PIPELINE_WAREHOUSE": str(tmp_path / "warehouse.duckdb"), SECRET_ENV: SECRET}


def sync_command(*keys: str) -> list[str]:
    return [sys.executable, "-m", "entra_pipeline", "sync", *keys]


def wait_until(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {what}")


def pool_holders(instance: dg.DagsterInstance) -> set[str]:
    return {slot.run_id for slot in instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots}


def instance_when_ready(home: Path) -> dg.DagsterInstance:
    """The instance, once a sync process has created its storage (the test must not race it)."""
    databases = [home / "history" / "runs.db", home / "history" / "runs" / "index.db", home / "schedules" / "schedules.db"]
    wait_until(lambda: all(path.exists() for path in databases), 60, "the sync created the instance")
    time.sleep(1)
    return dg.DagsterInstance.get()


def test_a_killed_sync_does_not_block_the_next(tmp_path, emulator, env, home, secret_env):
    # Every Graph request takes 3 s: the sync is still in its first step, holding the pool, when killed.
    emulator.faults.profile = FaultProfile(seed=1, slow=1.0, slow_seconds=3)
    killed = subprocess.Popen(sync_command("alpha"), env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        instance = instance_when_ready(home)
        run_id = wait_until(lambda: next(iter(pool_holders(instance)), None), 120, "the sync claimed the pool")
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate()
    emulator.faults.clear()
    run = instance.get_run_by_id(run_id)
    assert run.status == dg.DagsterRunStatus.STARTED and pool_holders(instance) == {run_id}

    started = time.monotonic()
    proc = subprocess.run(sync_command("alpha"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert f"sync alpha: recovered run {run_id} of alpha (its process {killed.pid} is gone); its warehouse slot " \
           "is free again" in lines
    assert any(line.startswith("sync alpha: ok in ") for line in lines)
    assert seconds < 120
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert run.tags["entra-pipeline/pid"] == str(killed.pid)
    assert pool_holders(instance) == set()
    runs = instance.get_runs()
    assert sorted(r.status.value for r in runs) == ["FAILURE", "SUCCESS"]

    clean = Sync(Path(env["ENTRA_PIPELINE_CONFIG"]), tmp_path / "clean.duckdb")
    assert clean.run("alpha").success
    assert snapshot(Path(env["ENTRA_PIPELINE_WAREHOUSE"])) == snapshot(clean.warehouse)


def test_four_first_syncs_on_a_new_instance_all_succeed(env, home):
    procs = [subprocess.Popen(sync_command(key), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for key in KEYS]
    outcomes = [(proc.wait(timeout=600), *proc.communicate()) for proc in procs]
    assert [code for code, _, _ in outcomes] == [0] * len(KEYS), [err[-3000:] for code, _, err in outcomes if code]
    for key, (_, out, err) in zip(KEYS, outcomes):
        assert f"sync {key}: ok in " in out
        assert "alembic_version" not in err and "Traceback" not in err
    with dg.DagsterInstance.get() as instance:
        assert sorted(r.tags["integration"] for r in instance.get_runs() if r.is_success) == sorted(KEYS)


def live_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> str:
    """A run recorded as started by another process, holding the warehouse pool's one slot."""
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="entra_sync", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                   tags={"integration": "elsewhere", **tags}))
    instance.event_log_storage.initialize_concurrency_limit_to_default(WAREHOUSE_POOL)
    assert instance.event_log_storage.claim_concurrency_slot(WAREHOUSE_POOL, run_id, "raw_graph_users").is_claimed
    return run_id


def own_process_tags() -> dict[str, str]:
    """What a sync records of its process (host, pid, start time: field 22 of /proc/PID/stat), for this one."""
    start = Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19]
    return {"entra-pipeline/host": socket.gethostname(), "entra-pipeline/pid": str(os.getpid()),
            "entra-pipeline/pid_start": start}


def test_a_live_runs_slot_is_waited_for_not_taken_and_sigterm_stops_the_wait(env, home):
    instance = dg.DagsterInstance.get()
    # This test's own process is the live run's process.
    holder = live_run(instance, own_process_tags())
    proc = subprocess.Popen(sync_command("alpha"), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(15)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    finally:
        proc.kill()
    out, err = proc.communicate()
    assert code == -signal.SIGTERM, out + err
    assert out.splitlines() == [
        "sync alpha: running",
        f"sync alpha: waiting for run {holder} (integration elsewhere) to finish writing the warehouse"]
    assert instance.get_run_by_id(holder).status == dg.DagsterRunStatus.STARTED
    assert pool_holders(instance) == {holder}
    # No run was started: the sync waited before creating one.
    assert [r.run_id for r in instance.get_runs()] == [holder]


def test_a_recycled_pid_does_not_keep_a_dead_run_alive(home):
    from entra_pipeline.instance import open_instance, process_tags, reclaim_dead_runs

    instance = open_instance()
    tags = process_tags()
    # The same pid as this process, but a process that started at another moment: not the run's.
    recycled = live_run(instance, {**tags, "entra-pipeline/pid_start": str(int(tags["entra-pipeline/pid_start"]) - 1)})
    recovered = reclaim_dead_runs(instance, WAREHOUSE_POOL)
    assert [(r.run_id, r.pid) for r in recovered] == [(recycled, os.getpid())]
    assert instance.get_run_by_id(recycled).status == dg.DagsterRunStatus.FAILURE
    assert pool_holders(instance) == set()
    # This process itself is alive: its run keeps the slot.
    live = live_run(instance, tags)
    assert reclaim_dead_runs(instance, WAREHOUSE_POOL) == []
    assert pool_holders(instance) == {live}


WAIT_INSIDE_RUN = """
import sys, uuid
from entra_pipeline.cli import QUIET
from entra_pipeline.definitions import SYNC_JOB, build_defs
from entra_pipeline.defs.resources import WAREHOUSE_POOL
from entra_pipeline.instance import PoolWatch, open_instance
instance = open_instance()
run_id = str(uuid.uuid4())
print(run_id, flush=True)
job = build_defs().resolve_job_def(SYNC_JOB)
with PoolWatch(instance, WAREHOUSE_POOL, run_id, lambda line: print(line, flush=True), lambda s: f"stopped {s}"):
    job.execute_in_process(partition_key="alpha", instance=instance, raise_on_error=False, run_id=run_id,
                           run_config=QUIET)
"""


def test_sigterm_ends_a_run_waiting_inside_dagster_for_the_pool(env, home):
    """A run already started waits between steps in Dagster's executor, which only notes a SIGTERM;
    the watch cancels the waiting run and ends the process."""
    from entra_pipeline.instance import open_instance, process_tags

    instance = open_instance()
    holder = live_run(instance, process_tags())
    proc = subprocess.Popen([sys.executable, "-c", WAIT_INSIDE_RUN], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        run_id = proc.stdout.readline().strip()
        assert proc.stdout.readline().strip() == \
            f"waiting for run {holder} (integration elsewhere) to finish writing the warehouse"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    finally:
        proc.kill()
    out, err = proc.communicate()
    assert code == 128 + signal.SIGTERM, out + err
    assert out.splitlines() == [f"stopped {int(signal.SIGTERM)}"]
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.CANCELED
    assert pool_holders(instance) == {holder}
    assert [p.run_id for p in instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).pending_steps] \
        == [holder]


def test_the_daemons_sensor_frees_the_pool_of_ui_runs_whose_worker_died(home):
    """Runs launched from the UI carry no tags of ours: their worker's pid is in their first engine
    event ("Started process for run (pid: N)"), which the sensor checks."""
    from dagster._core.events import EngineEventData

    from entra_pipeline.defs.schedules import build_reclaim_sensor

    instance = dg.DagsterInstance.get()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead, live = live_run(instance, {}), str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="entra_sync", run_id=live, status=dg.DagsterRunStatus.STARTED,
                                   tags={"integration": "also_elsewhere"}))
    for run_id, pid in ((dead, gone.pid), (live, os.getpid())):
        instance.report_engine_event(f"Started process for run (pid: {pid}).", instance.get_run_by_id(run_id),
                                     EngineEventData.in_process(pid))
    # A UI run waits for the slot behind the dead one.
    assert not instance.event_log_storage.claim_concurrency_slot(WAREHOUSE_POOL, live, "raw_graph_users").is_claimed

    result = build_reclaim_sensor()(dg.build_sensor_context(instance=instance))
    assert result.skip_message == (f"recovered run {dead} of elsewhere (its process {gone.pid} is gone); "
                                   "its warehouse slot is free again")
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED
    # The waiting run is handed the slot.
    assert instance.event_log_storage.claim_concurrency_slot(WAREHOUSE_POOL, live, "raw_graph_users").is_claimed
    assert build_reclaim_sensor()(dg.build_sensor_context(instance=instance)).skip_message == \
        "no run whose process died holds the warehouse pool"
    assert pool_holders(instance) == {live}
