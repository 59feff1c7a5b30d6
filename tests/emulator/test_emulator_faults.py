"""Tests of the emulator's random fault profile and token lifetime control.

Everything goes over real HTTPS with ``requests`` and the emulator's own CA
(``trust_env = False``: the environment's CA bundle must not make a test pass).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter

import msal
import pytest
import requests
import urllib3

from entra_pipeline.emulator import (
    DEMO_CLIENT_ID,
    DEMO_TENANT_ID,
    Emulator,
    FaultProfile,
    generate_directory,
)
from entra_pipeline.emulator.faults import PROFILE_KINDS

from tests.support.tenant import GRAPH_DEFAULT_SCOPE, bearer, https_session, running_emulator, token_response


SECRET = "fault-test-secret-4Kp"
CHEAP = "/users?$top=1&$select=id"
EXPIRED = "Lifetime validation failed, the token is expired."


def _new_emulator(directory, tmp_path, **kwargs):
    return running_emulator(directory, tmp_path, tenant_id=DEMO_TENANT_ID, client_id=DEMO_CLIENT_ID,
                            client_secret=SECRET, **kwargs)


@pytest.fixture(scope="module")
def directory():
    return generate_directory(users=300, groups=20, seed=3)


@pytest.fixture(scope="module")
def emulator(directory, tmp_path_factory):
    with running_emulator(directory, tmp_path_factory.mktemp("fault-certs"), tenant_id=DEMO_TENANT_ID,
                          client_id=DEMO_CLIENT_ID, client_secret=SECRET) as emu:
        yield emu


@pytest.fixture(scope="module")
def auth(emulator, session):
    return bearer(session, emulator, SECRET)


def observe(session: requests.Session, method: str, url: str, **kwargs) -> tuple:
    """What the client sees of one request, as a comparable tuple (kind first)."""
    try:
        response = session.request(method, url, **kwargs)
    except requests.exceptions.ChunkedEncodingError as exc:
        assert "IncompleteRead" in str(exc)
        return ("drop",)
    try:
        body = response.json()
    except ValueError:
        assert int(response.headers["Content-Length"]) == len(response.content)
        return ("malformed", response.status_code)
    if response.status_code in (429, 503, 504):
        assert body["error"]["code"] == {429: "TooManyRequests", 503: "ServiceUnavailable",
                                         504: "GatewayTimeout"}[response.status_code]
        return ("error", response.status_code, response.headers.get("Retry-After"))
    if "responses" in body:
        subs = sorted((r["id"], r["status"], r["headers"].get("Retry-After")) for r in body["responses"])
        return ("batch", response.status_code, tuple(subs))
    return ("answer", response.status_code)


def _mixed_requests(emulator: Emulator) -> list[tuple[str, str, dict]]:
    """A fixed mix of Graph requests: lists, single objects, members, delta and $batch."""
    groups = [g["id"] for g in emulator.directory.groups]
    users = [u["id"] for u in emulator.directory.users]
    base = emulator.graph_url
    out = []
    for i in range(40):
        out.append(("GET", f"{base}/users?$top=5&$select=id,displayName", {}))
        out.append(("GET", f"{base}/groups/{groups[i % len(groups)]}/members?$top=999", {}))
        out.append(("GET", f"{base}/users/{users[i]}", {}))
        if i % 4 == 0:
            out.append(("GET", f"{base}/users/delta?$select=id,displayName", {}))
            out.append(("GET", f"{base}/groups/delta?$select=id,members", {}))
        if i % 3 == 0:
            batch = {"requests": [{"id": str(n), "method": "GET", "url": f"/groups/{g}/members?$select=id"}
                                  for n, g in enumerate(groups[:10])]}
            out.append(("POST", f"{base}/$batch", {"json": batch}))
    return out


def _run(emulator: Emulator, profile: FaultProfile | None) -> tuple[list[tuple], dict]:
    with https_session(emulator.ca_path) as s:
        auth = bearer(s, emulator, SECRET)
        emulator.faults.profile = profile
        seen = [observe(s, method, url, headers=auth, **kw) for method, url, kw in _mixed_requests(emulator)]
    return seen, emulator.faults.profile_hits


def _within(count: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    """``count`` of ``n`` Bernoulli(p) trials is within ``sigmas`` standard deviations (plus one)."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


MIXED = FaultProfile(seed=7, throttle=0.12, unavailable=0.08, gateway_timeout=0.08, drop=0.05,
                     malformed=0.05, slow=0.05, slow_seconds=0.01, batch_throttle=0.3)


