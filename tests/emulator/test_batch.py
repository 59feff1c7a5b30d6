"""Group memberships read through Graph JSON batching (``POST /v1.0/$batch``), over real HTTPS
against the emulator: exact member lists, the exact number of round trips, sub-request retries
(429 with Retry-After, 503 for good), 404 groups, retries of the batch request itself, and the
emulator's refusals of malformed batches."""

from __future__ import annotations

import math
import threading
import time
import uuid

import pytest

from entra_pipeline.sources.graph.auth import ClientSecret
from entra_pipeline.sources.graph.client import BATCH_LIMIT, GraphClient, GraphError, GraphSettings, member_type

from tests.support.tenant import CLIENT_ID, SECRET, TENANT_ID


BATCH = "/v1.0/$batch"


def make_client(emulator, **overrides) -> GraphClient:
    settings = dict(graph_url=emulator.base_url, authority_host=emulator.base_url,
                    tenant_id=TENANT_ID, client_id=CLIENT_ID, credential=ClientSecret(SECRET),
                    ca_bundle=str(emulator.ca_path), max_retries=3, backoff_factor=0.01, timeout_seconds=30)
    settings.update(overrides)
    return GraphClient(GraphSettings(**settings))


@pytest.fixture
def client(emulator):
    with make_client(emulator) as c:
        yield c


def group_ids(directory) -> list[str]:
    return [g["id"] for g in directory.groups]


def member_pages(directory, group_id: str, page_size: int = 999) -> int:
    return max(1, math.ceil(len(directory.members.get(group_id, ())) / page_size))


def expected_batches(directory, ids: list[str], page_size: int = 999) -> int:
    """Round k sends page k of every group that has one, 20 a batch: ceil(groups/20) batches of
    first pages, then for each k >= 2 ceil(#groups with at least k pages / 20) of nextLinks."""
    pages = [member_pages(directory, g, page_size) for g in ids]
    return sum(math.ceil(sum(1 for p in pages if p >= k) / BATCH_LIMIT) for k in range(1, max(pages) + 1))


def batch_posts_since(emulator, start: int) -> list[tuple[str, str, int]]:
    return [entry for entry in emulator.request_log[start:] if entry[1] == BATCH]


def assert_exact(directory, result: dict, ids: list[str], page_size: int = 999) -> None:
    assert set(result) == set(ids)
    for gid in ids:
        members = result[gid]
        expected = list(directory.members.get(gid, ()))
        assert members is not None, gid
        assert [(m["@odata.type"], m["id"]) for m in members.items] == expected, gid
        assert members.reported_count == len(expected), gid
        assert members.pages == member_pages(directory, gid, page_size), gid


def all_employees(directory) -> str:
    gid = max(directory.members, key=lambda g: len(directory.members[g]))
    assert len(directory.members[gid]) > 999
    return gid


# -- exact results and round trips ---------------------------------------------------------------

@pytest.mark.parametrize("parallel", [1, 4])
def test_every_group_exact_with_the_expected_number_of_batches(emulator, directory, parallel):
    ids = group_ids(directory)
    with make_client(emulator, parallel_requests=parallel) as client:
        client._token()  # MSAL's discovery and token requests, out of the way of the counts
        log_start, sub_start = len(emulator.request_log), emulator.batched_request_count
        result = client.group_members(ids)
        stats = client.stats

    assert_exact(directory, result, ids)
    assert len(directory.members[all_employees(directory)]) > 999  # one group spans pages
    batches = expected_batches(directory, ids)
    total_pages = sum(member_pages(directory, g) for g in ids)
    assert batches == math.ceil(len(ids) / 20) + sum(
        math.ceil(sum(1 for g in ids if member_pages(directory, g) >= k) / 20)
        for k in range(2, max(member_pages(directory, g) for g in ids) + 1))
    assert stats.requests == batches
    assert len(emulator.request_log) - log_start == batches  # nothing but $batch requests
    assert batch_posts_since(emulator, log_start) == [("POST", BATCH, 200)] * batches
    assert stats.batched_requests == stats.pages == total_pages
    assert emulator.batched_request_count - sub_start == total_pages
    assert (stats.retries, stats.throttled) == (0, 0)
    # The old approach made one request per page: batching needs at most a twentieth plus a batch per round.
    assert batches < total_pages / 10


