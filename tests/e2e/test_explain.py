"""`python -m entra_pipeline explain PERSON [LIST]` on a warehouse synced from an Entra ID and a Workday
integration of the same people (real syncs over HTTPS into a real DuckDB file): one test per answer,
asserting the facts it prints (rule and value, the group names along the nesting path, the failed
condition). Expected facts come from the emulator's people and groups."""

from __future__ import annotations

import copy
from collections import deque

import pytest

from entra_pipeline import cli
from entra_pipeline.config import CONFIG_PATH_ENV
from entra_pipeline.emulator.workday_workers import generate_workers
from entra_pipeline.warehouse.connection import WAREHOUSE_PATH_ENV

from tests.support.integrations import WORKDAY_PASSWORD_ENV, integration, workday_integration, write_config
from tests.support.runs import Sync, failure_messages
from tests.support.tenant import SECRET, SECRET_ENV, WORKDAY_PASSWORD, WORKDAY_SEED

ENTRA, HR = "directory", "hr"
COMPOUND = "Sales contractors"


@pytest.fixture(scope="module")
def tenant(workday, hr_directory, tmp_path_factory):
    """Both integrations synced once. The directory's copy has one duplicate e-mail; Entra ID
    selects lists by a bulk selector file naming a nested group, the whole company and a name two
    groups share; a custom list and a compound exclusion rule; Workday generates a list per site."""
    tmp = tmp_path_factory.mktemp("explain")
    original = workday.directory
    directory = workday.directory = copy.deepcopy(original)
    users = [u for u in directory.users if u["mail"] and u["accountEnabled"] and u["userType"] == "Member"]
    kept, duplicate = users[0], users[1]
    directory.update_user(duplicate["id"], {"mail": kept["mail"].upper()})
    special = directory.special
    selected = [directory.group_by_id(special["nested_parent"])["displayName"],
                directory.group_by_id(special["all_employees"])["displayName"],
                directory.group_by_id(special["duplicate_name"][0])["displayName"]]
    (tmp / "lists.csv").write_text("\n".join(selected) + "\n", encoding="utf-8")
    entra = integration(ENTRA, workday, distribution_lists={
        "select": "csv", "csv": "lists.csv",
        "custom": [{"name": "IT staff", "when": {"contact_field": "department", "equals": "IT"}}]},
        exclusions={"rules": [
            {"name": "On leave", "field": "extensionAttribute1", "equals": "Inactive"},
            {"name": COMPOUND, "all": [{"field": "department", "equals": "Sales"},
                                       {"field": "employeeType", "equals": "Contractor"}]}]})
    hr = workday_integration(workday, distribution_lists={"generated": [{"field": "Location", "name": "Site {value}"}]})
    config = write_config(tmp / "integrations.yaml", entra, hr)
    sync = Sync(config, tmp / "warehouse.duckdb")
    mp = pytest.MonkeyPatch()
    mp.setenv(SECRET_ENV, SECRET)
    mp.setenv(WORKDAY_PASSWORD_ENV, WORKDAY_PASSWORD)
    try:
        for key in (ENTRA, HR):
            result = sync.run(key)
            assert result.success, failure_messages(result)
    finally:
        mp.undo()
    workers = {w["Email_Address"].strip().lower(): w for w in generate_workers(hr_directory, WORKDAY_SEED)
               if w.get("Email_Address")}
    yield {"sync": sync, "directory": directory, "workers": workers, "kept": kept, "duplicate": duplicate}
    workday.directory = original


@pytest.fixture
def explain(tenant, monkeypatch, capsys):
    """The command's exit status and printed lines."""
    monkeypatch.setenv(CONFIG_PATH_ENV, str(tenant["sync"].config))
    monkeypatch.setenv(WAREHOUSE_PATH_ENV, str(tenant["sync"].warehouse))

    def run(*args: str) -> tuple[int, list[str]]:
        status = cli.main(["explain", *args])
        return status, capsys.readouterr().out.splitlines()

    return run


def person(tenant, test) -> dict:
    """The first directory user (by id) with a mail address that ``test`` accepts."""
    return next(u for u in sorted(tenant["directory"].users, key=lambda u: u["id"]) if u["mail"] and test(u))


def ext1(user: dict) -> str | None:
    return (user["onPremisesExtensionAttributes"] or {}).get("extensionAttribute1")


def active(user: dict) -> bool:
    return user["accountEnabled"] and user["userType"] == "Member" and ext1(user) != "Inactive" and not (
        user["department"] == "Sales" and user["employeeType"] == "Contractor")


