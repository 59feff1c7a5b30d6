"""Opening the warehouse file and changing it in transactions. No Dagster here.

DuckDB lets one process write a database file, and other processes open it only while nobody
writes. The sync keeps its connections short (each stage opens the file, writes one transaction
and closes it; Graph is read with the file closed), and both sides wait for the other instead of
failing: ``connect`` retries while another process holds the lock.

A stage's rows change in one ``Transaction``: all of a stage's output for an integration changes,
or none of it does. Code that is handed an open Transaction joins it instead of starting its own.
"""

from __future__ import annotations

import os
import random
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from entra_pipeline.config import PROJECT_ROOT, ConfigError
from entra_pipeline.errors import PipelineError
from entra_pipeline.warehouse import schema as s

WAREHOUSE_PATH_ENV = "ENTRA_PIPELINE_WAREHOUSE"
DEFAULT_WAREHOUSE_PATH = PROJECT_ROOT / "data" / "warehouse.duckdb"
#: How long a connection waits for another process's lock on the file before it gives up.
LOCK_WAIT_SECONDS = 300.0
#: DuckDB's memory_limit for every connection (warehouse and scratch files): a size such as 2GB or
#: 512MB, or a share of the machine's memory such as 25%. Beyond it DuckDB spills to disk or
#: fails one query, instead of taking the machine's memory (its own default is 80% of it).
MEMORY_LIMIT_ENV = "ENTRA_PIPELINE_DUCKDB_MEMORY_LIMIT"
#: 512MB: a million users sync within it (spilling a little); a larger cap mostly holds cached
#: blocks (make bench, whole 1M sync: peak RSS 1,198 MB at 512MB, 1,647 MB at 1GB; at 256MB its
#: mapping runs out). A stage it stops fails with one line naming this setting.
DEFAULT_MEMORY_LIMIT = "512MB"
#: DuckDB's worker threads for every connection; unset, one per core (DuckDB's default). Fewer
#: leave cores to the Graph downloads and to other integrations' runs on a shared machine.
THREADS_ENV = "ENTRA_PIPELINE_DUCKDB_THREADS"
MAX_THREADS = 1024
MIN_MEMORY_BYTES = 64 * 1000 ** 2
_UNITS = {"b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4,
          "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}
_SIZE = re.compile(r"(\d{1,12}(?:\.\d{1,6})?)\s*([kmgt]i?b|b)", re.IGNORECASE)
_SHARE = re.compile(r"(\d{1,3}(?:\.\d{1,3})?)\s*%")


def memory_limit(value: str | None = None, name: str = MEMORY_LIMIT_ENV) -> str:
    """The memory_limit to give DuckDB: ``value`` (a setting called ``name``), else the
    environment variable, else 512MB. ConfigError, one line naming the setting, when it is not a
    size of at least 64MB or a share of memory between 1% and 100%."""
    if value is None:
        value = os.environ.get(MEMORY_LIMIT_ENV) or DEFAULT_MEMORY_LIMIT
        name = MEMORY_LIMIT_ENV
    text = str(value).strip()
    size, share = _SIZE.fullmatch(text), _SHARE.fullmatch(text)
    if size and float(size.group(1)) * _UNITS[size.group(2).lower()] >= MIN_MEMORY_BYTES:
        return f"{size.group(1)}{size.group(2).upper().replace('I', 'i')}"
    if share and 1 <= float(share.group(1)) <= 100:
        return f"{share.group(1)}%"
    shown = repr(text[:40]) + ("..." if len(text) > 40 else "")
    raise ConfigError(f"{name}={shown} is not a DuckDB memory limit: give a size of at least 64MB such as 2GB "
                      "or 512MB, or a share of memory such as 25%")


def thread_count(value: int | str | None = None, name: str = THREADS_ENV) -> int | None:
    """DuckDB's worker threads: ``value`` (a setting called ``name``), else the environment
    variable, else None (DuckDB's default: one per core). ConfigError, one line naming the
    setting, when it is not a whole number from 1 to MAX_THREADS."""
    if value is None:
        value, name = os.environ.get(THREADS_ENV) or None, THREADS_ENV
        if value is None:
            return None
    text = str(value).strip()
    if text.isascii() and text.isdigit() and len(text) <= 4 and 1 <= int(text) <= MAX_THREADS:
        return int(text)
    shown = repr(text[:40]) + ("..." if len(text) > 40 else "")
    raise ConfigError(f"{name}={shown} is not a number of DuckDB threads: give a whole number from 1 to {MAX_THREADS}")


def duckdb_config(database: str | Path, memory: str | None = None, name: str = MEMORY_LIMIT_ENV,
                  threads: int | str | None = None, threads_name: str = THREADS_ENV) -> dict:
    """DuckDB settings for a database file: the memory limit (see ``memory_limit``), the threads
    (see ``thread_count``) and a temp directory next to the file (``<file>.tmp``) where work
    beyond the limit spills."""
    config = {"memory_limit": memory_limit(memory, name), **_spill_directory(database)}
    count = thread_count(threads, threads_name)
    return config if count is None else {**config, "threads": count}


def _spill_directory(database: str | Path) -> dict:
    return {} if str(database) in ("", ":memory:") else {"temp_directory": f"{database}.tmp"}


def warehouse_path() -> Path:
    return Path(os.environ.get(WAREHOUSE_PATH_ENV) or DEFAULT_WAREHOUSE_PATH)


def _locked(exc: Exception) -> bool:
    return "lock" in str(exc).lower()


def connect(database: str | Path, *, read_only: bool = False, wait_seconds: float = LOCK_WAIT_SECONDS,
            config: dict | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the memory bound and threads of ``duckdb_config`` (``config`` may
    override them), waiting (up to ``wait_seconds``, backing off from 50 ms to 2 s) while another process
    holds the file's lock; after that the lock error is raised, naming the file. ConfigError
    when the memory limit or threads setting is invalid."""
    config = config or {}
    # An explicit setting wins: its environment variable is then not consulted (nor its errors).
    defaults = _spill_directory(database)
    if "memory_limit" not in config:
        defaults["memory_limit"] = memory_limit()
    if "threads" not in config and thread_count() is not None:
        defaults["threads"] = thread_count()
    config = {**defaults, **config}
    deadline = time.monotonic() + wait_seconds
    pause = 0.05
    while True:
        try:
            return duckdb.connect(str(database), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            if not _locked(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause + random.uniform(0, pause))
        pause = min(pause * 2, 2.0)


class TransactionError(PipelineError):
    """A transaction used the wrong way: begun twice, finished twice, joined when closed, or
    committed after a block that joined it failed."""


class Transaction:
    """One warehouse transaction on one connection, begun, then committed or rolled back once.

    Pass it (not its connection) to code that should join it: ``transaction(tx)`` then runs in
    it. When a joined block fails the whole transaction can only be rolled back (``commit``
    refuses), even if the outer code catches the exception."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.state = "new"  # new -> open -> committed | rolled back
        self.rollback_only = False

    @property
    def open(self) -> bool:
        return self.state == "open"

    def begin(self) -> Transaction:
        """BEGIN, and make sure every table exists (inside the transaction, with its writes)."""
        if self.state != "new":
            raise TransactionError(f"a transaction that is {self.state} cannot begin again")
        try:
            self.con.execute("BEGIN TRANSACTION")
        except duckdb.TransactionException as exc:
            raise TransactionError("the connection already has an open transaction: pass that Transaction "
                                   f"to join it ({exc})") from None
        self.state = "open"
        try:
            s.ensure_schema(self.con)
        except BaseException:
            # Ctrl-C or a DuckDB error while creating tables: the connection must not stay in a transaction.
            self.rollback()
            raise
        return self

    def commit(self) -> None:
        if self.rollback_only:
            self.rollback()
            raise TransactionError("a block inside the transaction failed: everything was rolled back")
        self._finish("COMMIT", "committed")

    def rollback(self) -> None:
        self._finish("ROLLBACK", "rolled back")

    def _finish(self, statement: str, state: str) -> None:
        if not self.open:
            raise TransactionError(f"a transaction that is {self.state} cannot be {state}")
        # Closed before the statement runs: a failed COMMIT (DuckDB then rolls back) is not retried.
        self.state = state
        self.con.execute(statement)


@contextmanager
def transaction(target: duckdb.DuckDBPyConnection | Transaction) -> Iterator[Transaction]:
    """BEGIN ... COMMIT on a connection, or ROLLBACK on any exception (KeyboardInterrupt too).

    Given an open Transaction instead, the block joins it: the outer one commits or rolls back,
    and an exception in the block leaves the outer one able only to roll back."""
    if isinstance(target, Transaction):
        if not target.open:
            raise TransactionError(f"cannot join a transaction that is {target.state}")
        try:
            yield target
        except BaseException:
            target.rollback_only = True
            raise
        return
    tx = Transaction(target).begin()
    try:
        yield tx
    except BaseException:
        if tx.open:
            tx.rollback()
        raise
    tx.commit()


@contextmanager
def rolled_back(con: duckdb.DuckDBPyConnection) -> Iterator[Transaction]:
    """A transaction that is always rolled back: what happens inside is never committed (the
    preview runs every stage's write in one). Blocks given the Transaction join it."""
    tx = Transaction(con).begin()
    try:
        yield tx
    finally:
        if tx.open:
            tx.rollback()


@contextmanager
def attached(con: duckdb.DuckDBPyConnection, path: str, alias: str) -> Iterator[None]:
    """A scratch DuckDB file attached read-only to the warehouse connection as ``alias`` (a
    constant of the calling module, never input); outside the transaction that reads it, so a
    failed one cannot hide its error behind a failed DETACH."""
    con.execute(f"ATTACH ? AS {alias} (READ_ONLY)", [path])
    try:
        yield
    finally:
        con.execute(f"DETACH {alias}")
