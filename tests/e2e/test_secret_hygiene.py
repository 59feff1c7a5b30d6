"""A sync with a recognisable client secret: neither it nor any access token the tenant issued
appears in a log line, the Dagster event log (messages and metadata), an error, or any warehouse
table."""

from __future__ import annotations

import logging

from tests.support.integrations import integration
from tests.support.runs import recorded_text
from tests.support.tenant import SECRET


def test_no_secret_or_token_in_logs_events_or_the_warehouse(make_sync, emulator, caplog):
    caplog.set_level(logging.DEBUG)
    sync = make_sync(integration("acme", emulator))
    emulator.faults.add(401, path="/v1.0/users/delta", times=1,  # a token renewal, logged or not
                        body={"error": {"code": "InvalidAuthenticationToken", "message": "Lifetime validation failed"}})
    results = [sync.run("acme"), sync.run("acme")]
    assert all(r.success for r in results)
    with emulator.identity.lock:
        tokens = list(emulator.identity.tokens)
    assert len(tokens) >= 3  # one per Graph-reading step and run, plus the renewal
    secrets = [SECRET, *tokens]

    recorded = recorded_text(sync, results, caplog)
    assert "raw_graph_users" in recorded["event log"] and len(recorded["event log"]) > 10_000
    assert len(recorded["warehouse"]) > 100_000
    for place, text in recorded.items():
        for secret in secrets:
            assert secret not in text, place