def test_a_contact_in_both_integrations_shows_each_merged_value_and_its_source(tenant, explain):
    user = person(tenant, lambda u: active(u) and u["mail"].lower() in tenant["workers"]
                  and tenant["workers"][u["mail"].lower()]["Worker_Status"] not in ("Terminated", "On Leave")
                  and u["id"] not in (tenant["kept"]["id"], tenant["duplicate"]["id"]))
    mail, worker = user["mail"].lower(), tenant["workers"][user["mail"].lower()]
    status, lines = explain(mail)
    assert status == 0
    assert lines[0] == f"{mail}: in the merged directory (all_contacts), from {ENTRA}, {HR}"
    assert f"  job_title: {user['jobTitle']!r} (from {ENTRA})" in lines
    assert f"  weekly_hours: {float(worker['Standard_Hours'])!r} (from {HR})" in lines
    assert lines[-2:] == [f"{ENTRA}: {user['displayName']} ({user['id']}): a contact",
                          f"{HR}: {worker['First_Name']} {worker['Last_Name']} ({worker['Employee_ID']}): a contact"]
    # By object id and by employee id: the same answer.
    assert explain(user["id"]) == (0, lines)
    assert explain(worker["Employee_ID"])[1] == lines


def test_excluded_by_a_rule_names_the_rule_and_the_value_that_matched(tenant, explain):
    user = person(tenant, lambda u: u["accountEnabled"] and u["userType"] == "Member" and ext1(u) == "Inactive")
    status, lines = explain(user["id"])
    assert status == 0
    assert f"{ENTRA}: {user['displayName']} ({user['id']}): not a contact: excluded by rule 'On leave': " \
           "extensionAttribute1 equals 'Inactive' (its value: 'Inactive')" in lines


def test_a_compound_rule_names_each_test_that_matched(tenant, explain):
    user = person(tenant, lambda u: u["accountEnabled"] and u["userType"] == "Member" and ext1(u) != "Inactive"
                  and u["department"] == "Sales" and u["employeeType"] == "Contractor")
    _, lines = explain(user["id"])
    assert f"{ENTRA}: {user['displayName']} ({user['id']}): not a contact: excluded by rule {COMPOUND!r}: " \
           "department equals 'Sales' (its value: 'Sales') and employeeType equals 'Contractor' " \
           "(its value: 'Contractor')" in lines


def test_disabled_and_guest_accounts_name_the_built_in_rule(tenant, explain):
    disabled = person(tenant, lambda u: u["accountEnabled"] is False)
    assert f"{ENTRA}: {disabled['displayName']} ({disabled['id']}): not a contact: excluded by rule " \
           "'Disabled account': accountEnabled equals False (its value: False)" in explain(disabled["id"])[1]
    guest = person(tenant, lambda u: u["accountEnabled"] and u["userType"] == "Guest")
    assert f"{ENTRA}: {guest['displayName']} ({guest['id']}): not a contact: excluded by rule 'Guest': " \
           "userType equals 'Guest' (its value: 'Guest')" in explain(guest["id"])[1]


def test_excluded_in_one_integration_and_kept_in_the_other_is_out_of_the_merged_directory(tenant, explain):
    user = person(tenant, lambda u: u["accountEnabled"] and u["userType"] == "Member" and ext1(u) == "Inactive"
                  and tenant["workers"].get(u["mail"].lower(), {}).get("Worker_Status") == "Active")
    _, lines = explain(user["mail"])
    assert lines[0] == (f"{user['mail'].lower()}: not in the merged directory: {ENTRA} excludes them (rule "
                        f"'On leave'), although {HR} keeps them")


def test_no_usable_unique_contact_id_says_what_was_read(tenant, explain):
    user = next(u for u in sorted(tenant["directory"].users, key=lambda u: u["id"]) if not u["mail"])
    status, lines = explain(user["id"])
    assert status == 0
    assert lines == [f"{ENTRA}: {user['displayName']} ({user['id']}): not a contact: user "
                     f"{user['userPrincipalName']}: Unique Contact ID field 'email' is empty; not imported"]


def test_a_duplicate_names_whom_it_duplicates_and_who_was_kept(tenant, explain):
    # Both are enabled members: the smaller object id is kept.
    kept, duplicate = sorted([tenant["kept"], tenant["duplicate"]], key=lambda u: u["id"])
    mail = tenant["kept"]["mail"].lower()
    _, lines = explain(duplicate["id"])
    assert f"{ENTRA}: {kept['displayName']} ({kept['id']}): a contact" in lines
    assert f"{ENTRA}: {duplicate['displayName']} ({duplicate['id']}): not a contact: 2 users share Unique Contact " \
           f"ID {mail!r} ({kept['id']}, {duplicate['id']}); kept {kept['id']} (enabled members first, " \
           "then the smallest object id)" in lines


def test_someone_nobody_read_is_not_found(explain):
    assert explain("nobody.here@example.com") == (1, [
        "no one called 'nobody.here@example.com' in the warehouse: no integration read them (outside the tenant "
        "or the report, or not synced yet)"])


def nesting_path(directory, group_id: str, user_id: str) -> list[str] | None:
    """Group names from the group to the one the user is a direct member of (shortest path)."""
    parent, queue = {group_id: None}, deque([group_id])
    while queue:
        group = queue.popleft()
        members = directory.members.get(group, [])
        if ("#microsoft.graph.user", user_id) in members:
            path = []
            while group is not None:
                path.append(directory.group_by_id(group)["displayName"])
                group = parent[group]
            return path[::-1]
        for kind, member in members:
            if kind == "#microsoft.graph.group" and member not in parent:
                parent[member] = group
                queue.append(member)
    return None