def test_small_pages_take_several_nextlink_rounds(emulator, directory):
    ids = group_ids(directory)
    with make_client(emulator, page_size=100) as client:
        client._token()
        start = len(emulator.request_log)
        result = client.group_members(ids)
        assert client.stats.requests == expected_batches(directory, ids, 100)
    assert max(member_pages(directory, g, 100) for g in ids) > 10
    assert len(emulator.request_log) - start == expected_batches(directory, ids, 100)
    assert_exact(directory, result, ids, 100)


def test_members_carry_their_types(client, directory):
    gid = all_employees(directory)
    members = client.group_members([gid])[gid]
    assert {member_type(m) for m in members.items} == {t.removeprefix("#microsoft.graph.")
                                                        for t, _ in directory.members[gid]}


def test_progress_and_duplicate_ids(client, directory):
    ids = group_ids(directory)
    seen: list[tuple] = []
    result = client.group_members(ids + ids[:3], lambda *args: seen.append(args))
    assert seen and seen[-1] == ("group memberships", len(ids), len(ids))
    assert_exact(directory, result, ids)
    assert client.stats.batched_requests == sum(member_pages(directory, g) for g in ids)  # read once


def test_concurrent_callers_share_one_client(client, directory):
    ids = group_ids(directory)
    results: list[dict] = []
    errors: list[BaseException] = []

    def read():
        try:
            results.append(client.group_members(ids))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(results) == 3
    for result in results:
        assert_exact(directory, result, ids)
    assert client.stats.requests == 3 * expected_batches(directory, ids)
    assert client.stats.batched_requests == client.stats.pages == 3 * sum(member_pages(directory, g) for g in ids)


def test_batch_get_keeps_request_order_and_returns_errors(client, directory):
    ids = group_ids(directory)[:25]
    missing = str(uuid.uuid4())
    urls = [f"/groups/{g}/members?$select=id&$top=5" for g in ids] + [f"groups/{missing}/members",
                                                                        "/groups?$count=true"]
    answers = client.batch_get(urls)
    assert client.stats.requests == 2 and client.stats.batched_requests == 27
    assert len(answers) == len(urls)
    for gid, answer in zip(ids, answers):
        assert answer["status"] == 200
        assert [m["id"] for m in answer["body"]["value"]] == [oid for _, oid in directory.members[gid][:5]]
        assert isinstance(answer["headers"], dict)
    assert answers[25]["status"] == 404
    assert answers[25]["body"]["error"]["code"] == "Request_ResourceNotFound"
    # ConsistencyLevel is not inherited from anywhere: it belongs in the sub-request's headers.
    assert answers[26]["status"] == 400
    counted = client.batch_get(["/groups?$count=true&$top=1"], {"ConsistencyLevel": "eventual"})
    assert counted[0]["body"]["@odata.count"] == len(directory.groups)
    assert client.batch_get([]) == []


# -- sub-request failures -------------------------------------------------------------------------

def test_throttled_sub_request_is_retried_after_its_retry_after(client, emulator, directory):
    ids = group_ids(directory)
    throttled = ids[7]
    client._token()
    emulator.faults.add(429, path=f"/v1.0/groups/{throttled}/members", retry_after=1)
    start, sub_start = len(emulator.request_log), emulator.batched_request_count
    began = time.monotonic()
    result = client.group_members(ids)
    assert time.monotonic() - began >= 1.0
    assert_exact(directory, result, ids)
    # The one throttled sub-request went again, alone, in one more batch.
    assert client.stats.requests == expected_batches(directory, ids) + 1 == len(emulator.request_log) - start
    assert (client.stats.retries, client.stats.throttled) == (1, 1)
    pages = sum(member_pages(directory, g) for g in ids)
    assert client.stats.batched_requests == emulator.batched_request_count - sub_start == pages + 1
    assert client.stats.pages == pages
    throttled_log = [e for e in emulator.batched_request_log[sub_start:] if f"/groups/{throttled}/" in e[1]]
    assert [status for _, _, status in throttled_log] == [429, 200]


