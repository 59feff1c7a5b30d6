"""The Dagster instance at $DAGSTER_HOME, as the CLI and the UI share it: a brand-new instance
directory is set up once, under an exclusive file lock, so that several syncs started together do
not race Dagster's storage creation."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import dagster as dg

from entra_pipeline.config import ConfigError

# Written (holding the Dagster version) once every storage exists: later processes skip the lock.
READY_FILE = ".entra-pipeline-instance-ready"
LOCK_FILE = ".entra-pipeline-instance.lock"


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
