"""Mapping (run in an in-memory DuckDB, as the asset runs it), exclusions and list resolution."""

from __future__ import annotations

import json
from datetime import date

import duckdb

from entra_pipeline.config import CustomList, ExclusionRule, Mapping
from entra_pipeline.transform import lists, mapping
from entra_pipeline.transform.exclusions import apply_exclusions
from entra_pipeline.transform.fields import graph_select_for, imported_fields_for, manager_expand_for
from entra_pipeline.warehouse import contact_tables, raw_tables
from entra_pipeline.warehouse.connection import transaction
from tests.support.groups import GROUPS, resolve


def user(uid: str, mail: str | None, **extra) -> dict:
    return {"id": uid, "mail": mail, "userPrincipalName": f"{uid}@t.example", **extra}


def test_select_names_the_extension_container_once():
    assert graph_select_for({"extensionAttribute1", "extensionAttribute9", "mail"}) == [
        "id", "mail", "onPremisesExtensionAttributes"]


def test_manager_expand_and_imported_fields():
    assert manager_expand_for({"managerMail", "mail"}) == "manager($select=id,mail)"
    assert manager_expand_for({"mail"}) is None
    assert imported_fields_for({"extensionAttribute2", "mail"}) == {
        "mail", *(f"extensionAttribute{i}" for i in range(1, 16))}


class Mapped:
    """The mapping run in an in-memory DuckDB on the given raw users, as the asset runs it."""

    def __init__(self, users: list[dict], m: Mapping) -> None:
        self.con = duckdb.connect()
        with transaction(self.con):
            raw_tables.write_raw_users(self.con, "t", "run", users)
        plan = mapping.plan_for(m)
        fields = {p.source for p in plan if p.source} | {"userPrincipalName"}
        self.summary = contact_tables.map_raw_users(self.con, "t", plan, m.unique_id, sorted(fields),
                                                    sample_columns=["contact_id", "display_name"])
        custom = {name: f.type for name, f in m.custom_fields.items()}
        with transaction(self.con):
            contact_tables.write_mapped_contacts(self.con, "t", "run", plan, custom)
        self.issues = sorted((i.record, i.code, i.field) for i in self.summary.issues)

    def rows(self, *columns: str) -> list[tuple]:
        return self.con.execute(f"SELECT source_id, {', '.join(columns)} FROM mapped_contacts ORDER BY source_id"
                                ).fetchall()

    def message(self, record: str, code: str) -> str:
        return next(i.message for i in self.summary.issues if i.record == record and i.code == code)


def test_unique_id_normalised_missing_invalid_and_duplicates():
    users = [
        user("b", " Ann.Lee@Contoso.com "),
        user("a", "ann.lee@contoso.com"),
        user("c", None),
        user("d", "not-an-address"),
        user("e", "zed@contoso.com"),
    ]
    result = Mapped(users, Mapping())
    assert result.rows("contact_id", "email") == [
        ("a", "ann.lee@contoso.com", "ann.lee@contoso.com"), ("e", "zed@contoso.com", "zed@contoso.com")]
    assert result.issues == [
        ("a", mapping.DUPLICATE_UNIQUE_ID, "email"), ("b", mapping.DUPLICATE_UNIQUE_ID, "email"),
        ("c", mapping.MISSING_UNIQUE_ID, "email"), ("d", mapping.INVALID_UNIQUE_ID, "email")]
    assert result.message("b", mapping.DUPLICATE_UNIQUE_ID) == (
        "2 users share Unique Contact ID 'ann.lee@contoso.com' (a, b); kept a (enabled members first, then the "
        "smallest object id)")
    assert result.message("d", mapping.INVALID_UNIQUE_ID) == (
        "user d@t.example: Unique Contact ID field 'email' is not a valid email address: 'not-an-address'; not imported")
    assert (result.summary.users_read, result.summary.contacts) == (5, 2)
    # The same input in another order gives the same outcome.
    assert Mapped(list(reversed(users)), Mapping()).rows("contact_id") == result.rows("contact_id")