def test_on_a_list_through_nested_groups_names_each_group(tenant, explain):
    directory = tenant["directory"]
    parent = directory.special["nested_parent"]
    user = person(tenant, lambda u: active(u) and len(nesting_path(directory, parent, u["id"]) or []) == 3)
    path = nesting_path(directory, parent, user["id"])
    name = directory.group_by_id(parent)["displayName"]
    _, lines = explain(user["id"], name)
    assert lines[-1] == (f"list {name!r} ({ENTRA}, {kind_of(tenant, parent)}): "
                         f"on the list, through {' > '.join(repr(g) for g in path)}")


def kind_of(tenant, list_id: str) -> str:
    return tenant["sync"].query("SELECT kind FROM distribution_lists WHERE list_id = ?", [list_id])[0][0]


def test_not_in_the_group_and_in_the_group_but_excluded(tenant, explain):
    directory = tenant["directory"]
    parent = directory.special["nested_parent"]
    name, kind = directory.group_by_id(parent)["displayName"], kind_of(tenant, parent)
    outsider = person(tenant, lambda u: active(u) and nesting_path(directory, parent, u["id"]) is None)
    assert explain(outsider["id"], name)[1][-1] == (
        f"list {name!r} ({ENTRA}, {kind}): not on the list: not a member of group {name!r} or of its nested groups")
    inside = person(tenant, lambda u: u["accountEnabled"] and u["userType"] == "Member" and ext1(u) == "Inactive"
                    and nesting_path(directory, parent, u["id"]) is not None)
    path = " > ".join(repr(g) for g in nesting_path(directory, parent, inside["id"]))
    assert explain(inside["id"], name)[1][-1] == (
        f"list {name!r} ({ENTRA}, {kind}): not on the list: in the group through {path}, but not a contact: "
        "excluded by rule 'On leave': extensionAttribute1 equals 'Inactive' (its value: 'Inactive')")


def test_a_custom_list_names_the_condition_and_the_value(tenant, explain):
    it = person(tenant, lambda u: active(u) and u["department"] == "IT")
    assert explain(it["id"], "IT staff")[1][-1] == (
        f"list 'IT staff' ({ENTRA}, custom): on the list: department equals 'IT' (its value: 'IT')")
    sales = person(tenant, lambda u: active(u) and u["department"] == "Sales")
    assert explain(sales["id"], "it staff")[1][-1] == (
        f"list 'IT staff' ({ENTRA}, custom): not on the list: department equals 'IT' (its value: 'Sales')")


def test_a_generated_list_names_the_field_and_the_value(tenant, explain):
    # Not the two people the duplicate e-mail mixes up.
    mixed = {tenant["kept"]["mail"].lower(), tenant["duplicate"]["mail"].lower()}
    workers = [w for m, w in sorted(tenant["workers"].items()) if w["Worker_Status"] == "Active" and w.get("Location")
               and m not in mixed]
    here = workers[0]
    elsewhere = next(w for w in workers if w["Location"] != here["Location"])
    print(tenant["sync"].query("SELECT * FROM people_status WHERE source_id = ? OR employee_id = ?", [elsewhere["Employee_ID"]]*2))
    site = f"Site {here['Location']}"
    assert explain(here["Employee_ID"], site)[1][-1] == (
        f"list {site!r} ({HR}, generated): on the list: its Location is {here['Location']!r}")
    assert explain(elsewhere["Employee_ID"], site)[1][-1] == (
        f"list {site!r} ({HR}, generated): not on the list: its Location is {elsewhere['Location']!r}; "
        f"the list {site!r} is for another value")


def test_a_group_not_selected_and_a_name_the_bulk_file_finds_twice(tenant, explain):
    directory = tenant["directory"]
    user = person(tenant, active)
    offered = next(g for g in sorted(directory.groups, key=lambda g: g["id"]) if g["mailEnabled"]
                   and g["id"] not in (directory.special["nested_parent"], directory.special["all_employees"])
                   and g["id"] not in directory.special["duplicate_name"])
    status, lines = explain(user["id"], offered["displayName"])
    assert status == 1
    assert lines[-1] == (f"{ENTRA}: no list {offered['displayName']!r}: group {offered['displayName']!r} is offered "
                         "but not selected (distribution_lists.select)")
    twice = directory.group_by_id(directory.special["duplicate_name"][0])["displayName"]
    status, lines = explain(user["id"], twice)
    message = tenant["sync"].query("SELECT message FROM import_errors WHERE code = 'list_name_ambiguous'")[0][0]
    assert (status, lines[-1]) == (1, f"{ENTRA}: no list {twice!r}: {message}")
    # The mapping's own words: both groups named, by id.
    assert message.startswith(f"2 groups are named {twice!r} (")
    assert all(gid in message for gid in directory.special["duplicate_name"])
