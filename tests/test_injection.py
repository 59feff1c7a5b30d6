"""Configuration values that reach SQL or Graph are inert: quotes and SQL in exclusion values,
list names and selected names change nothing but what they literally say."""

from __future__ import annotations

from conftest import expected_contacts, failure_messages, integration

EVIL = "x'); DROP TABLE contacts; --"


def test_sql_in_values_and_names_is_just_text(make_sync, emulator, directory):
    sync = make_sync(integration(
        "acme", emulator,
        exclusions={"rules": [{"name": "On leave", "field": "extensionAttribute1", "equals": "Inactive"},
                              {"name": EVIL, "field": "department", "equals": "' OR 1=1 --"},
                              {"name": "quote", "contact_field": "job_title", "in": ["O'Brien\"; DELETE FROM contacts"]}]},
        distribution_lists={"select": "names", "names": [EVIL, "All Employees"],
                            "custom": [{"name": EVIL, "when": {"contact_field": "country", "equals": "AT"}}]}))
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    # Nobody matched the injected values; every expected contact is there.
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(directory)
    assert sync.query("SELECT count(*) FROM excluded_contacts WHERE rule <> 'On leave' "
                      "AND rule NOT IN ('Disabled account', 'Guest')") == [(0,)]
    # The custom list keeps its name as written; the unknown selected name is reported, not run.
    [(list_id, name)] = sync.query("SELECT list_id, display_name FROM distribution_lists WHERE kind = 'custom'")
    assert name == EVIL and list_id.startswith("custom:")
    austrians = {cid for uid, cid in expected_contacts(directory).items()
                 if directory.user_by_id(uid)["country"] == "AT"}
    assert {cid for (cid,) in sync.query("SELECT contact_id FROM distribution_list_members WHERE list_id = ?",
                                         [list_id])} == austrians
    assert sync.query("SELECT record, code FROM import_errors WHERE stage = 'distribution_lists'") == [
        (EVIL, "list_not_found")]
    assert sync.query("SELECT count(*) FROM contacts")[0][0] > 0  # the table is still there
