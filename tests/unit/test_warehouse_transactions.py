"""Warehouse transactions on a real DuckDB file: a block handed the open Transaction joins it,
an exception anywhere rolls back everything, and only a commit is seen by other connections; a
stage stopped by DuckDB's memory limit is one line and writes nothing."""

from __future__ import annotations

from contextlib import closing
from types import SimpleNamespace

import pytest

from entra_pipeline.sync import names
from entra_pipeline.sync.runner import StageFailed, StageRun, memory_failures, run_stage
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse.connection import (MEMORY_LIMIT_ENV, Transaction, TransactionError, connect,
                                                 rolled_back, transaction)
from entra_pipeline.warehouse.table_rows import count_rows

INSERT = f'INSERT INTO "{s.CONTACT_CHANGES}" VALUES (?, ?, \'joined\', NULL, \'run\', now())'


def joined(con_or_tx, integration: str, contact_id: str) -> None:
    """One contact_changes row; what a stage's write does (it cannot tell whether it nests)."""
    with transaction(con_or_tx) as tx:
        tx.con.execute(INSERT, [integration, contact_id])


def rows(database, integration: str = "t") -> int:
    """What a new connection (another process, an analyst) sees."""
    con = connect(database, read_only=True)
    try:
        return count_rows(con, s.CONTACT_CHANGES, integration)
    finally:
        con.close()


@pytest.fixture
def database(tmp_path):
    """A warehouse file with its tables (a transaction creates them) and no rows."""
    path = tmp_path / "warehouse.duckdb"
    con = connect(path)
    with transaction(con):
        pass
    con.close()
    return path


def test_a_committed_transaction_is_seen_by_a_new_connection(database):
    con = connect(database)
    with transaction(con) as tx:
        assert isinstance(tx, Transaction) and tx.con is con and tx.open
        joined(tx, "t", "a")
        joined(tx, "t", "b")
    assert tx.state == "committed"
    con.close()
    assert rows(database) == 2


def test_nested_transactions_join_the_outer_one(database):
    con = connect(database)
    with transaction(con) as outer:
        with transaction(outer) as inner:
            assert inner is outer
            inner.con.execute(INSERT, ["t", "a"])
        assert outer.open  # the inner block did not commit
        joined(outer, "t", "b")
    con.close()
    assert rows(database) == 2


def test_an_exception_rolls_back_everything_the_transaction_wrote(database):
    con = connect(database)
    joined(con, "t", "before")
    with pytest.raises(RuntimeError, match="disk full"):
        with transaction(con) as tx:
            joined(tx, "t", "a")
            with transaction(tx):
                tx.con.execute(INSERT, ["t", "b"])
                raise RuntimeError("disk full")
    assert tx.state == "rolled back"
    con.close()
    assert rows(database) == 1


def test_a_failed_joined_block_cannot_be_committed_even_when_caught(database):
    con = connect(database)
    with pytest.raises(TransactionError, match="rolled back"):
        with transaction(con) as tx:
            joined(tx, "t", "a")
            try:
                with transaction(tx):
                    raise ValueError("half written")
            except ValueError:
                pass
            joined(tx, "t", "b")
    con.close()
    assert rows(database) == 0


def test_rolled_back_never_commits_and_its_blocks_join_it(database):
    con = connect(database)
    with rolled_back(con) as tx:
        joined(tx, "t", "a")
        assert count_rows(con, s.CONTACT_CHANGES, "t") == 1  # seen inside
    assert tx.state == "rolled back"
    joined(con, "t", "b")  # the connection is usable again
    con.close()
    assert rows(database) == 1


def test_misuse_is_refused(database):
    con = connect(database)
    with transaction(con) as tx:
        with pytest.raises(TransactionError, match="pass that Transaction"):
            Transaction(con).begin()  # a second BEGIN on the same connection
        with pytest.raises(TransactionError):
            tx.begin()
    with pytest.raises(TransactionError, match="cannot join"):
        with transaction(tx):
            pass
    with pytest.raises(TransactionError):
        tx.commit()
    con.close()


def test_a_failure_while_beginning_leaves_no_open_transaction(database, monkeypatch):
    def broken(con):
        raise KeyboardInterrupt  # Ctrl-C while the tables are being made sure of

    con = connect(database)
    try:
        monkeypatch.setattr(s, "ensure_schema", broken)
        for begin in (transaction, rolled_back):
            with pytest.raises(KeyboardInterrupt):
                with begin(con):
                    pass
        monkeypatch.undo()
        joined(con, "t", "after")  # the connection is usable: no transaction was left open
    finally:
        con.close()
    assert rows(database) == 1


def test_a_stage_beyond_duckdbs_memory_limit_fails_with_one_line_and_writes_nothing(database, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "64MB")

    def warehouse():
        return closing(connect(database))

    def compute(con, integration, run_id):
        con.execute(INSERT, ["t", "a"])
        con.execute("SELECT list(range) FROM range(50000000)").fetchall()  # 400 MB that cannot spill

    run = StageRun(SimpleNamespace(key="t"), "run", names.FILTERED_CONTACTS, warehouse)
    with pytest.raises(StageFailed) as raised:
        with memory_failures(run):
            run_stage(run, compute)
    message = str(raised.value)
    assert message.startswith("integration 't': filtered_contacts needed more memory than DuckDB may use "
                              "(Out of Memory Error: failed to allocate ")
    assert message.endswith(f"); raise the warehouse resource's memory_limit or {MEMORY_LIMIT_ENV}; "
                            "nothing was written")
    assert "\n" not in message
    assert rows(database) == 0
