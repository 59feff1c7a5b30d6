"""Delta queries (/users/delta, /groups/delta) and the change API of the Graph emulator.

Over real HTTPS like tests/emulator/test_emulator.py: sessions ignore the environment's CA
bundles and verify against the emulator's own CA. One emulator serves the module;
each test gets a fresh directory (replacing it resets the recycle bin and expires
every delta token), small page sizes and no faults.
"""

from __future__ import annotations

import copy
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from entra_pipeline.emulator import DEMO_CLIENT_ID, DEMO_TENANT_ID, Emulator, generate_directory
from entra_pipeline.emulator.model import CONTACT_TYPE, GROUP_PROPERTIES, GROUP_TYPE, USER_TYPE

from tests.support.tenant import bearer, https_session, running_emulator


SECRET = "delta-test-secret"
USER_DEFAULTS = {
    "id", "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName",
}
REMOVED_CHANGED = {"reason": "changed"}
REMOVED_DELETED = {"reason": "deleted"}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    with running_emulator(generate_directory(users=300, groups=20, seed=3), tmp_path_factory.mktemp("certs"),
                          tenant_id=DEMO_TENANT_ID, client_id=DEMO_CLIENT_ID, client_secret=SECRET) as emu:
        yield emu


class Client:
    """GET relative to /v1.0 and run whole delta rounds, checking the link of every page."""

    def __init__(self, emulator: Emulator, session: requests.Session, auth: dict) -> None:
        self.emulator, self.session, self.auth = emulator, session, auth

    def get(self, path: str, params=None) -> requests.Response:
        url = path if path.startswith("https://") else f"{self.emulator.graph_url}{path}"
        return self.session.get(url, params=params, headers=self.auth)

    def round(self, start: str, params=None) -> tuple[list[list[dict]], str]:
        """Pages (their ``value``) of one round and its deltaLink."""
        pages = []
        response = self.get(start, params)
        while True:
            assert response.status_code == 200, response.text
            body = response.json()
            pages.append(body["value"])
            if "@odata.deltaLink" in body:
                assert "@odata.nextLink" not in body
                link = body["@odata.deltaLink"]
                assert link.startswith(f"{self.emulator.base_url}/v1.0/")
                assert list(parse_qs(urlsplit(link).query)) == ["$deltatoken"]
                return pages, link
            link = body["@odata.nextLink"]
            assert list(parse_qs(urlsplit(link).query)) == ["$skiptoken"]
            response = self.get(link)

    def items(self, start: str, params=None) -> tuple[list[dict], str]:
        pages, link = self.round(start, params)
        return [item for page in pages for item in page], link


@pytest.fixture(scope="module")
def client(emulator):
    with https_session(emulator.ca_path) as session:
        yield Client(emulator, session, bearer(session, emulator, SECRET))


@pytest.fixture
def d(emulator):
    """A fresh directory for each test, default delta settings, no faults."""
    emulator.directory = generate_directory(users=300, groups=20, seed=3)
    emulator.delta_page_size = 40
    emulator.delta_members_per_page = 1000
    emulator.delta_token_lifetime = 7 * 24 * 3600
    emulator.delta_expiry_status = 410
    emulator.delta_rounds_kept = 16
    yield emulator.directory
    emulator.faults.clear()


