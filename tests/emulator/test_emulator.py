"""Tests of the demo tenant: directory generator, identity platform and Graph emulation.

Everything goes over real HTTPS. Sessions set ``trust_env = False`` and verify
against the emulator's own CA, because these machines export
REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE and a test must not pass by accident.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import threading
import time
import unicodedata
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import msal
import pytest
import requests

from entra_pipeline.emulator import (
    CLIENT_SECRET_ENV,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_TENANT_ID,
    Emulator,
    generate_directory,
)
from entra_pipeline.emulator.model import (
    CONTACT_TYPE,
    DEVICE_TYPE,
    GROUP_PROPERTIES,
    GROUP_TYPE,
    SERVICE_PRINCIPAL_TYPE,
    USER_PROPERTIES,
    USER_TYPE,
)
from entra_pipeline.emulator.people import BAD_DATES, BAD_NUMBERS

from tests.support.tenant import app_token, bearer, https_session, running_emulator, token_response

SECRET = "unit-test-secret-7Qx"
GRAPH_SCOPE = ["https://graph.microsoft.com/.default"]
GRAPH_CONTENT_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
)
USER_DEFAULTS = {
    "id", "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName",
}
ADVANCED = {"ConsistencyLevel": "eventual"}
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def directory():
    # 2000 users: "All Employees" has ~1,850 direct members, i.e. two pages of 999.
    return generate_directory(users=2000, groups=60, seed=11)


@pytest.fixture(scope="module")
def emulator(directory, tmp_path_factory):
    with running_emulator(directory, tmp_path_factory.mktemp("emulator-certs"), tenant_id=DEMO_TENANT_ID,
                          client_id=DEMO_CLIENT_ID, client_secret=SECRET) as emu:
        yield emu


@pytest.fixture(scope="module")
def auth(emulator, session):
    return bearer(session, emulator, SECRET)


class Graph:
    """Tiny client for the tests: GET relative to /v1.0 and follow nextLinks."""

    def __init__(self, emulator: Emulator, session: requests.Session, auth: dict):
        self.emulator, self.session, self.auth = emulator, session, auth

    def get(self, path: str, params=None, headers=None) -> requests.Response:
        url = path if path.startswith("https://") else f"{self.emulator.graph_url}{path}"
        return self.session.get(url, params=params, headers={**self.auth, **(headers or {})})

    def pages(self, path: str, params=None, headers=None) -> list[dict]:
        out = []
        response = self.get(path, params=params, headers=headers)
        while True:
            assert response.status_code == 200, response.text
            body = response.json()
            out.append(body)
            next_link = body.get("@odata.nextLink")
            if not next_link:
                return out
            response = self.get(next_link, headers=headers)

    def items(self, path: str, params=None, headers=None) -> list[dict]:
        return [item for page in self.pages(path, params, headers) for item in page["value"]]


@pytest.fixture(scope="module")
def graph(emulator, session, auth):
    return Graph(emulator, session, auth)


def closure(directory, group_id: str) -> set[str]:
    """Transitive member ids computed independently of Directory.transitive_members."""
    seen, queue = set(), [group_id]
    while queue:
        for odata_type, object_id in directory.members[queue.pop()]:
            if object_id not in seen:
                seen.add(object_id)
                if odata_type == GROUP_TYPE:
                    queue.append(object_id)
    seen.discard(group_id)
    return seen


def kind(group: dict) -> str:
    flags = ("Unified" in group["groupTypes"], group["mailEnabled"], group["securityEnabled"])
    return {
        (True, True, False): "m365", (True, True, True): "m365",
        (False, False, True): "security", (False, True, True): "mail_security",
        (False, True, False): "distribution",
    }[flags]


def assert_graph_error(response: requests.Response, status: int, code: str, message: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    if message is not None:
        assert error["message"] == message
    return error


# ---------------------------------------------------------------------------
# directory


def test_generation_is_deterministic():
    first = generate_directory(users=300, groups=30, seed=3)
    again = generate_directory(users=300, groups=30, seed=3)
    other = generate_directory(users=300, groups=30, seed=4)
    assert first == again
    assert first.users == again.users and first.members == again.members
    assert first.manager_of == again.manager_of and first.manager_of
    assert first.manager_of != other.manager_of
    assert [u["id"] for u in first.users] != [u["id"] for u in other.users]
    assert first.extension_app_id != other.extension_app_id


def test_generation_is_identical_in_another_process():
    # The CLI serves a directory generated in its own process; tests regenerate it locally.
    script = (
        "import hashlib, json; from entra_pipeline.emulator import generate_directory as g; "
        "d = g(users=300, groups=30, seed=3); "
        "print(hashlib.sha256(json.dumps([d.users, d.groups, d.members, d.other_objects, d.special, "
        "d.manager_of], sort_keys=True).encode()).hexdigest())"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    remote = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                            text=True, check=True).stdout.strip()
    d = generate_directory(users=300, groups=30, seed=3)
    local = hashlib.sha256(json.dumps([d.users, d.groups, d.members, d.other_objects, d.special, d.manager_of],
                                      sort_keys=True).encode()).hexdigest()
    assert remote == local


def test_default_directory_users():
    d = generate_directory()
    assert len(d.users) == 2000 and len(d.groups) == 150
    assert len(d.extension_app_id) == 32 and int(d.extension_app_id, 16) >= 0
    assert d.extension_property == f"extension_{d.extension_app_id}_costCenter"
    for user in d.users:
        assert set(user) == set(USER_PROPERTIES) | {d.extension_property}
        assert set(user["onPremisesExtensionAttributes"]) == {f"extensionAttribute{i}" for i in range(1, 16)}
        assert all(isinstance(user[k], list) for k in ("otherMails", "proxyAddresses", "businessPhones"))

    guests = [u for u in d.users if u["userType"] == "Guest"]
    members = [u for u in d.users if u["userType"] == "Member"]
    assert len(guests) == 60 and len(guests) + len(members) == 2000
    assert all("#EXT#@contoso.onmicrosoft.com" in g["userPrincipalName"] and g["mail"] for g in guests)
    assert all(g["employeeId"] is None for g in guests)
    assert sum(u["mail"] is None for u in d.users) == 100
    assert sum(not u["accountEnabled"] for u in d.users) == 100

    mails = [u["mail"].lower() for u in d.users if u["mail"]]
    assert len(mails) == len(set(mails)), "mail must be unique ignoring case"
    assert any(u["mail"] and u["mail"] != u["mail"].lower() for u in members), "some MixedCase mail"
    assert all(u["mail"] is None or u["mail"].isascii() for u in d.users)
    employee_ids = [u["employeeId"] for u in members if u["employeeId"] is not None]
    assert len(members) - len(employee_ids) == round(len(members) * 0.01) == 19
    assert all(e.startswith("E") and len(e) == 7 for e in employee_ids)
    assert len(set(employee_ids)) == len(employee_ids)
    non_ascii = sum(not u["displayName"].isascii() for u in d.users)
    assert non_ascii > 0.2 * len(d.users)
    names = " ".join(u["displayName"] for u in d.users)
    for sample in ("José", "Łukasz", "Søren", "Müller", "山田", "Ольга"):
        assert sample in names
    # NFC so that comparisons with typed text behave.
    assert all(unicodedata.is_normalized("NFC", u["displayName"]) for u in d.users)

    status = Counter(u["onPremisesExtensionAttributes"]["extensionAttribute1"] for u in d.users)
    assert set(status) == {"Active", "Inactive", "inactive", None}
    assert sum(u["onPremisesExtensionAttributes"]["extensionAttribute2"] is not None for u in d.users) > 1000
    assert {u["country"] for u in members} <= {"US", "DE", "GB", "FR", "AT", "JP", "ES", "PL", "DK"}
    assert any(u[d.extension_property] is None for u in d.users)
    assert any((u[d.extension_property] or "").startswith("CC-") for u in d.users)


# Pinned before managers and extensionAttribute4-6 were added: SHA-256 of every user (without
# extensionAttribute4-6, and without employeeId where it is now null), group, membership, other
# object and special id. Adding to the generator must not move any of these values.
LEGACY_DIGESTS = {
    (300, 30, 3): "e7523b5532a779104070949f3846999c37b4a20ba8eb07b014d91208c75565f3",
    (2000, 60, 11): "7cbf1f88d4595aa57f9e0a1509401512b0fa60a5a19993b3a19c707efcaab5ff",
}
NEW_ATTRIBUTES = ("extensionAttribute4", "extensionAttribute5", "extensionAttribute6")


def _legacy_digest(d) -> str:
    users = []
    for user in d.users:
        user = dict(user)
        user["onPremisesExtensionAttributes"] = {
            k: v for k, v in user["onPremisesExtensionAttributes"].items() if k not in NEW_ATTRIBUTES}
        if user["userType"] == "Member" and user["employeeId"] is None:
            del user["employeeId"]
        users.append(user)
    blob = json.dumps([users, d.groups, d.members, d.other_objects, d.special], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@pytest.mark.parametrize("args", sorted(LEGACY_DIGESTS))
def test_existing_values_are_unchanged(args):
    assert _legacy_digest(generate_directory(*args)) == LEGACY_DIGESTS[args]


def test_existing_values_by_value():
    d = generate_directory()  # users=2000, groups=150, seed=7
    assert sum(u["mail"] is not None for u in d.users) == 1900
    first, second = d.users[0], d.users[1]
    assert {k: first[k] for k in ("id", "displayName", "mail", "userPrincipalName", "employeeId",
                                  "employeeType", "accountEnabled", "department", "employeeHireDate")} == {
        "id": "7a243b32-4990-4224-a1db-bd89a1ac6036", "displayName": "John Rogers",
        "mail": "john.rogers@contoso.com", "userPrincipalName": "john.rogers@contoso.com",
        "employeeId": "E666226", "employeeType": "Contractor", "accountEnabled": False,
        "department": "Procurement", "employeeHireDate": "2014-01-23T00:00:00Z"}
    assert first["onPremisesExtensionAttributes"]["extensionAttribute1"] == "Inactive"
    assert first["onPremisesExtensionAttributes"]["extensionAttribute2"] == "Logistics"
    assert (second["displayName"], second["mail"], second["userPrincipalName"], second["employeeId"]) == (
        "Rasmus Østergaard", "Rasmus.Ostergaard@Contoso.com", "rasmus.ostergaard@contoso.com", "E265511")
    assert second[d.extension_property] == "CC-9164"
    assert d.extension_app_id == "6513270e269e0d37f2a74de452e6b438"


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _is_date(text: str) -> bool:
    try:
        if "T" in text:
            datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
        else:
            date.fromisoformat(text)
        return True
    except ValueError:
        return False


def test_typed_extension_attributes():
    d = generate_directory()
    members = [u for u in d.users if u["userType"] == "Member"]
    attrs = [u["onPremisesExtensionAttributes"] for u in members]
    for guest in (u for u in d.users if u["userType"] == "Guest"):
        assert all(guest["onPremisesExtensionAttributes"][k] is None for k in NEW_ATTRIBUTES)

    numbers = [a["extensionAttribute4"] for a in attrs if a["extensionAttribute4"] is not None]
    assert 0.55 * len(members) < len(numbers) < 0.65 * len(members)
    bad_numbers = Counter(n for n in numbers if n in BAD_NUMBERS)
    assert set(bad_numbers) == set(BAD_NUMBERS) == {"n/a", "12,5", "1e400"}
    assert sum(bad_numbers.values()) <= 3 * round(len(members) * 0.001)
    good = [n for n in numbers if n not in BAD_NUMBERS]
    assert all(_is_number(n) for n in good)
    assert not any(_is_number(n) for n in BAD_NUMBERS)  # "1e400" parses, but to infinity
    assert any(n.startswith(" ") and n.endswith(" ") for n in good)
    assert any("." in n for n in good) and any(n.startswith("-") for n in good)
    assert any(n.isdigit() for n in good)

    dates = [a["extensionAttribute5"] for a in attrs if a["extensionAttribute5"] is not None]
    assert 0.55 * len(members) < len(dates) < 0.65 * len(members)
    assert {t for t in dates if t in BAD_DATES} == set(BAD_DATES) == {"31/02/2024", "2024-02-30", "soon"}
    good = [t for t in dates if t not in BAD_DATES]
    assert all(_is_date(t) for t in good) and not any(_is_date(t) for t in BAD_DATES)
    assert any(len(t) == 10 for t in good) and any(t.endswith("Z") and "T" in t for t in good)

    flags = Counter(a["extensionAttribute6"] for a in attrs)
    assert set(flags) == {"true", "false", "yes", None}
    assert 0.35 * len(members) < len(members) - flags[None] < 0.45 * len(members)


def test_managers_in_directory():
    d = generate_directory()
    position = {u["id"]: i for i, u in enumerate(d.users)}
    members = [u for u in d.users if u["userType"] == "Member"]
    guests = [u for u in d.users if u["userType"] == "Guest"]
    contacts = {oid for oid, obj in d.other_objects.items() if obj["@odata.type"] == CONTACT_TYPE}
    assert set(d.manager_of) <= set(position)

    by_type = Counter()
    for user_id, manager_id in d.manager_of.items():
        odata_type, manager = d.manager(user_id)
        by_type[odata_type] += 1
        assert manager["id"] == manager_id != user_id
        if odata_type == USER_TYPE:
            assert manager["userType"] == "Member", "guests never manage anyone"
            if d.user_by_id(user_id)["userType"] == "Member":
                assert position[manager_id] < position[user_id], "managers come earlier: no cycles"
        else:
            assert odata_type == CONTACT_TYPE and manager_id in contacts
    assert by_type[CONTACT_TYPE] == max(2, round(len(members) * 0.003)) == 6

    for user in d.users:  # every chain ends: at a user without a manager or at an orgContact
        seen, current = set(), user["id"]
        while current in d.manager_of and current not in contacts:
            assert current not in seen
            seen.add(current)
            current = d.manager_of[current]
        assert len(seen) <= 10

    without = [u for u in members if u["id"] not in d.manager_of]
    assert members[0] in without and len(without) == 1 + round(len(members) * 0.01)
    assert sum(u["id"] in d.manager_of for u in guests) < 0.3 * len(guests)
    managers = {m for m in d.manager_of.values() if m in position}
    assert 0.05 * len(members) < len(managers) < 0.2 * len(members)
    assert any(d.user_by_id(m)["mail"] is None for m in managers), "some managers have no mail"
    assert max(Counter(d.manager_of.values()).values()) < 60
    assert d.manager("00000000-0000-0000-0000-000000000000") is None


def test_default_directory_groups():
    d = generate_directory()
    kinds = Counter(kind(g) for g in d.groups)
    assert kinds == {"m365": 45, "mail_security": 30, "distribution": 30, "security": 45}
    for group in d.groups:
        assert set(group) == set(GROUP_PROPERTIES)
        assert (group["mail"] is None) == (not group["mailEnabled"])
    assert any(g["securityEnabled"] for g in d.groups if kind(g) == "m365")
    assert d.special["dynamic"]
    for group_id in d.special["dynamic"]:
        assert d.group_by_id(group_id)["groupTypes"] == ["Unified", "DynamicMembership"]
    nicknames = [g["mailNickname"] for g in d.groups]
    assert len(nicknames) == len(set(nicknames))
    first, second = (d.group_by_id(i) for i in d.special["duplicate_name"])
    assert first["id"] != second["id"] and first["displayName"] == second["displayName"]
    assert set(d.members) == {g["id"] for g in d.groups}
    for group_members in d.members.values():
        assert len(group_members) == len(set(group_members)), "direct members are unique"
    total_edges = sum(len(m) for m in d.members.values())
    assert total_edges < 20_000


def test_special_groups(directory):
    d, special = directory, directory.special
    everyone = d.members[special["all_employees"]]
    enabled_members = {u["id"] for u in d.users if u["accountEnabled"] and u["userType"] == "Member"}
    assert len(everyone) > 999 and {oid for _, oid in everyone} == enabled_members

    a, b, c = special["cycle"]
    assert (GROUP_TYPE, b) in d.members[a] and (GROUP_TYPE, c) in d.members[b] and (GROUP_TYPE, a) in d.members[c]

    parent = special["nested_parent"]
    children = special["nested_children"]
    grandchild = special["nested_grandchildren"][0]
    assert {oid for t, oid in d.members[parent] if t == GROUP_TYPE} == set(children)
    assert (GROUP_TYPE, grandchild) in d.members[children[0]]
    assert {kind(d.group_by_id(g)) for g in children} == {"security", "m365"}

    assert d.members[special["empty"]] == []
    assert {t for t, _ in d.members[special["mixed_types"]]} == {
        USER_TYPE, GROUP_TYPE, CONTACT_TYPE, DEVICE_TYPE, SERVICE_PRINCIPAL_TYPE}
    for _, object_id in d.members[special["mixed_types"]]:
        assert d.object_by_id(object_id) is not None

    edge = [d.user_by_id(oid) for _, oid in d.members[special["edge_users"]]]
    assert any(u["userType"] == "Guest" for u in edge)
    assert any(not u["accountEnabled"] for u in edge)
    assert any(u["mail"] is None for u in edge)


def test_transitive_members_in_directory(directory):
    d = directory
    for group_id in d.special["cycle"] + [d.special["nested_parent"]]:
        flattened = d.transitive_members(group_id)
        ids = [oid for _, oid in flattened]
        assert len(ids) == len(set(ids)), "no duplicates"
        assert set(ids) == closure(d, group_id)
        assert group_id not in ids
    a, b, c = d.special["cycle"]
    assert {b, c} <= {oid for _, oid in d.transitive_members(a)}
    with pytest.raises(KeyError):
        d.transitive_members("00000000-0000-0000-0000-000000000000")


def test_generator_rejects_too_few_groups():
    with pytest.raises(ValueError):
        generate_directory(users=100, groups=5)


# ---------------------------------------------------------------------------
# identity platform


def test_tls_needs_the_emulator_ca(emulator):
    # The environment's CA bundle does not contain our CA: only the explicit one works.
    with requests.Session() as plain:
        plain.trust_env = False
        with pytest.raises(requests.exceptions.SSLError):
            plain.get(f"{emulator.authority}/v2.0/.well-known/openid-configuration")


def test_openid_configuration(emulator, session):
    response = session.get(f"{emulator.authority}/v2.0/.well-known/openid-configuration")
    assert response.status_code == 200
    config = response.json()
    base = f"{emulator.base_url}/{DEMO_TENANT_ID}"
    assert config["token_endpoint"] == f"{base}/oauth2/v2.0/token"
    assert config["authorization_endpoint"] == f"{base}/oauth2/v2.0/authorize"
    assert config["device_authorization_endpoint"] == f"{base}/oauth2/v2.0/devicecode"
    assert config["issuer"] == f"{base}/v2.0"
    assert config["jwks_uri"].startswith("https://")
    assert session.get(config["jwks_uri"]).json() == {"keys": []}

    unknown = session.get(f"{emulator.base_url}/no-such-tenant/v2.0/.well-known/openid-configuration")
    assert unknown.status_code == 400 and unknown.json()["error_codes"] == [90002]


def test_msal_acquires_token_and_graph_accepts_it(emulator, session):
    app = msal.ConfidentialClientApplication(
        DEMO_CLIENT_ID, client_credential=SECRET, authority=emulator.authority,
        instance_discovery=False, http_client=session,
    )
    result = app.acquire_token_for_client(scopes=GRAPH_SCOPE)
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer" and result["expires_in"] == 3599
    me = session.get(f"{emulator.graph_url}/users", params={"$top": 1},
                     headers={"Authorization": f"Bearer {result['access_token']}"})
    assert me.status_code == 200 and len(me.json()["value"]) == 1
    # MSAL caches: a second call does not hit the token endpoint again.
    before = emulator.request_count
    again = app.acquire_token_for_client(scopes=GRAPH_SCOPE)
    assert again["access_token"] == result["access_token"] and emulator.request_count == before


def test_msal_wrong_secret(emulator, session):
    wrong = "definitely-Wrong-secret-42"
    app = msal.ConfidentialClientApplication(
        DEMO_CLIENT_ID, client_credential=wrong, authority=emulator.authority,
        instance_discovery=False, http_client=session,
    )
    result = app.acquire_token_for_client(scopes=GRAPH_SCOPE)
    assert "access_token" not in result
    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert result["error_codes"] == [7000215]
    assert wrong not in json.dumps(result) and SECRET not in json.dumps(result)

    raw = token_response(session, emulator, wrong)
    assert raw.status_code == 401
    assert wrong not in raw.text and SECRET not in raw.text
    body = raw.json()
    assert {"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id"} <= set(body)


def test_token_with_client_secret_basic(emulator, session):
    response = session.post(f"{emulator.authority}/oauth2/v2.0/token", auth=(DEMO_CLIENT_ID, SECRET),
                            data={"grant_type": "client_credentials", "scope": GRAPH_SCOPE[0]})
    assert response.status_code == 200 and response.json()["access_token"]


@pytest.mark.parametrize(
    ("path_tenant", "form", "status", "error", "code"),
    [
        (DEMO_TENANT_ID, {"client_id": "11111111-2222-3333-4444-555555555555"}, 400, "unauthorized_client", 700016),
        ("not-our-tenant", {}, 400, "invalid_request", 90002),
        (DEMO_TENANT_ID, {"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
        (DEMO_TENANT_ID, {"scope": "User.Read"}, 400, "invalid_scope", 1002012),
        (DEMO_TENANT_ID, {"client_secret": ""}, 401, "invalid_client", 7000218),
    ],
)
def test_token_endpoint_errors(emulator, session, path_tenant, form, status, error, code):
    data = {"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID, "client_secret": SECRET,
            "scope": GRAPH_SCOPE[0], **form}
    response = session.post(f"{emulator.base_url}/{path_tenant}/oauth2/v2.0/token", data=data)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error and body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}:")
    assert SECRET not in response.text


# ---------------------------------------------------------------------------
# Graph: authentication and error shape


def test_graph_requires_a_valid_token(emulator, session):
    url = f"{emulator.graph_url}/users"
    assert_graph_error(session.get(url), 401, "InvalidAuthenticationToken", "Access token is empty.")
    bad = session.get(url, headers={"Authorization": "Bearer not-a-token"})
    assert_graph_error(bad, 401, "InvalidAuthenticationToken", "Access token validation failure.")
    assert bad.headers["WWW-Authenticate"].startswith("Bearer ")


def test_expired_token(directory, tmp_path):
    with Emulator(directory, tenant_id=DEMO_TENANT_ID, client_id=DEMO_CLIENT_ID, client_secret=SECRET,
                  cert_dir=tmp_path, token_ttl=1) as emu, https_session(emu.ca_path) as s:
        token = app_token(s, emu, SECRET)
        headers = {"Authorization": f"Bearer {token}"}
        assert s.get(f"{emu.graph_url}/users", headers=headers).status_code == 200
        time.sleep(1.1)
        assert_graph_error(s.get(f"{emu.graph_url}/users", headers=headers), 401,
                           "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
        fresh = bearer(s, emu, SECRET)
        emu.expire_tokens()
        assert s.get(f"{emu.graph_url}/users", headers=fresh).status_code == 401


def test_error_body_shape(graph):
    missing = "00000000-0000-0000-0000-000000000001"
    response = graph.get(f"/users/{missing}", headers={"client-request-id": "my-correlation-1"})
    error = assert_graph_error(
        response, 404, "Request_ResourceNotFound",
        f"Resource '{missing}' does not exist or one of its queried reference-property objects are not present.")
    assert response.headers["Content-Type"] == GRAPH_CONTENT_TYPE
    inner = error["innerError"]
    assert inner["request-id"] == response.headers["request-id"]
    assert inner["client-request-id"] == "my-correlation-1" == response.headers["client-request-id"]
    assert inner["date"][:2] == "20"
    ok = graph.get("/users", params={"$top": 1})
    assert ok.headers["request-id"] and ok.headers["client-request-id"]
    assert ok.headers["Content-Type"] == GRAPH_CONTENT_TYPE


def test_unknown_paths_and_methods(graph, emulator, session, auth):
    assert_graph_error(graph.get("/widgets"), 400, "BadRequest", "Resource not found for the segment 'widgets'.")
    group_id = graph.emulator.directory.groups[0]["id"]
    assert_graph_error(graph.get(f"/groups/{group_id}/owners"), 400, "BadRequest")
    assert_graph_error(graph.get("/groups/not-a-guid"), 400, "Request_BadRequest",
                       "Invalid object identifier 'not-a-guid'.")
    beta = session.get(f"{emulator.base_url}/beta/users", headers=auth)
    assert_graph_error(beta, 400, "BadRequest")
    posted = session.post(f"{emulator.graph_url}/users", json={}, headers=auth)
    assert posted.status_code == 405
    assert_graph_error(graph.get("/users", params={"$orderby": "displayName"}), 400, "Request_BadRequest")


# ---------------------------------------------------------------------------
# Graph: paging, $top, $select


def test_paging_with_top_999_covers_every_user_once(graph, directory):
    pages = graph.pages("/users", params={"$top": 999, "$select": "id,mail"})
    ids = [u["id"] for page in pages for u in page["value"]]
    assert len(pages) == math.ceil(len(directory.users) / 999) == 3
    assert ids == [u["id"] for u in directory.users]
    assert all(len(p["value"]) == 999 for p in pages[:-1])


def test_paging_default_page_size(graph, directory):
    pages = graph.pages("/users", params={"$select": "id"})
    assert len(pages) == 20 and all(len(p["value"]) == 100 for p in pages)
    assert [u["id"] for p in pages for u in p["value"]] == [u["id"] for u in directory.users]
    groups = graph.items("/groups")
    assert [g["id"] for g in groups] == [g["id"] for g in directory.groups]
    assert groups == directory.groups  # default group projection: every modelled property


def test_next_link_carries_the_original_query(graph, emulator):
    params = {"$top": 5, "$select": "id,displayName", "$filter": "accountEnabled eq true"}
    first = graph.get("/users", params=params).json()
    link = first["@odata.nextLink"]
    assert link.startswith(f"{emulator.graph_url}/users?")
    query = parse_qs(urlsplit(link).query)
    assert query["$select"] == ["id,displayName"]
    assert query["$filter"] == ["accountEnabled eq true"]
    assert query["$top"] == ["5"]
    assert len(query["$skiptoken"]) == 1
    second = graph.get(link).json()
    assert len(second["value"]) == 5 and set(second["value"][0]) == {"id", "displayName"}
    assert {u["id"] for u in first["value"]}.isdisjoint(u["id"] for u in second["value"])
    assert parse_qs(urlsplit(second["@odata.nextLink"]).query)["$skiptoken"] != query["$skiptoken"]


def test_tampered_or_foreign_skiptoken_is_rejected(graph):
    link = graph.get("/users", params={"$top": 5}).json()["@odata.nextLink"]
    token = parse_qs(urlsplit(link).query)["$skiptoken"][0]
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert_graph_error(graph.get("/users", params={"$top": 5, "$skiptoken": flipped}), 400, "Request_BadRequest")
    assert_graph_error(graph.get("/users", params={"$skiptoken": "garbage!"}), 400, "Request_BadRequest")
    # A valid token is bound to its resource and filter.
    moved = graph.get("/users", params={"$filter": "userType eq 'Guest'", "$skiptoken": token})
    assert_graph_error(moved, 400, "Request_BadRequest")
    assert_graph_error(graph.get("/groups", params={"$skiptoken": token}), 400, "Request_BadRequest")


@pytest.mark.parametrize("top", ["1000", "0", "abc", "-1"])
def test_invalid_page_size(graph, top):
    assert_graph_error(graph.get("/users", params={"$top": top}), 400, "Request_BadRequest",
                       f"Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive.")


def test_skip_is_not_supported(graph):
    assert_graph_error(graph.get("/users", params={"$skip": "10"}), 400, "Request_BadRequest")


def test_select_rules(graph, directory):
    default = graph.get("/users", params={"$top": 3}).json()["value"]
    assert all(set(u) == USER_DEFAULTS for u in default)

    ext = directory.extension_property
    chosen = graph.get("/users", params={
        "$top": 999, "$select": f"displayName,accountEnabled,onPremisesExtensionAttributes,{ext}"}).json()
    by_id = {u["id"]: u for u in directory.users}
    for item in chosen["value"]:
        assert list(item) == ["id", "displayName", "accountEnabled", "onPremisesExtensionAttributes", ext]
        source = by_id[item["id"]]
        assert item[ext] == source[ext]
        assert item["onPremisesExtensionAttributes"] == source["onPremisesExtensionAttributes"]
    assert chosen["@odata.context"].endswith(
        f"$metadata#users(displayName,accountEnabled,onPremisesExtensionAttributes,{ext})")
    # $select names are case-insensitive; the response uses Graph's spelling.
    assert list(graph.get("/users", params={"$top": 1, "$select": "MAIL"}).json()["value"][0]) == ["id", "mail"]

    assert_graph_error(graph.get("/users", params={"$select": "id,foo"}), 400, "Request_BadRequest",
                       "Could not find a property named 'foo' on type 'microsoft.graph.user'.")
    assert_graph_error(graph.get("/users", params={"$select": "extensionAttribute1"}), 400, "Request_BadRequest")
    assert_graph_error(graph.get("/users", params={"$select": "displayName,aboutMe"}), 501, "NotImplemented")
    assert_graph_error(graph.get("/groups", params={"$select": "bogus"}), 400, "Request_BadRequest",
                       "Could not find a property named 'bogus' on type 'microsoft.graph.group'.")


def test_single_objects(graph, directory):
    user = next(u for u in directory.users if u["mail"] and u["mail"] != u["mail"].lower())
    by_id = graph.get(f"/users/{user['id']}")
    assert by_id.status_code == 200
    assert by_id.json()["@odata.context"].endswith("$metadata#users/$entity")
    assert {k: v for k, v in by_id.json().items() if not k.startswith("@")} == {k: user[k] for k in USER_DEFAULTS}
    by_upn = graph.get(f"/users/{user['userPrincipalName'].upper()}", params={"$select": "id,aboutMe"})
    assert by_upn.status_code == 200 and by_upn.json()["id"] == user["id"] and by_upn.json()["aboutMe"] is None
    guest = next(u for u in directory.users if u["userType"] == "Guest")
    encoded = quote(guest["userPrincipalName"], safe="@")
    assert graph.get(f"/users/{encoded}").json()["id"] == guest["id"]
    group = directory.groups[0]
    body = graph.get(f"/groups/{group['id']}").json()
    assert {k: v for k, v in body.items() if not k.startswith("@")} == group


# ---------------------------------------------------------------------------
# Graph: $filter and $count


def ids_of(items) -> set[str]:
    return {item["id"] for item in items}


def test_simple_filters(graph, directory):
    users = directory.users
    disabled = graph.items("/users", params={"$filter": "accountEnabled eq false", "$select": "id"})
    assert ids_of(disabled) == {u["id"] for u in users if not u["accountEnabled"]}
    guests = graph.items("/users", params={"$filter": "userType eq 'guest'", "$top": 999})
    assert ids_of(guests) == {u["id"] for u in users if u["userType"] == "Guest"}

    prefix = graph.items("/users", params={"$filter": "startswith(displayName,'JO')"})
    expected = {u["id"] for u in users if u["displayName"].lower().startswith("jo")}
    assert expected and ids_of(prefix) == expected

    mixed_case = next(u for u in users if u["mail"] and u["mail"] != u["mail"].lower())
    found = graph.items("/users", params={"$filter": f"mail eq '{mixed_case['mail'].lower()}'"})
    assert ids_of(found) == {mixed_case["id"]}

    combined = graph.items("/users", params={
        "$filter": "accountEnabled eq true and startswith(employeeId,'E1') and country eq 'de'"})
    assert ids_of(combined) == {
        u["id"] for u in users
        if u["accountEnabled"] and (u["employeeId"] or "").startswith("E1") and u["country"] == "DE"}
    by_id = graph.items("/users", params={"$filter": f"id eq '{users[5]['id']}'"})
    assert ids_of(by_id) == {users[5]["id"]}


def test_group_filters(graph, directory):
    unified = graph.items("/groups", params={"$filter": "groupTypes/any(c:c eq 'Unified')"})
    assert ids_of(unified) == {g["id"] for g in directory.groups if "Unified" in g["groupTypes"]}
    lists = graph.items("/groups", params={"$filter": "mailEnabled eq true and securityEnabled eq false"})
    assert ids_of(lists) == {g["id"] for g in directory.groups if g["mailEnabled"] and not g["securityEnabled"]}
    # Distribution lists proper need not(): advanced mode only.
    expression = "mailEnabled eq true and securityEnabled eq false and not(groupTypes/any(c:c eq 'Unified'))"
    assert_graph_error(graph.get("/groups", params={"$filter": expression}), 400, "Request_UnsupportedQuery")
    distribution = graph.items("/groups", params={"$filter": expression, "$count": "true"}, headers=ADVANCED)
    assert ids_of(distribution) == {g["id"] for g in directory.groups if kind(g) == "distribution"}
    dup_name = directory.group_by_id(directory.special["duplicate_name"][0])["displayName"]
    named = graph.items("/groups", params={"$filter": f"displayName eq '{dup_name}'"})
    assert ids_of(named) == set(directory.special["duplicate_name"])


def test_advanced_query_requirement(graph, directory):
    cases = {
        "userType ne 'Guest'": lambda u: u["userType"] != "Guest",
        "endswith(mail,'@fabrikam.com')": lambda u: (u["mail"] or "").lower().endswith("@fabrikam.com"),
        "companyName eq 'Contoso GmbH'": lambda u: u["companyName"] == "Contoso GmbH",
        "not(accountEnabled eq true)": lambda u: not u["accountEnabled"],
        # Graph ignores case here: 'Inactive' also matches 'inactive' (the pipeline must not rely on it).
        "onPremisesExtensionAttributes/extensionAttribute1 eq 'Inactive'":
            lambda u: (u["onPremisesExtensionAttributes"]["extensionAttribute1"] or "").lower() == "inactive",
        f"{directory.extension_property} eq null": lambda u: u[directory.extension_property] is None,
    }
    for expression, predicate in cases.items():
        plain = graph.get("/users", params={"$filter": expression})
        assert_graph_error(plain, 400, "Request_UnsupportedQuery")
        no_count = graph.get("/users", params={"$filter": expression}, headers=ADVANCED)
        assert_graph_error(no_count, 400, "Request_UnsupportedQuery")
        found = graph.items("/users", params={"$filter": expression, "$count": "true", "$top": 999},
                            headers=ADVANCED)
        expected = {u["id"] for u in directory.users if predicate(u)}
        assert expected and ids_of(found) == expected, expression
    statuses = {u["onPremisesExtensionAttributes"]["extensionAttribute1"]
                for u in directory.users
                if u["id"] in ids_of(graph.items("/users", params={
                    "$filter": "onPremisesExtensionAttributes/extensionAttribute1 eq 'Inactive'",
                    "$count": "true", "$top": 999, "$select": "id"}, headers=ADVANCED))}
    assert statuses == {"Inactive", "inactive"}


@pytest.mark.parametrize(
    ("expression", "status", "code", "fragment"),
    [
        ("displayName eq", 400, "Request_BadRequest", "Invalid filter clause"),
        ("startswith(displayName,'a'", 400, "Request_BadRequest", "Invalid filter clause"),
        ("displayName eq 'unterminated", 400, "Request_BadRequest", "unterminated string"),
        ("foo eq 'x'", 400, "Request_BadRequest", "Could not find a property named 'foo'"),
        ("accountEnabled eq 'yes'", 400, "Request_BadRequest", "incompatible types"),
        ("displayName eq 'a' xor mail eq 'b'", 400, "Request_BadRequest", "Invalid filter clause"),
        ("businessPhones eq '1'", 400, "Request_BadRequest", "collection"),
        ("__import__('os') eq 1", 400, "Request_BadRequest", "Invalid filter clause"),
    ],
)
def test_bad_filters(graph, expression, status, code, fragment):
    error = assert_graph_error(graph.get("/users", params={"$filter": expression}), status, code)
    assert fragment in error["message"]


def test_count(graph, directory):
    pages = graph.pages("/users", params={"$count": "true", "$top": 999, "$select": "id"}, headers=ADVANCED)
    assert pages[0]["@odata.count"] == len(directory.users)
    assert all("@odata.count" not in page for page in pages[1:])
    assert parse_qs(urlsplit(pages[0]["@odata.nextLink"]).query)["$count"] == ["true"]

    filtered = graph.get("/users", params={"$count": "true", "$filter": "userType eq 'Guest'"},
                         headers=ADVANCED).json()
    assert filtered["@odata.count"] == sum(u["userType"] == "Guest" for u in directory.users)

    assert_graph_error(graph.get("/users", params={"$count": "true"}), 400, "Request_BadRequest",
                       "$count is not currently supported.")
    # The server does not carry ConsistencyLevel to later pages: the client must resend it.
    link = pages[0]["@odata.nextLink"]
    assert_graph_error(graph.get(link), 400, "Request_BadRequest")


# ---------------------------------------------------------------------------
# Graph: members


def test_members_of_large_group_span_two_pages(graph, directory):
    group_id = directory.special["all_employees"]
    pages = graph.pages(f"/groups/{group_id}/members", params={"$top": 999})
    assert len(pages) == 2
    items = [m for p in pages for m in p["value"]]
    assert [(m["@odata.type"], m["id"]) for m in items] == directory.members[group_id]
    assert all(set(m) == USER_DEFAULTS | {"@odata.type"} for m in items)
    assert pages[0]["@odata.context"].endswith("$metadata#directoryObjects")


def test_transitive_members_of_cycle_terminate(graph, directory):
    for group_id in directory.special["cycle"]:
        items = graph.items(f"/groups/{group_id}/transitiveMembers", params={"$select": "id"})
        ids = [m["id"] for m in items]
        assert len(ids) == len(set(ids))
        assert set(ids) == closure(directory, group_id)
        assert all(set(m) == {"@odata.type", "id"} for m in items)
    a, b, c = directory.special["cycle"]
    a_items = graph.items(f"/groups/{a}/transitiveMembers")
    assert {m["id"] for m in a_items if m["@odata.type"] == GROUP_TYPE} >= {b, c}


def test_member_type_casts(graph, directory):
    mixed = directory.special["mixed_types"]
    all_members = graph.items(f"/groups/{mixed}/members")
    assert {m["@odata.type"] for m in all_members} == {
        USER_TYPE, GROUP_TYPE, CONTACT_TYPE, DEVICE_TYPE, SERVICE_PRINCIPAL_TYPE}
    contact = next(m for m in all_members if m["@odata.type"] == CONTACT_TYPE)
    assert contact["mail"] == directory.other_objects[contact["id"]]["mail"]

    users_only = graph.items(f"/groups/{mixed}/members/microsoft.graph.user")
    assert [m["id"] for m in users_only] == [oid for t, oid in directory.members[mixed] if t == USER_TYPE]
    assert all(m["@odata.type"] == USER_TYPE for m in users_only)
    groups_only = graph.items(f"/groups/{mixed}/members/microsoft.graph.group")
    assert [m["id"] for m in groups_only] == [oid for t, oid in directory.members[mixed] if t == GROUP_TYPE]

    parent = directory.special["nested_parent"]
    transitive_users = graph.items(f"/groups/{parent}/transitiveMembers/microsoft.graph.user",
                                   params={"$select": "id,mail"})
    expected = {oid for oid in closure(directory, parent) if directory.user_by_id(oid)}
    assert ids_of(transitive_users) == expected
    assert all(set(m) == {"@odata.type", "id", "mail"} for m in transitive_users)

    selected = graph.items(f"/groups/{mixed}/members", params={"$select": "displayName,mail"})
    device = next(m for m in selected if m["@odata.type"] == DEVICE_TYPE)
    assert set(device) == {"@odata.type", "id", "displayName"}


def test_members_edge_cases(graph, directory):
    assert graph.get(f"/groups/{directory.special['empty']}/members").json()["value"] == []
    missing = "00000000-0000-0000-0000-00000000dead"
    assert_graph_error(graph.get(f"/groups/{missing}/members"), 404, "Request_ResourceNotFound")
    mixed = directory.special["mixed_types"]
    assert_graph_error(graph.get(f"/groups/{mixed}/members", params={"$filter": "mail eq 'x'"}),
                       400, "Request_UnsupportedQuery")
    assert_graph_error(graph.get(f"/groups/{mixed}/members", params={"$select": "nope"}),
                       400, "Request_BadRequest",
                       "Could not find a property named 'nope' on type 'microsoft.graph.directoryObject'.")
    assert_graph_error(graph.get(f"/groups/{mixed}/members/microsoft.graph.widget"), 400, "BadRequest")


def test_expand_members_is_silently_capped_at_20(graph, directory):
    group_id = directory.special["all_employees"]
    body = graph.get(f"/groups/{group_id}", params={"$expand": "members($select=id)"}).json()
    assert [m["id"] for m in body["members"]] == [oid for _, oid in directory.members[group_id][:20]]
    assert all(set(m) == {"@odata.type", "id"} for m in body["members"])
    assert not any(key.startswith("members@") for key in body)
    listed = graph.get("/groups", params={"$expand": "members", "$top": 999}).json()["value"]
    assert all(len(g["members"]) <= 20 for g in listed)
    assert_graph_error(graph.get("/users", params={"$expand": "directReports"}), 400, "Request_BadRequest")
    assert_graph_error(graph.get("/groups", params={"$expand": "owners"}), 400, "Request_BadRequest")


# ---------------------------------------------------------------------------
# Graph: $expand=manager


def expected_manager(directory, user_id: str, props: tuple[str, ...]) -> dict | None:
    """The expanded manager Graph would return for ``$expand=manager($select=<props>)``."""
    found = directory.manager(user_id)
    if found is None:
        return None
    odata_type, obj = found
    return {"@odata.type": odata_type, **{p: obj[p] for p in ("id", *props) if p in obj}}


def test_expand_manager_on_every_user(graph, directory):
    params = {"$top": 999, "$select": "id,displayName", "$expand": "manager($select=id,mail)"}
    pages = graph.pages("/users", params=params)
    # Graph serves at most 100 objects per page with $expand, whatever $top says.
    assert [len(p["value"]) for p in pages] == [100] * 20
    for page in pages[:-1]:
        query = parse_qs(urlsplit(page["@odata.nextLink"]).query)
        assert query["$expand"] == ["manager($select=id,mail)"] and query["$top"] == ["999"]
    items = [u for p in pages for u in p["value"]]
    assert [u["id"] for u in items] == [u["id"] for u in directory.users]
    kinds = Counter()
    for item in items:
        expected = expected_manager(directory, item["id"], ("mail",))
        if expected is None:
            assert "manager" not in item, "no manager: the property is left out, not null"
            kinds["none"] += 1
        else:
            assert item["manager"] == expected
            assert list(item["manager"]) == ["@odata.type", "id", "mail"]
            kinds[item["manager"]["@odata.type"]] += 1
            kinds["null mail"] += item["manager"]["mail"] is None
        assert set(item) <= {"id", "displayName", "manager"}
    assert kinds[CONTACT_TYPE] >= 2 and kinds[USER_TYPE] > 1800 and kinds["none"] > 20 and kinds["null mail"] > 0
    assert len(directory.manager_of) == kinds[CONTACT_TYPE] + kinds[USER_TYPE]


def test_expand_manager_projection(graph, directory):
    by_contact = next(u for u, m in directory.manager_of.items() if directory.manager(u)[0] == CONTACT_TYPE)
    by_user = next(u for u, m in directory.manager_of.items() if directory.manager(u)[0] == USER_TYPE)
    nobody = next(u["id"] for u in directory.users if u["id"] not in directory.manager_of)

    # No nested $select: the manager type's default properties.
    body = graph.get(f"/users/{by_user}", params={"$expand": "manager"}).json()
    assert set(body["manager"]) == {"@odata.type"} | USER_DEFAULTS
    assert body["manager"]["@odata.type"] == USER_TYPE and body["manager"]["id"] == directory.manager_of[by_user]
    assert set(body) - {"@odata.context"} == USER_DEFAULTS | {"manager"}
    body = graph.get(f"/users/{by_contact}", params={"$expand": "manager"}).json()
    contact = directory.other_objects[directory.manager_of[by_contact]]
    assert body["manager"] == {"@odata.type": CONTACT_TYPE, "id": contact["id"], "displayName": contact["displayName"],
                               "mail": contact["mail"], "companyName": contact["companyName"]}
    body = graph.get(f"/users/{nobody}", params={"$expand": "manager"})
    assert body.status_code == 200 and "manager" not in body.json()

    # Nested $select: id plus what the type has; an orgContact has no userPrincipalName.
    nested = "manager($select=id,displayName,mail,userPrincipalName)"
    body = graph.get(f"/users/{by_contact}", params={"$select": "id", "$expand": nested}).json()
    assert body["manager"] == {"@odata.type": CONTACT_TYPE, "id": contact["id"],
                               "displayName": contact["displayName"], "mail": contact["mail"]}
    body = graph.get(f"/users/{by_user}", params={"$select": "id,mail", "$expand": nested}).json()
    assert body["manager"] == expected_manager(directory, by_user, ("displayName", "mail", "userPrincipalName"))
    assert list(body) == ["@odata.context", "id", "mail", "manager"]
    upn = directory.user_by_id(by_user)["userPrincipalName"]
    assert graph.get(f"/users/{upn}", params={"$expand": "MANAGER($SELECT=mail)"}).json()["manager"] == (
        expected_manager(directory, by_user, ("mail",)))

    # $filter and $expand together; guests mostly have no manager.
    guests = graph.items("/users", params={"$filter": "userType eq 'Guest'", "$select": "id",
                                           "$expand": "manager($select=id)"})
    assert len(guests) == 60
    assert {g["id"] for g in guests if "manager" in g} == {
        g["id"] for g in guests if g["id"] in directory.manager_of}


def test_manager_is_a_navigation_property(graph, directory):
    # Graph accepts $select=manager (it is a navigation property of user) but returns no manager:
    # only $expand does. The emulator does the same rather than invent a 400.
    listed = graph.get("/users", params={"$top": 50, "$select": "id,manager"})
    assert listed.status_code == 200
    assert all(list(u) == ["id"] for u in listed.json()["value"])
    assert all("manager" not in u for u in graph.get("/users", params={"$top": 50}).json()["value"])
    both = graph.get("/users", params={"$top": 50, "$select": "id,manager", "$expand": "manager($select=id)"})
    for item in both.json()["value"]:
        assert item.get("manager") == expected_manager(directory, item["id"], ())
    # Not filterable, and not a property of group members (directoryObject).
    assert_graph_error(graph.get("/users", params={"$filter": "manager eq 'x'"}), 400, "Request_BadRequest")
    group_id = directory.special["all_employees"]
    assert_graph_error(graph.get(f"/groups/{group_id}/members", params={"$select": "manager"}),
                       400, "Request_BadRequest")


@pytest.mark.parametrize("path_kind, expand, status, code", [
    ("list", "manager($levels=max)", 400, "Request_UnsupportedQuery"),
    ("list", "manager($levels=2;$select=id)", 400, "Request_UnsupportedQuery"),
    ("single", "manager($levels=max;$select=id,displayName)", 400, "Request_BadRequest"),
    ("list", "manager($top=1)", 400, "Request_BadRequest"),
    ("list", "manager($select=id;$select=mail)", 400, "Request_BadRequest"),
    ("list", "manager($select=nope)", 400, "Request_BadRequest"),
    ("list", "manager($select=aboutMe)", 501, "NotImplemented"),
    ("list", "manager,memberOf", 400, "Request_BadRequest"),
    ("single", "directReports", 400, "Request_BadRequest"),
    ("list", "memberOf", 400, "Request_BadRequest"),
])
def test_expand_manager_errors(graph, directory, path_kind, expand, status, code):
    path = "/users" if path_kind == "list" else f"/users/{directory.users[5]['id']}"
    assert_graph_error(graph.get(path, params={"$expand": expand}), status, code)


def test_expand_is_refused_with_advanced_queries(graph):
    # Graph: "$expand is not currently supported with advanced queries".
    response = graph.get("/users", params={"$expand": "manager($select=id)", "$count": "true"},
                         headers={"ConsistencyLevel": "eventual"})
    assert_graph_error(response, 400, "Request_UnsupportedQuery")


def test_expand_page_limit_can_be_lifted(graph, emulator, directory):
    emulator.expand_page_limit = None
    try:
        pages = graph.pages("/users", params={"$top": 999, "$select": "id", "$expand": "manager($select=id)"})
    finally:
        emulator.expand_page_limit = 100
    assert [len(p["value"]) for p in pages] == [999, 999, 2]
    assert sum("manager" in u for p in pages for u in p["value"]) == len(directory.manager_of)
    small = graph.get("/users", params={"$top": 7, "$select": "id", "$expand": "manager"}).json()
    assert len(small["value"]) == 7  # a $top below the cap is honoured


# ---------------------------------------------------------------------------
# faults, accounting, concurrency, directory changes


def test_fault_429_with_retry_after(graph, emulator):
    emulator.faults.add(429, path="/v1.0/users", retry_after=3)
    throttled = graph.get("/users", params={"$top": 1})
    error = assert_graph_error(throttled, 429, "TooManyRequests")
    assert throttled.headers["Retry-After"] == "3"
    assert error["innerError"]["request-id"] == throttled.headers["request-id"]
    assert graph.get("/users", params={"$top": 1}).status_code == 200


def test_fault_matching_and_custom_body(graph, emulator):
    emulator.faults.add(503, path="/v1.0/groups", method="GET", times=2)
    assert graph.get("/users", params={"$top": 1}).status_code == 200  # other path: untouched
    assert_graph_error(graph.get("/groups"), 503, "ServiceUnavailable")
    assert_graph_error(graph.get("/groups"), 503, "ServiceUnavailable")
    assert graph.get("/groups").status_code == 200
    emulator.faults.add(504, body={"error": {"code": "custom", "message": "scripted"}})
    assert graph.get("/users").json() == {"error": {"code": "custom", "message": "scripted"}}
    emulator.faults.add(500, times=None)
    emulator.faults.clear()
    assert graph.get("/users", params={"$top": 1}).status_code == 200


def test_fault_on_token_endpoint(emulator, session):
    emulator.faults.add(503, path=f"/{DEMO_TENANT_ID}/oauth2", retry_after=1)
    response = session.post(f"{emulator.authority}/oauth2/v2.0/token", data={})
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.json()["error"] == "temporarily_unavailable"


def test_truncate_paging_drops_next_link_once(graph, emulator):
    emulator.faults.truncate_paging("/v1.0/users")
    truncated = graph.get("/users", params={"$top": 10}).json()
    assert len(truncated["value"]) == 10 and "@odata.nextLink" not in truncated
    assert "@odata.nextLink" in graph.get("/users", params={"$top": 10}).json()


def test_request_accounting_and_keep_alive(emulator, auth):
    before_count, before_connections = emulator.request_count, emulator.connection_count
    with https_session(emulator.ca_path) as fresh:
        for _ in range(5):
            assert fresh.get(f"{emulator.graph_url}/users", params={"$top": 1}, headers=auth).status_code == 200
    assert emulator.request_count == before_count + 5
    assert emulator.connection_count == before_connections + 1, "one kept-alive connection"
    assert emulator.request_log[-1] == ("GET", "/v1.0/users?%24top=1", 200)


def test_parallel_clients(emulator, auth, directory):
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def crawl():
        try:
            with https_session(emulator.ca_path) as s:
                client = Graph(emulator, s, auth)
                results.append([u["id"] for u in client.items("/users", params={"$top": 500, "$select": "id"})])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=crawl) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert results == [[u["id"] for u in directory.users]] * 4


# ---------------------------------------------------------------------------
# JSON batching


def _batch(graph: Graph, requests_: list[dict], headers: dict | None = None) -> requests.Response:
    return graph.session.post(f"{graph.emulator.graph_url}/$batch", json={"requests": requests_},
                              headers={**graph.auth, **(headers or {})})


def test_batch_sub_requests_answer_like_direct_requests(graph, directory):
    big = max(directory.members, key=lambda g: len(directory.members[g]))
    member_query = "$select=id&$top=999&$count=true"
    first = graph.get(f"/groups/{big}/members?{member_query}", headers=ADVANCED)
    urls = {
        "members": (f"/groups/{big}/members?{member_query}", ADVANCED),
        "next": (first.json()["@odata.nextLink"].removeprefix(graph.emulator.graph_url), ADVANCED),
        "user": (f"users/{directory.users[0]['id']}?$select=id,mail", {}),  # no leading slash: fine
        "missing": ("/groups/00000000-0000-0000-0000-000000000001/members", {}),
        "count without header": ("/groups?$count=true", {}),
        "top": ("/users?$top=1000", {}),
    }
    response = _batch(graph, [{"id": key, "method": "GET", "url": url, "headers": headers}
                              for key, (url, headers) in urls.items()])
    assert response.status_code == 200 and response.headers["Content-Type"] == GRAPH_CONTENT_TYPE
    answers = {a["id"]: a for a in response.json()["responses"]}
    assert set(answers) == set(urls)
    for key, (url, headers) in urls.items():
        direct = graph.get(url if url.startswith("/") else "/" + url, headers=headers)
        assert answers[key]["status"] == direct.status_code, key
        body = answers[key]["body"]
        if direct.status_code == 200:
            assert body == direct.json(), key  # same page, same count, the same absolute nextLink
        else:
            assert body["error"]["code"] == direct.json()["error"]["code"], key
            assert body["error"]["message"] == direct.json()["error"]["message"], key
            assert body["error"]["innerError"]["request-id"] == answers[key]["headers"]["request-id"]
        assert answers[key]["headers"]["Content-Type"] == GRAPH_CONTENT_TYPE
    assert answers["members"]["body"]["@odata.count"] == len(directory.members[big])
    assert "@odata.count" not in answers["next"]["body"]
    next_link = answers["members"]["body"]["@odata.nextLink"]
    assert next_link.startswith(f"{graph.emulator.graph_url}/groups/{big}/members?")
    # ConsistencyLevel on the batch request is not inherited by its sub-requests.
    outer_only = _batch(graph, [{"id": "1", "method": "GET", "url": "/groups?$count=true"}], ADVANCED)
    assert outer_only.json()["responses"][0]["status"] == 400


def test_batch_answers_come_in_any_order(graph, emulator):
    requests_ = [{"id": f"r{n}", "method": "GET", "url": "/users?$top=1&$select=id"} for n in range(20)]
    orders = {tuple(a["id"] for a in _batch(graph, requests_).json()["responses"]) for _ in range(5)}
    assert len(orders) > 1 and all(sorted(order) == sorted(r["id"] for r in requests_) for order in orders)
    emulator.shuffle_batch_responses = False
    try:
        assert [a["id"] for a in _batch(graph, requests_).json()["responses"]] == [r["id"] for r in requests_]
    finally:
        emulator.shuffle_batch_responses = True


def test_batch_refusals(graph, emulator, session):
    one = {"id": "1", "method": "GET", "url": "/users?$top=1"}
    cases = [
        ([{**one, "id": str(n)} for n in range(21)], "exceeds the limit of 20"),
        ([one, {**one, "url": "/groups"}], "duplicate request id '1'"),
        ([], "'requests' is empty"),
        ([{**one, "id": 1}], "non-empty string 'id'"),
        ([{"id": "1", "method": "GET"}], "non-empty string 'url'"),
        ([{**one, "headers": {"ConsistencyLevel": 1}}], "'headers' of request '1'"),
        ([one, {"id": "2", "method": "GET", "url": "/groups", "dependsOn": ["1"]}], "'dependsOn' is not emulated"),
    ]
    before = emulator.batched_request_count
    for requests_, fragment in cases:
        error = assert_graph_error(_batch(graph, requests_), 400, "BadRequest")
        assert fragment in error["message"]
    assert emulator.batched_request_count == before
    url = f"{emulator.graph_url}/$batch"
    assert_graph_error(session.post(url, data=b"not json", headers=graph.auth), 400, "BadRequest")
    assert_graph_error(session.post(url, json=[one], headers=graph.auth), 400, "BadRequest")
    assert_graph_error(session.post(url, json={"requests": [one]}), 401, "InvalidAuthenticationToken")
    assert_graph_error(session.get(url, headers=graph.auth), 405, "Request_BadRequest")


def test_batch_sub_request_refusals(graph):
    response = _batch(graph, [
        {"id": "post", "method": "POST", "url": "/users", "body": {}, "headers": {"Content-Type": "application/json"}},
        {"id": "absolute", "method": "GET", "url": f"{graph.emulator.graph_url}/users"},
        {"id": "nested", "method": "POST", "url": "/$batch"},
        {"id": "beta", "method": "GET", "url": "/v1.0/users"},
    ])
    assert response.status_code == 200  # the batch is fine even though every request in it fails
    statuses = {a["id"]: (a["status"], a["body"]["error"]["code"]) for a in response.json()["responses"]}
    assert statuses == {"post": (405, "Request_BadRequest"), "absolute": (400, "BadRequest"),
                        "nested": (400, "Request_BadRequest"), "beta": (400, "BadRequest")}


def test_batch_faults_and_accounting(graph, emulator, directory):
    group_id = directory.groups[0]["id"]
    emulator.faults.add(429, path=f"/v1.0/groups/{group_id}/members", retry_after=7)
    emulator.faults.truncate_paging("/v1.0/users")
    requests_ = [
        {"id": "members", "method": "GET", "url": f"/groups/{group_id}/members"},
        {"id": "users", "method": "GET", "url": "/users?$top=5"},
        {"id": "groups", "method": "GET", "url": "/groups?$top=5"},
    ]
    count, batched, log = emulator.request_count, emulator.batched_request_count, len(emulator.request_log)
    answers = {a["id"]: a for a in _batch(graph, requests_).json()["responses"]}
    assert emulator.request_count == count + 1  # one HTTP request served ...
    assert emulator.batched_request_count == batched + 3  # ... answering three
    assert emulator.request_log[log:] == [("POST", "/v1.0/$batch", 200)]
    assert sorted(emulator.batched_request_log[-3:]) == sorted([
        ("GET", f"/v1.0/groups/{group_id}/members", 429), ("GET", "/v1.0/users?$top=5", 200),
        ("GET", "/v1.0/groups?$top=5", 200)])
    throttled = answers["members"]
    assert throttled["status"] == 429 and throttled["headers"]["Retry-After"] == "7"
    assert throttled["body"]["error"]["code"] == "TooManyRequests"
    assert "@odata.nextLink" not in answers["users"]["body"] and len(answers["users"]["body"]["value"]) == 5
    assert "@odata.nextLink" in answers["groups"]["body"]
    assert _batch(graph, requests_[:1]).json()["responses"][0]["status"] == 200  # the fault was used up

    # A fault on the $batch path answers the batch request itself; sub-request paths never match it.
    emulator.faults.add(503, path="/v1.0/$batch", retry_after=2)
    outer = _batch(graph, requests_)
    assert_graph_error(outer, 503, "ServiceUnavailable")
    assert outer.headers["Retry-After"] == "2"
    assert emulator.batched_request_count == batched + 4
    # A GET-only fault skips the POST of the batch and hits the first GET sub-request.
    emulator.faults.add(500, method="GET")
    answers = {a["id"]: a["status"] for a in _batch(graph, requests_).json()["responses"]}
    assert answers == {"members": 500, "users": 200, "groups": 200}


def test_directory_changes_are_served(tmp_path):
    d = generate_directory(users=200, groups=20, seed=5)
    with Emulator(d, tenant_id=DEMO_TENANT_ID, client_id=DEMO_CLIENT_ID, client_secret=SECRET,
                  cert_dir=tmp_path) as emu, https_session(emu.ca_path) as s:
        client = Graph(emu, s, bearer(s, emu, SECRET))
        first_page = client.get("/users", params={"$top": 150, "$select": "id,displayName"}).json()

        user = d.users[0]
        user["displayName"] = "Renamed Person"
        removed = d.users.pop()
        emu.reindex()
        assert client.get(f"/users/{user['id']}").json()["displayName"] == "Renamed Person"
        assert client.get(f"/users/{removed['id']}").status_code == 404
        # A round that started before the change finishes on its snapshot, minus deleted objects.
        rest = client.get(first_page["@odata.nextLink"]).json()
        assert removed["id"] not in ids_of(rest["value"]) and len(rest["value"]) == 49
        assert len(client.items("/users", params={"$top": 999})) == 199

        emu.directory = generate_directory(users=100, groups=20, seed=6)
        assert ids_of(client.items("/users")) == {u["id"] for u in emu.directory.users}


def test_emulator_idle_timeout(directory, tmp_path):
    emu = Emulator(directory, tenant_id=DEMO_TENANT_ID, client_id=DEMO_CLIENT_ID, client_secret=SECRET,
                   cert_dir=tmp_path, idle_timeout=0.3).start()
    assert emu.running
    assert emu.wait(5), "stopped itself"
    assert not emu.running
    emu.stop()  # idempotent


# ---------------------------------------------------------------------------
# CLI


def _cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "entra_pipeline.emulator", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for(path: Path, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear")


def test_cli_serve_and_stop(tmp_path):
    env = dict(os.environ, **{CLIENT_SECRET_ENV: "cli-secret-Ab12"})
    state_dir = tmp_path / "state"
    proc = _cli("serve", "--users", "60", "--groups", "20", "--seed", "3", "--state-dir", str(state_dir),
                "--idle-timeout", "60", env=env)
    try:
        state = _wait_for(state_dir / "state.json")
        assert state["pid"] == proc.pid
        assert {"pid", "base_url", "authority", "ca_path", "tenant_id", "client_id", "users", "groups",
                "seed", "started_at"} <= set(state)
        assert state["tenant_id"] == DEMO_TENANT_ID and state["client_id"] == DEMO_CLIENT_ID
        assert (state["users"], state["groups"], state["seed"]) == (60, 20, 3)
        assert Path(state["ca_path"]).parent == state_dir.resolve()
        with https_session(state["ca_path"]) as s:
            token = s.post(f"{state['authority']}/oauth2/v2.0/token", data={
                "grant_type": "client_credentials", "client_id": state["client_id"],
                "client_secret": "cli-secret-Ab12", "scope": GRAPH_SCOPE[0]}).json()["access_token"]
            users = s.get(f"{state['base_url']}/v1.0/users", headers={"Authorization": f"Bearer {token}"})
            assert len(users.json()["value"]) == 60

        stopper = _cli("stop", "--state-dir", str(state_dir))
        out, err = stopper.communicate(timeout=20)
        assert stopper.returncode == 0, err
        stdout, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert not (state_dir / "state.json").exists()
    assert state["base_url"] in stdout and state["authority"] in stdout and state["ca_path"] in stdout
    assert CLIENT_SECRET_ENV in stdout
    assert "cli-secret-Ab12" not in stdout


def test_cli_idle_timeout_and_default_secret(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != CLIENT_SECRET_ENV}
    state_dir = tmp_path / "idle"
    proc = _cli("serve", "--users", "40", "--groups", "18", "--state-dir", str(state_dir),
                "--idle-timeout", "1", env=env)
    try:
        _wait_for(state_dir / "state.json")
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert not (state_dir / "state.json").exists()
    assert DEMO_CLIENT_SECRET in stdout and "default" in stdout


def test_cli_rejects_secret_argument():
    proc = _cli("serve", "--client-secret", "nope")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "unrecognized arguments" in err
