"""The fixtures every test folder shares, defined once: the test tenant's directory served by the
emulator over real HTTPS, a Workday tenant in front of a smaller directory, and a factory of real
syncs into a real DuckDB file. The helpers the tests call live in tests/support/."""

from __future__ import annotations

import copy
import os
import signal

import pytest

from entra_pipeline.emulator.population import generate_directory
from tests.support.integrations import write_config
from tests.support.runs import Sync
from tests.support.tenant import (GROUPS, SECRET, SECRET_ENV, SEED, USERS, WORKDAY_CLIENT_SECRET, WORKDAY_PASSWORD,
                                  WORKDAY_REFRESH_TOKEN, WORKDAY_SEED, running_emulator)


def pytest_configure(config):
    # The emulator's CA must come from config, never from these variables (graph-facts).
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.setdefault(name, "/nonexistent/ca-bundle.pem")
    # The syncs these tests start must get the signals a terminal or a container runtime sends,
    # however pytest itself was started: `nohup ... &` or a CI runner may start it with SIGTERM and
    # SIGINT ignored, which every child inherits (a sync stopped by SIGTERM would then run on).
    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def directory():
    return generate_directory(users=USERS, groups=GROUPS, seed=SEED)


@pytest.fixture(scope="session")
def emulator(directory, tmp_path_factory):
    with running_emulator(directory, tmp_path_factory.mktemp("certs")) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean_emulator(request):
    """Faults injected by one test never reach the next."""
    yield
    for name in ("emulator", "workday"):
        if name in request.fixturenames:
            request.getfixturevalue(name).faults.clear()


@pytest.fixture
def directory_copy(emulator):
    """The emulator's directory, changeable by the test and restored afterwards."""
    original = emulator.directory
    emulator.directory = copy.deepcopy(original)
    yield emulator.directory
    emulator.directory = original


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return SECRET_ENV


@pytest.fixture(scope="module")
def hr_directory():
    return generate_directory(users=400, groups=20, seed=WORKDAY_SEED)


@pytest.fixture(scope="module")
def workday(hr_directory, tmp_path_factory):
    """An emulator serving a Workday report of ``hr_directory``'s workers (and that directory)."""
    from entra_pipeline.emulator.workday import WorkdayTenant
    from entra_pipeline.emulator.workday_workers import generate_workers

    tenant = WorkdayTenant(password=WORKDAY_PASSWORD, client_secret=WORKDAY_CLIENT_SECRET,
                           refresh_token=WORKDAY_REFRESH_TOKEN, entries=generate_workers(hr_directory, WORKDAY_SEED))
    with running_emulator(hr_directory, tmp_path_factory.mktemp("certs"), workday=tenant) as server:
        yield server


@pytest.fixture
def make_sync(tmp_path, secret_env):
    """Syncs of the given integrations, written to an integrations file, into a fresh warehouse."""
    def make(*integrations: dict) -> Sync:
        config = write_config(tmp_path / "integrations.yaml", *integrations)
        return Sync(config, tmp_path / "warehouse.duckdb")

    return make