# ---------------------------------------------------------------------------
# the profile object


def test_profile_defaults_and_validation(emulator):
    p = FaultProfile()
    assert (p.seed, p.throttle, p.unavailable, p.gateway_timeout, p.drop, p.malformed, p.slow,
            p.slow_seconds, p.batch_throttle, p.retry_after_seconds) == (0, 0, 0, 0, 0, 0, 0, 0.5, 0, 1)
    for bad in ({"throttle": -0.1}, {"drop": 1.5}, {"slow": "0.1"}, {"malformed": True},
                {"throttle": 0.6, "unavailable": 0.5}, {"batch_throttle": 2},
                {"retry_after_seconds": 1.5}, {"retry_after_seconds": -1}, {"slow_seconds": -1},
                {"slow_seconds": float("inf")}):
        with pytest.raises(ValueError):
            FaultProfile(**bad)
    FaultProfile(throttle=0.5, unavailable=0.5, batch_throttle=1.0)  # exactly 1 is fine
    with pytest.raises(TypeError):
        emulator.faults.profile = {"throttle": 0.1}
    assert emulator.faults.profile is None
    assert emulator.faults.profile_hits == dict.fromkeys(PROFILE_KINDS, 0)


# ---------------------------------------------------------------------------
# determinism and fractions


def test_same_seed_same_sequence(directory, tmp_path):
    with _new_emulator(directory, tmp_path / "a") as a, _new_emulator(directory, tmp_path / "b") as b:
        first, first_hits = _run(a, MIXED)
        second, second_hits = _run(b, MIXED)
        assert first == second
        assert first_hits == second_hits
        kinds = Counter(seen[0] for seen in first)
        assert kinds["drop"] and kinds["malformed"] and kinds["error"] and kinds["answer"] and kinds["batch"]
        # Sub-requests of a batch that was then dropped or cut short count too, unseen by the client.
        sub_429 = sum(1 for seen in first if seen[0] == "batch" for _, status, _ in seen[2] if status == 429)
        assert 0 < sub_429 <= first_hits["batch_throttle"]
        assert first_hits["batch_throttle"] == sum(1 for *_, status in a.batched_request_log if status == 429)
        errors = Counter(seen[1] for seen in first if seen[0] == "error")
        assert (errors[429], errors[503], errors[504]) == (
            first_hits["throttle"], first_hits["unavailable"], first_hits["gateway_timeout"])
        assert (kinds["drop"], kinds["malformed"]) == (first_hits["drop"], first_hits["malformed"])
        assert first_hits["slow"] > 0

        # Assigning the profile again restarts its sequence; another seed gives another one.
        again, _ = _run(a, MIXED)
        assert again == first
        other, _ = _run(b, FaultProfile(**{**MIXED.__dict__, "seed": 8}))
        assert other != first


def test_fractions_and_retry_after(emulator, session, auth):
    profile = FaultProfile(seed=11, throttle=0.10, unavailable=0.06, gateway_timeout=0.06, drop=0.02,
                           malformed=0.03, slow=0.02, slow_seconds=0.02, retry_after_seconds=2)
    emulator.faults.profile = profile
    n = 2000
    kinds: Counter = Counter()
    retry_after: Counter = Counter()
    slow_candidates = 0
    for _ in range(n):
        start = time.monotonic()
        seen = observe(session, "GET", emulator.graph_url + CHEAP, headers=auth)
        elapsed = time.monotonic() - start
        if seen[0] == "error":
            status, header = seen[1], seen[2]
            kinds[status] += 1
            retry_after[status, header is not None] += 1
            if header is not None:
                assert header == str(int(header)) == "2"  # integer seconds
        else:
            kinds[seen[0]] += 1
            if seen[0] == "answer" and elapsed >= profile.slow_seconds:
                slow_candidates += 1
    hits = emulator.faults.profile_hits
    assert hits == {"throttle": kinds[429], "unavailable": kinds[503], "gateway_timeout": kinds[504],
                    "drop": kinds["drop"], "malformed": kinds["malformed"], "slow": hits["slow"],
                    "batch_throttle": 0}
    for kind in ("throttle", "unavailable", "gateway_timeout", "drop", "malformed", "slow"):
        assert _within(hits[kind], n, getattr(profile, kind)), (kind, hits[kind])
    assert hits["slow"] <= slow_candidates  # every slow response took at least slow_seconds
    assert sum(kinds.values()) == n
    # 429 always carries Retry-After; 503 and 504 half with, half without.
    assert retry_after[429, False] == 0
    for status in (503, 504):
        with_, without = retry_after[status, True], retry_after[status, False]
        assert with_ and without
        assert _within(with_, with_ + without, 0.5), (status, with_, without)


