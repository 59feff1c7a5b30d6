"""Every record contained (issue 13, item 6): one oversized or invalid value (20 MB, a lone
surrogate sent as the JSON escape "\\ud800", a NUL) becomes one import error naming the user and
field, the value is not imported, and everyone else syncs exactly as in a clean sync. Real Dagster
runs against the emulator over HTTPS into real DuckDB files; bad values are planted on the wire
with faults.rewrite. Also: DuckDB's memory is bounded by configuration."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from entra_pipeline.config import ConfigError
from entra_pipeline.sync import checks as c
from entra_pipeline.defs.resources import WarehouseResource
from entra_pipeline.emulator.population import generate_directory
from entra_pipeline.emulator.workday_workers import generate_workers
from entra_pipeline.warehouse import raw_workers
from entra_pipeline.warehouse.connection import MEMORY_LIMIT_ENV, THREADS_ENV, connect

from tests.support.expected import expected_contacts
from tests.support.integrations import integration, write_config
from tests.support.runs import Sync, failure_messages
from tests.support.tenant import WORKDAY_PASSWORD, WORKDAY_SEED, running_emulator


USERS, GROUPS = "/v1.0/users/delta", "/v1.0/groups/delta"
REPORT = "/ccx/service/customreport2/"
KEY = "acme"
RAW_STAGE = "raw_graph_users"
CONTACT_COLUMNS = "* EXCLUDE (run_id, synced_at)"


@pytest.fixture
def tenant(tmp_path):
    """A small tenant of its own: tests change its users between syncs."""
    with running_emulator(generate_directory(users=300, groups=20, seed=13), tmp_path / "certs") as server:
        yield server


def plant(changes: dict[str, dict], resource: str = "users"):
    """A rewrite of delta pages: the items of the given ids get ``changes`` (nested dicts merged).
    The body goes out as JSON text with non-ASCII escaped, so a lone surrogate travels as the
    valid JSON escape \\ud800, as a hostile or broken server would send it."""
    def transform(body):
        for item in body.get("value", []):
            for key, value in changes.get(item.get("id"), {}).items():
                item[key] = {**(item.get(key) or {}), **value} if isinstance(value, dict) else value
        return json.dumps(body)
    return transform


def contact_rows(sync: Sync) -> dict[str, dict]:
    con_rows = sync.query(f"SELECT {CONTACT_COLUMNS} FROM contacts ORDER BY contact_id")
    names = [r[0] for r in sync.query("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_name = 'contacts' ORDER BY ordinal_position")
             if r[0] not in ("run_id", "synced_at")]
    rows = {}
    for row in con_rows:
        record = dict(zip(names, row))
        record["imported"] = json.loads(record["imported"]) if record["imported"] else None
        rows[record["source_id"]] = record
    return rows


def value_errors(sync: Sync, stage: str = RAW_STAGE) -> set[tuple]:
    return set(sync.query("SELECT record, field, code FROM import_errors WHERE stage = ?", [stage]))


def a_contact(directory, n: int = 0) -> dict:
    kept = expected_contacts(directory)
    return [u for u in directory.users if u["id"] in kept][n]


def ok(result: dg.ExecuteInProcessResult) -> dg.ExecuteInProcessResult:
    assert result.success, failure_messages(result)
    return result


def values_check(result: dg.ExecuteInProcessResult) -> tuple[bool, dg.AssetCheckSeverity, str]:
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == c.DIRECTORY_VALUES_FIT]
    return check.passed, check.severity, check.description


# -- a 20 MB displayName -------------------------------------------------------------------------

def test_a_20_mb_display_name_is_one_import_error_and_everyone_else_syncs_as_in_a_clean_sync(
        tenant, make_sync, tmp_path):
    directory = tenant.directory
    clean = Sync(write_config(tmp_path / "clean.yaml", integration(KEY, tenant)), tmp_path / "clean.duckdb")
    ok(clean.run(KEY))

    user = a_contact(directory, 3)
    huge = "A" * (20 * 1024 * 1024)
    tenant.faults.rewrite(USERS, plant({user["id"]: {"displayName": huge}}), times=None)
    sync = make_sync(integration(KEY, tenant))
    ok(sync.run(KEY))
    tenant.faults.clear()

    [(record, field, code, message)] = sync.query(
        "SELECT record, field, code, message FROM import_errors WHERE stage = ?", [RAW_STAGE])
    assert (record, field, code) == (user["id"], "displayName", "value_too_long")
    assert message == (f"user {user['id']} ({user['userPrincipalName']}): displayName is 20,971,520 characters, "
                       f"more than the 256 allowed (\"{'A' * 40}\"… (20,971,520 characters)); not imported")
    # The value went nowhere: not in the raw row, nor in any table.
    assert sync.query("SELECT display_name, length(data) < 10000 FROM raw_graph_users WHERE id = ?",
                      [user["id"]]) == [(None, True)]
    # Everyone syncs exactly as in the clean sync; the user too, with the name left empty.
    expected = contact_rows(clean)
    expected[user["id"]]["display_name"] = None
    expected[user["id"]]["imported"]["displayName"] = None
    assert contact_rows(sync) == expected
    for table in ("distribution_list_members", "excluded_contacts"):
        assert sorted(sync.query(f"SELECT {CONTACT_COLUMNS} FROM {table}")) == \
            sorted(clean.query(f"SELECT {CONTACT_COLUMNS} FROM {table}")), table
    # Other stages' import errors (users without mail, ...) are exactly the clean sync's.
    other = "SELECT stage, record, field, code, message FROM import_errors WHERE stage <> ? ORDER BY ALL"
    assert sync.query(other, [RAW_STAGE]) == clean.query(other, [RAW_STAGE])


# -- a lone surrogate and a NUL, then fixed ---------------------------------------------------------

def test_a_lone_surrogate_and_a_nul_are_import_errors_until_the_values_are_fixed(tenant, make_sync):
    directory = tenant.directory
    ann, bob = a_contact(directory, 0), a_contact(directory, 1)
    tenant.faults.rewrite(USERS, plant({ann["id"]: {"displayName": "Ann \ud800 Lee"},
                                        bob["id"]: {"surname": "Smi\x00th"}}), times=None)
    sync = make_sync(integration(KEY, tenant))
    first = ok(sync.run(KEY))
    tenant.faults.clear()
    assert values_check(first) == (False, dg.AssetCheckSeverity.WARN,
                                   "2 directory values beyond their limits or not valid text")

    errors = {(r, f, code): m for r, f, code, m in sync.query(
        "SELECT record, field, code, message FROM import_errors WHERE stage = ?", [RAW_STAGE])}
    assert errors == {
        (ann["id"], "displayName", "invalid_text"):
            f"user {ann['id']} ({ann['userPrincipalName']}): displayName is not valid text (a lone surrogate "
            f"U+D800 at character 5: \"Ann \\ud800 Lee\"); not imported",
        (bob["id"], "surname", "invalid_text"):
            f"user {bob['id']} ({bob['userPrincipalName']}): surname is not valid text (a NUL character at "
            f"character 4: \"Smi\\u0000th\"); not imported",
    }
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(directory)
    rows = contact_rows(sync)
    assert (rows[ann["id"]]["display_name"], rows[ann["id"]]["last_name"]) == (None, ann["surname"])
    assert (rows[bob["id"]]["display_name"], rows[bob["id"]]["last_name"]) == (bob["displayName"], None)

    # A change to another field of Ann: the delta item carries only that field, so Graph still has
    # the bad name and the error stays.
    tenant.update_user(ann["id"], {"jobTitle": "Night Manager"})
    second = ok(sync.run(KEY))
    # The incremental round carried neither bad value again, and the check still counts both.
    assert values_check(second) == (False, dg.AssetCheckSeverity.WARN,
                                    "2 directory values beyond their limits or not valid text")
    assert value_errors(sync) == {(ann["id"], "displayName", "invalid_text"), (bob["id"], "surname", "invalid_text")}
    assert contact_rows(sync)[ann["id"]]["job_title"] == "Night Manager"

    # Fixed in the directory: the next (incremental) sync imports the values and clears the errors.
    tenant.update_user(ann["id"], {"displayName": "Ann Lee"})
    tenant.update_user(bob["id"], {"surname": "Smith"})
    result = ok(sync.run(KEY))
    assert [m for m in result.get_asset_materialization_events() if m.asset_key.path[-1] == RAW_STAGE][0] \
        .materialization.metadata["read_mode"].value == "incremental"
    assert value_errors(sync) == set()
    assert values_check(result) == (True, dg.AssetCheckSeverity.WARN,
                                    "no directory values beyond their limits or not valid text")
    rows = contact_rows(sync)
    assert (rows[ann["id"]]["display_name"], rows[bob["id"]]["last_name"]) == ("Ann Lee", "Smith")
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(tenant.directory)


def test_nan_and_infinite_numbers_are_import_errors_and_a_long_integer_keeps_every_digit(tenant, make_sync):
    """JSON has no NaN or Infinity, yet Python's parser reads them (and 1e400 as infinity): such a
    value is an import error like any value that cannot be stored. An integer beyond 64 bits is
    valid JSON and is stored digit for digit."""
    directory = tenant.directory
    ann, bob, cid = a_contact(directory, 0), a_contact(directory, 1), a_contact(directory, 2)
    tenant.faults.rewrite(USERS, plant({ann["id"]: {"jobTitle": float("nan")},
                                        bob["id"]: {"onPremisesExtensionAttributes": {"extensionAttribute2": float("inf")}},
                                        cid["id"]: {"jobTitle": 10 ** 25}}), times=None)
    sync = make_sync(integration(KEY, tenant))
    result = ok(sync.run(KEY))
    tenant.faults.clear()
    errors = {(r, f, code): m for r, f, code, m in sync.query(
        "SELECT record, field, code, message FROM import_errors WHERE stage = ?", [RAW_STAGE])}
    assert errors == {
        (ann["id"], "jobTitle", "invalid_number"):
            f"user {ann['id']} ({ann['userPrincipalName']}): jobTitle is not a JSON number (nan); not imported",
        (bob["id"], "extensionAttribute2", "invalid_number"):
            f"user {bob['id']} ({bob['userPrincipalName']}): extensionAttribute2 is not a JSON number (inf); "
            "not imported",
    }
    assert values_check(result)[0] is False
    rows = contact_rows(sync)
    assert (rows[ann["id"]]["job_title"], rows[cid["id"]]["job_title"]) == (None, "1" + "0" * 25)
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(directory)


def test_the_quick_check_never_accepts_a_number_the_exact_check_refuses():
    from entra_pipeline.transform import values

    for bad in (float("nan"), float("inf"), float("-inf")):
        for item in ({"id": "u1", "jobTitle": bad}, {"id": "u1", "businessPhones": ["+1", bad]},
                     {"id": "u1", "onPremisesExtensionAttributes": {"extensionAttribute3": bad}},
                     {"id": "u1", "proxyAddresses": [{"nested": bad}]}):
            checked = values.check_users([item], RAW_STAGE)
            assert [i.code for i in checked.issues] == ["invalid_number"], item
    fine = {"id": "u1", "jobTitle": 1.5, "businessPhones": [2.5e300], "employeeId": 10 ** 40}
    checked = values.check_users([fine], RAW_STAGE)
    assert (checked.items, checked.issues) == ([fine], [])


# -- extension attributes and directory extensions (custom fields) ----------------------------------

def test_an_oversized_extension_attribute_and_directory_extension_leave_the_contact_synced(tenant, make_sync):
    directory = tenant.directory
    ext = directory.extension_property
    carol, dave = a_contact(directory, 2), a_contact(directory, 4)
    mapping = {"fields": {"extensionAttribute5": "badge", ext: "cost_center"},
               "custom_fields": {"badge": "Text", "cost_center": "Text"}}
    tenant.faults.rewrite(USERS, plant({
        carol["id"]: {"onPremisesExtensionAttributes": {"extensionAttribute5": "x" * 1025}},
        dave["id"]: {ext: "y" * 5000}}), times=None)
    sync = make_sync(integration(KEY, tenant, mapping=mapping))
    ok(sync.run(KEY))
    tenant.faults.clear()

    assert value_errors(sync) == {(carol["id"], "extensionAttribute5", "value_too_long"),
                                  (dave["id"], ext, "value_too_long")}
    [message] = [r[0] for r in sync.query("SELECT message FROM import_errors WHERE record = ? AND stage = ?",
                                          [dave["id"], RAW_STAGE])]
    assert message == (f"user {dave['id']} ({dave['userPrincipalName']}): {ext} is 5,000 characters, more than the "
                       f"1,024 allowed (\"{'y' * 40}\"… (5,000 characters)); not imported")
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(directory)
    got = {uid: (badge, cost) for uid, badge, cost in sync.query("SELECT source_id, badge, cost_center FROM contacts")}
    expected = {u["id"]: ((u["onPremisesExtensionAttributes"] or {}).get("extensionAttribute5"), u[ext])
                for u in directory.users if u["id"] in got}
    expected[carol["id"]] = (None, carol[ext])
    expected[dave["id"]] = ((dave["onPremisesExtensionAttributes"] or {}).get("extensionAttribute5"), None)
    assert got == expected


# -- groups ------------------------------------------------------------------------------------------

def test_an_oversized_group_name_is_an_import_error_and_the_list_stays(tenant, make_sync):
    directory = tenant.directory
    group = next(g for g in directory.groups if g["mailEnabled"])
    tenant.faults.rewrite(GROUPS, plant({group["id"]: {"displayName": "G" * 257, "description": "d\x00"}}),
                          times=None)
    sync = make_sync(integration(KEY, tenant))
    ok(sync.run(KEY))
    tenant.faults.clear()
    assert value_errors(sync, "raw_graph_groups") == {(group["id"], "displayName", "value_too_long"),
                                                      (group["id"], "description", "invalid_text")}
    assert sync.query("SELECT display_name, mail FROM raw_graph_groups WHERE id = ?", [group["id"]]) == \
        [(None, group["mail"])]
    assert sync.query("SELECT count(*) FROM distribution_lists WHERE source_group_id = ?", [group["id"]]) == [(1,)]
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(directory)


# -- Workday -----------------------------------------------------------------------------------------

@pytest.fixture
def hr(workday, tmp_path, monkeypatch):
    monkeypatch.setenv("WD_LIMITS_PASSWORD", WORKDAY_PASSWORD)
    entry = {
        "key": "hr", "title": "Workday",
        "source": {"type": "workday", "host": workday.base_url, "tenant": "contoso_demo", "report_owner": "lmcneil",
                   "report_name": "Contacts_Sync", "username": "ISU_Contacts", "password_env": "WD_LIMITS_PASSWORD",
                   "ca_bundle": str(workday.ca_path), "max_retries": 1},
        "mapping": {"fields": {"Cost_Center": "cost_center"}, "custom_fields": {"cost_center": "Text"}},
        "exclusions": {"rules": [{"name": "Left or on leave", "field": "Worker_Status",
                                  "in": ["Terminated", "On Leave"]}]},
    }
    yield Sync(write_config(tmp_path / "hr.yaml", entry), tmp_path / "hr.duckdb")
    workday.faults.clear()


def test_a_workday_entry_with_oversized_or_invalid_values_is_reported_and_the_others_sync(hr, workday, hr_directory):
    workers = generate_workers(hr_directory, WORKDAY_SEED)
    active = [w for w in workers if w.get("Email_Address") and w["Worker_Status"] not in ("Terminated", "On Leave")]
    wide, broken, unnamed = active[0], active[1], active[2]

    def transform(body):
        for entry in body["Report_Entry"]:
            if entry["Employee_ID"] == wide["Employee_ID"]:
                entry["Cost_Center"] = "C" * 5000
            elif entry["Employee_ID"] == broken["Employee_ID"]:
                entry["First_Name"] = "Ev\x00a"  # (ijson's C parser turns a lone surrogate into "?")
            elif entry["Employee_ID"] == unnamed["Employee_ID"]:
                entry["Employee_ID"] = "E" * 300
        return json.dumps(body)

    workday.faults.rewrite(REPORT, transform)
    ok(hr.run("hr"))
    errors = set(hr.query("SELECT record, field, code FROM import_errors WHERE stage = 'raw_workday_workers'"))
    position = next(i for i, w in enumerate(workers, start=1) if w is unnamed)
    assert errors == {(wide["Employee_ID"], "Cost_Center", "value_too_long"),
                      (broken["Employee_ID"], "First_Name", "invalid_text"),
                      (f"entry {position}", "Employee_ID", "invalid_id")}
    expected = {w["Employee_ID"]: w["Email_Address"].strip().lower() for w in active if w is not unnamed}
    assert dict(hr.query("SELECT source_id, contact_id FROM contacts")) == expected
    rows = {r[0]: r[1:] for r in hr.query("SELECT source_id, first_name, cost_center FROM contacts")}
    assert rows[wide["Employee_ID"]] == (wide["First_Name"], None)
    assert rows[broken["Employee_ID"]] == (None, broken.get("Cost_Center"))


# -- DuckDB's memory, bounded by configuration ---------------------------------------------------------

def setting(con, name: str) -> str:
    return con.execute("SELECT current_setting(?)", [name]).fetchone()[0]


def test_the_warehouse_memory_limit_comes_from_the_resource_or_the_environment(tmp_path, monkeypatch):
    database = tmp_path / "warehouse.duckdb"
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    with WarehouseResource(database=str(database)).get_connection() as con:
        assert (setting(con, "memory_limit"), setting(con, "temp_directory")) == ("488.2 MiB", f"{database}.tmp")
    with WarehouseResource(database=str(database), memory_limit="1GB").get_connection() as con:
        assert setting(con, "memory_limit") == "953.6 MiB"
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "2GB")
    with WarehouseResource(database=str(database)).get_connection() as con:
        assert setting(con, "memory_limit") == "1.8 GiB"
    # Settable through dg.EnvVar like any resource field.
    monkeypatch.setenv("MY_DUCKDB_MEMORY", "256MB")
    resource = WarehouseResource(database=str(database), memory_limit=dg.EnvVar("MY_DUCKDB_MEMORY"))
    with dg.build_resources({"warehouse": resource}) as resources:
        with resources.warehouse.get_connection() as con:
            assert setting(con, "memory_limit") == "244.1 MiB"
    # The CLI's connections (warehouse.connect) have it too, read-only ones included.
    con = connect(database, read_only=True)
    try:
        assert setting(con, "memory_limit") == "1.8 GiB"
    finally:
        con.close()


def test_an_explicit_memory_limit_wins_and_the_environment_is_then_not_consulted(tmp_path, monkeypatch):
    database = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots of it")
    with WarehouseResource(database=str(database), memory_limit="512MB").get_connection() as con:
        assert (setting(con, "memory_limit"), setting(con, "temp_directory")) == ("488.2 MiB", f"{database}.tmp")
    con = connect(database, config={"memory_limit": "1GB"})
    try:
        assert (setting(con, "memory_limit"), setting(con, "temp_directory")) == ("953.6 MiB", f"{database}.tmp")
    finally:
        con.close()
    # Without one, the variable decides, and its error is the one line.
    with pytest.raises(ConfigError, match=f"^{MEMORY_LIMIT_ENV}='lots of it' is not a DuckDB memory limit"):
        connect(database)


def test_an_invalid_memory_limit_is_one_line_naming_the_variable_and_changes_nothing(
        tenant, make_sync, monkeypatch, tmp_path):
    sync = make_sync(integration(KEY, tenant))
    ok(sync.run(KEY))
    before = sync.snapshot()
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots of it")
    result = sync.run(KEY)
    assert not result.success
    line = (f"{MEMORY_LIMIT_ENV}='lots of it' is not a DuckDB memory limit: give a size of at least 64MB such as "
            "2GB or 512MB, or a share of memory such as 25%")
    # Each step that opened the warehouse failed with that line alone (no traceback, nothing after it).
    messages = [m.strip() for m in failure_messages(result)]
    assert messages and all(m.endswith(line) and "Traceback" not in m and "\n" not in m for m in messages)
    assert sync.snapshot() == before
    # The same line for the CLI's connections and for the Workday scratch file.
    with pytest.raises(ConfigError) as raised:
        connect(sync.warehouse, read_only=True)
    assert str(raised.value) == line
    with pytest.raises(ConfigError) as raised:
        raw_workers.stage_workers(str(tmp_path / "scratch.duckdb"), iter([]), "Employee_ID", set())
    assert str(raised.value) == line
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "10KB")
    with pytest.raises(ConfigError, match=f"^{MEMORY_LIMIT_ENV}='10KB' is not a DuckDB memory limit"):
        connect(sync.warehouse, read_only=True)


def test_duckdb_threads_come_from_the_resource_or_the_environment_and_a_bad_value_is_one_line(
        tenant, make_sync, tmp_path, monkeypatch):
    database = tmp_path / "threads.duckdb"
    monkeypatch.delenv(THREADS_ENV, raising=False)
    with WarehouseResource(database=str(database), threads=3).get_connection() as con:
        assert setting(con, "threads") == 3
    monkeypatch.setenv(THREADS_ENV, "1")
    con = connect(database, read_only=False)
    try:
        assert setting(con, "threads") == 1
    finally:
        con.close()
    with WarehouseResource(database=str(database), threads=2).get_connection() as con:
        assert setting(con, "threads") == 2  # the resource's own setting wins
    # A sync with one DuckDB thread gives the same warehouse.
    sync = make_sync(integration(KEY, tenant))
    ok(sync.run(KEY))
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(tenant.directory)
    before = sync.snapshot()
    monkeypatch.setenv(THREADS_ENV, "many")
    result = sync.run(KEY)
    line = f"{THREADS_ENV}='many' is not a number of DuckDB threads: give a whole number from 1 to 1024"
    messages = [m.strip() for m in failure_messages(result)]
    assert not result.success and messages and all(m.endswith(line) and "\n" not in m for m in messages)
    assert sync.snapshot() == before
    with pytest.raises(ConfigError) as raised:
        connect(sync.warehouse, read_only=True)
    assert str(raised.value) == line
    # Digits Python calls digits but int() refuses, and absurd lengths: the same kind of line.
    for text in ("²", "0", "1025", "9" * 5000):
        monkeypatch.setenv(THREADS_ENV, text)
        with pytest.raises(ConfigError, match=f"^{THREADS_ENV}=.* is not a number of DuckDB threads"):
            connect(sync.warehouse, read_only=True)


# -- the limits themselves, on the shapes a sync does not plant above -----------------------------------

def test_lists_links_property_names_and_unusable_ids_are_contained_too():
    from entra_pipeline.transform import values

    items = [
        {"id": "u1", "mail": "a@contoso.com", "proxyAddresses": ["SMTP:a@contoso.com", "x" * 70_000],
         "otherMails": ["b\x00@contoso.com"], "manager@delta": [{"id": "m" * 300}], "bad\ud800name": 1},
        {"id": "u2", "userPrincipalName": "b@contoso.com", "displayName": "Fine", "businessPhones": ["+1 555 0100"]},
        {"id": "x" * 300, "displayName": "Nobody"},
    ]
    checked = values.check_users(items, RAW_STAGE)
    assert {(i.record, i.field, i.code) for i in checked.issues} == {
        ("u1", "proxyAddresses", "value_too_long"), ("u1", "otherMails", "invalid_text"),
        ("u1", "managerId", "invalid_id"), ("u1", '"bad\\ud800name"', "invalid_text"),
        (values.shown("x" * 300), "id", "invalid_id")}
    assert checked.items == [
        {"id": "u1", "mail": "a@contoso.com", "proxyAddresses": None, "otherMails": None, "manager@delta": []},
        items[1]]
    # Every message is short: no value is ever shown whole.
    assert all(len(i.message) < 300 for i in checked.issues)


def test_a_list_beyond_the_json_limit_is_refused_whatever_the_other_fields():
    """The quick check of ordinary items must size lists as the exact check does (separators and
    numbers too): whether businessPhones is imported must not depend on an unrelated field."""
    from entra_pipeline.transform import values

    phones = [1] * 30_000  # 60,000 characters of JSON: little text, but beyond 64 KB as JSON
    alone = {"id": "u1", "userPrincipalName": "a@contoso.com", "businessPhones": phones}
    with_long_name = {**alone, "displayName": "N" * 300}
    for item, also in ((alone, set()), (with_long_name, {("u1", "displayName", "value_too_long")})):
        checked = values.check_users([item], RAW_STAGE)
        assert {(i.record, i.field, i.code) for i in checked.issues} == \
            {("u1", "businessPhones", "value_too_long"), *also}
        assert checked.items == [{**item, "businessPhones": None, **({"displayName": None} if also else {})}]
    # Just within the limit, both ways agree the other way round: imported.
    fits = {"id": "u2", "businessPhones": [1] * 6_000}
    assert values.check_users([fits], RAW_STAGE).items == [fits]
    assert values.check_users([{**fits, "displayName": "N" * 300}], RAW_STAGE).items == \
        [{**fits, "displayName": None}]


@pytest.mark.parametrize("manager", [{}, {"id": 123}, {"id": None, "mail": "boss@contoso.com"},
                                     {"mail": "boss@contoso.com"}])
def test_a_manager_without_a_usable_id_is_refused_whatever_the_other_fields(manager):
    """The quick check must not accept an expanded manager the exact check refuses."""
    from entra_pipeline.transform import values

    alone = {"id": "u1", "userPrincipalName": "a@contoso.com", "manager": manager}
    with_long_name = {**alone, "displayName": "N" * 300}
    for item, also in ((alone, set()), (with_long_name, {("u1", "displayName", "value_too_long")})):
        checked = values.check_users([item], RAW_STAGE)
        assert {(i.record, i.field, i.code) for i in checked.issues} == {("u1", "managerId", "invalid_text"), *also}
        assert checked.items[0]["manager"] is None


def test_error_lines_quote_no_lone_surrogate_and_no_bidirectional_override():
    """Text a server sent goes into an error line that the CLI prints: a lone surrogate could not be
    printed at all, and a right-to-left override would rewrite what the terminal shows."""
    from entra_pipeline.net import one_line

    assert one_line("bad\ud800code \u202eevil\u2066 line\nnext") == "bad\ufffdcode \ufffdevil\ufffd line next"
    one_line("bad\udfffcode").encode("utf-8")


def test_a_member_left_out_stays_an_import_error_while_later_rounds_change_other_members(tenant, make_sync):
    """members@delta carries only the members that changed: a later round about other members of
    the group does not mean the member left out (unusable id) is there now."""
    directory = tenant.directory
    group = next(g for g in directory.groups if g["mailEnabled"])
    inside = {oid for _, oid in directory.members.get(group["id"], ())}
    outsiders = [u for u in directory.users if u["id"] not in inside]
    bad_id = "m" * 300
    sync = make_sync(integration(KEY, tenant))
    ok(sync.run(KEY))

    def with_bad_member(body):
        for item in body.get("value", []):
            if item.get("id") == group["id"] and "members@delta" in item:
                item["members@delta"].append({"@odata.type": "#microsoft.graph.user", "id": bad_id})
        return body

    tenant.add_member(group["id"], outsiders[0]["id"])
    tenant.faults.rewrite(GROUPS, with_bad_member, times=None)
    ok(sync.run(KEY))
    tenant.faults.clear()
    stage = "raw_graph_groups"
    assert value_errors(sync, stage) == {(group["id"], "members", "invalid_id")}

    # Another member joins: the round carries members@delta for the group without the bad one.
    tenant.add_member(group["id"], outsiders[1]["id"])
    result = ok(sync.run(KEY))
    assert [m for m in result.get_asset_materialization_events() if m.asset_key.path[-1] == stage][0] \
        .materialization.metadata["read_mode"].value == "incremental"
    assert value_errors(sync, stage) == {(group["id"], "members", "invalid_id")}
    members = {r[0] for r in sync.query("SELECT member_id FROM raw_graph_group_members WHERE group_id = ?",
                                        [group["id"]])}
    assert {outsiders[0]["id"], outsiders[1]["id"]} <= members and bad_id not in members
