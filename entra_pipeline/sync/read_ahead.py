"""Users and groups download at the same time. Steps of a run execute one after another in its
process (they share the warehouse's one writer slot), so when the first Graph stage of a run
starts, it starts the other stage's delta read in a thread; the other stage takes that read when
its turn comes instead of reading then. Graph serves both at once: the sync's wall time is the
longer of the two downloads, not their sum.

Only a run whose executor said which steps this process executes (``steps_here``) reads ahead,
only delta reads (read: list reads its pages through $batch already in parallel), and a read is
taken once: a retried stage reads again itself. What the read said (its plan, warnings, progress)
goes to the log of the stage it belongs to, once that stage takes it.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, TypeVar

from entra_pipeline.sync import names
from entra_pipeline.sync.runner import StageRun

P = TypeVar("P")
R = TypeVar("R")

STAGE_OF = {"users": names.RAW_GRAPH_USERS, "groups": names.RAW_GRAPH_GROUPS}

_lock = threading.Lock()
#: Dagster run id -> the steps this process executes in that run.
_steps: dict[str, frozenset[str]] = {}
#: (run id, integration, resource) -> the read started ahead, or None once its stage read.
_reads: dict[tuple[str, str, str], "_Ahead | None"] = {}


@contextmanager
def steps_here(run_id: str, step_keys: list[str]) -> Iterator[None]:
    """While a run's steps execute in this process: the steps it runs. Afterwards nothing of the
    run is kept: a read no stage took is dropped (its download ends in its thread, unlogged)."""
    with _lock:
        _steps[run_id] = frozenset(step_keys)
    try:
        yield
    finally:
        with _lock:
            _steps.pop(run_id, None)
            ended = [_reads.pop(key) for key in [k for k in _reads if k[0] == run_id]]
        for ahead in ended:
            if ahead is not None:
                ahead.drop()


@dataclass
class _Relay:
    """The lines of a read running ahead: kept until its stage takes the read, then passed on;
    dropped once the run has ended (no line goes to a step that is over)."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    run: StageRun | None = None
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def info(self, line: str) -> None:
        self._say("info", line)

    def warn(self, line: str) -> None:
        self._say("warn", line)

    def _say(self, kind: str, line: str) -> None:
        with self.lock:
            if self.closed:
                return
            if self.run is None:
                self.lines.append((kind, line))
                return
            run = self.run
        getattr(run, kind)(line)

    def attach(self, run: StageRun) -> None:
        with self.lock:
            for kind, line in self.lines:
                getattr(run, kind)(line)
            self.lines.clear()
            self.run = run

    def close(self) -> None:
        with self.lock:
            self.closed = True


@dataclass
class _Ahead:
    """A read started ahead: what it planned from (to see, when taken, whether that still holds),
    its result to come, and its log."""

    planned: object
    future: Future
    relay: _Relay

    def drop(self) -> None:
        """Nobody takes this read: no more lines, and what it holds (a staged round) is closed
        once it ends."""
        self.relay.close()
        self.future.add_done_callback(_close_result)


def _close_result(future: Future) -> None:
    if future.exception() is None and hasattr(future.result(), "close"):
        future.result().close()


def start(run: StageRun, resource: str, plan: Callable[[StageRun], P], fetch: Callable[[StageRun, P], R]) -> bool:
    """Start ``resource``'s read for ``run``'s sync, if its stage is still to execute in this
    process and nobody read it yet: ``plan`` (what is stored: read from the warehouse here, before
    this stage writes) then ``fetch`` (the download, in a thread). Whether it started; a plan
    that fails starts nothing, and the stage then plans and reads by itself."""
    stage = STAGE_OF[resource]
    key = (run.execution_id, run.key, resource)
    with _lock:
        if run.execution_id is None or stage not in _steps.get(run.execution_id, ()) or key in _reads:
            return False
    relay = _Relay()
    ahead_run = StageRun(run.integration, run.run_id, stage, run.warehouse, info=relay.info, warn=relay.warn,
                         execution_id=run.execution_id)
    try:
        planned = plan(ahead_run)
    except Exception:  # noqa: BLE001 - its own stage plans again and reports it; a stop request passes
        return False
    ahead = _Ahead(planned, Future(), relay)
    with _lock:
        if key in _reads or run.execution_id not in _steps:
            return False
        _reads[key] = ahead

    def work() -> None:
        try:
            ahead.future.set_result(fetch(ahead_run, planned))
        except BaseException as exc:  # noqa: BLE001 - handed to the stage that takes the read
            ahead.future.set_exception(exc)

    threading.Thread(target=work, name=f"entra-pipeline read ahead: {run.key} {resource}", daemon=True).start()
    return True


def take(run: StageRun, resource: str, plan: Callable[[StageRun], P], fetch: Callable[[StageRun, P], R]) -> R:
    """This stage's read: the one started ahead (waited for; its failure raised here, as if it
    had read now), or ``fetch(run, plan(run))`` now. A read started ahead is used only if what it
    planned from is still what is stored: another run of the integration may have written since
    (the warehouse admits one writing step at a time, not one run)."""
    key = (run.execution_id, run.key, resource)
    with _lock:
        ahead = _reads.get(key)
        if run.execution_id in _steps:
            _reads[key] = None  # read by its stage: nobody reads it ahead now, a retry reads again
    planned = plan(run)
    if ahead is None or ahead.planned != planned:
        if ahead is not None:
            ahead.drop()
        return fetch(run, planned)
    ahead.relay.attach(run)
    return ahead.future.result()
