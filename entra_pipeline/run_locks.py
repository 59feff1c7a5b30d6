"""Which runs are alive: every run of the sync and preview jobs (and the UI's Materialize and
backfills) holds an exclusive lock on ``$DAGSTER_HOME/run-locks/<run_id>.lock`` while its process
lives (the CLI from before the run starts, a UI or daemon run's worker from the moment its executor
starts). The kernel drops the lock when that process ends, however it ends, whatever its host name,
pid namespace or clock: a lock file nobody holds is a dead run. Runs without a lock file are judged
by their own pid tags only where that proves the process gone."""

from __future__ import annotations

import fcntl
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import dagster as dg

from entra_pipeline.process import process_start_ticks
from entra_pipeline.sync import read_ahead

RUN_HOST_TAG = "entra-pipeline/host"
RUN_PID_TAG = "entra-pipeline/pid"
# Field 22 of /proc/PID/stat: clock ticks after boot when the process started.
RUN_PID_START_TAG = "entra-pipeline/pid_start"
# The run the pid tags were written for. A re-execution (from the UI, or the run-retry daemon) copies
# its parent's tags: its own run id differs, so the parent's process is never taken for its own.
RUN_ID_TAG = "entra-pipeline/run_id"

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


def valid_run_id(run_id: str) -> bool:
    """A Dagster run id (a UUID): only such a string ever becomes part of a path."""
    return _RUN_ID.fullmatch(run_id) is not None


def holds_run_lock(run_id: str) -> bool:
    """Whether this very process holds run ``run_id``'s lock."""
    return run_id in _held


def run_lock_path(instance: dg.DagsterInstance, run_id: str) -> Path | None:
    """Where run ``run_id``'s lock lives; None for an instance kept in memory (no other process sees its runs)."""
    if not instance.is_persistent or not valid_run_id(run_id):
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


def probe_run_lock(path: Path | None) -> tuple[str, IO[str] | None]:
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


def lock_pid(handle: IO[str]) -> int | None:
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
        # The Graph stages know which of them execute here after them, to download them together.
        with read_ahead.steps_here(plan_context.run_id, execution_plan.step_keys_to_execute):
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


def sweep_run_locks(instance: dg.DagsterInstance) -> None:
    """Remove the lock files nobody holds of runs that have ended (a UI run's worker leaves its file
    when it exits) or that were never recorded (a CLI killed before its run started)."""
    if not instance.is_persistent:
        return
    for path in (Path(instance.root_directory) / RUN_LOCK_DIR).glob("*.lock"):
        run_id = path.name.removesuffix(".lock")
        if run_id in _held:
            continue
        run = instance.get_run_by_id(run_id) if valid_run_id(run_id) else None
        if run is not None and not run.is_finished:
            continue
        state, lock = probe_run_lock(path)
        if state == "free" and lock is not None:
            path.unlink(missing_ok=True)
            lock.close()
