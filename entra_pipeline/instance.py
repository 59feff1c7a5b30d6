"""The Dagster instance at $DAGSTER_HOME, as the CLI and the UI share it.

Two kinds of housekeeping no Dagster daemon does for runs started by ``python -m entra_pipeline sync``:

- a brand-new instance directory is set up once, under an exclusive file lock, so that several
  syncs started together do not race Dagster's storage creation;
- a run whose process died (SIGKILL, OOM kill, reboot) while it held or waited for the warehouse
  pool is marked failed and its pool slots are freed, so that it never blocks the next run.

Whether a run's process lives is told by its run lock: every run of the sync and preview jobs holds
an exclusive lock on ``$DAGSTER_HOME/run-locks/<run_id>.lock`` while its process lives (the CLI
from before the run starts, a UI or daemon run's worker from the moment its executor starts). The
kernel drops the lock when that process ends, however it ends, whatever its host name, pid
namespace or clock: a lock file nobody holds is a dead run. Runs without a lock file are judged by
their own pid tags only where that proves the process gone; otherwise they are left alone, and the
operator frees them with ``python -m entra_pipeline reclaim RUN_ID``.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import dagster as dg

from entra_pipeline.config import ConfigError
from entra_pipeline.process import process_start_ticks

RUN_HOST_TAG = "entra-pipeline/host"
RUN_PID_TAG = "entra-pipeline/pid"
# Field 22 of /proc/PID/stat: clock ticks after boot when the process started.
RUN_PID_START_TAG = "entra-pipeline/pid_start"
# The run the pid tags were written for. A re-execution (from the UI, or the run-retry daemon) copies
# its parent's tags: its own run id differs, so the parent's process is never taken for its own.
RUN_ID_TAG = "entra-pipeline/run_id"

# Written (holding the Dagster version) once every storage exists: later processes skip the lock.
READY_FILE = ".entra-pipeline-instance-ready"
LOCK_FILE = ".entra-pipeline-instance.lock"
# One file per run, <run_id>.lock, exclusively locked by the run's process for as long as it lives.
RUN_LOCK_DIR = "run-locks"
# Dagster's run ids are UUIDs; anything else never becomes part of a path.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

# Statuses in which a run may hold or wait for pool slots while its process runs.
LIVE_STATUSES = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
                 dg.DagsterRunStatus.CANCELING]


# -- run locks ---------------------------------------------------------------------------------------

# The run locks this process holds, by run id: an open file keeps its lock until closed or the process ends.
_held: dict[str, IO[str]] = {}


def run_lock_path(instance: dg.DagsterInstance, run_id: str) -> Path | None:
    """Where run ``run_id``'s lock lives; None for an instance kept in memory (no other process sees its runs)."""
    if not instance.is_persistent or not _RUN_ID.fullmatch(run_id):
        return None
    return Path(instance.root_directory) / RUN_LOCK_DIR / f"{run_id}.lock"


def hold_run_lock(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Lock run ``run_id``'s lock file for this process, until ``release_run_lock`` or the process
    ends. True when this process holds it (again, if it already did); False when another does."""
    if run_id in _held:
        return True
    path = run_lock_path(instance, run_id)
    if path is None:
        return True
    # Only this user may lock a run's file: another could otherwise pin a dead run as alive.
    path.parent.mkdir(mode=0o700, exist_ok=True)
    label = f"{os.getpid()} {socket.gethostname()}\n"
    # Locked under a name of its own first, then linked into place: a reclaimer never finds the
    # file of a live run unlocked, not even for the moment between creating and locking it.
    partial = path.with_name(f".{run_id}.{os.getpid()}.{threading.get_ident()}.partial")
    partial.unlink(missing_ok=True)
    handle = _open_lock(partial, os.O_CREAT | os.O_EXCL)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(label)
        handle.flush()
        try:
            os.link(partial, path)
        except FileExistsError:
            # Left by an earlier process of this run that died: it is ours once nobody holds it.
            handle.close()
            handle = _open_lock(path)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
            handle.truncate(0)
            handle.write(label)
            handle.flush()
        except OSError:
            # A file system without hard links: create and lock in place.
            handle.close()
            handle = _open_lock(path, os.O_CREAT)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
    except BaseException:
        handle.close()
        raise
    finally:
        partial.unlink(missing_ok=True)
    _held[run_id] = handle
    return True


def release_run_lock(instance: dg.DagsterInstance, run_id: str) -> None:
    """Give up run ``run_id``'s lock (once its run has finished) and remove its file."""
    handle = _held.pop(run_id, None)
    if handle is None:
        return
    path = run_lock_path(instance, run_id)
    # Removed while still locked: a reclaimer that opened it just before finds the run finished.
    if path is not None:
        path.unlink(missing_ok=True)
    handle.close()


def _open_lock(path: Path, flags: int = 0) -> IO[str]:
    """A run's lock file for reading and writing, 0600, never through a symbolic link."""
    return os.fdopen(os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | flags, 0o600), "r+")