def test_duplicates_prefer_enabled_members_and_name_at_most_five_ids():
    # A rehire: the old account is disabled and has the smaller id; the new one must win.
    users = [user("0a", None, employeeId="E1", accountEnabled=False, userType="Member"),
             user("1b", None, employeeId="E1", accountEnabled=True, userType="Member"),
             user("2c", None, employeeId="E1", accountEnabled=True, userType="Guest"),
             *(user(f"9{i}", None, employeeId="E2", accountEnabled=True, userType="Member") for i in range(8))]
    result = Mapped(users, Mapping(unique_id="employee_id"))
    assert result.rows("contact_id") == [("1b", "E1"), ("90", "E2")]
    assert result.message("0a", mapping.DUPLICATE_UNIQUE_ID) == (
        "3 users share Unique Contact ID 'E1' (1b, 2c, 0a); kept 1b (enabled members first, then the smallest "
        "object id)")
    assert result.message("97", mapping.DUPLICATE_UNIQUE_ID) == (
        "8 users share Unique Contact ID 'E2' (90, 91, 92, 93, 94 and 3 more); kept 90 (enabled members first, "
        "then the smallest object id)")


def test_white_space_of_every_kind_is_trimmed():
    users = [user("1", "Ann@X.com\n", department="Sales\t", city="\t"), user("2", "\t")]
    result = Mapped(users, Mapping())
    assert result.rows("contact_id", "department", "city") == [("1", "ann@x.com", "Sales", None)]
    assert result.issues == [("2", mapping.MISSING_UNIQUE_ID, "email")]


def test_unique_id_switched_to_employee_id_keeps_case():
    users = [user("1", None, employeeId=" E-01 "), user("2", "x@y.z", employeeId=None)]
    result = Mapped(users, Mapping(unique_id="employee_id"))
    assert result.rows("contact_id", "email") == [("1", "E-01", None)]
    assert result.issues == [("2", mapping.MISSING_UNIQUE_ID, "employee_id")]


def test_skipped_and_remapped_fields():
    m = Mapping(fields={"extensionAttribute2": "department", "city": "skip"})
    users = [user("1", "a@b.co", city="Berlin", department="Sales", businessPhones=["", " +49 1 "],
                  onPremisesExtensionAttributes={"extensionAttribute2": "Division X"}, accountEnabled=True)]
    result = Mapped(users, m)
    assert result.rows("department", "city", "phone", "account_enabled") == [("1", "Division X", None, "+49 1", True)]
    imported = json.loads(result.rows("imported")[0][1])
    assert imported["extensionAttribute2"] == "Division X" and imported["businessPhones"] == ["", " +49 1 "]


