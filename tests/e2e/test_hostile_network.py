"""A hostile network, over real HTTPS: redirects to another host (plain http and https) from the
token endpoint, from Graph and from Workday, a discovery document naming a foreign token
endpoint, nextLink loops, answers without end, JSON nested 200,000 deep and a negative
Retry-After. Each ends in one line naming the request and the refused host; a server of ours on
another port records every request it gets and must get none (no client secret, no token, no
request at all); the warehouse stays exactly as it was."""

from __future__ import annotations

import itertools
import ssl
import threading
import time

import certifi
import pytest
import requests
import trustme

from entra_pipeline.emulator.population import generate_directory
from entra_pipeline.sources.graph import pages as graph_pages
from entra_pipeline.sources.graph.auth import AuthError, ClientSecret
from entra_pipeline.sources.graph.client import GraphClient, GraphError, GraphSettings
from entra_pipeline.net import trust_context
from entra_pipeline.measure.hostile_scenarios import Foreign
from entra_pipeline.sources.workday.client import BasicAuth, RefreshTokenAuth, WorkdayClient, WorkdayError, WorkdaySettings

from tests.support.expected import expected_contacts
from tests.support.integrations import integration
from tests.support.runs import failure_messages, step_metadata
from tests.support.tenant import (
    CLIENT_ID, SECRET, TENANT_ID, WORKDAY_CLIENT_SECRET, WORKDAY_PASSWORD, WORKDAY_REFRESH_TOKEN, running_emulator)


USERS, GROUPS, BATCH = "/v1.0/users/delta", "/v1.0/groups/delta", "/v1.0/$batch"
TOKEN_PATH = f"/{TENANT_ID}/oauth2/v2.0/token"
DISCOVERY_PATH = f"/{TENANT_ID}/v2.0/.well-known/openid-configuration"
REPORT = "/ccx/service/customreport2/"
#: What a sync stores of the directory (run ids and times left out when compared).
CONTENT_TABLES = ("raw_graph_users", "raw_graph_groups", "raw_graph_group_members", "mapped_contacts", "contacts",
                  "excluded_contacts", "distribution_lists", "distribution_list_members", "import_errors")


# -- a small tenant of this module's own, and a foreign server that records everything -----------

@pytest.fixture(scope="module")
def directory():
    return generate_directory(users=300, groups=20, seed=13)


@pytest.fixture(scope="module")
def emulator(directory, tmp_path_factory):
    with running_emulator(directory, tmp_path_factory.mktemp("certs")) as server:
        yield server


@pytest.fixture(scope="module")
def foreign_ca():
    return trustme.CA(organization_name="another host")


@pytest.fixture(scope="module", params=["http", "https"])
def foreign(request, foreign_ca):
    """Another host that records every request (the one `make reliability` uses too)."""
    server = Foreign(foreign_ca if request.param == "https" else None)
    yield server
    server.close()


@pytest.fixture
def received(foreign):
    """What the foreign server received during one test."""
    foreign.reset()
    return foreign.requests


@pytest.fixture(scope="module")
def bundle(emulator, foreign_ca, tmp_path_factory):
    """The emulator's CA and the foreign host's: TLS alone would let a request to it through."""
    path = tmp_path_factory.mktemp("bundle") / "ca-bundle.pem"
    path.write_bytes(open(emulator.ca_path, "rb").read() + foreign_ca.cert_pem.bytes())
    return str(path)


def _line(message: str) -> str:
    return message.split(" | ")[0].removeprefix("dagster._core.definitions.events.Failure: ").strip()


def _failures(result) -> dict[str, str]:
    """'users' / 'groups' -> the one line its raw step failed with."""
    lines = {}
    for message in failure_messages(result):
        line = _line(message)
        assert "\n" not in line and "Traceback" not in line and "Recursion" not in line, line
        what = "users" if "reading users failed" in line else "groups" if "reading groups failed" in line else line
        lines[what] = line
    return lines


@pytest.fixture
def synced(make_sync, emulator, bundle):
    """One good sync (max_retries 1: a broken answer that persists fails quickly) to compare with."""
    def make(**source):
        sync = make_sync(integration("acme", emulator, source={"ca_bundle": bundle, "max_retries": 1, **source}))
        result = sync.run("acme")
        assert result.success, failure_messages(result)
        return sync
    return make


def _graph_client(emulator, bundle, **overrides) -> GraphClient:
    settings = dict(graph_url=emulator.base_url, authority_host=emulator.base_url, tenant_id=TENANT_ID,
                    client_id=CLIENT_ID, credential=ClientSecret(SECRET), ca_bundle=bundle, max_retries=1,
                    backoff_factor=0.01)
    settings.update(overrides)
    return GraphClient(GraphSettings(**settings))