# ---------------------------------------------------------------------------
# each kind


def test_drop_is_an_incomplete_read_and_closes_the_connection(emulator, session, auth, caplog, capfd):
    caplog.set_level(logging.DEBUG, logger="entra_pipeline.emulator")
    url = f"{emulator.graph_url}/users?$top=50"
    assert session.get(url, headers=auth).status_code == 200  # a live keep-alive connection
    connections = emulator.connection_count
    emulator.faults.profile = FaultProfile(seed=1, drop=1.0)
    for _ in range(3):
        with pytest.raises(requests.exceptions.ChunkedEncodingError) as exc:
            session.get(url, headers=auth)
        assert isinstance(exc.value.args[0], urllib3.exceptions.ProtocolError)
        assert "IncompleteRead" in str(exc.value)
    emulator.faults.profile = None
    response = session.get(url, headers=auth)
    assert response.status_code == 200 and len(response.json()["value"]) == 50
    # The first drop used the live connection; each later request needed a new one.
    assert emulator.connection_count == connections + 3
    assert emulator.faults.profile_hits["drop"] == 3
    assert emulator.request_log[-2][2] == 200  # headers of the dropped response said 200
    assert not caplog.records
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


def test_drop_of_raw_stream_has_headers_and_half_the_body(emulator, session, auth):
    emulator.faults.profile = FaultProfile(drop=1.0)
    response = session.get(f"{emulator.graph_url}/users?$top=20", headers=auth, stream=True)
    assert response.status_code == 200
    promised = int(response.headers["Content-Length"])
    got = b""
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for chunk in response.raw.stream(1024, decode_content=False):
            got += chunk
    assert 0 < len(got) < promised and abs(len(got) - promised // 2) <= 1


def test_malformed_body_fails_json_parsing(emulator, session, auth):
    assert session.get(emulator.graph_url + CHEAP, headers=auth).status_code == 200
    connections = emulator.connection_count
    emulator.faults.profile = FaultProfile(malformed=1.0)
    for path in ("/users?$top=10", "/groups", "/users/delta?$select=id"):
        response = session.get(emulator.graph_url + path, headers=auth)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/json")
        assert int(response.headers["Content-Length"]) == len(response.content) > 0
        assert response.content.startswith(b"{")
        with pytest.raises(ValueError):
            json.loads(response.content)
    assert emulator.connection_count == connections  # a clean response: keep-alive goes on
    assert emulator.faults.profile_hits["malformed"] == 3


def test_slow_responses_take_at_least_slow_seconds(emulator, session, auth):
    emulator.faults.profile = FaultProfile(slow=1.0, slow_seconds=0.3)
    for _ in range(2):
        start = time.monotonic()
        response = session.get(emulator.graph_url + CHEAP, headers=auth)
        assert time.monotonic() - start >= 0.3
        assert response.status_code == 200 and response.json()["value"]
    emulator.faults.profile = None
    start = time.monotonic()
    session.get(emulator.graph_url + CHEAP, headers=auth)
    assert time.monotonic() - start < 0.3


def test_identity_endpoints_are_never_faulted(emulator, session):
    # Every Graph request fails, the identity platform never does.
    emulator.faults.profile = FaultProfile(seed=2, throttle=0.3, unavailable=0.3, gateway_timeout=0.2,
                                           drop=0.1, malformed=0.1, batch_throttle=1.0)
    for _ in range(20):
        token = token_response(session, emulator, SECRET)
        assert token.status_code == 200 and token.json()["access_token"]
        oidc = session.get(f"{emulator.authority}/v2.0/.well-known/openid-configuration")
        assert oidc.status_code == 200 and oidc.json()["token_endpoint"]
        assert session.get(f"{emulator.authority}/discovery/v2.0/keys").json() == {"keys": []}
    app = msal.ConfidentialClientApplication(DEMO_CLIENT_ID, client_credential=SECRET,
                                             authority=emulator.authority, instance_discovery=False,
                                             http_client=session)
    assert "access_token" in app.acquire_token_for_client(scopes=[GRAPH_DEFAULT_SCOPE])
    assert sum(emulator.faults.profile_hits.values()) == 0
    # Only paths under /v1.0/ draw: another version is answered normally (400 BadRequest).
    assert session.get(f"{emulator.base_url}/beta/users").status_code == 400
    assert sum(emulator.faults.profile_hits.values()) == 0
    auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
    seen = observe(session, "GET", emulator.graph_url + CHEAP, headers=auth)
    assert seen[0] in ("error", "drop", "malformed")
    assert sum(emulator.faults.profile_hits.values()) == 1


def test_batch_throttle_gives_429_sub_responses(emulator, session, auth):
    groups = [g["id"] for g in emulator.directory.groups]
    batch = {"requests": [{"id": str(n), "method": "GET", "url": f"/groups/{g}/members?$select=id"}
                          for n, g in enumerate(groups[:20])]}
    emulator.faults.profile = FaultProfile(seed=5, batch_throttle=0.4, retry_after_seconds=3)
    statuses: Counter = Counter()
    for _ in range(10):
        response = session.post(f"{emulator.graph_url}/$batch", json=batch, headers=auth)
        assert response.status_code == 200
        for sub in response.json()["responses"]:
            statuses[sub["status"]] += 1
            if sub["status"] == 429:
                assert sub["headers"]["Retry-After"] == "3"
                assert sub["body"]["error"]["code"] == "TooManyRequests"
                assert sub["body"]["error"]["message"] == "Too many requests. Retry after 3 seconds."
            else:
                assert sub["status"] == 200 and "Retry-After" not in sub["headers"]
                assert isinstance(sub["body"]["value"], list)
    assert statuses[429] + statuses[200] == 200
    assert statuses[429] == emulator.faults.profile_hits["batch_throttle"]
    assert _within(statuses[429], 200, 0.4)
    assert emulator.faults.profile_hits["throttle"] == 0
    # batch_throttle only touches sub-requests: a plain request is never throttled by it.
    emulator.faults.profile = FaultProfile(batch_throttle=1.0)
    assert session.get(emulator.graph_url + CHEAP, headers=auth).status_code == 200
    subs = session.post(f"{emulator.graph_url}/$batch", json=batch, headers=auth).json()["responses"]
    assert {sub["status"] for sub in subs} == {429}


def test_the_batch_request_itself_draws(emulator, session, auth):
    batch = {"requests": [{"id": "1", "method": "GET", "url": "/users?$top=1"}]}
    emulator.faults.profile = FaultProfile(throttle=1.0, batch_throttle=1.0)
    before = emulator.batched_request_count
    response = session.post(f"{emulator.graph_url}/$batch", json=batch, headers=auth)
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    assert emulator.batched_request_count == before  # sub-requests never ran
    assert emulator.faults.profile_hits["throttle"] == 1
    assert emulator.faults.profile_hits["batch_throttle"] == 0


# ---------------------------------------------------------------------------
# scripted faults, switching off


def test_scripted_faults_win_over_the_profile(emulator, session, auth):
    faults = emulator.faults
    faults.profile = FaultProfile(throttle=1.0)
    faults.add(503, path="/v1.0/users", retry_after=5)
    first = session.get(emulator.graph_url + CHEAP, headers=auth)
    assert first.status_code == 503 and first.headers["Retry-After"] == "5"
    assert faults.profile_hits["throttle"] == 0
    second = session.get(emulator.graph_url + CHEAP, headers=auth)
    assert second.status_code == 429 and second.headers["Retry-After"] == "1"
    assert faults.profile_hits["throttle"] == 1

    # truncate_paging still applies under a profile that does not answer with an error.
    faults.profile = FaultProfile(slow=1.0, slow_seconds=0)
    faults.truncate_paging("/v1.0/users")
    page = session.get(f"{emulator.graph_url}/users?$top=5", headers=auth).json()
    assert len(page["value"]) == 5 and "@odata.nextLink" not in page
    assert "@odata.nextLink" in session.get(f"{emulator.graph_url}/users?$top=5", headers=auth).json()

    # Inside $batch a scripted sub-request fault wins over batch_throttle.
    groups = [g["id"] for g in emulator.directory.groups[:3]]
    faults.profile = FaultProfile(batch_throttle=1.0)
    faults.add(404, path=f"/v1.0/groups/{groups[0]}/members")
    batch = {"requests": [{"id": str(n), "method": "GET", "url": f"/groups/{g}/members"}
                          for n, g in enumerate(groups)]}
    subs = {r["id"]: r for r in session.post(f"{emulator.graph_url}/$batch", json=batch,
                                             headers=auth).json()["responses"]}
    assert subs["0"]["status"] == 404 and subs["1"]["status"] == subs["2"]["status"] == 429
    assert faults.profile_hits["batch_throttle"] == 2


def test_a_scripted_fault_does_not_shift_the_profile_sequence(directory, tmp_path):
    profile = FaultProfile(seed=3, throttle=0.3, unavailable=0.2, malformed=0.2)
    with _new_emulator(directory, tmp_path / "a") as a, _new_emulator(directory, tmp_path / "b") as b:
        runs = []
        for emu, scripted in ((a, False), (b, True)):
            with https_session(emu.ca_path) as s:
                auth = bearer(s, emu, SECRET)
                emu.faults.profile = profile
                if scripted:
                    emu.faults.add(500, path="/v1.0/users", times=1)
                runs.append([observe(s, "GET", emu.graph_url + CHEAP, headers=auth) for _ in range(60)])
        plain, with_scripted = runs
        assert with_scripted[0] == ("answer", 500)
        assert with_scripted[1:] == plain[1:]


def test_profile_none_and_clear(emulator, session, auth):
    faults = emulator.faults
    faults.profile = FaultProfile(throttle=1.0)
    assert session.get(emulator.graph_url + CHEAP, headers=auth).status_code == 429
    faults.profile = None
    assert session.get(emulator.graph_url + CHEAP, headers=auth).status_code == 200
    assert faults.profile_hits["throttle"] == 1  # kept for a report after switching off
    faults.profile = FaultProfile(throttle=1.0)
    assert faults.profile_hits["throttle"] == 0  # a new profile counts afresh
    assert session.get(emulator.graph_url + CHEAP, headers=auth).status_code == 429
    faults.add(503, times=None)
    faults.clear()
    assert faults.profile is None and faults.pending == []
    assert faults.profile_hits == dict.fromkeys(PROFILE_KINDS, 0)
    assert session.get(emulator.graph_url + CHEAP, headers=auth).status_code == 200


# ---------------------------------------------------------------------------
# token lifetime


def test_short_token_ttl_expires(directory, tmp_path):
    with _new_emulator(directory, tmp_path, token_ttl=2) as emu, https_session(emu.ca_path) as s:
        token = token_response(s, emu, SECRET).json()
        assert token["expires_in"] == token["ext_expires_in"] == 2
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        assert s.get(emu.graph_url + CHEAP, headers=headers).status_code == 200
        time.sleep(2.1)
        expired = s.get(emu.graph_url + CHEAP, headers=headers)
        assert expired.status_code == 401
        assert expired.json()["error"]["code"] == "InvalidAuthenticationToken"
        assert expired.json()["error"]["message"] == EXPIRED
        # MSAL treats a token with under 5 minutes left as expired: it fetches a new one every time.
        app = msal.ConfidentialClientApplication(DEMO_CLIENT_ID, client_credential=SECRET,
                                                 authority=emu.authority, instance_discovery=False,
                                                 http_client=s)
        one, two = (app.acquire_token_for_client(scopes=[GRAPH_DEFAULT_SCOPE]) for _ in range(2))
        assert one["token_source"] == two["token_source"] == "identity_provider"
        assert one["access_token"] != two["access_token"]


def test_token_reported_ttl_lets_a_cached_token_expire_mid_run(directory, tmp_path):
    with _new_emulator(directory, tmp_path, token_ttl=1, token_reported_ttl=3600) as emu, \
            https_session(emu.ca_path) as s:
        raw = token_response(s, emu, SECRET).json()
        assert raw["expires_in"] == raw["ext_expires_in"] == 3600
        app = msal.ConfidentialClientApplication(DEMO_CLIENT_ID, client_credential=SECRET,
                                                 authority=emu.authority, instance_discovery=False,
                                                 http_client=s)
        first = app.acquire_token_for_client(scopes=[GRAPH_DEFAULT_SCOPE])
        assert first["expires_in"] == 3600 and first["token_source"] == "identity_provider"
        headers = {"Authorization": f"Bearer {first['access_token']}"}
        assert s.get(emu.graph_url + CHEAP, headers=headers).status_code == 200
        time.sleep(1.1)
        cached = app.acquire_token_for_client(scopes=[GRAPH_DEFAULT_SCOPE])
        assert cached["token_source"] == "cache" and cached["access_token"] == first["access_token"]
        rejected = s.get(emu.graph_url + CHEAP, headers=headers)
        assert rejected.status_code == 401
        error = rejected.json()["error"]
        assert error["code"] == "InvalidAuthenticationToken" and error["message"] == EXPIRED
        assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
        assert rejected.headers["WWW-Authenticate"].startswith("Bearer ")
        # The attribute can be changed on a running emulator; None reports token_ttl again.
        emu.token_reported_ttl = None
        assert token_response(s, emu, SECRET).json()["expires_in"] == 1


# ---------------------------------------------------------------------------
# scripted redirects, and rewrites of identity answers

def test_redirect_answers_identity_graph_and_batch_requests(emulator, session, auth):
    foreign = "http://127.0.0.1:9/elsewhere?x=1"
    token_path = f"/{DEMO_TENANT_ID}/oauth2/v2.0/token"
    fault = emulator.faults.redirect(token_path, foreign, times=2)
    for _ in range(2):
        answer = token_response(session, emulator, SECRET, allow_redirects=False)
        assert (answer.status_code, answer.headers["Location"]) == (307, foreign)
        assert answer.json() == {"redirect": foreign}
    assert fault.hits == 2 and emulator.faults.pending == []
    assert token_response(session, emulator, SECRET).status_code == 200  # used up: answered normally again

    oidc = f"/{DEMO_TENANT_ID}/v2.0/.well-known/openid-configuration"
    emulator.faults.redirect(oidc, "https://127.0.0.1:9/oidc", status=302, method="GET")
    answer = session.get(emulator.base_url + oidc, allow_redirects=False)
    assert (answer.status_code, answer.headers["Location"]) == (302, "https://127.0.0.1:9/oidc")

    emulator.faults.redirect("/v1.0/users", foreign, status=308, times=None)
    for _ in range(3):
        answer = session.get(emulator.graph_url + CHEAP, headers=auth, allow_redirects=False)
        assert (answer.status_code, answer.headers["Location"]) == (308, foreign)
    emulator.faults.clear()
    assert session.get(emulator.graph_url + CHEAP, headers=auth).status_code == 200

    emulator.faults.redirect("/v1.0/$batch", foreign, method="POST")
    batch = {"requests": [{"id": "1", "method": "GET", "url": "/users?$top=1"}]}
    answer = session.post(f"{emulator.graph_url}/$batch", json=batch, headers=auth, allow_redirects=False)
    assert (answer.status_code, answer.headers["Location"]) == (307, foreign)
    # A method that does not match is answered normally.
    emulator.faults.redirect("/v1.0/users", foreign, method="POST")
    assert session.get(emulator.graph_url + CHEAP, headers=auth).status_code == 200


def test_redirect_validation(emulator):
    with pytest.raises(ValueError, match="redirect status"):
        emulator.faults.redirect("/v1.0", "https://x.example/", status=304)
    with pytest.raises(ValueError, match="line breaks"):
        emulator.faults.redirect("/v1.0", "https://x.example/\r\nSet-Cookie: a=b")
    with pytest.raises(ValueError, match="line breaks"):
        emulator.faults.redirect("/v1.0", "")
    with pytest.raises(ValueError, match="times"):
        emulator.faults.redirect("/v1.0", "https://x.example/", times=0)
    assert emulator.faults.pending == []


def test_rewrite_of_identity_answers_only_with_the_flag(emulator, session):
    oidc = f"{emulator.authority}/v2.0/.well-known/openid-configuration"
    path = f"/{DEMO_TENANT_ID}/v2.0/.well-known/openid-configuration"
    foreign = {"token_endpoint": "https://127.0.0.1:9/t/oauth2/v2.0/token"}
    # Without the flag an identity answer is never rewritten, and the fault stays armed.
    graph_only = emulator.faults.rewrite(path, lambda body: {**body, **foreign})
    assert session.get(oidc).json()["token_endpoint"].startswith(emulator.base_url)
    assert graph_only.hits == 0
    emulator.faults.clear()
    fault = emulator.faults.rewrite(path, lambda body: {**body, **foreign}, identity=True)
    assert session.get(oidc).json()["token_endpoint"] == foreign["token_endpoint"]
    assert fault.hits == 1
    assert session.get(oidc).json()["token_endpoint"].startswith(emulator.base_url)
    # An identity rewrite never touches Graph.
    emulator.faults.rewrite("/v1.0/users", lambda body: "not json", identity=True)
    auth = bearer(session, emulator, SECRET)
    assert session.get(emulator.graph_url + CHEAP, headers=auth).json()["value"]