def test_largest_retry_after_is_honoured_and_failures_rebatched_together(client, emulator, directory):
    ids = group_ids(directory)
    client._token()
    emulator.faults.add(429, path=f"/v1.0/groups/{ids[0]}/members", retry_after=1)
    emulator.faults.add(503, path=f"/v1.0/groups/{ids[45]}/members", retry_after=2)
    emulator.faults.add(504, path=f"/v1.0/groups/{ids[-1]}/members")
    began = time.monotonic()
    result = client.group_members(ids)
    assert time.monotonic() - began >= 2.0
    assert_exact(directory, result, ids)
    assert client.stats.requests == expected_batches(directory, ids) + 1  # three retried in one batch
    assert (client.stats.retries, client.stats.throttled) == (3, 1)


def test_retry_after_is_capped(emulator, directory):
    ids = group_ids(directory)[:3]
    with make_client(emulator, max_retry_after_seconds=0.2) as client:
        emulator.faults.add(429, path=f"/v1.0/groups/{ids[1]}/members", retry_after=30)
        began = time.monotonic()
        assert_exact(directory, client.group_members(ids), ids)
        assert time.monotonic() - began < 5


def test_vanished_group_gives_none(client, emulator, directory):
    ids = group_ids(directory)
    vanished = ids[3]
    missing = str(uuid.uuid4())  # never existed: a real 404 from the routing, not a fault
    emulator.faults.add(404, path=f"/v1.0/groups/{vanished}/members")
    result = client.group_members(ids + [missing])
    assert result[vanished] is None and result[missing] is None
    kept = [g for g in ids if g != vanished]
    assert_exact(directory, {g: result[g] for g in kept}, kept)
    assert client.stats.retries == 0


def test_group_vanishing_between_pages_gives_none(client, emulator, directory):
    gid = all_employees(directory)
    # The first page is served normally, the next is a 404: the fault is armed after page one.
    original = client._member_page

    def member_page(group_id, url, answer, *args):
        next_url = original(group_id, url, answer, *args)
        if group_id == gid and next_url is not None:
            emulator.faults.add(404, path=f"/v1.0/groups/{gid}/members")
        return next_url

    client._member_page = member_page
    result = client.group_members([gid, group_ids(directory)[0]])
    assert result[gid] is None
    assert result[group_ids(directory)[0]] is not None


def test_persistent_503_is_one_error_naming_path_and_request_id(emulator, directory):
    ids = group_ids(directory)
    failing = ids[11]
    with make_client(emulator, max_retries=2) as client:
        client._token()
        emulator.faults.add(503, path=f"/v1.0/groups/{failing}/members", times=None)
        sub_start = emulator.batched_request_count
        with pytest.raises(GraphError) as caught:
            client.group_members(ids)
    error = caught.value
    message = str(error)
    assert f"/v1.0/groups/{failing}/members" in message
    assert "HTTP 503 ServiceUnavailable after 2 retries" in message
    assert (error.status, error.code) == (503, "ServiceUnavailable")
    uuid.UUID(error.request_id)
    assert f"(request-id {error.request_id})" in message
    assert "$skiptoken" not in message and SECRET not in message
    attempts = [e for e in emulator.batched_request_log[sub_start:] if f"/groups/{failing}/" in e[1]]
    assert [status for _, _, status in attempts] == [503, 503, 503]  # first try and two retries


def test_other_sub_request_error_is_raised_at_once(client, emulator, directory):
    ids = group_ids(directory)
    emulator.faults.add(403, path=f"/v1.0/groups/{ids[2]}/members")
    with pytest.raises(GraphError) as caught:
        client.group_members(ids)
    assert caught.value.status == 403
    assert caught.value.code == "Authorization_RequestDenied"
    assert f"GET /v1.0/groups/{ids[2]}/members (in $batch): HTTP 403 Authorization_RequestDenied:" in str(caught.value)
    assert client.stats.retries == 0


def test_batch_request_503_is_retried_by_urllib3(client, emulator, directory):
    ids = group_ids(directory)
    client._token()
    emulator.faults.add(503, path=BATCH, method="POST", retry_after=0)
    start = len(emulator.request_log)
    result = client.group_members(ids)
    assert_exact(directory, result, ids)
    assert batch_posts_since(emulator, start)[0] == ("POST", BATCH, 503)
    assert client.stats.requests == expected_batches(directory, ids) + 1 == len(emulator.request_log) - start
    assert client.stats.retries == 1
    assert client.stats.batched_requests == sum(member_pages(directory, g) for g in ids)