def _requests_to(emulator, path: str, since: int) -> int:
    return sum(1 for _, target, _ in emulator.request_log[since:] if target.split("?")[0] == path)


# -- the identity platform -----------------------------------------------------------------------------

def test_a_token_endpoint_redirect_sends_the_secret_nowhere(synced, emulator, foreign, received):
    sync = synced()
    before = sync.snapshot()
    emulator.faults.redirect(TOKEN_PATH, f"{foreign.origin}{TOKEN_PATH}", status=307, times=None, method="POST")
    result = sync.run("acme")
    assert not result.success
    assert received == []  # no client_secret, no request at all
    expected = (f"POST {emulator.base_url}{TOKEN_PATH} redirected to {foreign.origin}: refused (HTTP 307; requests "
                "to the identity platform (authority_host) never follow redirects)")
    assert _failures(result) == {what: f"integration 'acme': reading {what} failed: {expected}"
                                 for what in ("users", "groups")}
    assert sync.snapshot() == before


def test_a_discovery_document_naming_a_foreign_token_endpoint_is_refused(synced, emulator, foreign, received):
    sync = synced()
    before = sync.snapshot()
    elsewhere = {"token_endpoint": f"{foreign.origin}/{TENANT_ID}/oauth2/v2.0/token",
                 "device_authorization_endpoint": f"{foreign.origin}/{TENANT_ID}/oauth2/v2.0/devicecode"}
    emulator.faults.rewrite(DISCOVERY_PATH, lambda body: {**body, **elsewhere}, times=None, identity=True)
    result = sync.run("acme")
    assert not result.success
    assert received == []
    expected = (f"authority {emulator.authority}: its openid-configuration names token_endpoint on {foreign.origin}, "
                f"not on {emulator.base_url}: refused (credentials are sent only to the configured authority_host)")
    assert _failures(result) == {what: f"integration 'acme': reading {what} failed: {expected}"
                                 for what in ("users", "groups")}
    assert sync.snapshot() == before


def test_msal_session_refuses_another_origin_before_sending(emulator, bundle, foreign, received):
    with _graph_client(emulator, bundle) as client:
        with pytest.raises(AuthError) as info:
            client.identity_session.post(f"{foreign.origin}{TOKEN_PATH}", data={"client_secret": SECRET})
        with pytest.raises(GraphError) as graph_info:
            client.get_json(f"{foreign.origin}/v1.0/users")
    assert received == []
    assert str(info.value) == (f"POST {foreign.origin}{TOKEN_PATH}: refused, not sent: {foreign.origin} is not the "
                               f"identity platform (authority_host) at {emulator.base_url}")
    assert str(graph_info.value) == (f"GET /v1.0/users: refused, not sent: {foreign.origin} is not Graph (graph_url) "
                                     f"at {emulator.base_url}")
    assert SECRET not in str(info.value)


# -- Graph ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("read, path, method, status, failing", [
    ("delta", USERS, "GET", 302, "users"),
    ("delta", GROUPS, "GET", 307, "groups"),
    ("list", BATCH, "POST", 307, "groups"),
])
def test_a_graph_redirect_to_another_host_is_refused_and_nothing_is_written(synced, emulator, foreign, received,
                                                                           read, path, method, status, failing):
    sync = synced(read=read)
    before, content_before = sync.snapshot(), sync.snapshot(content_only=True)
    emulator.faults.redirect(path, f"{foreign.origin}{path}?$deltatoken=foreign", status=status, times=None,
                             method=method)
    result = sync.run("acme")
    assert not result.success
    assert received == []
    what = "GET " + path if method == "GET" else "POST /v1.0/$batch"
    assert _failures(result) == {failing: f"integration 'acme': reading {failing} failed: {what} redirected to "
                                          f"{foreign.origin}: refused (HTTP {status}; requests to Graph (graph_url) "
                                          f"never follow redirects)"}
    # The other reader re-stored the same directory; the failing one wrote nothing, its delta state included.
    after = sync.snapshot()
    for table in (["raw_graph_users"] if failing == "users" else ["raw_graph_groups", "raw_graph_group_members"]):
        assert after[table] == before[table], table
    content_after = sync.snapshot(content_only=True)
    for table in CONTENT_TABLES:
        assert content_after[table] == content_before[table], table
    assert [r for r in after["delta_state"] if f"'{failing}'" in r] == \
           [r for r in before["delta_state"] if f"'{failing}'" in r]
    assert not any("injected@evil.example" in row for rows in after.values() for row in rows)