def test_typed_custom_fields_good_and_bad_values():
    m = Mapping(
        fields={"extensionAttribute4": "seniority", "extensionAttribute5": "start", "extensionAttribute6": "review",
                "extensionAttribute7": "badge", "employeeHireDate": "hire_date"},
        custom_fields={"seniority": "Number", "start": "Date", "review": {"type": "Date", "format": "%d/%m/%Y"},
                       "badge": "Text"})

    def u(uid, n, d, r, hire=None):
        return user(uid, f"{uid}@x.io", employeeHireDate=hire, onPremisesExtensionAttributes={
            "extensionAttribute4": n, "extensionAttribute5": d, "extensionAttribute6": r, "extensionAttribute7": n})

    users = [
        u("1", " 42 ", "2021-03-15", "01/02/2024", "2019-04-01T23:30:00-08:00"),
        u("2", "-3.5e2", "2019-04-01T08:30:00Z", "29/02/2024"),
        u("3", "n/a", "31/02/2024", "31/02/2024"),
        u("4", "12,5", "2024-02-30", "2024-02-01"),
        u("5", "1e400", "soon", None),
        u("6", None, "", ""),
    ]
    result = Mapped(users, m)
    assert result.rows("seniority", "start", "review", "badge", "hire_date") == [
        ("1", 42.0, date(2021, 3, 15), date(2024, 2, 1), "42", date(2019, 4, 1)),
        ("2", -350.0, date(2019, 4, 1), date(2024, 2, 29), "-3.5e2", None),
        ("3", None, None, None, "n/a", None),
        ("4", None, None, None, "12,5", None),
        ("5", None, None, None, "1e400", None),
        ("6", None, None, None, None, None),
    ]
    assert result.issues == [
        ("3", "invalid_value", "review"), ("3", "invalid_value", "seniority"), ("3", "invalid_value", "start"),
        ("4", "invalid_value", "review"), ("4", "invalid_value", "seniority"), ("4", "invalid_value", "start"),
        ("5", "invalid_value", "seniority"), ("5", "invalid_value", "start"),
    ]
    assert [i.message for i in result.summary.issues if i.record == "3"] == [
        "contact 3@x.io: seniority (Number) cannot take 'n/a' from extensionAttribute4: not a number (digits "
        "with an optional sign, '.' decimal point and exponent); left empty",
        "contact 3@x.io: start (Date) cannot take '31/02/2024' from extensionAttribute5: not a valid ISO 8601 "
        "date (YYYY-MM-DD, with or without a zone such as -08:00, or a date-time); set a format for other "
        "layouts; left empty",
        "contact 3@x.io: review (Date) cannot take '31/02/2024' from extensionAttribute6: not a valid date in "
        "the format '%d/%m/%Y'; left empty",
    ]
    column_types = dict(result.con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'mapped_contacts' "
        "AND column_name IN ('seniority', 'start', 'review', 'badge', 'hire_date')").fetchall())
    assert column_types == {"seniority": "DOUBLE", "start": "DATE", "review": "DATE", "badge": "VARCHAR",
                            "hire_date": "DATE"}


def test_number_as_unique_id_and_text_from_numbers_and_booleans():
    m = Mapping(unique_id="badge_no", fields={"extension_0123456789abcdef0123456789abcdef_badge": "badge_no",
                                               "accountEnabled": "job_title"},
                custom_fields={"badge_no": "Number"})
    ext = "extension_0123456789abcdef0123456789abcdef_badge"
    users = [user("1", None, **{ext: 1234, "accountEnabled": True}), user("2", None, **{ext: "1234.5"}),
             user("3", None, **{ext: True}), user("4", None, **{ext: "1234567890123456789"}),
             user("5", None, **{ext: "1234567890123456788"})]
    result = Mapped(users, m)
    # Whole numbers keep every digit as an ID (no float rounding beyond 2^53).
    assert result.rows("contact_id", "job_title") == [("1", "1234", "true"), ("2", "1234.5", None),
                                                      ("4", "1234567890123456789", None),
                                                      ("5", "1234567890123456788", None)]
    assert result.issues == [("3", mapping.INVALID_UNIQUE_ID, "badge_no")]


def rule(**kwargs) -> ExclusionRule:
    return ExclusionRule(name=kwargs.pop("name", "r"), **kwargs)


def test_exclusions_are_case_sensitive_and_typed():
    contacts = [
        {"contact_id": "1", "imported": {"extensionAttribute1": "Inactive", "accountEnabled": True}},
        {"contact_id": "2", "imported": {"extensionAttribute1": "inactive", "accountEnabled": True}},
        {"contact_id": "3", "imported": {"extensionAttribute1": None, "accountEnabled": False}},
        {"contact_id": "4", "imported": {"extensionAttribute1": "Active", "accountEnabled": 1}},
    ]
    result = apply_exclusions(contacts, [rule(name="leave", field="extensionAttribute1", equals="Inactive"),
                                         rule(name="disabled", field="accountEnabled", equals=False)])
    assert result.kept == ["2", "4"] and result.evaluated == 4
    assert [(c["contact_id"], r) for c, r in result.excluded] == [("1", "leave"), ("3", "disabled")]