def test_batch_request_failing_for_good_names_the_batch(emulator, directory):
    with make_client(emulator, max_retries=1) as client:
        emulator.faults.add(500, path=BATCH, times=None)
        with pytest.raises(GraphError) as caught:
            client.group_members(group_ids(directory))
    assert str(caught.value).startswith("POST /v1.0/$batch: HTTP 500 UnknownError after 1 retries")
    assert caught.value.request_id


def test_expired_token_on_the_batch_is_renewed_once(client, emulator, directory):
    ids = group_ids(directory)[:5]
    client.group_members(ids)
    emulator.expire_tokens()
    assert_exact(directory, client.group_members(ids), ids)
    assert client.stats.token_requests == 2


# -- answers the client must refuse ---------------------------------------------------------------

def fake_batches(client, monkeypatch, body_for):
    def post_batch(urls, headers):
        return [{"id": str(n), "status": 200, "headers": {"request-id": "rid-1"}, "body": body_for(url)}
                for n, url in enumerate(urls, 1)]
    monkeypatch.setattr(client, "_post_batch", post_batch)


def test_next_link_to_another_origin_is_refused(client, monkeypatch):
    fake_batches(client, monkeypatch, lambda url: {"value": [], "@odata.nextLink":
                                                   "https://evil.example/v1.0/groups/g/members?$skiptoken=x"})
    with pytest.raises(GraphError, match="nextLink points outside"):
        client.group_members(["g"])
    fake_batches(client, monkeypatch, lambda url: {"value": [], "@odata.nextLink":
                                                   f"{client.settings.graph_url}/beta/groups/g/members"})
    with pytest.raises(GraphError, match="nextLink points outside"):
        client.group_members(["g"])


@pytest.mark.parametrize("item, fragment", [
    ({"@odata.type": "#microsoft.graph.user"}, "without a string 'id'"),
    ({"id": 5, "@odata.type": "#microsoft.graph.user"}, "without a string 'id'"),
    ({"id": "u1"}, "without a usable @odata.type"),
    ({"id": "u1", "@odata.type": "user"}, "without a usable @odata.type"),
])
def test_member_items_are_validated(client, monkeypatch, item, fragment):
    fake_batches(client, monkeypatch, lambda url: {"value": [item]})
    with pytest.raises(GraphError, match=fragment) as caught:
        client.group_members(["g"])
    assert "GET /v1.0/groups/g/members (in $batch): page 1" in str(caught.value)


def test_page_without_value_is_refused(client, monkeypatch):
    fake_batches(client, monkeypatch, lambda url: {"items": []})
    with pytest.raises(GraphError, match=r"no 'value' list \(page 1, request-id rid-1\)"):
        client.group_members(["g"])


# -- the emulator's $batch endpoint ----------------------------------------------------------------

@pytest.fixture
def auth(client):
    return {"Authorization": f"Bearer {client._token()}"}


def sub(n, url: str = "/groups?$top=1") -> dict:
    return {"id": str(n), "method": "GET", "url": url}


def test_emulator_refuses_more_than_20_requests(emulator, session, auth):
    response = session.post(f"{emulator.graph_url}/$batch", json={"requests": [sub(n) for n in range(21)]},
                            headers=auth)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"
    assert "limit of 20" in response.json()["error"]["message"]
    ok = session.post(f"{emulator.graph_url}/$batch", json={"requests": [sub(n) for n in range(20)]}, headers=auth)
    assert ok.status_code == 200 and len(ok.json()["responses"]) == 20


def test_emulator_refuses_duplicate_ids(emulator, session, auth):
    before = emulator.batched_request_count
    response = session.post(f"{emulator.graph_url}/$batch", json={"requests": [sub(1), sub(2), sub(1)]},
                            headers=auth)
    assert response.status_code == 400
    assert "duplicate request id '1'" in response.json()["error"]["message"]
    assert emulator.batched_request_count == before  # nothing of a refused batch is served


def test_emulator_requires_a_token_on_the_batch(emulator, session, auth):
    response = session.post(f"{emulator.graph_url}/$batch", json={"requests": [sub(1)]})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    # A token inside a sub-request's headers does not count: only the batch's is inherited.
    inner = session.post(f"{emulator.graph_url}/$batch",
                         json={"requests": [{**sub(1), "headers": auth}]})
    assert inner.status_code == 401
