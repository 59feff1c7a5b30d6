"""The Workday RaaS client against the demo tenant's Workday over real HTTPS: both sign-ins, the
exact entries, prompts, and each failure mode as one clear error (and whether a retry may help),
with no password, secret or token in any message."""

from __future__ import annotations

import pytest

from entra_pipeline.emulator.workday_workers import generate_workers
from entra_pipeline.sources.workday.client import BasicAuth, RefreshTokenAuth, WorkdayClient, WorkdayError, WorkdaySettings

from tests.support.tenant import WORKDAY_CLIENT_SECRET, WORKDAY_PASSWORD, WORKDAY_REFRESH_TOKEN, WORKDAY_SEED


REPORT = "/ccx/service/customreport2/"
PASSWORD, CLIENT_SECRET, REFRESH, SEED = WORKDAY_PASSWORD, WORKDAY_CLIENT_SECRET, WORKDAY_REFRESH_TOKEN, WORKDAY_SEED


def client(emulator, auth=None, **overrides) -> WorkdayClient:
    settings = dict(host=emulator.base_url, tenant="contoso_demo", owner="lmcneil", report="Contacts_Sync",
                    auth=auth or BasicAuth("ISU_Contacts", PASSWORD), ca_bundle=str(emulator.ca_path),
                    max_retries=2, backoff_factor=0.01)
    settings.update(overrides)
    return WorkdayClient(WorkdaySettings(**settings))


def read(c: WorkdayClient) -> list[dict]:
    with c:
        return list(c.entries())


def error_of(c: WorkdayClient) -> WorkdayError:
    with pytest.raises(WorkdayError) as info:
        read(c)
    for secret in (PASSWORD, CLIENT_SECRET, REFRESH):
        assert secret not in str(info.value)
    return info.value


def test_basic_sign_in_reads_every_entry_exactly(workday, hr_directory):
    c = client(workday)
    entries = read(c)
    assert entries == generate_workers(hr_directory, SEED)
    assert c.stats.entries == len(entries) and c.stats.requests == 1 and c.stats.token_requests == 0
    assert c.stats.bytes > 100 * len(entries)
    assert c.stats.columns["Employee_ID"] == len(entries)
    assert c.stats.columns["Termination_Date"] == sum(1 for e in entries if "Termination_Date" in e)


def test_oauth_refresh_token_then_bearer_renewed_once_after_expiry(workday, hr_directory):
    c = client(workday, RefreshTokenAuth("ZGVtby13b3JrZGF5LWFwaS1jbGllbnQ", CLIENT_SECRET, REFRESH))
    with c:
        assert list(c.entries()) == generate_workers(hr_directory, SEED)
        workday.expire_workday_tokens()
        assert len(list(c.entries())) == len(generate_workers(hr_directory, SEED))
    assert (c.stats.token_requests, c.stats.requests) == (2, 3)  # the lapsed token's 401, then the renewal


def test_prompts_reach_the_report(workday, hr_directory):
    entries = read(client(workday, prompts=(("Include_Terminated", "0"),)))
    expected = [e for e in generate_workers(hr_directory, SEED) if e["Worker_Status"] != "Terminated"]
    assert entries == expected and len(expected) < len(generate_workers(hr_directory, SEED))
    error = error_of(client(workday, prompts=(("Department", "Sales"),)))
    assert "HTTP 400: Invalid request parameter 'Department'" in str(error) and not error.transient


def test_wrong_password_is_a_sign_in_page_not_a_parse_error(workday):
    error = error_of(client(workday, BasicAuth("ISU_Contacts", "wrong")))
    assert str(error) == (f"{workday.base_url}{REPORT}contoso_demo/lmcneil/Contacts_Sync: Workday answered with a "
                          "sign-in page instead of the report: wrong password, or the Integration System User "
                          "'ISU_Contacts' (source.username, source.password_env) is locked, expired or not allowed "
                          "to run the report")
    assert not error.transient


def test_refused_refresh_token_and_client(workday):
    error = error_of(client(workday, RefreshTokenAuth("ZGVtby13b3JrZGF5LWFwaS1jbGllbnQ", CLIENT_SECRET, "stale")))
    assert str(error).startswith(f"token request to {workday.base_url}/ccx/oauth2/contoso_demo/token refused: "
                                 "invalid_grant (the refresh token in source.refresh_token_env was revoked or is wrong)")
    error = error_of(client(workday, RefreshTokenAuth("ZGVtby13b3JrZGF5LWFwaS1jbGllbnQ", "bad", REFRESH)))
    assert "refused: invalid_client (check source.client_id and source.client_secret_env)" in str(error)
    assert not error.transient


def test_unknown_report_and_server_errors(workday):
    error = error_of(client(workday, report="No_Such_Report"))
    assert "/No_Such_Report: HTTP 404" in str(error) and not error.transient
    workday.faults.add(500, path=REPORT, times=None)
    error = error_of(client(workday))
    assert ": HTTP 500: " in str(error) and error.transient


def test_a_body_cut_short_is_never_taken_for_a_whole_report(workday):
    workday.faults.truncate_body(REPORT, after_bytes=20_000)
    c = client(workday)
    seen: list[dict] = []
    with pytest.raises(WorkdayError) as info, c:
        for entry in c.entries():
            seen.append(entry)
    assert info.value.transient and 0 < len(seen) < 100
    assert f"after {c.stats.bytes:,} bytes and {len(seen):,} entries" in str(info.value)


def test_a_report_without_report_entry(workday):
    workday.faults.rewrite(REPORT, lambda body: {"Report_Entry_Missing": []})
    error = error_of(client(workday))
    assert str(error).endswith("the answer has no Report_Entry (found: Report_Entry_Missing); is this a RaaS report "
                               "with JSON output?")
    assert not error.transient


def test_json_that_is_not_a_report(workday):
    workday.faults.rewrite(REPORT, lambda body: {"Report_Entry": ["a string"]})
    assert "entry 1 of Report_Entry is not an object" in str(error_of(client(workday)))
    workday.faults.rewrite(REPORT, lambda body: "<html>proxy</html>", content_type="text/plain")
    assert str(error_of(client(workday))).endswith("expected JSON, got text/plain")


def test_tls_is_verified(workday):
    error = error_of(client(workday, ca_bundle=None))
    assert "unreachable: SSLError" in str(error)
