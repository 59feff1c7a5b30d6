"""The read one Graph stage starts for the other: taken once, only while what it planned from
still holds, never started by a failing plan, and silent and closed once nobody can take it."""

import threading
from types import SimpleNamespace

import pytest

from entra_pipeline.sync import read_ahead
from entra_pipeline.sync.runner import StageRun

RUN = "run-1"


def stage(stage_name: str, lines: list | None = None, run_id: str = RUN) -> StageRun:
    said = lines if lines is not None else []
    return StageRun(SimpleNamespace(key="acme"), "sync-1", stage_name, warehouse=lambda: None,
                    info=lambda line: said.append(line), warn=lambda line: said.append("WARN " + line),
                    execution_id=run_id)


def test_a_read_started_ahead_is_taken_once_and_a_retry_reads_again():
    fetched, gate = [], threading.Event()

    def fetch(run, planned):
        fetched.append((run.stage, planned))
        gate.wait(5)
        run.info("groups: 1,000 so far")
        return f"round from {planned}"

    lines: list[str] = []
    with read_ahead.steps_here(RUN, ["raw_graph_users", "raw_graph_groups"]):
        assert read_ahead.start(stage("raw_graph_users"), "groups", lambda run: "state 1", fetch)
        # Started once only, whoever asks again.
        assert not read_ahead.start(stage("raw_graph_users"), "groups", lambda run: "state 1", fetch)
        gate.set()
        assert read_ahead.take(stage("raw_graph_groups", lines), "groups", lambda run: "state 1", fetch) \
            == "round from state 1"
        assert fetched == [("raw_graph_groups", "state 1")] and lines == ["groups: 1,000 so far"]
        # A retry of the step reads by itself.
        assert read_ahead.take(stage("raw_graph_groups"), "groups", lambda run: "state 1", fetch) == "round from state 1"
        assert len(fetched) == 2


class Staged:
    """What a read holds until it is closed (a full round's scratch file)."""

    def __init__(self, planned: str) -> None:
        self.planned, self.closed = planned, threading.Event()

    def close(self) -> None:
        self.closed.set()


def test_a_read_planned_from_what_another_run_has_since_replaced_is_not_used_and_is_closed():
    reads = []

    def fetch(run, planned):
        reads.append(Staged(planned))
        return reads[-1]

    with read_ahead.steps_here(RUN, ["raw_graph_users", "raw_graph_groups"]):
        assert read_ahead.start(stage("raw_graph_users"), "groups", lambda run: "token A", fetch)
        # Another run of the integration committed groups meanwhile: the stored state is now B.
        taken = read_ahead.take(stage("raw_graph_groups"), "groups", lambda run: "token B", fetch)
        assert taken.planned == "token B" and not taken.closed.is_set()
        assert [r.planned for r in reads] == ["token A", "token B"] and reads[0].closed.wait(5)


def test_a_plan_that_fails_starts_nothing_and_a_stop_request_is_not_swallowed():
    def failing(run):
        raise OSError("the warehouse file is locked")

    def interrupted(run):
        raise KeyboardInterrupt

    with read_ahead.steps_here(RUN, ["raw_graph_users", "raw_graph_groups"]):
        assert not read_ahead.start(stage("raw_graph_users"), "groups", failing, lambda run, p: "x")
        assert read_ahead.take(stage("raw_graph_groups"), "groups", lambda run: "s", lambda run, p: "read itself") \
            == "read itself"
    with read_ahead.steps_here("run-2", ["raw_graph_users", "raw_graph_groups"]):
        with pytest.raises(KeyboardInterrupt):
            read_ahead.start(stage("raw_graph_users", run_id="run-2"), "groups", interrupted, lambda run, p: "x")


def test_nothing_is_read_ahead_outside_a_run_or_for_a_step_that_does_not_execute_here():
    def fetch(run, planned):
        raise AssertionError("not to be read ahead")

    assert not read_ahead.start(stage("raw_graph_users"), "groups", lambda run: "s", fetch)
    with read_ahead.steps_here(RUN, ["raw_graph_users"]):
        assert not read_ahead.start(stage("raw_graph_users"), "groups", lambda run: "s", fetch)


def test_a_read_nobody_took_is_dropped_with_its_run_and_logs_nothing_after():
    lines: list[str] = []
    release, done = threading.Event(), threading.Event()
    ahead_runs = []

    def fetch(run, planned):
        ahead_runs.append(run)
        release.wait(5)
        run.info("late line")
        done.set()
        return staged

    staged = Staged("s")
    with read_ahead.steps_here(RUN, ["raw_graph_users", "raw_graph_groups"]):
        assert read_ahead.start(stage("raw_graph_users", lines), "groups", lambda run: "s", fetch)
    release.set()
    assert done.wait(5)
    # What it read is let go of as soon as it ends: its scratch file does not wait for the process.
    assert staged.closed.wait(5)
    assert lines == [] and read_ahead._reads == {} and read_ahead._steps == {}
