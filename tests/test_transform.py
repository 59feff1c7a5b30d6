"""Mapping, exclusions and list resolution as plain functions."""

from __future__ import annotations

from entra_pipeline.config import ExclusionRule, Mapping
from entra_pipeline.transform import lists, mapping
from entra_pipeline.transform.exclusions import apply_exclusions
from entra_pipeline.transform.fields import flatten_user, graph_select_for


def user(uid: str, mail: str | None, **extra) -> dict:
    return {"id": uid, "mail": mail, "userPrincipalName": f"{uid}@t.example", **extra}


def test_select_names_the_extension_container_once():
    assert graph_select_for({"extensionAttribute1", "extensionAttribute9", "mail"}) == [
        "id", "mail", "onPremisesExtensionAttributes"]


def test_flatten_lifts_extension_attributes():
    flat = flatten_user({"id": "1", "onPremisesExtensionAttributes": {"extensionAttribute3": "x"}})
    assert flat["extensionAttribute3"] == "x"
    assert flat["extensionAttribute1"] is None
    assert "onPremisesExtensionAttributes" not in flat


def test_unique_id_normalised_missing_invalid_and_duplicates():
    users = [
        user("b", " Ann.Lee@Contoso.com "),
        user("a", "ann.lee@contoso.com"),
        user("c", None),
        user("d", "not-an-address"),
        user("e", "zed@contoso.com"),
    ]
    result = mapping.map_users(users, mapping.plan_for(Mapping()), "email")
    assert [(c["contact_id"], c["source_id"]) for c in result.contacts] == [
        ("ann.lee@contoso.com", "a"), ("zed@contoso.com", "e")]
    assert sorted((i.record, i.code) for i in result.issues) == [
        ("a", mapping.DUPLICATE_UNIQUE_ID), ("b", mapping.DUPLICATE_UNIQUE_ID),
        ("c", mapping.MISSING_UNIQUE_ID), ("d", mapping.INVALID_UNIQUE_ID)]
    # The same input in another order gives the same outcome.
    again = mapping.map_users(list(reversed(users)), mapping.plan_for(Mapping()), "email")
    assert [c["source_id"] for c in again.contacts] == ["a", "e"]


def test_unique_id_switched_to_employee_id_keeps_case():
    users = [user("1", None, employeeId="E-01"), user("2", "x@y.z", employeeId=None)]
    result = mapping.map_users(users, mapping.plan_for(Mapping(unique_id="employee_id")), "employee_id")
    assert [c["contact_id"] for c in result.contacts] == ["E-01"]
    assert [(i.record, i.code, i.field) for i in result.issues] == [("2", mapping.MISSING_UNIQUE_ID, "employee_id")]


def test_skipped_and_remapped_fields():
    m = Mapping(fields={"extensionAttribute2": "department", "city": "skip"})
    users = [user("1", "a@b.co", city="Berlin", department="Sales", businessPhones=["", "+49 1"],
                  onPremisesExtensionAttributes={"extensionAttribute2": "Division X"})]
    contact = mapping.map_users(users, mapping.plan_for(m), "email").contacts[0]
    assert contact["department"] == "Division X"
    assert contact["city"] is None
    assert contact["phone"] == "+49 1"


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
    assert [c["contact_id"] for c in result.kept] == ["2", "4"]
    assert [(c["contact_id"], r) for c, r in result.excluded] == [("1", "leave"), ("3", "disabled")]


def test_exclusion_operators():
    contacts = [{"contact_id": str(i), "imported": {"country": v}} for i, v in enumerate(["DE", "AT", "US", None, ""])]

    def kept(**kwargs):
        return [c["imported"]["country"] for c in apply_exclusions(contacts, [rule(field="country", **kwargs)]).kept]

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


def group(gid: str, name: str, kind: str) -> dict:
    shapes = {
        "m365": (["Unified"], True, False),
        "mailsec": ([], True, True),
        "dist": ([], True, False),
        "sec": ([], False, True),
    }
    types, mail_enabled, security = shapes[kind]
    return {"id": gid, "displayName": name, "mail": f"{gid}@T.example" if mail_enabled else None,
            "groupTypes": types, "mailEnabled": mail_enabled, "securityEnabled": security}


GROUPS = [group("g1", "Sales", "m365"), group("g2", "Ops", "dist"), group("g3", "Inner", "sec"),
          group("g4", "Loop", "mailsec"), group("g5", "Sales", "dist"), group("g6", "Empty", "m365")]
EDGES = {
    "g1": [("user", "u1"), ("user", "u2")],
    "g2": [("group", "g3"), ("user", "u3"), ("orgContact", "oc1")],
    "g3": [("user", "u4"), ("group", "g4"), ("device", "d1")],
    "g4": [("group", "g2"), ("user", "u5"), ("user", "u9")],  # g2 -> g3 -> g4 -> g2: a cycle
    "g5": [],
    "g6": [],
}
CONTACTS = {"u1": "a@x", "u2": "b@x", "u3": "c@x", "u4": "d@x", "u5": "e@x"}  # u9 is not a contact


def test_kinds():
    assert [lists.group_kind(g) for g in GROUPS] == [
        "microsoft365", "distribution", "security", "mail_enabled_security", "distribution", "microsoft365"]


def test_all_offered_groups_flattened_through_a_cycle():
    result = lists.resolve_lists(GROUPS, EDGES, CONTACTS, "all")
    members: dict[str, set] = {}
    for list_id, contact in result.members:
        members.setdefault(list_id, set()).add(contact)
    assert {l["list_id"] for l in result.lists} == {"g1", "g2", "g4", "g5", "g6"}
    assert members == {"g1": {"a@x", "b@x"}, "g2": {"c@x", "d@x", "e@x"}, "g4": {"c@x", "d@x", "e@x"}}
    g2 = next(l for l in result.lists if l["list_id"] == "g2")
    assert g2 == {"list_id": "g2", "source_group_id": "g2", "display_name": "Ops", "mail": "g2@t.example",
                  "kind": "distribution", "member_count": 3, "users_not_contacts": 1, "non_user_members": 2,
                  "non_user_member_types": {"device": 1, "orgContact": 1}, "nested_groups": 2}
    assert result.issues == []


def test_selection_by_name_reports_missing_and_ambiguous():
    result = lists.resolve_lists(GROUPS, EDGES, CONTACTS, "names", names=["Sales", " Ops ", "Nope", "Inner"])
    assert [l["list_id"] for l in result.lists] == ["g2"]
    assert [(i.record, i.code) for i in result.issues] == [
        ("Sales", lists.LIST_NAME_AMBIGUOUS), ("Nope", lists.LIST_NOT_FOUND), ("Inner", lists.LIST_NOT_FOUND)]


def test_selection_by_id():
    result = lists.resolve_lists(GROUPS, EDGES, CONTACTS, "ids", ids=["g5", "g3", "zz", "g1"])
    assert [l["list_id"] for l in result.lists] == ["g1", "g5"]
    assert [(i.record, i.code) for i in result.issues] == [
        ("g3", lists.LIST_NOT_MAIL_ENABLED), ("zz", lists.LIST_NOT_FOUND)]


def test_selection_none():
    assert lists.resolve_lists(GROUPS, EDGES, CONTACTS, "none").lists == []
