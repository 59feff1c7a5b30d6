"""Fixtures the end-to-end tests share beyond the ones in tests/conftest.py."""

import pytest

from tests.support.integrations import integration
from tests.support.runs import failure_messages


@pytest.fixture
def first_sync(make_sync, emulator):
    """A warehouse holding one good sync of integration 'acme' (the default test integration)."""
    sync = make_sync(integration("acme", emulator))
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    return sync
