"""Broken answers from Graph (or from a proxy in front of it), over real HTTPS: each fails the
step with one line naming the request and what was wrong with the answer, and the warehouse stays
exactly as the last good sync left it. Answers that are well-formed but carry odd values for one
person are import errors naming that person, not failures."""

from __future__ import annotations

import json

import pytest

from entra_pipeline.emulator.faults import FaultProfile

from tests.support.integrations import integration
from tests.support.runs import failure_messages


USERS, GROUPS = "/v1.0/users/delta", "/v1.0/groups/delta"
HTML = "<html><head><title>Proxy sign-in</title></head><body>Please sign in to continue</body></html>"
CONTACT_TABLES = ("raw_graph_users", "raw_graph_groups", "raw_graph_group_members", "mapped_contacts", "contacts",
                  "excluded_contacts", "distribution_lists", "distribution_list_members", "delta_state")


def _first_item(change):
    def transform(body):
        body = dict(body)
        body["value"] = [change(dict(body["value"][0]) if body["value"] else {"id": "x"})] + body["value"][1:]
        return body
    return transform


def _with_value(value):
    return lambda body: {**body, "value": value}


def _member_link(link):
    def transform(body):
        body = dict(body)
        body["value"] = [{"id": "11111111-0000-4000-8000-000000000001", "members@delta": [link]}]
        return body
    return transform


def _link(name, url):
    def transform(body):
        body = {k: v for k, v in body.items() if not k.endswith("Link")}
        body[name] = url
        return body
    return transform


# (path, transform, rewrite options, what the one-line error says)
BROKEN = {
    "item without id": (USERS, _with_value([{"displayName": "No Id"}]), {},
                        "reading users failed: GET /v1.0/users/delta: delta page 1 has an item without a string "
                        "'id': {\"displayName\": \"No Id\"}"),
    "numeric id": (USERS, _with_value([{"id": 42}]), {},
                   "delta page 1 has an item without a string 'id': {\"id\": 42}"),
    "null id": (USERS, _with_value([{"id": None, "mail": "x@contoso.com"}]), {},
                "delta page 1 has an item without a string 'id': {\"id\": null, \"mail\": \"x@contoso.com\"}"),
    "empty id": (USERS, _with_value([{"id": ""}]), {}, "delta page 1 has an item without a string 'id': {\"id\": \"\"}"),
    "item is a string": (USERS, _with_value(["alice@contoso.com"]), {},
                         "delta page 1 has an item without a string 'id': \"alice@contoso.com\""),
    "value is null": (USERS, _with_value(None), {},
                      "reading users failed: GET /v1.0/users/delta: response has no 'value' list (delta page 1)"),
    "value is an object": (USERS, _with_value({"id": "x"}), {}, "response has no 'value' list (delta page 1)"),
    "value missing": (USERS, lambda body: {k: v for k, v in body.items() if k != "value"}, {},
                      "response has no 'value' list (delta page 1)"),
    "answer is a list": (USERS, lambda body: [body], {"times": None},
                         "reading users failed: GET /v1.0/users/delta: expected a JSON object, got list"),
    "proxy sign-in page": (USERS, lambda body: HTML, {"content_type": "text/html; charset=utf-8", "times": None},
                           "reading users failed: GET /v1.0/users/delta: response is not JSON (HTTP 200, "
                           "content-type 'text/html; charset=utf-8', request-id "),
    "proxy error page": (USERS, lambda body: HTML, {"status": 502, "content_type": "text/html", "times": None},
                         "reading users failed: GET /v1.0/users/delta: HTTP 502 Bad Gateway after 1 retries: "
                         "<html><head><title>Proxy sign-in</title></head><body>Please sign in to continue</body></html>"),
    "JSON cut short": (USERS, lambda body: json.dumps(body)[:40], {"times": None},
                       "reading users failed: GET /v1.0/users/delta: response is not JSON (HTTP 200"),
    "empty body": (USERS, lambda body: b"", {"times": None},
                   "reading users failed: GET /v1.0/users/delta: response is not JSON (HTTP 200"),
    "nextLink to another host": (USERS, _link("@odata.nextLink", "https://evil.example/v1.0/users/delta?$skiptoken=x"),
                                 {}, "reading users failed: GET /v1.0/users/delta: nextLink points outside https://"),
    "deltaLink to another host": (USERS, _link("@odata.deltaLink", "https://evil.example/v1.0/users/delta?$deltatoken=x"),
                                  {}, "reading users failed: GET /v1.0/users/delta: nextLink points outside https://"),
    "manager link without id": (USERS, _with_value([{"id": "u1", "manager@delta": [{"@odata.type": "#microsoft.graph.user"}]}]),
                                {}, "delta page 1: manager@delta of 'u1' is not a list of objects with an id and an "
                                    "@odata.type"),
    "member without type": (GROUPS, _member_link({"id": "m1"}), {},
                            "reading groups failed: GET /v1.0/groups/delta: delta page 1: members@delta of "
                            "'11111111-0000-4000-8000-000000000001' is not a list of objects with an id and an "
                            "@odata.type: [{\"id\": \"m1\"}]"),
    "member type without namespace": (GROUPS, _member_link({"id": "m1", "@odata.type": "user"}), {},
                                      "reading groups failed: member 'm1' has no usable @odata.type: 'user'"),
    "members not a list": (GROUPS, lambda body: {**body, "value": [{"id": "g1", "members@delta": {"id": "m1"}}]}, {},
                           "delta page 1: members@delta of 'g1' is not a list of objects with an id and an "
                           "@odata.type: {\"id\": \"m1\"}"),
    "group item without id": (GROUPS, _with_value([{"displayName": "Nameless", "members@delta": []}]), {},
                              "reading groups failed: GET /v1.0/groups/delta: delta page 1 has an item without a "
                              "string 'id'"),
}


