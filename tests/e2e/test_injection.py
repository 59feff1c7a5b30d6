"""Configuration values that reach SQL or Graph are inert: quotes and SQL in exclusion values,
list names and selected names change nothing but what they literally say; field names, which
become $select entries and columns, are refused before anything runs unless Graph and the
warehouse allow them."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from entra_pipeline.config import ConfigError

from tests.support.expected import expected_contacts
from tests.support.integrations import integration, write_config
from tests.support.runs import failure_messages


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


# Names reach Graph ($select) and SQL (custom fields are columns): they are checked against what
# Graph and the warehouse allow before anything runs, never quoted and hoped for.
BAD_NAMES = [
    ({"mapping": {"fields": {"displayName,passwordProfile": "department"}}},
     "field 'mapping.fields': unknown directory field 'displayName,passwordProfile'"),
    ({"mapping": {"fields": {"extension_b7a1c2d3e4f5061728394a5b6c7d8e9f_x&$filter=1": "department"}}},
     "field 'mapping.fields': bad custom field ID 'extension_b7a1c2d3e4f5061728394a5b6c7d8e9f_x&$filter=1'"),
    ({"mapping": {"fields": {"extensionAttribute4": 'x"; DROP TABLE contacts; --'},
                  "custom_fields": {'x"; DROP TABLE contacts; --': "Text"}}},
     "field 'mapping.custom_fields': custom field name 'x\"; DROP TABLE contacts; --' must be lower case letters, "
     "digits and _"),
    ({"mapping": {"fields": {"extensionAttribute4": "source_id"}, "custom_fields": {"source_id": "Text"}}},
     "field 'mapping.custom_fields': custom field name 'source_id' is taken by a built-in field"),
    ({"exclusions": {"rules": [{"name": "r", "field": "mail eq 'x' or 1 eq 1", "equals": "x"}]}},
     "field 'exclusions.rules.0.field': unknown directory field \"mail eq 'x' or 1 eq 1\""),
]


@pytest.mark.parametrize("change, expected", BAD_NAMES)
def test_names_that_would_reach_select_or_sql_are_refused_before_anything_runs(make_sync, emulator, change,
                                                                              expected):
    sync = make_sync(integration("acme", emulator))
    assert sync.run("acme").success
    before, requests = sync.snapshot(), emulator.request_count
    write_config(sync.config, integration("acme", emulator, **change))
    with pytest.raises(ConfigError) as info:
        sync.run("acme")
    assert str(info.value).startswith(f"{sync.config}: integration 'acme', {expected}")
    assert sync.snapshot() == before
    assert emulator.request_count == requests  # not one request reached Graph


def test_select_carries_only_property_names(make_sync, emulator):
    start = len(emulator.request_log)
    sync = make_sync(integration("acme", emulator, mapping={"fields": {
        "extensionAttribute2": "division", "managerMail": "manager_email"}, "custom_fields": {"division": "Text"}}))
    assert sync.run("acme").success
    selects = [parse_qs(urlsplit(target).query).get("$select", [""])[0]
               for _, target, _ in emulator.request_log[start:]]
    names = {name for select in selects for name in select.split(",") if name}
    assert {"onPremisesExtensionAttributes", "manager"} <= names
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) for name in names), names
