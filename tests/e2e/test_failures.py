"""Throttling, server errors, wrong secrets, lost pages and bad mappings, over real HTTPS:
transient faults are retried to the same result; permanent ones fail with one clear error and
leave the warehouse exactly as it was."""

from __future__ import annotations

import pytest

from entra_pipeline.sync import checks as c

from tests.support.expected import expected_contacts
from tests.support.integrations import integration, write_config
from tests.support.runs import Sync, check_outcomes, failure_messages, materialized, step_metadata
from tests.support.tenant import SECRET, SECRET_ENV


def test_429_with_retry_after_is_honoured(make_sync, emulator, directory):
    sync = make_sync(integration("acme", emulator))
    emulator.faults.add(429, path="/v1.0/users", times=1, retry_after=1)
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    meta = step_metadata(result, "raw_graph_users")
    assert (meta["graph_retries"], meta["graph_throttled"]) == (1, 1)
    assert meta["graph_seconds"] >= 1.0  # waited the Retry-After second
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(directory)


def test_503_and_504_are_retried(make_sync, emulator, directory):
    sync = make_sync(integration("acme", emulator))
    emulator.faults.add(503, path="/v1.0/groups", times=2)
    emulator.faults.add(504, path="/v1.0/users", times=1, retry_after=0)
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    assert step_metadata(result, "raw_graph_groups")["graph_retries"] == 2
    assert step_metadata(result, "raw_graph_users")["graph_retries"] == 1
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(directory)


def test_persistent_503_fails_with_request_id_and_writes_nothing(first_sync, emulator):
    before, content_before = first_sync.snapshot(), first_sync.snapshot(content_only=True)
    emulator.faults.add(503, path="/v1.0/users/delta", times=100)
    result = first_sync.run("acme")
    assert not result.success
    [message] = failure_messages(result)
    assert ("integration 'acme': reading users failed: GET /v1.0/users/delta: HTTP 503 ServiceUnavailable after 4 "
            "retries: The service is temporarily unavailable. Please retry later. (request-id ") in message
    assert "request-id none" not in message
    # raw_graph_groups succeeded in the same run and re-committed the same directory content.
    assert materialized(result) == {"raw_graph_groups"}
    first_sync.unchanged_except(before, first_sync.snapshot(), {"raw_graph_groups", "raw_graph_group_members"})
    assert first_sync.snapshot(content_only=True) == content_before


def test_wrong_secret_is_one_clear_error_and_nothing_changes(first_sync, monkeypatch):
    before = first_sync.snapshot()
    wrong = "definitely-the-wrong-secret-123"
    monkeypatch.setenv(SECRET_ENV, wrong)
    result = first_sync.run("acme")
    assert not result.success
    messages = failure_messages(result)
    assert len(messages) == 2  # both Graph readers fail; nothing downstream runs
    for message in messages:
        assert "integration 'acme'" in message
        assert "invalid_client: AADSTS7000215" in message
        assert wrong not in message and SECRET not in message
    assert materialized(result) == set()
    assert first_sync.snapshot() == before


def test_missing_secret_variable_names_it(first_sync, monkeypatch):
    before = first_sync.snapshot()
    monkeypatch.delenv(SECRET_ENV)
    result = first_sync.run("acme")
    assert not result.success
    assert any(f"integration 'acme': environment variable {SECRET_ENV} (source.client_secret_env) is not set" in m
               for m in failure_messages(result))
    assert first_sync.snapshot() == before


@pytest.mark.parametrize("read, path, message", [
    ("list", "/v1.0/users", "paging stopped early: read 999 users but Graph counted 2,800"),
    ("delta", "/v1.0/users/delta", "paging stopped early: the users delta round (changes) ended on page 1 "
                                   "without a nextLink or deltaLink"),
])
def test_lost_page_blocks_the_sync_and_writes_nothing(make_sync, emulator, read, path, message):
    sync = make_sync(integration("acme", emulator, source={"read": read}))
    assert sync.run("acme").success
    before = sync.snapshot()
    emulator.faults.truncate_paging(path, times=1)
    result = sync.run("acme")
    assert not result.success
    outcomes = check_outcomes(result)
    assert outcomes[c.RAW_USERS_COMPLETE] is False
    assert "raw_graph_users" not in materialized(result)
    assert not {"mapped_contacts", "filtered_contacts", "distribution_lists"} & materialized(result)
    assert any(f"{message}; nothing was written" in m for m in failure_messages(result))
    sync.unchanged_except(before, sync.snapshot(), {"raw_graph_groups", "raw_graph_group_members"})


