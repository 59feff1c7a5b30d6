"""The warehouse pool (one writer at a time) and the runs that died holding it: a run whose process
died (SIGKILL, OOM kill, reboot) while it held or waited for the pool is marked failed and its slots
are freed, so that it never blocks the next run; a live holder is waited for, visibly, and the
operator frees a run whose machine or container is gone with ``python -m entra_pipeline reclaim``."""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import dagster as dg

from entra_pipeline.run_locks import (LIVE_STATUSES, RUN_ID_TAG, holds_run_lock, lock_pid, probe_run_lock,
                                      run_lock_path, run_process, sweep_run_locks, valid_run_id)

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
    if holds_run_lock(run.run_id):
        return None
    path = run_lock_path(instance, run.run_id)
    state, lock = probe_run_lock(path)
    if state == "free":
        return _Dead(lock_pid(lock), lock, path)
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
    sweep_run_locks(instance)
    return recovered


def _lock_held(instance: dg.DagsterInstance, run_id: str) -> bool:
    if holds_run_lock(run_id):
        return True
    path = run_lock_path(instance, run_id)
    if path is None:
        return False
    state, lock = probe_run_lock(path)
    if lock is not None:
        lock.close()
    return state == "held"


def reclaim_run(instance: dg.DagsterInstance, run_id: str, force: bool = False) -> tuple[bool, str]:
    """The operator's reclaim of one run whose process cannot be seen from here (another machine or
    container): refused while its lock is held, and without ``force`` when it has neither a lock file
    nor tags naming its process; otherwise marked failed and its slots freed. Returns (done, the one
    line to show)."""
    run = instance.get_run_by_id(run_id) if valid_run_id(run_id) else None
    if run is None:
        return False, f"reclaim: no run {run_id[:80]!r} in the Dagster instance at {instance.root_directory}"
    integration = _integration(run)
    storage = instance.event_log_storage
    if run.is_finished:
        storage.free_concurrency_slots_for_run(run.run_id)
        return True, (f"reclaim: run {run_id} of {integration} already ended ({run.status.value}); "
                      "the warehouse slots it held, if any, are free")
    path = run_lock_path(instance, run_id)
    state, lock = probe_run_lock(path)
    if state == "held" or holds_run_lock(run_id):
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
    dead = _Dead(lock_pid(lock) if lock else None, lock, path)
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
