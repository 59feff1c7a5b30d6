"""Field mapping, custom fields and exclusions, end to end: real Dagster runs of the sync job over real
HTTPS to the Graph emulator, into real DuckDB files.

Every expectation is computed here, from ``directory.users``, with plain Python implementing the
documented rules (README "Configuration", ``config.Mapping``/``Exclusions`` and the rules listed in
``transform/mapping.py``'s docstring); the product's mapping and exclusion code is never called.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime

import dagster as dg
import pytest

from entra_pipeline.sync import checks as c
from entra_pipeline.emulator.people import BAD_DATES, BAD_NUMBERS

from tests.support.expected import excluded_by_rule, expected_contacts, expected_mapped
from tests.support.integrations import integration, write_config
from tests.support.runs import check_evaluations, failure_messages, materialized, step_metadata


KEY = "acme"
EXTENSION_ATTRIBUTES = [f"extensionAttribute{i}" for i in range(1, 16)]

# README, "Contact fields and their defaults": contact field <- directory field.
DEFAULTS = {
    "email": "mail", "first_name": "givenName", "last_name": "surname", "display_name": "displayName",
    "job_title": "jobTitle", "department": "department", "company": "companyName",
    "office_location": "officeLocation", "city": "city", "country": "country", "usage_location": "usageLocation",
    "phone": "businessPhones", "mobile": "mobilePhone", "employee_id": "employeeId",
    "employee_type": "employeeType", "hire_date": "employeeHireDate", "user_principal_name": "userPrincipalName",
    "preferred_language": "preferredLanguage", "account_enabled": "accountEnabled", "user_type": "userType",
}
BUILT_IN = list(DEFAULTS)

NUMBER_REASON = "not a number (digits with an optional sign, '.' decimal point and exponent)"
DATE_REASON = ("not a valid ISO 8601 date (YYYY-MM-DD, with or without a zone such as -08:00, or a date-time); "
               "set a format for other layouts")


# -- the documented rules, in plain Python -------------------------------------------------------

def ext(user: dict, name: str):
    return user["onPremisesExtensionAttributes"][name]


def as_text(value):
    """Text: trimmed, empty is NULL; a collection gives its first non-empty entry; booleans keep
    their JSON spelling."""
    if isinstance(value, list):
        value = next((v for v in value if v is not None and v.strip()), None)
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    return str(value).strip() or None


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}.*)?", re.ASCII)


def as_number(text: str | None) -> float | None:
    """Number: digits with optional sign, decimal point and exponent, and finite."""
    if text is None or not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def as_iso_date(text: str | None) -> date | None:
    """Date: an ISO date, or an ISO date-time whose calendar date as written is kept."""
    if text is None or not _ISO.fullmatch(text):
        return None
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return None
    return date.fromisoformat(text[:10])


def as_formatted_date(text: str | None, fmt: str) -> date | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, fmt).date()
    except ValueError:
        return None


def default_fields(user: dict) -> dict:
    """The built-in contact fields of a user under the default mapping."""
    row = {field: as_text(user[source]) for field, source in DEFAULTS.items()}
    row["email"] = row["email"].lower() if row["email"] else None
    row["hire_date"] = as_iso_date(row["hire_date"])
    row["account_enabled"] = user["accountEnabled"]
    return row


def invalid_message(contact_id: str, field: str, kind: str, raw: str, source: str, reason: str) -> str:
    return f"contact {contact_id}: {field} ({kind}) cannot take {raw!r} from {source}: {reason}; left empty"


# -- helpers over the warehouse ----------------------------------------------------------------

def rows_by_source(sync, table: str, columns: list[str]) -> dict[str, tuple]:
    quoted = ", ".join(f'"{c}"' for c in columns)
    return {r[0]: r[1:] for r in sync.query(
        f'SELECT source_id, {quoted} FROM "{table}" WHERE integration = ?', [KEY])}


def contact_ids(sync, table: str = "contacts") -> dict[str, str]:
    return dict(sync.query(f'SELECT source_id, contact_id FROM "{table}" WHERE integration = ?', [KEY]))


def invalid_values(sync) -> set[tuple[str, str, str]]:
    return set(sync.query("SELECT record, field, message FROM import_errors WHERE integration = ? "
                          "AND stage = 'mapped_contacts' AND code = 'invalid_value'", [KEY]))


def selected(result) -> list[str]:
    return step_metadata(result, "raw_graph_users")["selected_properties"].split(", ")


def run_ok(sync):
    result = sync.run(KEY)
    assert result.success, failure_messages(result)
    return result


def decide_all(**mapped: str) -> dict[str, str]:
    """mapping.fields with every extension attribute decided: ``mapped`` ones mapped, the rest skip."""
    return {name: mapped.get(name, "skip") for name in EXTENSION_ATTRIBUTES}


# -- 1. the default mapping ----------------------------------------------------------------------

def test_default_mapping_fills_every_built_in_field(make_sync, emulator, directory):
    sync = make_sync(integration(KEY, emulator))
    result = run_ok(sync)

    assert selected(result) == sorted({"id", *DEFAULTS.values(), "onPremisesExtensionAttributes"})

    mapped, contacts = expected_mapped(directory), expected_contacts(directory)
    columns = BUILT_IN + ["manager_id", "manager_email"]
    for table, ids in (("mapped_contacts", mapped), ("contacts", contacts)):
        got = rows_by_source(sync, table, columns)
        expected = {uid: tuple(default_fields(directory.user_by_id(uid)).values()) + (None, None) for uid in ids}
        assert got == expected, table

    # The directory exercises the rules: several phones, no phone, mixed-case mail, date-times.
    people = [directory.user_by_id(uid) for uid in contacts]
    assert any(len(u["businessPhones"]) > 1 for u in people) and any(not u["businessPhones"] for u in people)
    assert any(u["mail"] != u["mail"].lower() for u in people)
    assert any(u["employeeHireDate"] and "T" in u["employeeHireDate"] for u in people)
    assert any(u["employeeHireDate"] is None for u in people)


# -- 2. a changed mapping and a skipped field ---------------------------------------------------

def test_explicit_mapping_and_skip_replace_the_defaults(make_sync, emulator, directory):
    fields = {"extensionAttribute2": "department", "officeLocation": "skip", "jobTitle": "display_name"}
    sync = make_sync(integration(KEY, emulator, mapping={"fields": fields}))
    result = run_ok(sync)

    contacts = expected_contacts(directory)
    got = rows_by_source(sync, "contacts", BUILT_IN)
    expected = {}
    for uid in contacts:
        user = directory.user_by_id(uid)
        row = default_fields(user)
        row["department"] = as_text(ext(user, "extensionAttribute2"))
        row["office_location"] = None
        row["display_name"] = as_text(user["jobTitle"])
        # jobTitle is named in mapping.fields, so it no longer keeps its automatic mapping to
        # job_title ("imported fields not named keep the automatic mapping").
        row["job_title"] = None
        expected[uid] = tuple(row.values())
    assert got == expected
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == contacts
    # Something really changed: the division differs from the department for most people.
    assert sum(1 for uid in contacts if got[uid][BUILT_IN.index("department")]
               != as_text(directory.user_by_id(uid)["department"])) > len(contacts) // 2

    # Fields nothing uses any more are not requested from Graph.
    properties = set(selected(result))
    assert {"displayName", "officeLocation", "department"}.isdisjoint(properties)
    assert {"jobTitle", "onPremisesExtensionAttributes"} <= properties


# -- 3. employee_id as the Unique Contact ID ----------------------------------------------------

def test_employee_id_as_unique_contact_id(make_sync, emulator, directory):
    sync = make_sync(integration(KEY, emulator, mapping={"unique_id": "employee_id"}))
    result = run_ok(sync)

    with_id = {u["id"]: u["employeeId"].strip() for u in directory.users if as_text(u["employeeId"])}
    kept = {uid: cid for uid, cid in with_id.items()
            if directory.user_by_id(uid)["accountEnabled"]
            and directory.user_by_id(uid)["userType"] != "Guest"
            and ext(directory.user_by_id(uid), "extensionAttribute1") != "Inactive"}
    without = [u for u in directory.users if u["id"] not in with_id]
    # Members without employeeId exist, some with a mailbox (a contact under the default ID), and
    # people without a mailbox now become contacts.
    assert any(u["userType"] == "Member" and u["mail"] for u in without)
    mailless = {uid for uid in kept if not directory.user_by_id(uid)["mail"]}
    assert mailless

    assert contact_ids(sync, "mapped_contacts") == with_id
    assert contact_ids(sync) == kept
    emails = dict(sync.query("SELECT source_id, email FROM contacts"))
    assert {uid for uid, email in emails.items() if email is None} == mailless

    errors = sync.query("SELECT record, field, code, message FROM import_errors WHERE integration = ?", [KEY])
    assert sorted(errors) == sorted(
        (u["id"], "employee_id", "missing_unique_id",
         f"user {u['userPrincipalName']}: Unique Contact ID field 'employee_id' is empty; not imported")
        for u in without)
    evaluation = check_evaluations(result)[c.CONTACTS_HAVE_UNIQUE_ID]
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert evaluation.description == f"{len(without):,} users without a usable Unique Contact ID"
    assert check_evaluations(result)[c.UNIQUE_CONTACT_IDS_DISTINCT].passed


# -- 4. extension attributes as typed custom fields ---------------------------------------------

TYPED_FIELDS = decide_all(extensionAttribute3="building", extensionAttribute4="seniority",
                          extensionAttribute5="start")
TYPED_CUSTOM = {"building": "Text", "seniority": "Number", "start": "Date"}


def test_extension_attributes_as_typed_custom_fields(make_sync, emulator, directory):
    sync = make_sync(integration(KEY, emulator, mapping={"fields": TYPED_FIELDS, "custom_fields": TYPED_CUSTOM}))
    result = run_ok(sync)

    mapped, contacts = expected_mapped(directory), expected_contacts(directory)
    values, errors = {}, set()
    for uid, cid in mapped.items():
        user = directory.user_by_id(uid)
        building = as_text(ext(user, "extensionAttribute3"))
        seniority_text = as_text(ext(user, "extensionAttribute4"))
        start_text = as_text(ext(user, "extensionAttribute5"))
        values[uid] = (building, as_number(seniority_text), as_iso_date(start_text))
        if seniority_text is not None and values[uid][1] is None:
            errors.add((uid, "seniority", invalid_message(cid, "seniority", "Number", seniority_text,
                                                          "extensionAttribute4", NUMBER_REASON)))
        if start_text is not None and values[uid][2] is None:
            errors.add((uid, "start", invalid_message(cid, "start", "Date", start_text,
                                                      "extensionAttribute5", DATE_REASON)))

    assert rows_by_source(sync, "mapped_contacts", ["building", "seniority", "start"]) == values
    assert rows_by_source(sync, "contacts", ["building", "seniority", "start"]) == \
        {uid: values[uid] for uid in contacts}
    assert invalid_values(sync) == errors
    # The documented rules reject exactly the values the emulator plants as malformed (and accept
    # padding, decimals, negatives and date-times).
    rejected = {(field, ext(directory.user_by_id(uid), "extensionAttribute4" if field == "seniority"
                            else "extensionAttribute5")) for uid, field, _ in errors}
    assert rejected == {("seniority", v) for v in BAD_NUMBERS} | {("start", v) for v in BAD_DATES}
    padded = next(u for u in directory.users if u["id"] in mapped and (ext(u, "extensionAttribute4") or "")[:1] == " ")
    assert values[padded["id"]][1] == float(ext(padded, "extensionAttribute4").strip())
    stamp = next(u for u in directory.users if u["id"] in mapped and "T" in (ext(u, "extensionAttribute5") or ""))
    assert values[stamp["id"]][2] == date.fromisoformat(ext(stamp, "extensionAttribute5")[:10])

    # One literal message of each type.
    overflow = next(u for u in directory.users if u["id"] in mapped and ext(u, "extensionAttribute4") == "1e400")
    feb = next(u for u in directory.users if u["id"] in mapped and ext(u, "extensionAttribute5") == "2024-02-30")
    assert (overflow["id"], "seniority",
            f"contact {mapped[overflow['id']]}: seniority (Number) cannot take '1e400' from extensionAttribute4: "
            "not a number (digits with an optional sign, '.' decimal point and exponent); left empty") in errors
    assert (feb["id"], "start",
            f"contact {mapped[feb['id']]}: start (Date) cannot take '2024-02-30' from extensionAttribute5: "
            f"{DATE_REASON}; left empty") in errors

    # Bad values are warnings: nobody is lost, the run succeeds.
    assert contact_ids(sync) == contacts
    evaluations = check_evaluations(result)
    valid = evaluations[c.CONTACT_VALUES_VALID]
    assert (valid.passed, valid.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert valid.description == f"{len(errors):,} values that do not fit their field"
    assert evaluations[c.EXTENSION_ATTRIBUTES_DECIDED].passed
    assert step_metadata(result, "mapped_contacts")["custom_fields"] == \
        "building (Text), seniority (Number), start (Date)"

    types = set(sync.query("SELECT table_name, column_name, data_type FROM information_schema.columns "
                           "WHERE column_name IN ('building', 'seniority', 'start')"))
    assert types == {(t, col, kind) for t in ("mapped_contacts", "contacts", "all_contacts")
                     for col, kind in (("building", "VARCHAR"), ("seniority", "DOUBLE"), ("start", "DATE"))}


def test_date_field_with_a_format(make_sync, emulator, directory):
    fields = {**decide_all(extensionAttribute5="start"), "employeeHireDate": "hired"}
    custom = {"start": {"type": "Date", "format": "%d/%m/%Y"},
              "hired": {"type": "Date", "format": "%Y-%m-%dT%H:%M:%SZ"}}
    sync = make_sync(integration(KEY, emulator, mapping={"fields": fields, "custom_fields": custom}))
    result = run_ok(sync)

    mapped, contacts = expected_mapped(directory), expected_contacts(directory)
    values, errors = {}, set()
    for uid, cid in mapped.items():
        user = directory.user_by_id(uid)
        start_text = as_text(ext(user, "extensionAttribute5"))
        values[uid] = (as_formatted_date(start_text, "%d/%m/%Y"),
                       as_formatted_date(as_text(user["employeeHireDate"]), "%Y-%m-%dT%H:%M:%SZ"),
                       None)  # hire_date: employeeHireDate is named in mapping.fields, so it feeds hired only
        if start_text is not None and values[uid][0] is None:
            errors.add((uid, "start", invalid_message(cid, "start", "Date", start_text, "extensionAttribute5",
                                                      "not a valid date in the format '%d/%m/%Y'")))
    # Under the format the ISO values are the errors now, and so is the impossible 31/02/2024.
    assert all(v[0] is None for v in values.values())
    assert sum(1 for v in values.values() if v[1] is not None) > len(values) // 2

    assert rows_by_source(sync, "mapped_contacts", ["start", "hired", "hire_date"]) == values
    assert invalid_values(sync) == errors
    raws = {msg.split(" cannot take ")[1].split(" from ")[0] for _, _, msg in errors}
    assert "'31/02/2024'" in raws and "'2024-02-30'" in raws and "'soon'" in raws
    assert any(re.fullmatch(r"'\d{4}-\d{2}-\d{2}'", r) for r in raws)
    assert any(re.fullmatch(r"'\d{4}-\d{2}-\d{2}T.*'", r) for r in raws)
    feb = next(u for u in directory.users if u["id"] in mapped and ext(u, "extensionAttribute5") == "31/02/2024")
    assert (feb["id"], "start",
            f"contact {mapped[feb['id']]}: start (Date) cannot take '31/02/2024' from extensionAttribute5: "
            "not a valid date in the format '%d/%m/%Y'; left empty") in errors
    assert contact_ids(sync) == contacts
    assert check_evaluations(result)[c.CONTACT_VALUES_VALID].description == \
        f"{len(errors):,} values that do not fit their field"


# -- 5. undecided extension attributes --------------------------------------------------------

def test_undecided_extension_attributes_warn_until_all_are_decided(make_sync, emulator, directory):
    sync = make_sync(integration(KEY, emulator))
    result = run_ok(sync)
    counts = {name: sum(1 for u in directory.users if as_text(ext(u, name)) is not None)
              for name in EXTENSION_ATTRIBUTES}
    assert any(counts.values()) and not all(counts.values())
    evaluation = check_evaluations(result)[c.EXTENSION_ATTRIBUTES_DECIDED]
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert evaluation.description == "15 extension attributes neither mapped nor skipped: " + ", ".join(
        f"{name} ({n:,} users with a value)" for name, n in counts.items())
    assert evaluation.metadata["undecided"].value == counts

    # All 15 decided, some mapped, the rest skipped.
    fields = decide_all(extensionAttribute2="department", extensionAttribute15="migration")
    write_config(sync.config, integration(KEY, emulator, mapping={
        "fields": fields, "custom_fields": {"migration": "Text"}}))
    result = run_ok(sync)
    evaluation = check_evaluations(result)[c.EXTENSION_ATTRIBUTES_DECIDED]
    assert (evaluation.passed, evaluation.description) == (True, "all 15 extension attributes are mapped or skipped")
    assert evaluation.metadata["undecided"].value == {}
    assert "onPremisesExtensionAttributes" in selected(result)
    got = rows_by_source(sync, "contacts", ["department", "migration"])
    assert got == {uid: (as_text(ext(directory.user_by_id(uid), "extensionAttribute2")),
                         as_text(ext(directory.user_by_id(uid), "extensionAttribute15")))
                   for uid in expected_contacts(directory)}

    # All decided, none mapped, no rule using them: the extension attributes are not read at all.
    write_config(sync.config, integration(KEY, emulator, mapping={"fields": decide_all()}, exclusions={"rules": []}))
    result = run_ok(sync)
    assert check_evaluations(result)[c.EXTENSION_ATTRIBUTES_DECIDED].passed
    assert "onPremisesExtensionAttributes" not in selected(result)
    assert sync.query("SELECT count(*) FROM raw_graph_users WHERE data::VARCHAR LIKE '%extensionAttribute%'") == [(0,)]
    [(fields_read,)] = sync.query("SELECT fields FROM directory_fields_read WHERE stage = 'raw_graph_users'")
    assert not set(fields_read) & set(EXTENSION_ATTRIBUTES)
    imported = [json.loads(r[0]) for r in sync.query("SELECT imported FROM contacts")]
    assert imported and not any(set(i) & set(EXTENSION_ATTRIBUTES) for i in imported)
    assert contact_ids(sync) == {uid: cid for uid, cid in expected_mapped(directory).items()
                                 if directory.user_by_id(uid)["accountEnabled"]
                                 and directory.user_by_id(uid)["userType"] != "Guest"}


# -- 6. guests and disabled accounts ------------------------------------------------------------

def test_guests_and_disabled_accounts_are_excluded_unless_switched_off(make_sync, emulator, directory):
    sync = make_sync(integration(KEY, emulator))
    result = run_ok(sync)
    expected = excluded_by_rule(directory)
    assert dict(sync.query("SELECT source_id, rule FROM excluded_contacts")) == expected
    rules = set(expected.values())
    assert rules == {"Disabled account", "Guest", "On leave"}
    # Disabled guests exist; the built-in "Disabled account" comes first.
    assert any(u["mail"] and not u["accountEnabled"] and u["userType"] == "Guest" for u in directory.users)
    assert step_metadata(result, "filtered_contacts")["rules"] == ["Disabled account", "Guest", "On leave"]
    assert set(sync.query("SELECT contact_id, source_id FROM excluded_contacts")) == \
        {(expected_mapped(directory)[uid], uid) for uid in expected}

    write_config(sync.config, integration(KEY, emulator, exclusions={
        "disabled_accounts": False, "guests": False, "rules": []}))
    result = run_ok(sync)
    assert contact_ids(sync) == expected_mapped(directory)
    assert sync.query("SELECT count(*) FROM excluded_contacts") == [(0,)]
    meta = step_metadata(result, "filtered_contacts")
    assert (meta["excluded"], meta["rules"]) == (0, [])
    now = contact_ids(sync)
    kinds = {(u["userType"], u["accountEnabled"]) for u in directory.users if u["id"] in now}
    assert {("Guest", True), ("Member", False), ("Guest", False)} <= kinds


# -- 7. rules on contact fields, all/any, and the other operators -------------------------------

def first_match(user: dict, rules: list[tuple[str, callable]]) -> str | None:
    return next((name for name, test in rules if test(user)), None)


def check_rules(sync, directory, predicates) -> dict[str, str]:
    """Excluded exactly as ``predicates`` (name, test) say, first match wins; contacts the rest."""
    mapped = expected_mapped(directory)
    expected = {}
    for uid in mapped:
        rule = first_match(directory.user_by_id(uid), predicates)
        if rule is not None:
            expected[uid] = rule
    assert dict(sync.query("SELECT source_id, rule FROM excluded_contacts")) == expected
    assert contact_ids(sync) == {uid: cid for uid, cid in mapped.items() if uid not in expected}
    return expected


BUILT_IN_RULES = [("Disabled account", lambda u: u["accountEnabled"] is False),
                  ("Guest", lambda u: u["userType"] == "Guest")]


def test_rules_on_contact_fields_with_all_and_any(make_sync, emulator, directory):
    rules = [
        {"name": "On leave", "field": "extensionAttribute1", "equals": "Inactive"},
        {"name": "DACH sales", "all": [{"contact_field": "department", "equals": "Sales"},
                                       {"contact_field": "country", "in": ["DE", "AT"]}]},
        {"name": "Contractors and leads", "any": [{"field": "employeeType", "equals": "Contractor"},
                                                  {"contact_field": "job_title", "contains": "Lead"}]},
    ]
    sync = make_sync(integration(KEY, emulator, exclusions={"rules": rules}))
    result = run_ok(sync)
    predicates = BUILT_IN_RULES + [
        ("On leave", lambda u: ext(u, "extensionAttribute1") == "Inactive"),
        ("DACH sales", lambda u: as_text(u["department"]) == "Sales" and as_text(u["country"]) in ("DE", "AT")),
        ("Contractors and leads", lambda u: u["employeeType"] == "Contractor"
         or "Lead" in (as_text(u["jobTitle"]) or "")),
    ]
    expected = check_rules(sync, directory, predicates)
    counts = {name: sum(1 for r in expected.values() if r == name) for name, _ in predicates}
    assert all(counts.values()), counts
    assert step_metadata(result, "filtered_contacts")["excluded_by_rule"] == dict(sorted(counts.items()))
    # Order matters: people matching a later rule too are named by the first one.
    users = [directory.user_by_id(uid) for uid in expected]
    assert any(u["accountEnabled"] is False and predicates[3][1](u) for u in users)
    assert any(predicates[3][1](u) and predicates[4][1](u) and expected[u["id"]] == "DACH sales" for u in users)
    # Both branches of `any` matter.
    leads = {u["id"] for u in users if expected[u["id"]] == "Contractors and leads"}
    assert any(directory.user_by_id(uid)["employeeType"] != "Contractor" for uid in leads)
    assert any("Lead" not in (directory.user_by_id(uid)["jobTitle"] or "") for uid in leads)


def test_other_operators_and_collections(make_sync, emulator, directory):
    mapped = expected_mapped(directory)
    # A plain member's alias, for `contains` on a collection (an exact, case-sensitive element match).
    alias_user = next(u for u in directory.users if u["id"] in mapped and u["accountEnabled"]
                      and u["userType"] == "Member" and not u["otherMails"] and u["businessPhones"]
                      and u["usageLocation"] != "JP" and not ext(u, "extensionAttribute7")
                      and ext(u, "extensionAttribute1") != "Inactive")
    alias = next(p for p in alias_user["proxyAddresses"] if p.startswith("smtp:"))
    rules = [
        {"name": "On leave", "field": "extensionAttribute1", "equals": "Inactive"},
        {"name": "Badge holders", "field": "extensionAttribute7", "starts_with": "Badge-"},
        {"name": "Secondary address", "field": "otherMails", "is_not_empty": True},
        {"name": "No phone outside GB", "all": [{"field": "businessPhones", "is_empty": True},
                                                {"contact_field": "country", "not_equals": "GB"}]},
        {"name": "Far away", "any": [{"contact_field": "usage_location",
                                      "not_in": ["US", "DE", "GB", "AT", "FR", "ES", "PL", "DK"]}]},
        {"name": "Alias in upper case", "field": "proxyAddresses", "contains": alias.upper()},
        {"name": "Alias", "field": "proxyAddresses", "contains": alias},
    ]
    sync = make_sync(integration(KEY, emulator, exclusions={"rules": rules}))
    run_ok(sync)
    predicates = BUILT_IN_RULES + [
        ("On leave", lambda u: ext(u, "extensionAttribute1") == "Inactive"),
        ("Badge holders", lambda u: (ext(u, "extensionAttribute7") or "").startswith("Badge-")),
        ("Secondary address", lambda u: u["otherMails"] != []),
        ("No phone outside GB", lambda u: u["businessPhones"] == [] and as_text(u["country"]) != "GB"),
        ("Far away", lambda u: as_text(u["usageLocation"]) not in ("US", "DE", "GB", "AT", "FR", "ES", "PL", "DK")),
        ("Alias in upper case", lambda u: alias.upper() in u["proxyAddresses"]),
        ("Alias", lambda u: alias in u["proxyAddresses"]),
    ]
    expected = check_rules(sync, directory, predicates)
    named = set(expected.values())
    assert named == {name for name, _ in predicates} - {"Alias in upper case"}
    assert expected[alias_user["id"]] == "Alias"
    assert any(as_text(directory.user_by_id(uid)["country"]) == "GB" and not directory.user_by_id(uid)["businessPhones"]
               for uid in mapped if uid not in expected)


def test_rule_on_a_date_contact_field_matches_the_iso_date(make_sync, emulator, directory):
    mapped = expected_mapped(directory)
    user = next(u for u in directory.users if u["id"] in mapped and u["accountEnabled"]
                and u["userType"] == "Member" and u["employeeHireDate"])
    day = as_iso_date(user["employeeHireDate"]).isoformat()
    rules = [{"name": "Hired that day", "contact_field": "hire_date", "equals": day}]
    sync = make_sync(integration(KEY, emulator, exclusions={"rules": rules}))
    run_ok(sync)
    check_rules(sync, directory, BUILT_IN_RULES + [
        ("Hired that day", lambda u: as_iso_date(as_text(u["employeeHireDate"])) == date.fromisoformat(day))])


# -- 8. the manager --------------------------------------------------------------------------

def test_manager_is_read_with_expand_by_list_reads(make_sync, emulator, directory):
    # read: list reads the manager with $expand (delta reads: test_delta.test_manager_fields_through_delta).
    sync = make_sync(integration(KEY, emulator, source={"read": "list"}, mapping={
        "fields": {"managerId": "manager_id", "managerMail": "manager_email"}}))
    result = run_ok(sync)
    users = step_metadata(result, "raw_graph_users")
    assert users["expand"] == "manager($select=id,mail)"
    # Graph returns at most 100 users a page with $expand, whatever $top says, and does not combine
    # $expand with $count: the count is one request of its own.
    assert users["pages"] == users["graph_requests"] - 1 == math.ceil(len(directory.users) / 100)
    assert users["graph_reported_count"] == len(directory.users)
    assert users["rows"] == len(directory.users)
    assert "manager" not in selected(result)

    def manager_of(uid: str) -> tuple:
        found = directory.manager(uid)
        if found is None:
            return (None, None)
        _, obj = found
        return (as_text(obj["id"]), as_text(obj.get("mail")))  # a Text field: mail as written

    mapped, contacts = expected_mapped(directory), expected_contacts(directory)
    expected = {uid: manager_of(uid) for uid in mapped}
    assert rows_by_source(sync, "mapped_contacts", ["manager_id", "manager_email"]) == expected
    assert rows_by_source(sync, "contacts", ["manager_id", "manager_email"]) == {uid: expected[uid] for uid in contacts}
    assert contact_ids(sync) == contacts

    # The cases are there: no manager, an orgContact manager, a manager without mail, a mixed-case one.
    kinds = {directory.manager(uid)[0] for uid in contacts if directory.manager(uid)}
    assert kinds == {"#microsoft.graph.user", "#microsoft.graph.orgContact"}
    values = [expected[uid] for uid in contacts]
    assert (None, None) in values
    assert any(mid and mail is None for mid, mail in values)
    assert any(mail and mail != mail.lower() for _, mail in values)


# -- 9. a custom field's type changed between syncs ----------------------------------------------

def _seniority(kind: str) -> dict:
    return {"fields": decide_all(extensionAttribute4="seniority"), "custom_fields": {"seniority": kind}}


@pytest.fixture
def number_synced(make_sync, emulator, directory):
    sync = make_sync(integration(KEY, emulator, mapping=_seniority("Number")))
    run_ok(sync)
    got = rows_by_source(sync, "contacts", ["seniority"])
    assert got == {uid: (as_number(as_text(ext(directory.user_by_id(uid), "extensionAttribute4"))),)
                   for uid in expected_contacts(directory)}
    return sync


def test_changing_a_custom_fields_type_is_refused_and_writes_nothing(number_synced, emulator, directory):
    sync = number_synced
    before = sync.snapshot()
    write_config(sync.config, integration(KEY, emulator, mapping=_seniority("Text")))
    result = sync.run(KEY)

    assert not result.success
    [message] = failure_messages(result)
    assert "custom field 'seniority' is Text in the configuration but column mapped_contacts.seniority is DOUBLE" in message
    # raw_graph_users (and groups) re-read the directory; mapped_contacts refused, nothing after it ran.
    assert materialized(result) == {"raw_graph_users", "raw_graph_groups"}
    after = sync.snapshot()
    sync.unchanged_except(before, after, {"raw_graph_users", "raw_graph_groups", "raw_graph_group_members",
                                          "directory_fields_read"})
    types = set(sync.query("SELECT table_name, data_type FROM information_schema.columns "
                           "WHERE column_name = 'seniority'"))
    assert types == {("mapped_contacts", "DOUBLE"), ("contacts", "DOUBLE"), ("all_contacts", "DOUBLE")}

    # Going back to the type the column has works again.
    write_config(sync.config, integration(KEY, emulator, mapping=_seniority("Number")))
    run_ok(sync)
    assert contact_ids(sync) == expected_contacts(directory)


def test_changing_a_custom_fields_type_fails_with_an_accurate_message(number_synced, emulator):
    sync = number_synced
    write_config(sync.config, integration(KEY, emulator, mapping=_seniority("Text")))
    result = sync.run(KEY)
    assert not result.success
    [message] = failure_messages(result)
    assert message.strip().endswith(
        f"integration {KEY!r}: custom field 'seniority' is Text in the configuration but column "
        "mapped_contacts.seniority is DOUBLE (a field's type cannot change: give the field a new name); "
        "nothing was written")


def test_rule_on_a_contact_field_the_last_mapping_did_not_fill_asks_for_a_new_mapping(make_sync, emulator):
    sync = make_sync(integration(KEY, emulator))
    run_ok(sync)
    before = sync.snapshot()
    write_config(sync.config, integration(KEY, emulator, mapping={
        "fields": {"extensionAttribute2": "division"}, "custom_fields": {"division": "Text"}},
        exclusions={"rules": [{"name": "Retail", "contact_field": "division", "equals": "Retail"}]}))
    from entra_pipeline.definitions import SYNC_JOB, build_defs

    result = build_defs(sync.config, sync.warehouse).resolve_job_def(SYNC_JOB).execute_in_process(
        partition_key=KEY, instance=sync.instance, raise_on_error=False,
        asset_selection=[dg.AssetKey("filtered_contacts")])
    assert not result.success
    [message] = failure_messages(result)
    assert message.strip().endswith(
        f"integration {KEY!r}: the mapping and exclusions use contact fields that the last mapped_contacts did "
        "not fill (division); materialize mapped_contacts again")
    assert sync.snapshot() == before