def error_of(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


def by_id(items: list[dict]) -> dict[str, dict]:
    return {item["id"]: item for item in items}


def new_user(n: int, **extra) -> dict:
    return {"id": str(uuid.UUID(int=n)), "userPrincipalName": f"new.user{n}@contoso.com",
            "displayName": f"New User {n}", **extra}


def ordinary_member(d, skip=()) -> str:
    """A user who is a direct member of at least one group (and not in ``skip``)."""
    counts: dict[str, int] = {}
    for members in d.members.values():
        for odata_type, object_id in members:
            if odata_type == USER_TYPE and object_id not in skip:
                counts[object_id] = counts.get(object_id, 0) + 1
    return max(counts, key=lambda u: (counts[u], u))


# ---------------------------------------------------------------------------
# users: first round


def test_first_round_pages_every_user_once_with_default_properties(client, d, emulator):
    pages, delta_link = client.round("/users/delta")
    assert [len(page) for page in pages] == [40] * 7 + [20]
    items = [item for page in pages for item in page]
    assert [item["id"] for item in items] == [u["id"] for u in d.users]  # each once, directory order
    for item, user in zip(items, d.users):
        assert item == {name: user[name] for name in USER_DEFAULTS}
    assert delta_link.startswith(f"{emulator.base_url}/v1.0/users/delta?$deltatoken=")
    first = client.get("/users/delta").json()
    assert first["@odata.context"] == f"{emulator.base_url}/v1.0/$metadata#users"
    assert first["@odata.nextLink"].startswith(f"{emulator.base_url}/v1.0/users/delta?$skiptoken=")


@pytest.mark.parametrize("resource", ["users", "groups"])
@pytest.mark.parametrize("function", ["delta", "delta()", "microsoft.graph.delta", "microsoft.graph.delta()"])
def test_every_spelling_graph_accepts_for_the_delta_function(client, d, emulator, resource, function):
    # Microsoft's SDKs send /users/delta(); Graph also takes the namespace-qualified name.
    items, delta_link = client.items(f"/{resource}/{function}", {"$select": "displayName"})
    assert [item["id"] for item in items] == [o["id"] for o in getattr(d, resource)]
    assert delta_link.startswith(f"{emulator.base_url}/v1.0/{resource}/delta?$deltatoken=")
    assert client.get(f"/{resource}/{function}/extra").status_code == 400


def test_select_is_carried_by_the_tokens(client, d, emulator):
    pages, delta_link = client.round("/users/delta", {"$select": "displayName,department"})
    assert len(pages) == 8
    assert all(set(item) == {"id", "displayName", "department"} for page in pages for item in page)
    assert "select" not in delta_link.lower()
    user = d.users[7]
    emulator.update_user(user["id"], {"department": "Astronomy", "displayName": "Renamed Seven"})
    # A $select on the deltaLink request is ignored: the token's own $select applies.
    response = client.get(delta_link, {"$select": "mail"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["value"] == [{"id": user["id"], "displayName": "Renamed Seven", "department": "Astronomy"}]
    assert body["@odata.context"] == f"{emulator.base_url}/v1.0/$metadata#users(displayName,department)"


def test_empty_incremental_round(client, d):
    _, delta_link = client.items("/users/delta", {"$select": "displayName"})
    pages, next_link = client.round(delta_link)
    assert pages == [[]]
    assert next_link != delta_link
    assert client.round(next_link)[0] == [[]]


def test_recycle_bin_users_are_removed_in_a_first_round(client, d, emulator):
    gone = d.users[3]["id"]
    emulator.soft_delete_user(gone)
    items, _ = client.items("/users/delta", {"$select": "displayName"})
    assert len(items) == 300
    assert items[-1] == {"id": gone, "@removed": REMOVED_CHANGED}
    assert gone not in {item["id"] for item in items[:-1]}


# ---------------------------------------------------------------------------
# users: incremental rounds


def test_update_returns_only_changed_selected_properties(client, d, emulator):
    _, link = client.items("/users/delta", {"$select": "displayName,jobTitle,onPremisesExtensionAttributes"})
    a, b, c, e = (d.users[i] for i in (10, 11, 12, 13))
    emulator.update_user(a["id"], {"jobTitle": "Chief Delta Officer", "city": "Oslo"})
    emulator.update_user(b["id"], {"city": "Oslo", "department": None})  # unselected only
    emulator.update_user(c["id"], {"displayName": c["displayName"]})  # same value: no change
    old_title = e["jobTitle"]
    emulator.update_user(e["id"], {"jobTitle": "Temporary"})
    emulator.update_user(e["id"], {"jobTitle": old_title})  # changed back before the round
    attrs = dict(d.users[14]["onPremisesExtensionAttributes"], extensionAttribute9="Nine")
    emulator.update_user(d.users[14]["id"], {"onPremisesExtensionAttributes": {"extensionAttribute9": "Nine"}})
    items, link = client.items(link)
    assert items == [
        {"id": a["id"], "jobTitle": "Chief Delta Officer"},
        {"id": d.users[14]["id"], "onPremisesExtensionAttributes": attrs},
    ]
    assert d.user_by_id(b["id"])["city"] == "Oslo"  # the change did happen
    # Updates to a property set to None are reported as null.
    emulator.update_user(a["id"], {"jobTitle": None})
    assert client.items(link)[0] == [{"id": a["id"], "jobTitle": None}]


def test_unselected_change_does_not_surface(client, d, emulator):
    _, link = client.items("/users/delta", {"$select": "displayName"})
    emulator.update_user(d.users[20]["id"], {"city": "Reykjavík", "jobTitle": "Skald"})
    assert client.items(link)[0] == []
    # Without $select the defaults are tracked: jobTitle is one, city is not.
    _, link = client.items("/users/delta")
    emulator.update_user(d.users[20]["id"], {"city": "Oslo", "jobTitle": "Bard"})
    assert client.items(link)[0] == [{"id": d.users[20]["id"], "jobTitle": "Bard"}]


def test_add_user(client, d, emulator):
    _, link = client.items("/users/delta", {"$select": "displayName,mail,accountEnabled,"
                                                      "onPremisesExtensionAttributes"})
    stored = emulator.add_user(new_user(1, mail="new.user1@contoso.com",
                                        onPremisesExtensionAttributes={"extensionAttribute1": "Active"}))
    assert stored["accountEnabled"] is True and stored["userType"] == "Member"
    assert stored["businessPhones"] == [] and stored["onPremisesExtensionAttributes"]["extensionAttribute2"] is None
    items, _ = client.items(link)
    assert items == [{"id": stored["id"], "displayName": "New User 1", "mail": "new.user1@contoso.com",
                      "accountEnabled": True,
                      "onPremisesExtensionAttributes": stored["onPremisesExtensionAttributes"]}]
    # Visible on the ordinary endpoints at once.
    assert client.get(f"/users/{stored['id']}").json()["displayName"] == "New User 1"
    assert client.get("/users/NEW.USER1@contoso.com").json()["id"] == stored["id"]
    listed = [u["id"] for page in client.round("/users/delta")[0] for u in page]
    assert listed[-1] == stored["id"] and len(listed) == 301
    with pytest.raises(ValueError, match="already used"):
        emulator.add_user(new_user(1))
    with pytest.raises(ValueError, match="userPrincipalName"):
        emulator.add_user(new_user(2, userPrincipalName=d.users[0]["userPrincipalName"].upper()))
    with pytest.raises(ValueError, match="GUID"):
        emulator.add_user({"userPrincipalName": "x@contoso.com"})
    with pytest.raises(ValueError, match="no property named"):
        emulator.add_user(new_user(3, favouriteColour="blue"))


def test_soft_delete_restore_and_hard_delete(client, d, emulator):
    select = {"$select": "displayName,jobTitle"}
    user = d.users[30]
    _, link = client.items("/users/delta", select)
    emulator.soft_delete_user(user["id"])
    assert client.get(f"/users/{user['id']}").status_code == 404
    items, link = client.items(link)
    assert items == [{"id": user["id"], "@removed": REMOVED_CHANGED}]

    emulator.restore_user(user["id"])
    assert client.get(f"/users/{user['id']}").status_code == 200
    items, link = client.items(link)
    assert items == [{"id": user["id"], "displayName": user["displayName"], "jobTitle": user["jobTitle"]}]

    emulator.hard_delete_user(user["id"])
    items, link = client.items(link)
    assert items == [{"id": user["id"], "@removed": REMOVED_DELETED}]
    assert client.get(f"/users/{user['id']}").status_code == 404

    # From the recycle bin to gone for good: "changed", then "deleted".
    other = d.users[31]["id"]
    emulator.soft_delete_user(other)
    items, link = client.items(link)
    assert items == [{"id": other, "@removed": REMOVED_CHANGED}]
    emulator.hard_delete_user(other)
    assert client.items(link)[0] == [{"id": other, "@removed": REMOVED_DELETED}]
    with pytest.raises(KeyError, match="no soft-deleted user"):
        emulator.restore_user(other)


def test_created_and_deleted_between_rounds_is_reported_removed(client, d, emulator):
    _, link = client.items("/users/delta", {"$select": "displayName"})
    a = emulator.add_user(new_user(5))["id"]
    b = emulator.add_user(new_user(6))["id"]
    emulator.hard_delete_user(a)
    emulator.soft_delete_user(b)
    assert client.items(link)[0] == [{"id": a, "@removed": REMOVED_DELETED},
                                     {"id": b, "@removed": REMOVED_CHANGED}]


def test_manager_delta_set_changed_removed(client, d, emulator):
    items, link = client.items("/users/delta", {"$select": "displayName,manager"})
    contacts = {oid for oid, obj in d.other_objects.items() if obj["@odata.type"] == CONTACT_TYPE}
    for item in items:
        assert "manager" not in item
        manager = d.manager_of.get(item["id"])
        if manager is None:
            assert "manager@delta" not in item
        else:
            odata_type = CONTACT_TYPE if manager in contacts else USER_TYPE
            assert item["manager@delta"] == [{"@odata.type": odata_type, "id": manager}]
    assert any(d.manager_of.get(i["id"]) in contacts for i in items)  # the orgContact case is covered

    without = next(u["id"] for u in d.users[1:] if u["id"] not in d.manager_of)
    with_manager = next(u["id"] for u in d.users if d.manager_of.get(u["id"], "") not in contacts | {""})
    old = d.manager_of[with_manager]
    boss, contact = d.users[0]["id"], sorted(contacts)[0]
    emulator.set_manager(without, boss)  # set
    emulator.set_manager(with_manager, None)  # removed
    items, link = client.items(link)
    assert items == [
        {"id": without, "manager@delta": [{"@odata.type": USER_TYPE, "id": boss}]},
        {"id": with_manager, "manager@delta": [{"@odata.type": USER_TYPE, "id": old,
                                                "@removed": REMOVED_DELETED}]},
    ]
    expanded = client.get(f"/users/{without}", {"$expand": "manager($select=id)"}).json()
    assert expanded["manager"] == {"@odata.type": USER_TYPE, "id": boss}
    emulator.set_manager(without, contact)  # changed (to an orgContact)
    assert client.items(link)[0] == [{"id": without, "manager@delta": [{"@odata.type": CONTACT_TYPE,
                                                                         "id": contact}]}]
    with pytest.raises(ValueError, match="user or an orgContact"):
        emulator.set_manager(without, d.groups[0]["id"])
    with pytest.raises(KeyError):
        emulator.set_manager(str(uuid.UUID(int=99)), boss)


def test_deleting_a_manager_unlinks_its_reports_and_restore_relinks_them(client, d, emulator):
    _, link = client.items("/users/delta", {"$select": "manager"})
    manager = d.users[0]["id"]
    reports = [u for u, m in d.manager_of.items() if m == manager]
    assert reports
    emulator.soft_delete_user(manager)
    items, link = client.items(link)
    removal = [{"@odata.type": USER_TYPE, "id": manager, "@removed": REMOVED_DELETED}]
    assert by_id(items) == {manager: {"id": manager, "@removed": REMOVED_CHANGED},
                            **{r: {"id": r, "manager@delta": removal} for r in reports}}
    assert "manager" not in client.get(f"/users/{reports[0]}", {"$expand": "manager"}).json()
    emulator.restore_user(manager)
    items, _ = client.items(link)
    assert by_id(items) == {manager: {"id": manager},  # restored: its full selection (no manager of its own)
                            **{r: {"id": r, "manager@delta": [{"@odata.type": USER_TYPE, "id": manager}]}
                               for r in reports}}


# ---------------------------------------------------------------------------
# groups


def test_groups_first_round_members(client, d, emulator):
    emulator.delta_page_size = 7
    items, _ = client.items("/groups/delta", {"$select": "displayName,members"})
    assert [item["id"] for item in items] == [g["id"] for g in d.groups]
    for item, group in zip(items, d.groups):
        assert item == {"id": group["id"], "displayName": group["displayName"], "members@delta": [
            {"@odata.type": t, "id": m} for t, m in d.members[group["id"]]]}
    assert by_id(items)[d.special["empty"]]["members@delta"] == []
    types = {m["@odata.type"] for m in by_id(items)[d.special["mixed_types"]]["members@delta"]}
    assert types == {USER_TYPE, GROUP_TYPE, CONTACT_TYPE, "#microsoft.graph.device",
                     "#microsoft.graph.servicePrincipal"}
    # Without $select: the default group properties, no members@delta.
    items, _ = client.items("/groups/delta")
    assert all(set(item) == set(GROUP_PROPERTIES) for item in items) and len(items) == 20


def test_group_member_added_and_removed(client, d, emulator):
    _, link = client.items("/groups/delta", {"$select": "displayName,members"})
    group = d.special["edge_users"]
    current = {m for _, m in d.members[group]}
    leaving = d.members[group][0][1]
    joining = next(u["id"] for u in d.users if u["id"] not in current)
    contact = next(oid for oid, o in d.other_objects.items() if o["@odata.type"] == CONTACT_TYPE
                   and oid not in current)
    emulator.add_member(group, joining)
    emulator.add_member(group, contact)
    emulator.remove_member(group, leaving)
    other = d.special["empty"]
    emulator.add_member(other, joining)
    emulator.remove_member(other, joining)  # no net change: the group is not in the round
    items, link = client.items(link)
    assert items == [{"id": group, "members@delta": [
        {"@odata.type": USER_TYPE, "id": joining},
        {"@odata.type": CONTACT_TYPE, "id": contact},
        {"@odata.type": USER_TYPE, "id": leaving, "@removed": REMOVED_DELETED},
    ]}]
    listed = client.get(f"/groups/{group}/members", {"$top": 999}).json()["value"]
    assert {m["id"] for m in listed} == current - {leaving} | {joining, contact}
    with pytest.raises(ValueError, match="already a direct member"):
        emulator.add_member(group, joining)
    with pytest.raises(KeyError, match="not a direct member"):
        emulator.remove_member(group, leaving)
    with pytest.raises(KeyError, match="no active user, group or other"):
        emulator.add_member(group, str(uuid.UUID(int=7)))
    with pytest.raises(KeyError, match="no active group"):
        emulator.add_member(str(uuid.UUID(int=8)), joining)


def test_group_renamed_created_and_deleted(client, d, emulator):
    _, link = client.items("/groups/delta", {"$select": "displayName,description,members"})
    parent = d.special["nested_parent"]
    child = d.special["nested_children"][0]
    renamed, soft, hard = [g["id"] for g in d.groups if g["id"] not in (parent, child)][:3]
    # A deleted group leaves the groups it was a member of: each parent reports a removal.
    removals: dict[str, list] = {}
    for group_id in (soft, hard, child):
        for owner, members in d.members.items():
            if (GROUP_TYPE, group_id) in members:
                removals.setdefault(owner, []).append({"@odata.type": GROUP_TYPE, "id": group_id,
                                                       "@removed": REMOVED_DELETED})
    assert parent in removals and renamed not in removals
    emulator.update_group(renamed, {"displayName": "Renamed Group", "visibility": "Private"})
    emulator.delete_group(soft, soft=True)
    emulator.delete_group(hard)
    emulator.delete_group(child)  # leaves its parent: a member removal there
    created = emulator.add_group({"id": str(uuid.UUID(int=40)), "displayName": "Brand New"},
                                 members=[d.users[0]["id"], parent])
    items, link = client.items(link)
    expected = {
        renamed: {"id": renamed, "displayName": "Renamed Group"},
        soft: {"id": soft, "@removed": REMOVED_CHANGED},
        hard: {"id": hard, "@removed": REMOVED_DELETED},
        child: {"id": child, "@removed": REMOVED_DELETED},
        **{owner: {"id": owner, "members@delta": entries} for owner, entries in removals.items()
           if owner not in (soft, hard, child)},
        created["id"]: {"id": created["id"], "displayName": "Brand New", "description": None,
                        "members@delta": [{"@odata.type": USER_TYPE, "id": d.users[0]["id"]},
                                          {"@odata.type": GROUP_TYPE, "id": parent}]},
    }
    assert by_id(items) == expected and len(items) == len(expected)
    assert client.get(f"/groups/{soft}").status_code == 404
    transitive = client.get(f"/groups/{created['id']}/transitiveMembers", {"$top": 999}).json()["value"]
    assert child not in {m["id"] for m in transitive} and parent in {m["id"] for m in transitive}
    # Soft-deleted, then deleted for good from the recycle bin.
    emulator.delete_group(soft)
    assert client.items(link)[0] == [{"id": soft, "@removed": REMOVED_DELETED}]
    with pytest.raises(KeyError):
        emulator.delete_group(soft)


def test_group_split_over_pages(client, d, emulator):
    emulator.delta_page_size = 4
    emulator.delta_members_per_page = 50
    pages, _ = client.round("/groups/delta", {"$select": "displayName,members"})
    big = d.special["all_employees"]
    expected = [{"@odata.type": t, "id": m} for t, m in d.members[big]]
    assert len(expected) > 150
    appearances = []
    for number, page in enumerate(pages):
        ids = [item["id"] for item in page]
        assert len(ids) == len(set(ids)) and len(ids) <= 4
        assert sum(len(item["members@delta"]) for item in page) <= 50
        appearances += [(number, item) for item in page if item["id"] == big]
    numbers = [n for n, _ in appearances]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # consecutive pages
    first, *rest = [item for _, item in appearances]
    assert first["displayName"] == "All Employees"
    assert all(set(item) == {"id", "members@delta"} for item in rest)
    assert [m for _, item in appearances for m in item["members@delta"]] == expected
    # Merging by id gives every group exactly its members.
    merged: dict[str, list] = {}
    for page in pages:
        for item in page:
            merged.setdefault(item["id"], []).extend(item["members@delta"])
    assert merged == {g["id"]: [{"@odata.type": t, "id": m} for t, m in d.members[g["id"]]] for g in d.groups}


def test_deleted_user_is_a_member_removal_and_restore_an_addition(client, d, emulator):
    _, link = client.items("/groups/delta", {"$select": "members"})
    user = ordinary_member(d)
    groups = [g for g, members in d.members.items() if (USER_TYPE, user) in members]
    assert len(groups) >= 2
    emulator.soft_delete_user(user)
    items, link = client.items(link)
    removal = [{"@odata.type": USER_TYPE, "id": user, "@removed": REMOVED_DELETED}]
    assert by_id(items) == {g: {"id": g, "members@delta": removal} for g in groups}
    for g in groups:
        assert (USER_TYPE, user) not in d.members[g]
    emulator.restore_user(user)
    items, link = client.items(link)
    assert by_id(items) == {g: {"id": g, "members@delta": [{"@odata.type": USER_TYPE, "id": user}]}
                            for g in groups}
    emulator.hard_delete_user(user)
    assert by_id(client.items(link)[0]) == {g: {"id": g, "members@delta": removal} for g in groups}


# ---------------------------------------------------------------------------
# tokens


def test_expired_token_is_410_with_location_or_400_sync_state_not_found(client, d, emulator):
    _, link = client.items("/users/delta", {"$select": "displayName,manager"})
    emulator.expire_delta_tokens()
    response = client.get(link)
    error_of(response, 410, "resyncRequired")
    location = response.headers["Location"]
    assert location == f"{emulator.base_url}/v1.0/users/delta?$select=displayName,manager"
    items, link = client.items(location)
    assert len(items) == 300 and set(items[0]) <= {"id", "displayName", "manager@delta"}

    emulator.delta_expiry_status = 400
    emulator.expire_delta_tokens()
    response = client.get(link)
    error_of(response, 400, "syncStateNotFound")
    assert "Location" not in response.headers

    # By age: tokens older than delta_token_lifetime, skiptokens of a running round too.
    emulator.delta_expiry_status = 410
    emulator.delta_page_size = 5
    first = client.get("/groups/delta").json()
    emulator.delta_token_lifetime = 0.05
    time.sleep(0.1)
    response = client.get(first["@odata.nextLink"])
    error_of(response, 410, "resyncRequired")
    assert response.headers["Location"] == f"{emulator.base_url}/v1.0/groups/delta"


def test_tampered_foreign_and_misused_tokens(client, d, emulator, tmp_path):
    _, link = client.items("/users/delta", {"$select": "displayName"})
    token = link.split("$deltatoken=")[1]
    tampered = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    error_of(client.get("/users/delta", {"$deltatoken": tampered}), 400, "Request_BadRequest")
    error_of(client.get("/users/delta", {"$deltatoken": "not-a-token"}), 400, "Request_BadRequest")
    error_of(client.get("/users/delta", {"$skiptoken": token}), 400, "Request_BadRequest")  # wrong kind
    error_of(client.get("/groups/delta", {"$deltatoken": token}), 400, "Request_BadRequest")  # wrong resource
    error_of(client.get("/users/delta", {"$deltatoken": token, "$skiptoken": token}), 400, "Request_BadRequest")
    error_of(client.get("/users", {"$deltatoken": token}), 400, "Request_BadRequest")

    other = Emulator(generate_directory(users=300, groups=20, seed=3), tenant_id=DEMO_TENANT_ID,
                     client_id=DEMO_CLIENT_ID, client_secret=SECRET, cert_dir=tmp_path)
    with other, https_session(other.ca_path) as session:
        foreign = Client(other, session, bearer(session, other, SECRET)).items("/users/delta")[1]
    error_of(client.get("/users/delta", {"$deltatoken": foreign.split("$deltatoken=")[1]}),
             400, "syncStateNotFound")


def test_evicted_round_is_sync_state_not_found(client, d, emulator):
    emulator.delta_rounds_kept = 2
    first = client.get("/users/delta").json()
    client.get("/users/delta")
    client.get("/groups/delta")
    error_of(client.get(first["@odata.nextLink"]), 400, "syncStateNotFound")


def test_reindex_and_directory_replacement_expire_tokens(client, d, emulator):
    _, link = client.items("/users/delta", {"$select": "displayName"})
    running = client.get("/users/delta").json()["@odata.nextLink"]
    d.users[0]["displayName"] = "Changed In Place"  # the change log cannot see this
    emulator.reindex()
    error_of(client.get(link), 410, "resyncRequired")
    error_of(client.get(running), 410, "resyncRequired")
    items, link = client.items("/users/delta", {"$select": "displayName"})
    assert items[0]["displayName"] == "Changed In Place"
    emulator.directory = copy.deepcopy(d)
    error_of(client.get(link), 410, "resyncRequired")


# ---------------------------------------------------------------------------
# options, faults, consistency


@pytest.mark.parametrize("option,value", [("$top", "5"), ("$orderby", "displayName"), ("$expand", "manager"),
                                          ("$count", "true"), ("$search", '"displayName:a"')])
def test_unsupported_options(client, d, option, value):
    error = error_of(client.get("/users/delta", {option: value}), 400, "Request_UnsupportedQuery")
    assert option in error["message"] and "delta" in error["message"]
    error_of(client.get("/groups/delta", {option: value}), 400, "Request_UnsupportedQuery")


def test_filter_and_bad_select_on_delta(client, d):
    error = error_of(client.get("/users/delta", {"$filter": "id eq 'x'"}), 400, "Request_BadRequest")
    assert "not emulated" in error["message"]
    error_of(client.get("/users/delta", {"$select": "displayName,nonsense"}), 400, "Request_BadRequest")
    error_of(client.get("/groups/delta", {"$select": "manager"}), 400, "Request_BadRequest")
    error_of(client.get("/users/delta", {"$select": "aboutMe"}), 501, "NotImplemented")
    error_of(client.get("/users/delta/extra"), 400, "BadRequest")
    response = client.get("/groups/delta", {"$select": "members"})
    assert response.status_code == 200 and set(response.json()["value"][0]) == {"id", "members@delta"}


def test_truncate_paging_and_status_faults(client, d, emulator):
    emulator.faults.truncate_paging(path="/v1.0/users/delta")
    body = client.get("/users/delta").json()
    assert len(body["value"]) == 40
    assert "@odata.nextLink" not in body and "@odata.deltaLink" not in body
    _, link = client.items("/users/delta")
    emulator.faults.truncate_paging(path="/v1.0/users/delta")
    body = client.get(link).json()  # the last (only) page of an incremental round
    assert body["value"] == [] and "@odata.nextLink" not in body and "@odata.deltaLink" not in body
    emulator.faults.add(503, path="/v1.0/groups/delta", retry_after=3)
    response = client.get("/groups/delta")
    error_of(response, 503, "ServiceUnavailable")
    assert response.headers["Retry-After"] == "3"
    assert client.get("/groups/delta").status_code == 200


def test_changes_during_a_round_appear_in_the_next(client, d, emulator):
    select = {"$select": "displayName"}
    first = client.get("/users/delta", select).json()
    late = d.users[250]
    old_name = late["displayName"]
    emulator.update_user(late["id"], {"displayName": "Renamed Mid-Round"})
    added = emulator.add_user(new_user(9))["id"]
    gone = d.users[260]["id"]
    emulator.hard_delete_user(gone)
    rest, link = client.items(first["@odata.nextLink"])
    items = first["value"] + rest
    assert len(items) == 300 and by_id(items)[late["id"]]["displayName"] == old_name  # the round's snapshot
    assert added not in by_id(items) and gone in by_id(items)
    assert client.items(link)[0] == [
        {"id": late["id"], "displayName": "Renamed Mid-Round"},
        {"id": added, "displayName": "New User 9"},
        {"id": gone, "@removed": REMOVED_DELETED},
    ]


def test_delta_in_a_batch(client, d, emulator):
    emulator.update_user(d.users[0]["id"], {"displayName": "Batched"})
    response = client.session.post(f"{emulator.graph_url}/$batch", headers=client.auth, json={"requests": [
        {"id": "1", "method": "GET", "url": "/users/delta?$select=displayName"}]})
    assert response.status_code == 200, response.text
    answer = response.json()["responses"][0]
    assert answer["status"] == 200
    assert answer["body"]["value"][0] == {"id": d.users[0]["id"], "displayName": "Batched"}
    items, _ = client.items(answer["body"]["@odata.nextLink"])
    assert len(answer["body"]["value"]) + len(items) == 300


def test_change_api_errors_leave_the_directory_unchanged(d, emulator):
    before = copy.deepcopy((d.users, d.groups, d.members, d.manager_of))
    unknown = str(uuid.UUID(int=1234))
    for call in (lambda: emulator.update_user(unknown, {"displayName": "x"}),
                 lambda: emulator.soft_delete_user(unknown),
                 lambda: emulator.hard_delete_user(unknown),
                 lambda: emulator.update_group(unknown, {"displayName": "x"}),
                 lambda: emulator.delete_group(unknown)):
        with pytest.raises(KeyError, match=unknown):
            call()
    user = d.users[0]["id"]
    with pytest.raises(ValueError, match="'id' cannot be changed"):
        emulator.update_user(user, {"id": unknown})
    with pytest.raises(ValueError, match="set_manager"):
        emulator.update_user(user, {"manager": d.users[1]["id"]})
    with pytest.raises(ValueError, match="extensionAttribute16"):
        emulator.update_user(user, {"onPremisesExtensionAttributes": {"extensionAttribute16": "x"}})
    with pytest.raises(ValueError, match="already used"):
        emulator.update_user(user, {"userPrincipalName": d.users[1]["userPrincipalName"]})
    with pytest.raises(KeyError, match="no active user"):
        emulator.add_group({"id": str(uuid.UUID(int=77)), "displayName": "G"}, members=[user, unknown])
    assert copy.deepcopy((d.users, d.groups, d.members, d.manager_of)) == before