# -- paging that never ends ----------------------------------------------------------------------------

def _pages(links):
    """A rewrite answering each page with no items and the next of ``links`` as its nextLink."""
    following = itertools.cycle(links)
    return lambda body: {"value": [], "@odata.nextLink": next(following)}


@pytest.mark.parametrize("cycle, repeats", [(1, "page 3 repeats page 2"), (3, "page 5 repeats page 2")])
def test_a_nextlink_loop_ends_with_one_line(synced, emulator, cycle, repeats):
    sync = synced()
    before = sync.snapshot()
    links = [f"{emulator.graph_url}/users/delta?$skiptoken=loop{n}" for n in range(cycle)]
    # Bounded, so that a client without the check ends (on the emulator's 400 for the made-up token).
    emulator.faults.rewrite(USERS, _pages(links), times=30, status=200)
    since = len(emulator.request_log)
    result = sync.run("acme")
    assert not result.success
    assert _failures(result) == {"users": f"integration 'acme': reading users failed: nextLink loop: {repeats} of "
                                          f"GET {USERS}; the read was ended"}
    assert _requests_to(emulator, USERS, since) == cycle + 1
    sync.unchanged_except(before, sync.snapshot(), {"raw_graph_groups", "raw_graph_group_members"})


def test_a_collection_far_beyond_its_count_ends(emulator, bundle):
    counter = itertools.count()

    def endless(body):
        n = next(counter)
        return {"@odata.count": 5, "value": [{"id": f"u{n}"}],
                "@odata.nextLink": f"{emulator.graph_url}/users?$skiptoken=new{n}"}

    emulator.faults.rewrite("/v1.0/users", endless, times=60, status=200)
    since = len(emulator.request_log)
    with _graph_client(emulator, bundle) as client, pytest.raises(GraphError) as info:
        client.list_collection("users", {"$select": "id"}, count=True)
    # 5 objects are one page; twice that plus COUNT_MARGIN_PAGES (10) is 12.
    assert str(info.value) == ("GET /v1.0/users: page 13 is far beyond the 5 objects Graph reported (@odata.count; "
                               "at most 12 pages expected); the read was ended")
    assert _requests_to(emulator, "/v1.0/users", since) == 12


def test_a_read_without_count_ends_at_the_page_cap(emulator, bundle, monkeypatch):
    monkeypatch.setattr(graph_pages, "MAX_PAGES_PER_READ", 7)
    minted = (f"{emulator.graph_url}/users/delta?$skiptoken=new{n}" for n in itertools.count())
    emulator.faults.rewrite(USERS, lambda body: {"value": [], "@odata.nextLink": next(minted)}, times=30, status=200)
    since = len(emulator.request_log)
    with _graph_client(emulator, bundle) as client, pytest.raises(GraphError) as info:
        client.delta_round("users", ["id"])
    assert str(info.value) == f"GET {USERS}: more than 7 pages; the read was ended"
    assert _requests_to(emulator, USERS, since) == 7


def test_a_loop_of_member_pages_in_batch_ends(emulator, bundle, directory):
    group = directory.groups[0]["id"]
    path = f"/v1.0/groups/{group}/members"
    loop = f"{emulator.graph_url}/groups/{group}/members?$skiptoken=loop"

    def looping(body):
        return {"responses": [{**answer, "status": 200, "body": {"value": [], "@odata.nextLink": loop}}
                              for answer in body["responses"]]}

    emulator.faults.rewrite(BATCH, looping, times=30, method="POST")
    with _graph_client(emulator, bundle) as client, pytest.raises(GraphError) as info:
        client.group_members([group])
    assert str(info.value) == (f"nextLink loop: page 3 repeats page 2 of GET {path} (in $batch); the read was ended")


# -- answers that are no JSON, and a Retry-After that is no advice --------------------------------------

DEEP = "[" * 200_000 + "]" * 200_000


def test_json_nested_200000_deep_is_not_json_naming_the_request(synced, emulator):
    sync = synced()
    before = sync.snapshot()
    emulator.faults.rewrite(USERS, lambda body: DEEP, times=None)
    result = sync.run("acme")
    assert not result.success
    line = _failures(result)["users"]
    assert line.startswith("integration 'acme': reading users failed: GET /v1.0/users/delta: response is not JSON "
                           "(HTTP 200, content-type 'application/json"), line
    sync.unchanged_except(before, sync.snapshot(), {"raw_graph_groups", "raw_graph_group_members"})