def _probe_run_lock(path: Path | None) -> tuple[str, IO[str] | None]:
    """("held", None) while a process holds the lock, ("free", the file, locked now by this process)
    when its process is gone, ("none", None) when there is no lock file, ("unknown: <why>", None)
    when it cannot be told (a file this user may not open): then the run counts as alive."""
    if path is None:
        return "none", None
    try:
        # Opened for writing: on NFS an exclusive lock needs it.
        handle = _open_lock(path)
    except FileNotFoundError:
        return "none", None
    except OSError as exc:
        return f"unknown: {exc.strerror or type(exc).__name__}", None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return "held", None
    except OSError as exc:
        handle.close()
        return f"unknown: {exc.strerror or type(exc).__name__}", None
    return "free", handle


def _lock_pid(handle: IO[str]) -> int | None:
    """The pid the lock's last holder wrote into it (for the message only)."""
    try:
        handle.seek(0)
        first = handle.read(200).split()
        return int(first[0]) if first else None
    except (OSError, ValueError):
        return None


class RunLockedExecutor(dg.Executor):
    """Dagster's in-process executor, whose process first takes the run's lock and keeps it until it
    ends (a run worker of the UI or the daemon is a process of its own, ending after its run).
    It wraps the executor ``in_process_executor`` builds, through Dagster's public Executor API."""

    def __init__(self, inner: dg.Executor) -> None:
        self._inner = inner

    @property
    def retries(self):  # noqa: ANN201 - Dagster's RetryMode
        return self._inner.retries

    @property
    def step_dependency_config(self):  # noqa: ANN201 - Dagster's StepDependencyConfig
        return self._inner.step_dependency_config

    def get_step_event_or_retry_event(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return self._inner.get_step_event_or_retry_event(*args, **kwargs)

    def execute(self, plan_context, execution_plan):  # noqa: ANN001, ANN201 - Dagster's own signature
        # False only if another process executes this very run: nothing to add to that.
        hold_run_lock(plan_context.instance, plan_context.run_id)
        yield from self._inner.execute(plan_context, execution_plan)


@dg.executor(name="in_process_run_locked", config_schema=dg.in_process_executor.config_schema)
def run_locked_executor(init_context: dg.InitExecutorContext) -> RunLockedExecutor:
    """The steps one after another in the run's process, which holds the run's lock (they share one
    warehouse slot: they never run in parallel anyway). Configured like in_process_executor."""
    return RunLockedExecutor(dg.in_process_executor.executor_creation_fn(init_context))


# -- processes (runs without a lock file) ------------------------------------------------------------

def process_tags(run_id: str) -> dict[str, str]:
    """Tags naming this process, for run ``run_id`` it executes."""
    pid = os.getpid()
    tags = {RUN_ID_TAG: run_id, RUN_HOST_TAG: socket.gethostname(), RUN_PID_TAG: str(pid)}
    start = process_start_ticks(pid)
    if start is not None:
        tags[RUN_PID_START_TAG] = str(start)
    return tags


@dataclass(frozen=True)
class RunProcess:
    """The process of this host that a run's tags name; ``start_ticks`` is when it started."""

    pid: int
    start_ticks: int | None = None

    def is_gone(self) -> bool:
        """True only when that is proven: no such pid here, or one that started at another moment."""
        ticks = process_start_ticks(self.pid)
        if ticks is not None:
            return self.start_ticks is not None and ticks != self.start_ticks
        return not _pid_exists(self.pid)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def run_process(run: dg.DagsterRun) -> RunProcess | None:
    """The process of this host that ``run``'s own tags name, or None (tags of another run, another
    host, or none at all)."""
    tags = run.tags
    if tags.get(RUN_ID_TAG) != run.run_id or tags.get(RUN_HOST_TAG) != socket.gethostname():
        return None
    try:
        pid = int(tags[RUN_PID_TAG])
        start = int(tags[RUN_PID_START_TAG]) if RUN_PID_START_TAG in tags else None
    except (KeyError, ValueError):
        return None
    return RunProcess(pid, start_ticks=start) if 0 < pid < 2**31 else None


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

RECLAIM_COMMAND = "python -m entra_pipeline reclaim"


@dataclass(frozen=True)
class Recovered:
    """A run freed from the pool: marked failed because its process (``pid``, when known) is gone,
    or, when ``finished``, already finished yet still holding slots."""

    run_id: str
    integration: str
    pid: int | None
    finished: bool = False

    def line(self) -> str:
        if self.finished:
            return f"freed the warehouse slot still held by finished run {self.run_id} of {self.integration}"
        process = "its process" if self.pid is None else f"its process {self.pid}"
        return (f"recovered run {self.run_id} of {self.integration} ({process} is gone); "
                "its warehouse slot is free again")


def _integration(run: dg.DagsterRun | None) -> str:
    if run is None:
        return "an unknown integration"
    return run.tags.get("integration") or run.tags.get("dagster/partition") or run.job_name


@dataclass
class _Dead:
    """Proof that a run's process is gone: its lock, now held by this process, or its pid tags."""

    pid: int | None
    lock: IO[str] | None = None
    path: Path | None = None

    def forget(self) -> None:
        """Remove the dead run's lock file (still locked by this process, so no holder loses it)."""
        if self.lock is not None:
            if self.path is not None:
                self.path.unlink(missing_ok=True)
            self.lock.close()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()


def _dead(instance: dg.DagsterInstance, run: dg.DagsterRun) -> _Dead | None:
    """How ``run``'s process is known to be gone, or None while it may be alive."""
    if run.run_id in _held:
        return None
    path = run_lock_path(instance, run.run_id)
    state, lock = _probe_run_lock(path)
    if state == "free":
        return _Dead(_lock_pid(lock), lock, path)
    if state != "none":
        return None
    # No lock file: a run from before run locks, or one whose worker died before its executor started.
    process = run_process(run)
    if process is not None and process.is_gone():
        return _Dead(process.pid)
    return None


def _fail_and_free(instance: dg.DagsterInstance, run: dg.DagsterRun, message: str) -> None:
    # Runs the CLI never got to start (NOT_STARTED) are failed as well: nothing else finishes them.
    instance.report_run_failed(run, message)
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


def reclaim_dead_runs(instance: dg.DagsterInstance, pool: str) -> list[Recovered]:
    """Mark failed every unfinished run whose process is known to be gone, and free the pool slots
    of those runs and of finished runs still holding some. Runs that may be alive are left alone."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    recovered: list[Recovered] = []
    in_pool = set(_pool_run_ids(instance, pool))
    records = instance.get_run_records(dg.RunsFilter(statuses=LIVE_STATUSES))
    for record in records:
        dead = _dead(instance, record.dagster_run)
        if dead is None:
            continue
        # Read again now that its lock is ours: a run that ended meanwhile released it as it finished.
        run = instance.get_run_by_id(record.dagster_run.run_id)
        if run is None or run.is_finished:
            dead.release()
            continue
        pid = f" ({dead.pid})" if dead.pid is not None else ""
        _fail_and_free(instance, run, f"The process running this run{pid} is gone (killed, out of memory or "
                                      "rebooted); marked failed by entra-pipeline so the warehouse pool is free again.")
        dead.forget()
        recovered.append(Recovered(run.run_id, _integration(run), dead.pid))
        in_pool.discard(run.run_id)
    for run_id in in_pool:
        run = instance.get_run_by_id(run_id)
        # A run deleted from the instance, or finished, uses the warehouse no more, unless its
        # process is still running (a run marked canceled while its worker writes on).
        if (run is None or run.is_finished) and not _lock_held(instance, run_id):
            storage.free_concurrency_slots_for_run(run_id)
            recovered.append(Recovered(run_id, _integration(run), None, finished=True))
    _sweep_run_locks(instance)
    return recovered


def _lock_held(instance: dg.DagsterInstance, run_id: str) -> bool:
    if run_id in _held:
        return True
    path = run_lock_path(instance, run_id)
    if path is None:
        return False
    state, lock = _probe_run_lock(path)
    if lock is not None:
        lock.close()
    return state == "held"


def _sweep_run_locks(instance: dg.DagsterInstance) -> None:
    """Remove the lock files nobody holds of runs that have ended (a UI run's worker leaves its file
    when it exits) or that were never recorded (a CLI killed before its run started)."""
    if not instance.is_persistent:
        return
    for path in (Path(instance.root_directory) / RUN_LOCK_DIR).glob("*.lock"):
        run_id = path.name.removesuffix(".lock")
        if run_id in _held:
            continue
        run = instance.get_run_by_id(run_id) if _RUN_ID.fullmatch(run_id) else None
        if run is not None and not run.is_finished:
            continue
        state, lock = _probe_run_lock(path)
        if state == "free" and lock is not None:
            path.unlink(missing_ok=True)
            lock.close()


def reclaim_run(instance: dg.DagsterInstance, run_id: str, force: bool = False) -> tuple[bool, str]:
    """The operator's reclaim of one run whose process cannot be seen from here (another machine or
    container): refused while its lock is held, and without ``force`` when it has neither a lock file
    nor tags naming its process; otherwise marked failed and its slots freed. Returns (done, the one
    line to show)."""
    run = instance.get_run_by_id(run_id) if _RUN_ID.fullmatch(run_id) else None
    if run is None:
        return False, f"reclaim: no run {run_id[:80]!r} in the Dagster instance at {instance.root_directory}"
    integration = _integration(run)
    storage = instance.event_log_storage
    if run.is_finished:
        storage.free_concurrency_slots_for_run(run.run_id)
        return True, (f"reclaim: run {run_id} of {integration} already ended ({run.status.value}); "
                      "the warehouse slots it held, if any, are free")
    path = run_lock_path(instance, run_id)
    state, lock = _probe_run_lock(path)
    if state == "held" or run_id in _held:
        return False, (f"reclaim: run {run_id} of {integration} is alive (its process holds {path}); "
                       "refused: stop that run instead (Dagster UI: Terminate)")
    if state.startswith("unknown"):
        return False, (f"reclaim: cannot tell whether run {run_id} of {integration} is alive ({path}: "
                       f"{state.removeprefix('unknown: ')}); refused: run reclaim as the user that runs the syncs")
    process = run_process(run)
    if state == "none" and process is not None and not process.is_gone():
        return False, (f"reclaim: run {run_id} of {integration} is alive (its process {process.pid} runs on this "
                       "host); refused: stop that run instead")
    if state == "none" and run.tags.get(RUN_ID_TAG) != run.run_id and not force:
        return False, (f"reclaim: run {run_id} of {integration} has no run lock and no process recorded, so "
                       "nothing tells whether it is alive; if you know its process is gone, add --force")
    dead = _Dead(_lock_pid(lock) if lock else None, lock, path)
    try:
        # Read again now that its lock is ours: a run that ended meanwhile released it as it finished.
        run = instance.get_run_by_id(run_id) or run
        if run.is_finished:
            dead.release()
            return True, f"reclaim: run {run_id} of {integration} has just ended ({run.status.value})"
        _fail_and_free(instance, run, f"Marked failed by the operator ({RECLAIM_COMMAND} {run_id}): its process "
                                      "was gone; the warehouse pool is free again.")
    except BaseException:
        dead.release()
        raise
    dead.forget()
    return True, f"reclaim: run {run_id} of {integration} marked failed; its warehouse slot is free again"


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
    return (f"waiting for run {run_id} (integration {_integration(run)}) to finish writing the warehouse; if that "
            f"run's process is gone for good (another machine or container), free it with: {RECLAIM_COMMAND} {run_id}")


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
        #: SIGTERM or SIGINT seen while the run went on (Dagster stops the step it interrupts, and
        #: returns): the caller stops too instead of starting another run.
        self.signalled = 0

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
                        signum = self.signalled = byte
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
