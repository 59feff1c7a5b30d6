"""A sync with a recognisable client secret: neither it nor any access token the tenant issued
appears in a log line, the Dagster event log (messages and metadata), an error, or any warehouse
table."""

from __future__ import annotations

import logging

import duckdb
from dagster._serdes import serialize_value

from conftest import SECRET, integration


def test_no_secret_or_token_in_logs_events_or_the_warehouse(make_sync, emulator, caplog):
    caplog.set_level(logging.DEBUG)
    sync = make_sync(integration("acme", emulator))
    emulator.faults.add(401, path="/v1.0/users/delta", times=1,  # a token renewal, logged or not
                        body={"error": {"code": "InvalidAuthenticationToken", "message": "Lifetime validation failed"}})
    results = [sync.run("acme"), sync.run("acme")]
    assert all(r.success for r in results)
    with emulator._tokens_lock:
        tokens = list(emulator._tokens)
    assert len(tokens) >= 3  # one per Graph-reading step and run, plus the renewal
    secrets = [SECRET, *tokens]

    events = "\n".join(serialize_value(entry) for r in results for entry in sync.instance.all_logs(r.run_id))
    assert "raw_graph_users" in events and len(events) > 10_000
    logs = "\n".join(f"{record.getMessage()} {record.args!r}" for record in caplog.records)
    con = duckdb.connect(str(sync.warehouse), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        warehouse = "\n".join(repr(con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables)
    finally:
        con.close()
    assert len(warehouse) > 100_000
    for secret in secrets:
        assert secret not in events
        assert secret not in logs
        assert secret not in warehouse
