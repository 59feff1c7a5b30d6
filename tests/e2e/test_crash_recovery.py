"""A sync killed mid-run never blocks the next one, and several first syncs on a new Dagster
instance all start: real `python -m entra_pipeline sync` processes on a persistent DAGSTER_HOME
(the project's dagster-instance.yaml, warehouse pool limit 1), against the emulator over HTTPS."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from entra_pipeline.defs.resources import WAREHOUSE_POOL
from entra_pipeline.measure.reliability import snapshot

from tests.support.integrations import integration, write_config
from tests.support.runs import Sync
from tests.support.tenant import SECRET, SECRET_ENV


ROOT = Path(__file__).resolve().parents[2]
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


class HeldUsers:
    """The emulator holds the first users page a sync asks for until ``release``: a run that asked
    is then inside a step, whatever the machine's speed (a slow machine once let a merely slow run
    finish before the test's signal came)."""

    def __init__(self, emulator) -> None:
        self.emulator, self.arrived, self._release = emulator, threading.Event(), threading.Event()

    def __enter__(self) -> "HeldUsers":
        self.emulator.faults.rewrite("/v1.0/users/delta", self._hold)
        return self

    def _hold(self, body):
        self.arrived.set()
        self._release.wait(120)
        return body

    def asked(self) -> None:
        wait_until(self.arrived.is_set, 120, "the sync asked for its users")

    def release(self) -> None:
        self._release.set()

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.emulator.faults.clear()


def pool_holders(instance: dg.DagsterInstance) -> set[str]:
    return {slot.run_id for slot in instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots}


def instance_when_ready(home: Path) -> dg.DagsterInstance:
    """The instance, once a sync process has created its storage (the test must not race it): the
    ready file is written after every storage exists."""
    from entra_pipeline.instance import READY_FILE

    wait_until(lambda: (home / READY_FILE).exists(), 60, "the sync created the instance")
    return dg.DagsterInstance.get()


class Lines:
    """A process's output read line by line on a thread of its own, so that waiting for a line has a deadline."""

    def __init__(self, stream) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next(self, seconds: float) -> str:
        try:
            line = self._queue.get(timeout=max(seconds, 0))
        except queue.Empty:
            raise AssertionError(f"no line within {seconds:.0f} s; so far: {self.seen}") from None
        if line is None:
            raise AssertionError(f"the output ended; it was: {self.seen}")
        self.seen.append(line)
        return line

    def until(self, wanted: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.next(deadline - time.monotonic()) != wanted:
            pass

    def rest(self, seconds: float) -> list[str]:
        """Every line seen, once the output has ended."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.next(deadline - time.monotonic())
            except AssertionError:
                if time.monotonic() >= deadline:
                    raise
                return self.seen


def waiting(holder: str, integration: str = "elsewhere") -> str:
    return (f"waiting for run {holder} (integration {integration}) to finish writing the warehouse; if that run's "
            f"process is gone for good (another machine or container), free it with: "
            f"python -m entra_pipeline reclaim {holder}")


def test_a_killed_sync_does_not_block_the_next(tmp_path, emulator, env, home, secret_env):
    # The sync is in its first step, holding the pool, when killed.
    with HeldUsers(emulator) as held:
        killed = subprocess.Popen(sync_command("alpha"), env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            instance = instance_when_ready(home)
            held.asked()
            run_id = wait_until(lambda: next(iter(pool_holders(instance)), None), 120, "the sync claimed the pool")
        finally:
            killed.send_signal(signal.SIGKILL)
            killed.communicate()
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
    # The dead run's lock file went with it, the next sync's when it ended.
    assert list((home / "run-locks").iterdir()) == []
    runs = instance.get_runs()
    # The killed source run failed; the next sync's source run and contacts run succeeded.
    assert sorted(r.status.value for r in runs) == ["FAILURE", "SUCCESS", "SUCCESS"]

    clean = Sync(Path(env["ENTRA_PIPELINE_CONFIG"]), tmp_path / "clean.duckdb")
    assert clean.run("alpha").success
    assert snapshot(Path(env["ENTRA_PIPELINE_WAREHOUSE"])) == snapshot(clean.warehouse)


def test_sigterm_during_a_step_stops_the_sync_and_starts_no_other_integration(emulator, env, home, secret_env):
    # Alpha is in its first step when the signal comes.
    with HeldUsers(emulator) as held:
        proc = subprocess.Popen(sync_command("alpha", "beta"), env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            instance = instance_when_ready(home)
            held.asked()
            run_id = wait_until(lambda: next(iter(pool_holders(instance)), None), 120, "the sync claimed the pool")
            proc.send_signal(signal.SIGTERM)
            held.release()
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert "sync alpha: running" in out.splitlines() and "sync beta: running" not in out
    assert err.splitlines()[-1] == "sync: stopped by SIGTERM; the other integrations were not started"
    assert instance.get_run_by_id(run_id).status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
    assert [r.tags["integration"] for r in instance.get_runs()] == ["alpha"]
    assert pool_holders(instance) == set()


def test_four_first_syncs_on_a_new_instance_all_succeed(env, home):
    procs = [subprocess.Popen(sync_command(key), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for key in KEYS]
    outcomes = [(proc.wait(timeout=600), *proc.communicate()) for proc in procs]
    assert [code for code, _, _ in outcomes] == [0] * len(KEYS), [err[-3000:] for code, _, err in outcomes if code]
    for key, (_, out, err) in zip(KEYS, outcomes):
        assert f"sync {key}: ok in " in out
        assert "alembic_version" not in err and "Traceback" not in err
    with dg.DagsterInstance.get() as instance:
        # Each sync: its source run and its contacts run.
        assert sorted(r.tags["integration"] for r in instance.get_runs() if r.is_success) == sorted(KEYS * 2)


def live_run(instance: dg.DagsterInstance, tags: dict[str, str], run_id: str | None = None) -> str:
    """A run recorded as started by another process, holding the warehouse pool's one slot."""
    run_id = run_id or str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="entra_sync", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                   tags={"integration": "elsewhere", **tags}))
    instance.event_log_storage.initialize_concurrency_limit_to_default(WAREHOUSE_POOL)
    assert instance.event_log_storage.claim_concurrency_slot(WAREHOUSE_POOL, run_id, "raw_graph_users").is_claimed
    return run_id