def test_unique_id_mapped_to_an_empty_field_blocks_before_contacts_change(first_sync, emulator):
    before = first_sync.snapshot()
    broken = integration("acme", emulator, mapping={"fields": {"extensionAttribute10": "email"}})

    write_config(first_sync.config, broken)
    result = first_sync.run("acme")
    assert not result.success
    assert check_outcomes(result)[c.DIRECTORY_USERS_MAPPED] is False
    assert not {"mapped_contacts", "filtered_contacts", "distribution_lists"} & materialized(result)
    first_sync.unchanged_except(before, first_sync.snapshot(), {"raw_graph_users", "raw_graph_groups",
                                                                "raw_graph_group_members", "directory_fields_read"})
    # Only the raw stage's own row of directory_fields_read was renewed.
    assert [r for r in first_sync.snapshot()["directory_fields_read"] if "mapped_contacts" in r] == \
        [r for r in before["directory_fields_read"] if "mapped_contacts" in r]


def test_other_integrations_rows_are_never_touched(make_sync, emulator, directory):
    a = integration("alpha", emulator)
    b = integration("beta", emulator, exclusions={"disabled_accounts": False, "guests": False},
                    distribution_lists={"select": "none"})
    sync = make_sync(a, b)
    assert sync.run("alpha").success
    # The merged directory is everyone's (beta's sync merges its people in); every other table's rows
    # belong to one integration.
    merged = {"all_contacts", "all_contacts_excluded", "all_contact_changes", "all_contact_sources",
              "all_contact_list_members"}
    alpha_before = {t: [r for r in rows if "'alpha'" in r] for t, rows in sync.snapshot().items() if t not in merged}
    assert sync.run("beta").success
    alpha_after = {t: [r for r in rows if "'alpha'" in r] for t, rows in sync.snapshot().items() if t not in merged}
    assert alpha_after == alpha_before
    beta = dict(sync.query("SELECT source_id, contact_id FROM contacts WHERE integration = 'beta'"))
    assert beta == {u["id"]: u["mail"].lower() for u in directory.users if u["mail"]}
    assert sync.query("SELECT count(*) FROM distribution_lists WHERE integration = 'beta'") == [(0,)]


def test_selected_list_names_missing_or_ambiguous_warn(make_sync, emulator, directory):
    dup_a, dup_b = directory.special["duplicate_name"]
    name = directory.group_by_id(dup_a)["displayName"]
    nested = directory.group_by_id(directory.special["nested_parent"])["displayName"]
    sync = make_sync(integration("acme", emulator, distribution_lists={
        "select": "names", "names": [name, "No Such List", nested]}))
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    assert check_outcomes(result)[c.SELECTED_LISTS_RESOLVED] is False
    assert sync.query("SELECT list_id FROM distribution_lists") == [(directory.special["nested_parent"],)]
    errors = sync.query("SELECT record, code FROM import_errors WHERE stage = 'distribution_lists' ORDER BY code")
    assert errors == [(name, "list_name_ambiguous"), ("No Such List", "list_not_found")]


def test_a_read_that_stays_unavailable_is_retried_by_dagster_later(tmp_path, secret_env, emulator, directory):
    config = write_config(tmp_path / "integrations.yaml", integration("acme", emulator),
                          runs={"step_retries": 1, "step_retry_delay_seconds": 0})
    sync = Sync(config, tmp_path / "warehouse.duckdb")
    # Every attempt of the client (1 + max_retries 4) is answered 503: the step fails, transiently.
    emulator.faults.add(503, path="/v1.0/users/delta", times=5)
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    retried = [e.step_key for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retried == ["raw_graph_users"]
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(directory)


def test_a_wrong_secret_is_not_retried_by_dagster(tmp_path, emulator, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "definitely-the-wrong-secret-123")
    config = write_config(tmp_path / "integrations.yaml", integration("acme", emulator),
                          runs={"step_retries": 2, "step_retry_delay_seconds": 0})
    result = Sync(config, tmp_path / "warehouse.duckdb").run("acme")
    assert not result.success
    assert [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"] == []