@pytest.fixture
def first_sync(make_sync, emulator):
    # One client retry: a broken answer that persists fails quickly.
    sync = make_sync(integration("acme", emulator, source={"max_retries": 1}))
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    return sync


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_answer_is_one_clear_error_and_changes_nothing(first_sync, emulator, case):
    path, transform, options, expected = BROKEN[case]
    before = first_sync.snapshot()
    emulator.faults.rewrite(path, transform, **options)
    result = first_sync.run("acme")
    emulator.faults.clear()
    assert not result.success
    [message] = [m for m in failure_messages(result) if "reading" in m]
    line = message.split(" | ")[0].removeprefix("dagster._core.definitions.events.Failure: ").strip()
    assert "\n" not in line
    assert line.startswith("integration 'acme': reading ")
    assert expected in line, line
    # The other reader succeeded and re-stored the same directory; everything else is untouched.
    after = first_sync.snapshot()
    other = ("raw_graph_groups", "raw_graph_group_members") if path == USERS else ("raw_graph_users",)
    for table in CONTACT_TABLES:
        if table == "delta_state":
            resource = "'users'" if path == USERS else "'groups'"
            assert [r for r in after[table] if resource in r] == [r for r in before[table] if resource in r]
        elif table not in other:
            assert after[table] == before[table], table


def test_connections_closed_mid_answer_every_time_fail_with_one_line(first_sync, emulator):
    before = first_sync.snapshot()
    emulator.faults.profile = FaultProfile(seed=3, drop=1.0)
    result = first_sync.run("acme")
    emulator.faults.clear()
    assert not result.success
    messages = sorted(failure_messages(result))
    assert len(messages) == 2
    for message, what in zip(messages, ("groups", "users")):
        assert (f"integration 'acme': reading {what} failed: GET /v1.0/{what}/delta: the connection dropped in the "
                "middle of the answer 2 times: ChunkedEncodingError") in message
    after = first_sync.snapshot()
    for table in CONTACT_TABLES:
        assert after[table] == before[table], table


def test_odd_values_for_one_person_are_import_errors_naming_them(make_sync, emulator, directory):
    users = [u for u in directory.users if u["mail"] and u["accountEnabled"]][:2]
    numeric_mail, odd_flag = users[0]["id"], users[1]["id"]

    def odd(body):
        value = []
        for item in body["value"]:
            if item["id"] == numeric_mail:
                item = {**item, "mail": 42}
            elif item["id"] == odd_flag:
                item = {**item, "accountEnabled": "yes"}
            value.append(item)
        return {**body, "value": value}

    sync = make_sync(integration("acme", emulator))
    emulator.faults.rewrite(USERS, odd, times=None)
    result = sync.run("acme")
    emulator.faults.clear()
    assert result.success, failure_messages(result)
    errors = {(record, code) for record, code in sync.query(
        "SELECT record, code FROM import_errors WHERE record IN (?, ?)", [numeric_mail, odd_flag])}
    assert errors == {(numeric_mail, "invalid_unique_id"), (odd_flag, "invalid_value")}
    [(message,)] = sync.query("SELECT message FROM import_errors WHERE record = ?", [odd_flag])
    assert "account_enabled" in message and "'yes'" in message