def own_process_tags(run_id: str) -> dict[str, str]:
    """What a sync records of its process (run, host, pid, start time: field 22 of /proc/PID/stat), for this one."""
    start = Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19]
    return {"entra-pipeline/run_id": run_id, "entra-pipeline/host": socket.gethostname(),
            "entra-pipeline/pid": str(os.getpid()), "entra-pipeline/pid_start": start}


def held_run(instance: dg.DagsterInstance, tags=lambda run_id: {}) -> str:
    """A live run holding the pool's slot: this test's process holds its run lock, as a run's process
    does; ``tags`` makes the run's tags from its id."""
    from entra_pipeline.run_locks import hold_run_lock

    run_id = str(uuid.uuid4())
    assert hold_run_lock(instance, run_id)
    return live_run(instance, tags(run_id), run_id)


def process_state(pid: int) -> str:
    """The signal state and threads of a process, from /proc (for a test that finds it hanging)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        threads = sorted(Path(f"/proc/{pid}/task").iterdir())
        names = [Path(t, "comm").read_text().strip() + ":" + Path(t, "status").read_text().split("SigBlk:")[1].split()[0]
                 for t in threads]
    except OSError as exc:
        return f"({exc})"
    wanted = ("State", "SigQ", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")
    return "; ".join(line for line in status if line.split(":")[0] in wanted) + f"; threads (name:blocked) {names}"


def gone_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


DIE_HOLDING_LOCK = """
import sys
from entra_pipeline.instance import open_instance
from entra_pipeline.run_locks import hold_run_lock
assert hold_run_lock(open_instance(), sys.argv[1])
"""


def died_holding_its_lock(run_id: str) -> int:
    """A process that took run ``run_id``'s lock and ended without releasing it (as a killed one does); its pid."""
    proc = subprocess.Popen([sys.executable, "-c", DIE_HOLDING_LOCK, run_id], cwd=ROOT)
    assert proc.wait(timeout=60) == 0
    return proc.pid