def test_a_token_answer_nested_too_deep_is_not_json(emulator, bundle):
    emulator.faults.rewrite(TOKEN_PATH, lambda body: DEEP, times=None, method="POST", identity=True)
    with _graph_client(emulator, bundle) as client, pytest.raises(AuthError) as info:
        client.get_json(f"{emulator.graph_url}/users")
    assert str(info.value) == (f"token endpoint of {emulator.authority} answered with something that is not JSON "
                               "(a proxy's page, or an answer cut short)")


LONG_ERROR = "invalid_client\nsecond line" + "y" * 5000


def test_a_token_error_spanning_lines_and_5000_characters_is_one_short_line(emulator, bundle):
    emulator.faults.rewrite(TOKEN_PATH, lambda body: {
        "error": LONG_ERROR,
        "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1\r\nCorrelation ID: 2",
    }, times=None, method="POST", status=401, identity=True)
    with _graph_client(emulator, bundle) as client, pytest.raises(AuthError) as info:
        client.get_json(f"{emulator.graph_url}/users")
    # The error code cut to 100 characters on one line; the description's first line only.
    code = ("invalid_client second line" + "y" * 100)[:99] + "…"
    assert str(info.value) == (f"token request to {emulator.authority} refused: {code}: AADSTS7000215: Invalid "
                               "client secret provided.")


def test_a_workday_token_error_spanning_lines_is_one_short_line(workday, workday_bundle):
    workday.faults.rewrite("/ccx/oauth2/", lambda body: {"error": LONG_ERROR, "error_description": "no\nmore"},
                           times=None, method="POST", status=400)
    client = _workday_client(workday, workday_bundle, RefreshTokenAuth("ZGVtby13b3JrZGF5LWFwaS1jbGllbnQ",
                                                                       WORKDAY_CLIENT_SECRET, WORKDAY_REFRESH_TOKEN))
    with client, pytest.raises(WorkdayError) as info:
        list(client.entries())
    code = ("invalid_client second line" + "y" * 100)[:99] + "…"
    assert str(info.value) == f"token request to {workday.base_url}/ccx/oauth2/contoso_demo/token refused: {code}: no"


def test_a_negative_retry_after_is_retried_after_a_short_backoff(make_sync, emulator, directory, bundle):
    sync = make_sync(integration("acme", emulator, source={"ca_bundle": bundle}))
    fault = emulator.faults.add(503, path=USERS, times=1, retry_after=-5)
    result = sync.run("acme")
    assert result.success, failure_messages(result)
    assert fault.hits == 1
    assert step_metadata(result, "raw_graph_users")["graph_retries"] == 1
    assert dict(sync.query("SELECT source_id, contact_id FROM contacts")) == expected_contacts(directory)


def test_an_unusable_retry_after_in_batch_is_a_short_backoff(emulator, bundle, monkeypatch):
    group = emulator.directory.groups[0]["id"]
    # The pauses this thread asks for (still taken): what the client made of the Retry-After.
    asked: list[float] = []
    real_sleep, caller = time.sleep, threading.get_ident()

    def sleep(seconds: float) -> None:
        if threading.get_ident() == caller:
            asked.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    for value in ("inf", "-5", "soon", "nan"):
        emulator.faults.add(429, path=f"/v1.0/groups/{group}/members", times=1,
                            body={"error": {"code": "TooManyRequests", "message": "slow down"}})
        # The sub-response's Retry-After, as an odd server sends it.
        emulator.faults.rewrite(BATCH, lambda body: {**body, "responses": [
            {**r, "headers": {**r.get("headers", {}), "Retry-After": value}} for r in body["responses"]]},
            method="POST")
        asked.clear()
        since = len(emulator.request_log)
        with _graph_client(emulator, bundle) as client:  # max_retry_after_seconds: 120
            [answer] = client.batch_get([f"/groups/{group}/members?$select=id"])
        assert (answer["status"], client.stats.retries, client.stats.throttled) == (200, 1, 1), value
        # The throttled batch and one retry, nothing more; between them the exponential backoff
        # (backoff_factor 0.01: 0.01 s plus up to 0.01 s of jitter), not the 120 s cap.
        assert _requests_to(emulator, BATCH, since) == 2, value
        assert client.stats.requests == 2, value
        assert len(asked) == 1 and 0.01 <= asked[0] <= 0.02, (value, asked)


# -- Workday -------------------------------------------------------------------------------------------

def _workday_client(server, bundle, auth) -> WorkdayClient:
    return WorkdayClient(WorkdaySettings(host=server.base_url, tenant="contoso_demo", owner="lmcneil",
                                         report="Contacts_Sync", auth=auth, ca_bundle=bundle, max_retries=1,
                                         backoff_factor=0.01))