def test_exclusion_operators():
    contacts = [{"contact_id": str(i), "imported": {"country": v}} for i, v in enumerate(["DE", "AT", "US", None, ""])]

    def kept(**kwargs):
        countries = {c["contact_id"]: c["imported"]["country"] for c in contacts}
        return [countries[i] for i in apply_exclusions(contacts, [rule(field="country", **kwargs)]).kept]

    assert kept(**{"in": ["DE", "AT"]}) == ["US", None, ""]
    assert kept(not_equals="US") == ["US"]
    assert kept(starts_with="A") == ["DE", "US", None, ""]
    assert kept(is_empty=True) == ["DE", "AT", "US"]
    assert kept(is_not_empty=True) == [None, ""]
    assert kept(not_in=["DE", "AT"]) == ["DE", "AT"]
    assert kept(contains="E") == ["AT", "US", None, ""]


def test_contains_on_lists_and_contact_fields_and_groups():
    contacts = [
        {"contact_id": "1", "department": "Sales", "country": "DE", "imported": {"proxyAddresses": ["smtp:a@x"]}},
        {"contact_id": "2", "department": "Sales", "country": "US", "imported": {"proxyAddresses": []}},
        {"contact_id": "3", "department": "IT", "country": "AT", "imported": {"proxyAddresses": None}},
    ]

    def excluded(**kwargs):
        return [c["contact_id"] for c, _ in apply_exclusions(contacts, [rule(**kwargs)]).excluded]

    assert excluded(field="proxyAddresses", contains="smtp:a@x") == ["1"]
    assert excluded(field="proxyAddresses", contains="smtp:a") == []  # list items compare whole
    assert excluded(all=[{"contact_field": "department", "equals": "Sales"},
                         {"contact_field": "country", "in": ["DE", "AT"]}]) == ["1"]
    assert excluded(any=[{"contact_field": "department", "equals": "IT"},
                         {"contact_field": "country", "equals": "US"}]) == ["2", "3"]
    assert excluded(any=[{"all": [{"contact_field": "department", "equals": "Sales"},
                                  {"contact_field": "country", "equals": "US"}]},
                         {"contact_field": "department", "equals": "sales"}]) == ["2"]


def test_kinds():
    assert [lists.group_kind(g) for g in GROUPS] == [
        "microsoft365", "distribution", "security", "mail_enabled_security", "distribution", "microsoft365"]


def test_all_offered_groups_flattened_through_a_cycle():
    result, issues = resolve("all")
    members: dict[str, set] = {}
    for list_id, contact in result.members:
        members.setdefault(list_id, set()).add(contact)
    assert {l["list_id"] for l in result.lists} == {"g1", "g2", "g4", "g5", "g6"}
    assert members == {"g1": {"a@x", "b@x"}, "g2": {"c@x", "d@x", "e@x"}, "g4": {"c@x", "d@x", "e@x"}}
    g2 = next(l for l in result.lists if l["list_id"] == "g2")
    assert g2 == {"list_id": "g2", "source_group_id": "g2", "display_name": "Ops", "mail": "g2@t.example",
                  "kind": "distribution", "member_count": 3, "users_not_contacts": 4, "users_excluded": 1,
                  "users_without_contact_id": 3, "non_user_members": 2,
                  "non_user_member_types": {"device": 1, "orgContact": 1}, "nested_groups": 2}
    assert [n for n in result.non_members if n[0] == "g2"] == [
        ("g2", "u6", "user", "not among the users read (added to the group since?)"),
        ("g2", "u7", "user", "duplicate Unique Contact ID"),
        ("g2", "u8", "user", "excluded: On leave"), ("g2", "u9", "user", "no usable Unique Contact ID"),
        ("g2", "d1", "device", "not a user (device)"), ("g2", "oc1", "orgContact", "not a user (orgContact)")]
    assert issues == []


