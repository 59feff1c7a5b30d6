"""The Dagster instance at $DAGSTER_HOME, as the CLI and the UI share it.

Two kinds of housekeeping no Dagster daemon does for runs started by ``python -m entra_pipeline sync``:

- a brand-new instance directory is set up once, under an exclusive file lock, so that several
  syncs started together do not race Dagster's storage creation;
- a run whose process died (SIGKILL, OOM kill, reboot) while it held or waited for the warehouse
  pool is marked failed and its pool slots are freed, so that it never blocks the next run.

A run's process is identified by the tags the CLI gives it (host, pid and the pid's start time, so
that a recycled pid is not mistaken for it), or for runs launched by the UI's run launcher by the
pid in the run's first engine event, checked against when that process started.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import dagster as dg

from entra_pipeline.config import ConfigError
from entra_pipeline.process import process_start_ticks

RUN_HOST_TAG = "entra-pipeline/host"
RUN_PID_TAG = "entra-pipeline/pid"
# Field 22 of /proc/PID/stat: clock ticks after boot when the process started.
RUN_PID_START_TAG = "entra-pipeline/pid_start"

# Written (holding the Dagster version) once every storage exists: later processes skip the lock.
READY_FILE = ".entra-pipeline-instance-ready"
LOCK_FILE = ".entra-pipeline-instance.lock"

# Statuses in which a run may hold or wait for pool slots while its process runs.
LIVE_STATUSES = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
                 dg.DagsterRunStatus.CANCELING]
# A process's start time is known to the clock tick; the engine event naming it is written after it starts.
START_TOLERANCE_SECONDS = 2.0


# -- processes -------------------------------------------------------------------------------------

def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def process_tags() -> dict[str, str]:
    """Tags naming this process, for a run it executes."""
    pid = os.getpid()
    tags = {RUN_HOST_TAG: socket.gethostname(), RUN_PID_TAG: str(pid)}
    start = process_start_ticks(pid)
    if start is not None:
        tags[RUN_PID_START_TAG] = str(start)
    return tags


@dataclass(frozen=True)
class RunProcess:
    """The process that executes a run. ``start_ticks`` (from the run's tags) must match exactly;
    ``started_by`` (a Unix time from an engine event) is the latest time the process may have started."""

    pid: int
    start_ticks: int | None = None
    started_by: float | None = None

    def is_gone(self) -> bool:
        ticks = process_start_ticks(self.pid)
        if ticks is None:
            # Without /proc (not Linux) only the pid itself can be asked about.
            return not _pid_exists(self.pid) if not Path("/proc/self/stat").exists() else True
        if self.start_ticks is not None:
            return ticks != self.start_ticks
        boot = _boot_time()
        if self.started_by is not None and boot is not None:
            # A process that started after the run's worker was reported running is another program.
            return boot + ticks / os.sysconf("SC_CLK_TCK") > self.started_by + START_TOLERANCE_SECONDS
        return False


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_process(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunProcess | None:
    """The process executing ``run`` on this host, or None when that cannot be told here (another
    host, or a run that never said which process runs it)."""
    tags = run.tags
    if RUN_PID_TAG in tags:
        if tags.get(RUN_HOST_TAG) != socket.gethostname():
            return None
        try:
            pid = int(tags[RUN_PID_TAG])
            start = int(tags[RUN_PID_START_TAG]) if RUN_PID_START_TAG in tags else None
        except ValueError:
            return None
        return RunProcess(pid, start_ticks=start)
    # Runs launched from the UI: the default launcher starts the run worker on this host and logs
    # "Started process for run (pid: N)" first; other launchers run workers elsewhere.
    if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return None
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        pid = data.metadata.get("pid") if data else None
        if pid is not None:
            try:
                return RunProcess(int(pid.value), started_by=entry.timestamp)
            except (TypeError, ValueError):
                return None
    return None


# -- instance set-up ---------------------------------------------------------------------------------

def open_instance() -> dg.DagsterInstance:
    """The instance at $DAGSTER_HOME (every storage created, once, under a file lock when the
    directory is new), or an ephemeral one when DAGSTER_HOME is not set."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return dg.DagsterInstance.ephemeral()
    directory = Path(home)
    if not directory.is_dir():
        raise ConfigError(f"DAGSTER_HOME {home}: not a directory (create it, or run make setup)")
    version = dg.__version__
    ready = directory / READY_FILE
    if _read(ready) == version:
        return dg.DagsterInstance.get()
    with open(directory / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _read(ready) == version:
                return dg.DagsterInstance.get()
            # Opening the instance creates (and stamps with their schema version) the run, event log
            # index and schedule databases; reading each makes sure none is left for later.
            instance = dg.DagsterInstance.get()
            instance.get_runs(limit=1)
            instance.event_log_storage.get_concurrency_keys()
            instance.all_instigator_state()
            partial = ready.with_suffix(".partial")
            partial.write_text(version)
            partial.replace(ready)
            return instance
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


# -- dead runs and the warehouse pool -----------------------------------------------------------------

@dataclass(frozen=True)
class Recovered:
    """A run freed from the pool: marked failed because its process ``pid`` is gone, or (``pid``
    None) already finished yet still holding slots."""

    run_id: str
    integration: str
    pid: int | None

    def line(self) -> str:
        if self.pid is None:
            return f"freed the warehouse slot still held by finished run {self.run_id} of {self.integration}"
        return (f"recovered run {self.run_id} of {self.integration} (its process {self.pid} is gone); "
                "its warehouse slot is free again")


def _integration(run: dg.DagsterRun | None) -> str:
    if run is None:
        return "an unknown integration"
    return run.tags.get("integration") or run.tags.get("dagster/partition") or run.job_name


def reclaim_dead_runs(instance: dg.DagsterInstance, pool: str) -> list[Recovered]:
    """Mark failed every unfinished run of this host whose process is gone, and free the pool slots
    of those runs and of finished runs still holding some. Live runs and runs of other hosts are
    left alone."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    recovered: list[Recovered] = []
    in_pool = set(_pool_run_ids(instance, pool))
    records = instance.get_run_records(dg.RunsFilter(statuses=LIVE_STATUSES))
    for record in records:
        run = record.dagster_run
        process = run_process(instance, run)
        if process is None or not process.is_gone():
            continue
        # Runs the CLI never got to start (NOT_STARTED) are failed as well: nothing else finishes them.
        instance.report_run_failed(
            run, f"The process running this run ({process.pid}) is gone (killed, out of memory or rebooted); "
                 "marked failed by entra-pipeline so the warehouse pool is free again.")
        storage.free_concurrency_slots_for_run(run.run_id)
        recovered.append(Recovered(run.run_id, _integration(run), process.pid))
        in_pool.discard(run.run_id)
    for run_id in in_pool:
        run = instance.get_run_by_id(run_id)
        # A run deleted from the instance, or finished, uses the warehouse no more.
        if run is None or run.is_finished:
            storage.free_concurrency_slots_for_run(run_id)
            recovered.append(Recovered(run_id, _integration(run), None))
    return recovered


def _pool_run_ids(instance: dg.DagsterInstance, pool: str) -> list[str]:
    info = instance.event_log_storage.get_concurrency_info(pool)
    return list(dict.fromkeys([slot.run_id for slot in info.claimed_slots]
                              + [step.run_id for step in info.pending_steps]))


def pool_holders(instance: dg.DagsterInstance, pool: str, exclude: str | None = None) -> list[str]:
    """Runs (other than ``exclude``) whose steps hold the pool's slots, or have been handed one."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    holders = [slot.run_id for slot in info.claimed_slots]
    holders += [step.run_id for step in info.pending_steps if step.assigned_timestamp is not None]
    return [run_id for run_id in dict.fromkeys(holders) if run_id != exclude]


def pool_is_full(instance: dg.DagsterInstance, pool: str) -> bool:
    info = instance.event_log_storage.get_concurrency_info(pool)
    if info.limit is None:
        return False
    taken = {(s.run_id, s.step_key) for s in info.claimed_slots}
    taken |= {(p.run_id, p.step_key) for p in info.pending_steps if p.assigned_timestamp is not None}
    return len(taken) >= info.limit


def waiting_line(instance: dg.DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    return f"waiting for run {run_id} (integration {_integration(run)}) to finish writing the warehouse"


def wait_for_pool(instance: dg.DagsterInstance, pool: str, say: Callable[[str], None],
                  poll_seconds: float = 1.0) -> None:
    """Return once the pool has a free slot: dead runs' slots are reclaimed, and while live runs
    hold it each is named once."""
    named: set[str] = set()
    while True:
        for recovered in reclaim_dead_runs(instance, pool):
            say(recovered.line())
        if not pool_is_full(instance, pool):
            return
        for run_id in pool_holders(instance, pool):
            if run_id not in named:
                named.add(run_id)
                say(waiting_line(instance, run_id))
        time.sleep(poll_seconds)


class PoolWatch:
    """While run ``run_id`` executes in this process (``with PoolWatch(...)``): when it waits for a
    pool slot, names the run holding it and reclaims runs that die meanwhile; and on SIGTERM or
    SIGINT while it only waits, cancels it and ends this process.

    Dagster's executor turns both signals into a flag it reads only inside a step, so a run waiting
    between steps would otherwise ignore them. A step already running is interrupted by Dagster itself."""

    def __init__(self, instance: dg.DagsterInstance, pool: str, run_id: str, say: Callable[[str], None],
                 stopped: Callable[[int], str], poll_seconds: float = 1.0) -> None:
        self.instance, self.pool, self.run_id, self.say, self.stopped = instance, pool, run_id, say, stopped
        self.poll_seconds = poll_seconds
        self._done = threading.Event()
        self._named: set[str] = set()

    def __enter__(self) -> "PoolWatch":
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        # Python writes the number of each signal it handles to this socket, whoever's handler runs.
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="entra-pipeline pool watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        signal.set_wakeup_fd(self._previous_fd)
        self._reader.close()
        self._writer.close()

    def _waiting(self) -> bool:
        info = self.instance.event_log_storage.get_concurrency_info(self.pool)
        return (any(step.run_id == self.run_id for step in info.pending_steps)
                and not any(slot.run_id == self.run_id for slot in info.claimed_slots))

    def _watch(self) -> None:
        signum = 0
        while not self._done.is_set():
            ready, _, _ = select.select([self._reader], [], [], self.poll_seconds)
            if ready:
                for byte in self._reader.recv(64):
                    if byte in (signal.SIGTERM, signal.SIGINT):
                        signum = byte
            if self._done.is_set():
                return
            try:
                waiting = self._waiting()
                if waiting and signum:
                    self._stop(signum)
                if waiting:
                    for recovered in reclaim_dead_runs(self.instance, self.pool):
                        self.say(recovered.line())
                    for run_id in pool_holders(self.instance, self.pool, exclude=self.run_id):
                        if run_id not in self._named:
                            self._named.add(run_id)
                            self.say(waiting_line(self.instance, run_id))
            except Exception:  # noqa: BLE001 - the watch must never break the run it watches
                continue

    def _stop(self, signum: int) -> None:
        run = self.instance.get_run_by_id(self.run_id)
        if run is not None and not run.is_finished:
            self.instance.report_run_canceled(
                run, f"Stopped by {signal.Signals(signum).name} while waiting for the warehouse pool.")
        self.say(self.stopped(signum))
        # Dagster's executor may queue its claim again meanwhile: freed last. Should it still slip in
        # before the exit, the next sync frees the slots of this canceled run.
        self.instance.event_log_storage.free_concurrency_slots_for_run(self.run_id)
        # The run waits between steps: nothing of it is writing, and each step it finished committed whole.
        os._exit(128 + signum)