@pytest.fixture
def workday_bundle(workday, foreign_ca, tmp_path):
    path = tmp_path / "workday-bundle.pem"
    path.write_bytes(open(workday.ca_path, "rb").read() + foreign_ca.cert_pem.bytes())
    yield str(path)
    workday.faults.clear()


def test_a_workday_report_redirect_sends_no_password_elsewhere(workday, workday_bundle, foreign, received):
    workday.faults.redirect(REPORT, f"{foreign.origin}{REPORT}x", status=302, times=None)
    client = _workday_client(workday, workday_bundle, BasicAuth("ISU_Contacts", WORKDAY_PASSWORD))
    with client, pytest.raises(WorkdayError) as info:
        list(client.entries())
    assert received == []
    assert str(info.value) == (f"GET {workday.base_url}{REPORT}contoso_demo/lmcneil/Contacts_Sync redirected to "
                               f"{foreign.origin}: refused (HTTP 302; requests to Workday (source.host) never follow "
                               "redirects)")
    assert not info.value.transient


def test_a_workday_token_redirect_sends_no_refresh_token_elsewhere(workday, workday_bundle, foreign, received):
    workday.faults.redirect("/ccx/oauth2/", f"{foreign.origin}/ccx/oauth2/contoso_demo/token", status=307, times=None)
    client = _workday_client(workday, workday_bundle, RefreshTokenAuth("ZGVtby13b3JrZGF5LWFwaS1jbGllbnQ",
                                                                       WORKDAY_CLIENT_SECRET, WORKDAY_REFRESH_TOKEN))
    with client, pytest.raises(WorkdayError) as info:
        list(client.entries())
    assert received == []
    assert str(info.value).startswith(f"POST {workday.base_url}/ccx/oauth2/contoso_demo/token redirected to "
                                      f"{foreign.origin}: refused (HTTP 307;")
    for secret in (WORKDAY_CLIENT_SECRET, WORKDAY_REFRESH_TOKEN):
        assert secret not in str(info.value)


def test_a_workday_report_nested_too_deep_is_not_json(workday, workday_bundle):
    workday.faults.rewrite(REPORT, lambda body: '{"Report_Entry": [' + DEEP + "]}", times=None)
    client = _workday_client(workday, workday_bundle, BasicAuth("ISU_Contacts", WORKDAY_PASSWORD))
    with client, pytest.raises(WorkdayError) as info:
        list(client.entries())
    assert str(info.value).startswith(f"{workday.base_url}{REPORT}contoso_demo/lmcneil/Contacts_Sync: response is "
                                      "not JSON a report sends: nested more than 32 levels deep")


# -- trust: certifi's roots plus the bundle, always verified ---------------------------------------------

def test_ca_bundle_adds_to_the_public_roots(emulator, workday):
    public = set(ssl.create_default_context(cafile=certifi.where()).get_ca_certs(binary_form=True))
    ours = set(ssl.create_default_context(cafile=emulator.ca_path).get_ca_certs(binary_form=True))
    assert len(public) > 50 and len(ours) == 1
    assert set(trust_context(emulator.ca_path).get_ca_certs(binary_form=True)) == public | ours
    # What every session of the clients trusts: Graph's, MSAL's and Workday's.
    with _graph_client(emulator, emulator.ca_path) as client, \
            _workday_client(workday, emulator.ca_path, BasicAuth("ISU_Contacts", WORKDAY_PASSWORD)) as report:
        for session in (client.session, client.identity_session, report.session):
            context = session.get_adapter("https://example.com/").ssl_context
            assert set(context.get_ca_certs(binary_form=True)) == public | ours
            assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
            assert session.trust_env is False


def test_tls_is_verified_whatever_a_request_asks(emulator, bundle):
    # Without the emulator's CA its certificate is refused, even for a request asking verify=False.
    with _graph_client(emulator, None) as client:
        with pytest.raises(requests.exceptions.SSLError):
            client.session.get(f"{emulator.graph_url}/users", verify=False)
        with pytest.raises(AuthError, match=r"^authority .* unreachable: SSLError"):
            client.get_json(f"{emulator.graph_url}/users")
    # With it, the same client works (certifi's roots are still trusted besides it).
    with _graph_client(emulator, emulator.ca_path) as client:
        assert client.get_json(f"{emulator.graph_url}/users", {"$top": "1", "$select": "id"})["value"]


def test_a_ca_bundle_that_is_no_certificate_is_named(emulator, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(GraphError) as info:
        _graph_client(emulator, str(junk))
    assert str(info.value).startswith(f"ca_bundle {junk}: not a readable PEM certificate bundle")