def test_selection_by_name_reports_missing_and_ambiguous():
    result, issues = resolve("names", names=["Sales", " Ops ", "Nope", "Inner"])
    assert [l["list_id"] for l in result.lists] == ["g2"]
    assert [(i.record, i.code) for i in issues] == [
        ("Sales", lists.LIST_NAME_AMBIGUOUS), ("Nope", lists.LIST_NOT_FOUND), ("Inner", lists.LIST_NOT_FOUND)]


def test_selection_by_id():
    result, issues = resolve("ids", ids=["g5", "g3", "zz", "g1"])
    assert [l["list_id"] for l in result.lists] == ["g1", "g5"]
    assert [(i.record, i.code) for i in issues] == [
        ("g3", lists.LIST_NOT_MAIL_ENABLED), ("zz", lists.LIST_NOT_FOUND)]


def test_selection_none():
    assert resolve("none")[0].lists == []


def test_custom_lists_use_the_rule_language():
    contacts = [
        {"contact_id": "a@x", "department": "Sales", "country": "DE", "imported": {}},
        {"contact_id": "b@x", "department": "Sales", "country": "US", "imported": {}},
        {"contact_id": "c@x", "department": "sales", "country": "AT", "imported": {}},
    ]
    definition = CustomList(name="Sales DACH", when={"all": [{"contact_field": "department", "equals": "Sales"},
                                                            {"contact_field": "country", "in": ["DE", "AT"]}]})
    result = lists.custom_lists(contacts, [definition])
    assert result.members == [("custom:sales-dach", "a@x")]
    assert [(l["list_id"], l["kind"], l["display_name"], l["member_count"]) for l in result.lists] == [
        ("custom:sales-dach", "custom", "Sales DACH", 1)]


def test_custom_list_ids_keep_letters_of_any_script():
    assert [lists.custom_list_id(n) for n in ("Sales DACH", "Ärzte Wien", "営業 部", "!!!")] == [
        "custom:sales-dach", "custom:ärzte-wien", "custom:営業-部", "custom:" + __import__("hashlib").sha256(
            b"!!!").hexdigest()[:12]]


def test_removed_lists_are_reported_with_the_reason():
    previous = {"g1": "Sales", "gone": "Old team", "custom:x": "X", "g2": "Ops"}
    current = [{"list_id": "g1"}]
    issues = lists.removed_lists(previous, current, GROUPS)
    assert [(i.record, i.code, i.message) for i in issues] == [
        ("custom:x", "list_removed", "list 'X' (custom:x) was removed: its definition was removed or renamed in the "
                                     "configuration"),
        ("g2", "list_removed", "list 'Ops' (g2) was removed: its group is no longer selected"),
        ("gone", "list_removed", "list 'Old team' (gone) was removed: its group no longer exists in the directory"),
    ]


def test_imported_field_names_reach_sql_as_parameters_only():
    """Even a name that passed no validation cannot change the mapping's SQL: it is a bound value."""
    import duckdb

    from entra_pipeline.transform.fields import WORKDAY
    from entra_pipeline.transform.mapping import FieldPlan, mapping_query

    con = duckdb.connect()
    con.execute("CREATE TABLE raw (integration VARCHAR, id VARCHAR, data JSON)")
    name = "x', (SELECT 42), 'y"
    con.execute("INSERT INTO raw VALUES ('hr', '1', ?)", [json.dumps({"Email_Address": "a@b.io", name: "v"})])
    plan = [FieldPlan("email", "Email_Address", "Text")]
    sql, params = mapping_query(plan, "email", ["Email_Address", name], "hr", "raw", WORKDAY)
    [(imported,)] = con.execute(f"SELECT imported FROM ({sql})", params).fetchall()
    assert json.loads(imported) == {"Email_Address": "a@b.io", name: "v"}
