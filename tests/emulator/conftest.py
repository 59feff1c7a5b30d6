"""Fixtures the emulator tests share beyond tests/conftest.py."""

import pytest

from tests.support.tenant import https_session


@pytest.fixture(scope="module")
def session(emulator):
    """An HTTPS session trusting only the module's emulator (its ``emulator`` fixture)."""
    with https_session(emulator.ca_path) as s:
        yield s