def test_a_live_runs_slot_is_waited_for_not_taken_and_sigterm_stops_the_wait(env, home):
    instance = dg.DagsterInstance.get()
    # This test's own process is the live run's process: it holds the run's lock, and the tags name it.
    holder = held_run(instance, own_process_tags)
    proc = subprocess.Popen(sync_command("alpha"), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        lines = Lines(proc.stdout)
        lines.until(f"sync alpha: {waiting(holder)}", 120)
        before = process_state(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 20 s after SIGTERM; before: {before}; now: {process_state(proc.pid)}; "
                                 f"output: {lines.seen}") from None
        out = lines.rest(20)
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert code == -signal.SIGTERM, "\n".join(lines.seen) + err
    assert out == ["sync alpha: running", f"sync alpha: {waiting(holder)}"]
    assert instance.get_run_by_id(holder).status == dg.DagsterRunStatus.STARTED
    assert pool_holders(instance) == {holder}
    # No run was started: the sync waited before creating one.
    assert [r.run_id for r in instance.get_runs()] == [holder]


def test_a_recycled_pid_does_not_keep_a_dead_run_alive(home):
    from entra_pipeline.instance import open_instance
    from entra_pipeline.run_locks import process_tags
    from entra_pipeline.pool import reclaim_dead_runs

    instance = open_instance()
    recycled = str(uuid.uuid4())
    tags = process_tags(recycled)
    # A run from before run locks (no lock file): the same pid as this process, but a process that
    # started at another moment: not the run's.
    live_run(instance, {**tags, "entra-pipeline/pid_start": str(int(tags["entra-pipeline/pid_start"]) - 1)},
             recycled)
    recovered = reclaim_dead_runs(instance, WAREHOUSE_POOL)
    assert [(r.run_id, r.pid) for r in recovered] == [(recycled, os.getpid())]
    assert instance.get_run_by_id(recycled).status == dg.DagsterRunStatus.FAILURE
    assert pool_holders(instance) == set()
    # This process itself is alive: its run keeps the slot.
    live = str(uuid.uuid4())
    live_run(instance, process_tags(live), live)
    assert reclaim_dead_runs(instance, WAREHOUSE_POOL) == []
    assert pool_holders(instance) == {live}


WAIT_INSIDE_RUN = """
import sys, uuid
from entra_pipeline.cli import QUIET
from entra_pipeline.definitions import SYNC_JOB, build_defs
from entra_pipeline.defs.resources import WAREHOUSE_POOL
from entra_pipeline.instance import open_instance
from entra_pipeline.pool import PoolWatch
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
    from entra_pipeline.instance import open_instance

    instance = open_instance()
    holder = held_run(instance)
    proc = subprocess.Popen([sys.executable, "-c", WAIT_INSIDE_RUN], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = Lines(proc.stdout)
        run_id = lines.next(120)
        assert lines.next(120) == waiting(holder)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        out = lines.rest(20)
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert code == 128 + signal.SIGTERM, "\n".join(lines.seen) + err
    assert out == [run_id, waiting(holder), f"stopped {int(signal.SIGTERM)}"]
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.CANCELED
    assert pool_holders(instance) == {holder}
    assert [p.run_id for p in instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).pending_steps] \
        == [holder]


def test_the_daemons_sensor_frees_the_pool_of_ui_runs_whose_worker_died(home):
    """Runs launched from the UI carry no tags of ours: their worker holds the run's lock (taken by
    the job's executor), and the sensor frees the runs whose lock nobody holds any more."""
    from entra_pipeline.defs.schedules import build_reclaim_sensor

    instance = dg.DagsterInstance.get()
    dead = live_run(instance, {})
    worker = died_holding_its_lock(dead)
    # A run that ended well: its worker left its lock file behind as it exited.
    ended = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="entra_sync", run_id=ended, status=dg.DagsterRunStatus.SUCCESS))
    died_holding_its_lock(ended)
    from entra_pipeline.run_locks import hold_run_lock

    live = str(uuid.uuid4())
    assert hold_run_lock(instance, live)
    instance.add_run(dg.DagsterRun(job_name="entra_sync", run_id=live, status=dg.DagsterRunStatus.STARTED,
                                   tags={"integration": "also_elsewhere"}))
    # A UI run waits for the slot behind the dead one.
    assert not instance.event_log_storage.claim_concurrency_slot(WAREHOUSE_POOL, live, "raw_graph_users").is_claimed

    result = build_reclaim_sensor()(dg.build_sensor_context(instance=instance))
    assert result.skip_message == (f"recovered run {dead} of elsewhere (its process {worker} is gone); "
                                   "its warehouse slot is free again")
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED
    # The dead and the ended run's lock files are gone; the live run's stays.
    assert sorted(path.name for path in (home / "run-locks").iterdir()) == [f"{live}.lock"]
    # The waiting run is handed the slot.
    assert instance.event_log_storage.claim_concurrency_slot(WAREHOUSE_POOL, live, "raw_graph_users").is_claimed
    assert build_reclaim_sensor()(dg.build_sensor_context(instance=instance)).skip_message == \
        "no run whose process died holds the warehouse pool"
    assert pool_holders(instance) == {live}


def test_a_ui_run_worker_holds_its_runs_lock_and_when_killed_its_run_is_reclaimed(emulator, env, home):
    """The job's executor takes the run's lock in the process that runs the steps (a UI or daemon run's
    worker: here `dagster job execute`, which runs the job as the run worker does)."""
    from entra_pipeline.defs.schedules import build_reclaim_sensor
    from entra_pipeline.run_locks import run_lock_path
    from entra_pipeline.pool import reclaim_dead_runs

    command = [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m", "entra_pipeline.definitions",
               "-a", "defs", "-j", "sync_entra_sources", "--tags", '{"dagster/partition": "alpha", "integration": "alpha"}']
    with HeldUsers(emulator) as held:
        worker = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            held.asked()
            instance = dg.DagsterInstance.get()
            run_id = wait_until(lambda: next(iter(pool_holders(instance)), None), 120, "the run claimed the pool")
            # Alive, with no tags of ours: its lock keeps it.
            assert not any(tag.startswith("entra-pipeline/") for tag in instance.get_run_by_id(run_id).tags)
            assert reclaim_dead_runs(instance, WAREHOUSE_POOL) == []
            assert run_lock_path(instance, run_id).read_text().split()[0] == str(worker.pid)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
    result = build_reclaim_sensor()(dg.build_sensor_context(instance=instance))
    assert result.skip_message == (f"recovered run {run_id} of alpha (its process {worker.pid} is gone); "
                                   "its warehouse slot is free again")
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert pool_holders(instance) == set()


def test_a_re_executed_run_is_not_judged_by_its_parents_process(home):
    """A re-execution (UI, run-retry daemon) copies its parent's tags, pid included; the parent's
    process being gone says nothing of the new run's."""
    from entra_pipeline.defs.schedules import build_reclaim_sensor
    from entra_pipeline.instance import open_instance
    from entra_pipeline.pool import reclaim_dead_runs

    instance = open_instance()
    parent = str(uuid.uuid4())
    # The parent: a CLI run whose process is gone (a pid no process has now, same host).
    parent_tags = {"integration": "alpha", "entra-pipeline/run_id": parent, "entra-pipeline/host": socket.gethostname(),
                   "entra-pipeline/pid": str(gone_pid()), "entra-pipeline/pid_start": "1"}
    # Re-executed: alive (its worker holds its lock), and another still before its worker took the lock.
    alive = held_run(instance, lambda run_id: dict(parent_tags))
    starting = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="entra_sync", run_id=starting, status=dg.DagsterRunStatus.STARTING,
                                   tags=dict(parent_tags)))

    assert reclaim_dead_runs(instance, WAREHOUSE_POOL) == []
    assert build_reclaim_sensor()(dg.build_sensor_context(instance=instance)).skip_message == \
        "no run whose process died holds the warehouse pool"
    assert instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED
    assert instance.get_run_by_id(starting).status == dg.DagsterRunStatus.STARTING
    assert pool_holders(instance) == {alive}


def test_a_live_run_whose_pid_cannot_be_seen_is_not_reclaimed(home):
    """A run in another pid namespace or container names a pid this process cannot see; its lock,
    held, is what counts."""
    from entra_pipeline.instance import open_instance
    from entra_pipeline.pool import reclaim_dead_runs

    instance = open_instance()
    unseen = gone_pid()
    live = held_run(instance, lambda run_id: {"entra-pipeline/run_id": run_id,
                                              "entra-pipeline/host": socket.gethostname(),
                                              "entra-pipeline/pid": str(unseen), "entra-pipeline/pid_start": "1"})
    assert reclaim_dead_runs(instance, WAREHOUSE_POOL) == []
    assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED
    assert pool_holders(instance) == {live}


def reclaim_command(run_id: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "entra_pipeline", "reclaim", run_id, *options], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_reclaim_refuses_a_live_run_and_frees_one_whose_container_is_gone(home):
    from entra_pipeline.instance import open_instance
    from entra_pipeline.pool import reclaim_dead_runs

    instance = open_instance()
    live = held_run(instance)
    refused = reclaim_command(live)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.splitlines() == [
        f"reclaim: run {live} of elsewhere is alive (its process holds {home / 'run-locks' / (live + '.lock')}); "
        "refused: stop that run instead (Dagster UI: Terminate)"]
    assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED
    assert pool_holders(instance) == {live}

    # A run of a container since re-created (another host name), from before run locks: no sync can
    # tell whether it lives, so none reclaims it; the operator does.
    instance.event_log_storage.free_concurrency_slots_for_run(live)
    instance.report_run_failed(instance.get_run_by_id(live), "ended for this test")
    lost = str(uuid.uuid4())
    live_run(instance, {"entra-pipeline/run_id": lost, "entra-pipeline/host": "container-gone",
                        "entra-pipeline/pid": "1"}, lost)
    assert reclaim_dead_runs(instance, WAREHOUSE_POOL) == []
    freed = reclaim_command(lost)
    assert (freed.returncode, freed.stderr) == (0, "")
    assert freed.stdout.splitlines() == [
        f"reclaim: run {lost} of elsewhere marked failed; its warehouse slot is free again"]
    assert instance.get_run_by_id(lost).status == dg.DagsterRunStatus.FAILURE
    assert pool_holders(instance) == set()
    unknown = reclaim_command("no-such-run")
    assert (unknown.returncode, unknown.stderr.splitlines()) == (
        1, [f"reclaim: no run 'no-such-run' in the Dagster instance at {home}"])

    # A run with neither a lock file nor tags of ours (a run from before run locks) may be alive:
    # reclaim frees it only when the operator says so with --force.
    untagged = live_run(instance, {})
    refused = reclaim_command(untagged)
    assert (refused.returncode, refused.stderr.splitlines()) == (1, [
        f"reclaim: run {untagged} of elsewhere has no run lock and no process recorded, so nothing tells whether it "
        "is alive; if you know its process is gone, add --force"])
    assert instance.get_run_by_id(untagged).status == dg.DagsterRunStatus.STARTED
    forced = reclaim_command(untagged, "--force")
    assert (forced.returncode, forced.stdout.splitlines()) == (0, [
        f"reclaim: run {untagged} of elsewhere marked failed; its warehouse slot is free again"])
    assert instance.get_run_by_id(untagged).status == dg.DagsterRunStatus.FAILURE
    assert pool_holders(instance) == set()


def test_a_run_whose_lock_cannot_be_opened_counts_as_alive(home):
    """A lock file this process cannot open (here a directory in its place; in practice another
    user's file) tells nothing: the run is left alone, and reclaim says it cannot tell."""
    from entra_pipeline.instance import open_instance
    from entra_pipeline.run_locks import run_lock_path
    from entra_pipeline.pool import reclaim_dead_runs

    instance = open_instance()
    run_id = live_run(instance, {})
    run_lock_path(instance, run_id).mkdir(parents=True)
    assert reclaim_dead_runs(instance, WAREHOUSE_POOL) == []
    refused = reclaim_command(run_id)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.splitlines() == [
        f"reclaim: cannot tell whether run {run_id} of elsewhere is alive ({run_lock_path(instance, run_id)}: "
        "Is a directory); refused: run reclaim as the user that runs the syncs"]
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
    assert pool_holders(instance) == {run_id}
