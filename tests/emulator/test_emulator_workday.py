"""The demo tenant's Workday Report-as-a-Service: sign-in (Basic as the ISU, OAuth refresh then
Bearer), the report and its prompts, the generated workers and how they overlap the Entra
directory, every failure mode, the CLI, and a 100k-worker report streamed in bounded memory.

Everything goes over real HTTPS with ``requests`` and the emulator's own CA (``trust_env =
False``: the environment's CA bundle must not make a test pass).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
import requests

from entra_pipeline.emulator import DEMO_CLIENT_ID, DEMO_TENANT_ID, Emulator, generate_directory
from entra_pipeline.emulator.workday import (
    REPORT_COLUMNS,
    WORKDAY_CLIENT_SECRET_ENV,
    WORKDAY_PASSWORD_ENV,
    WORKDAY_REFRESH_TOKEN_ENV,
    WorkdayTenant,
)
from entra_pipeline.emulator.workday_workers import BAD_DATES, BAD_NUMBERS, WorkerReport, generate_workers

from tests.support.tenant import running_emulator


REPO = Path(__file__).resolve().parents[2]
SEED = 5
PASSWORD = "isu-Pa55word-for-tests"
TENANT = WorkdayTenant(password=PASSWORD, client_secret="wd-client-secret-7Qz", refresh_token="wd-refresh-Lm3")
JSON = {"format": "json"}


@pytest.fixture(scope="module")
def directory():
    return generate_directory(users=400, groups=20, seed=SEED)


@pytest.fixture(scope="module")
def workers(directory):
    return generate_workers(directory, seed=SEED)


@pytest.fixture(scope="module")
def emulator(directory, workers, tmp_path_factory):
    with running_emulator(directory, tmp_path_factory.mktemp("workday-certs"), tenant_id=DEMO_TENANT_ID,
                          client_id=DEMO_CLIENT_ID, client_secret="graph-secret",
                          workday=replace(TENANT, entries=list(workers))) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _fresh_tenant(emulator, workers):
    """Each test starts with the module's tenant and report, no faults and an empty log."""
    emulator.workday = replace(TENANT, entries=list(workers), prompts=dict(TENANT.prompts))
    emulator.faults.clear()
    emulator.workday_request_log.clear()
    yield
    emulator.faults.clear()


def _report(session, emulator, params=JSON, **kwargs) -> requests.Response:
    kwargs.setdefault("auth", (TENANT.username, PASSWORD))
    return session.get(emulator.workday_report_url, params=params, **kwargs)


def _token(session, emulator, **overrides) -> requests.Response:
    form = {"grant_type": "refresh_token", "refresh_token": TENANT.refresh_token}
    kwargs = {"auth": (TENANT.client_id, TENANT.client_secret)}
    for name, value in overrides.items():
        if name in ("auth", "url"):
            kwargs[name] = value
        elif value is None:
            form.pop(name, None)
        else:
            form[name] = value
    return session.post(kwargs.pop("url", emulator.workday_token_url), data=form, **kwargs)


def _bearer(session, emulator) -> dict:
    response = _token(session, emulator)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


# ---------------------------------------------------------------------------
# Sign-in


@pytest.mark.parametrize("username", ["ISU_Contacts", "ISU_Contacts@contoso_demo", "isu_contacts"])
def test_basic_auth_as_the_isu(session, emulator, workers, username):
    response = _report(session, emulator, auth=(username, PASSWORD))
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert response.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in response.headers
    assert response.json() == {"Report_Entry": workers}
    [record] = emulator.workday_request_log
    assert (record.method, record.path, record.auth, record.status) == (
        "GET", "/ccx/service/customreport2/contoso_demo/lmcneil/Contacts_Sync", "basic", 200)
    assert record.complete is True and record.body_bytes == len(response.content)


def test_oauth_refresh_then_bearer(session, emulator, workers):
    response = _token(session, emulator)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["refresh_token"] == TENANT.refresh_token  # Workday's do not rotate
    assert body["access_token"] in emulator.issued_credentials()

    report = _report(session, emulator, auth=None, headers={"Authorization": f"Bearer {body['access_token']}"})
    assert report.status_code == 200 and report.json()["Report_Entry"] == workers
    assert [r.auth for r in emulator.workday_request_log] == ["client", "bearer"]

    # The client's credentials may also come in the form.
    form_auth = _token(session, emulator, auth=None, client_id=TENANT.client_id, client_secret=TENANT.client_secret)
    assert form_auth.status_code == 200 and form_auth.json()["access_token"] != body["access_token"]


def test_expired_and_unknown_bearer_tokens_are_401(session, emulator):
    headers = _bearer(session, emulator)
    assert _report(session, emulator, auth=None, headers=headers).status_code == 200
    emulator.expire_workday_tokens()
    expired = _report(session, emulator, auth=None, headers=headers)
    assert expired.status_code == 401 and expired.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert expired.json() == {"error": "invalid_token", "error_description": "The access token has expired."}
    assert expired.headers["WWW-Authenticate"].startswith('Bearer realm="Workday", error="invalid_token"')
    unknown = _report(session, emulator, auth=None, headers={"Authorization": "Bearer not-a-workday-token"})
    assert unknown.status_code == 401 and unknown.json()["error_description"] == "The access token is unknown."
    # A fresh token works again; an Entra token is no Workday token, and the other way round.
    assert _report(session, emulator, auth=None, headers=_bearer(session, emulator)).status_code == 200
    graph_token = session.post(f"{emulator.authority}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID, "client_secret": "graph-secret",
        "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]
    assert _report(session, emulator, auth=None,
                   headers={"Authorization": f"Bearer {graph_token}"}).status_code == 401
    graph = session.get(f"{emulator.graph_url}/users", headers=_bearer(session, emulator))
    assert graph.status_code == 401 and graph.json()["error"]["code"] == "InvalidAuthenticationToken"


@pytest.mark.parametrize("overrides, status, error", [
    ({"auth": (TENANT.client_id, "wrong-secret")}, 401, "invalid_client"),
    ({"auth": ("someone-else", TENANT.client_secret)}, 401, "invalid_client"),
    ({"auth": None}, 401, "invalid_client"),
    ({"refresh_token": "stolen-or-revoked"}, 400, "invalid_grant"),
    ({"refresh_token": None}, 400, "invalid_grant"),
    ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
])
def test_token_endpoint_errors(session, emulator, overrides, status, error):
    response = _token(session, emulator, **overrides)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    body = response.json()
    assert set(body) == {"error", "error_description"} and body["error"] == error
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Basic realm="Workday"'
    assert not [c for c in emulator.issued_credentials() if c in response.text]


def test_token_endpoint_method_and_tenant(session, emulator):
    assert session.get(emulator.workday_token_url).status_code == 405
    other = _token(session, emulator, url=f"{emulator.base_url}/ccx/oauth2/fabrikam_prod/token")
    assert other.status_code == 503
    assert other.json() == {"error": "Service Unavailable: invalid tenant name 'fabrikam_prod'."}


@pytest.mark.parametrize("auth, headers, failed", [
    ((TENANT.username, "wrong-password"), {}, True),
    (("ISU_Other", PASSWORD), {}, True),
    (("ISU_Contacts@another_tenant", PASSWORD), {}, True),
    (None, {}, False),
    (None, {"Authorization": "Negotiate abc"}, True),
    (None, {"Authorization": "Basic %%%not-base64"}, True),
])
def test_failed_sign_in_gets_the_html_login_page(session, emulator, auth, headers, failed):
    response = _report(session, emulator, auth=auth, headers=headers)
    assert response.status_code == 200  # the trap: only Content-Type says this is no report
    assert response.headers["Content-Type"] == "text/html;charset=UTF-8"
    assert response.text.startswith("<!DOCTYPE html>") and "<form" in response.text
    assert "Sign in to contoso_demo" in response.text
    assert ("Invalid user name or password" in response.text) is failed
    with pytest.raises(ValueError):
        response.json()
    assert PASSWORD not in response.text
    assert emulator.workday_request_log[-1].auth is None


def test_login_page_status_can_be_401(session, emulator):
    emulator.workday.login_page_status = 401
    response = _report(session, emulator, auth=(TENANT.username, "nope"))
    assert response.status_code == 401 and response.headers["Content-Type"] == "text/html;charset=UTF-8"


def test_password_change_between_requests(session, emulator):
    assert _report(session, emulator).status_code == 200
    emulator.workday.password = "rotated-by-the-admin"
    assert _report(session, emulator).headers["Content-Type"].startswith("text/html")
    assert _report(session, emulator, auth=(TENANT.username, "rotated-by-the-admin")).status_code == 200


# ---------------------------------------------------------------------------
# The report: URL, format, prompts


def test_report_url_errors(session, emulator):
    base = f"{emulator.base_url}/ccx/service/customreport2"
    cases = [
        (f"{base}/contoso_demo/lmcneil/No_Such_Report", JSON, 404,
         "The report 'lmcneil/No_Such_Report' does not exist in tenant 'contoso_demo' "
         "or is not enabled as a web service."),
        (f"{base}/contoso_demo/someone/Contacts_Sync", JSON, 404, None),
        (f"{base}/fabrikam_prod/lmcneil/Contacts_Sync", JSON, 503,
         "Service Unavailable: invalid tenant name 'fabrikam_prod'."),
        (emulator.workday_report_url, {"format": "csv"}, 400,
         "Invalid format ('csv'): the demo-tenant emulator serves format=json only."),
        (emulator.workday_report_url, {}, 400,
         "Invalid format (none): the demo-tenant emulator serves format=json only."),
        (emulator.workday_report_url, [("format", "json"), ("format", "json")], 400, None),
        (f"{emulator.base_url}/ccx/api/v1/contoso_demo/workers", {}, 404, None),
    ]
    for url, params, status, message in cases:
        response = session.get(url, params=params, auth=(TENANT.username, PASSWORD))
        assert response.status_code == status, url
        assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
        assert set(response.json()) == {"error"}
        if message:
            assert response.json()["error"] == message
    post = session.post(emulator.workday_report_url, params=JSON, auth=(TENANT.username, PASSWORD))
    assert post.status_code == 405
    # An unknown report is only told to a signed-in client.
    anonymous = session.get(f"{base}/contoso_demo/lmcneil/No_Such_Report", params=JSON)
    assert anonymous.status_code == 200 and anonymous.headers["Content-Type"].startswith("text/html")


def test_prompts_are_passed_through(session, emulator, workers):
    active_only = _report(session, emulator, {"format": "json", "Include_Terminated": "0"}).json()["Report_Entry"]
    assert active_only == [w for w in workers if w["Worker_Status"] != "Terminated"]
    assert len(workers) - len(active_only) == 24
    assert _report(session, emulator, {"format": "json", "Include_Terminated": "true"}).json()["Report_Entry"] \
        == workers

    as_of = _report(session, emulator, {"format": "json", "Effective_as_of_Date": "2015-01-01-08:00"})
    # Unreadable hire dates are kept: the filter cannot place them.
    hired_by_2015 = [w for w in workers if w["Hire_Date"][:10] <= "2015-01-01" or w["Hire_Date"] in BAD_DATES]
    assert as_of.json()["Report_Entry"] == hired_by_2015 and 0 < len(hired_by_2015) < len(workers)

    both = {"format": "json", "Include_Terminated": "0", "Effective_as_of_Date": "2015-01-01"}
    assert _report(session, emulator, both).json()["Report_Entry"] == [
        w for w in hired_by_2015 if w["Worker_Status"] != "Terminated"]
    assert [r.prompts for r in emulator.workday_request_log] == [
        {"Include_Terminated": "0"}, {"Include_Terminated": "true"},
        {"Effective_as_of_Date": "2015-01-01-08:00"},
        {"Include_Terminated": "0", "Effective_as_of_Date": "2015-01-01"}]

    # A declared prompt without a meaning here is accepted and recorded; a reference prompt too.
    emulator.workday.prompts["Organizations"] = ""
    params = {"format": "json", "Organizations!WID": "0123456789abcdef0123456789abcdef"}
    assert _report(session, emulator, params).json()["Report_Entry"] == workers
    assert emulator.workday_request_log[-1].prompts == {"Organizations!WID": "0123456789abcdef0123456789abcdef"}


@pytest.mark.parametrize("params, message", [
    ({"Include_Terminateds": "0"}, "Invalid request parameter 'Include_Terminateds': the report 'Contacts_Sync' "
                                   "has no such prompt (prompts: Effective_as_of_Date, Include_Terminated)."),
    ({"include_terminated": "0"}, "Invalid request parameter 'include_terminated'"),
    ({"Include_Terminated": "maybe"}, "Invalid value 'maybe' for prompt 'Include_Terminated'"),
    ({"Effective_as_of_Date": "2024-02-30"}, "Invalid value '2024-02-30' for prompt 'Effective_as_of_Date'"),
    ({"Effective_as_of_Date": "01/03/2024"}, "Invalid value '01/03/2024' for prompt 'Effective_as_of_Date'"),
    ([("Include_Terminated", "0"), ("Include_Terminated", "1")], "Prompt 'Include_Terminated' given more than once"),
])
def test_bad_prompts_are_refused(session, emulator, params, message):
    query = [("format", "json"), *(params.items() if isinstance(params, dict) else params)]
    response = _report(session, emulator, query)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


def test_entries_change_between_requests(session, emulator, workers):
    entries = emulator.workday.entries
    removed = entries.pop(0)
    entries[0] = {**entries[0], "Business_Title": "Chief Contacts Officer"}
    entries.append({"Employee_ID": "X1", "Worker_Status": "Active", "First_Name": "Zoë"})
    got = _report(session, emulator).json()["Report_Entry"]
    assert removed not in got and got[0]["Business_Title"] == "Chief Contacts Officer"
    assert got[-1] == {"Employee_ID": "X1", "Worker_Status": "Active", "First_Name": "Zoë"}
    assert len(got) == len(workers)
    emulator.workday.entries = []
    assert _report(session, emulator).json() == {"Report_Entry": []}
    emulator.workday.entries = WorkerReport(emulator.directory, seed=SEED)  # lazily computed, same entries
    assert _report(session, emulator).json()["Report_Entry"] == workers


def test_body_parses_incrementally_with_the_json_module(session, emulator, workers):
    """A client that never holds the body whole: raw_decode one entry at a time as chunks arrive."""
    decoder = json.JSONDecoder()
    prefix = '{"Report_Entry":['
    parsed, buffer, state, chunks = [], "", "prefix", 0
    with _report(session, emulator, stream=True) as response:
        for text in response.iter_content(chunk_size=4096, decode_unicode=True):
            chunks += 1
            buffer += text
            while True:
                if state == "prefix":
                    if len(buffer) < len(prefix):
                        break
                    assert buffer.startswith(prefix)
                    buffer, state = buffer[len(prefix):], "entry"
                buffer = buffer.lstrip(",")
                if buffer.startswith("]"):
                    state = "end"
                    break
                try:
                    entry, end = decoder.raw_decode(buffer)
                except json.JSONDecodeError:
                    break  # the rest of this entry is in the next chunk
                parsed.append(entry)
                buffer = buffer[end:]
    assert state == "end" and buffer == "]}"
    assert chunks > 10 and parsed == workers


# ---------------------------------------------------------------------------
# The generated workers


def test_workers_are_deterministic(directory, workers):
    assert generate_workers(directory, seed=SEED) == workers
    assert list(WorkerReport(directory, seed=SEED)) == workers and len(WorkerReport(directory, seed=SEED)) == 368
    assert generate_workers(directory, seed=SEED + 1) != workers
    assert list(WorkerReport(workers=50, seed=1)) == list(WorkerReport(workers=50, seed=1))
    script = ("import hashlib, json; from entra_pipeline.emulator import generate_directory as g; "
              "from entra_pipeline.emulator.workday_workers import generate_workers as w; "
              f"print(hashlib.sha256(json.dumps(w(g(users=400, groups=20, seed={SEED}), seed={SEED})).encode())"
              ".hexdigest())")
    remote = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                            env=dict(os.environ, PYTHONHASHSEED="4321")).stdout.strip()
    assert remote == hashlib.sha256(json.dumps(workers).encode()).hexdigest()


def test_workers_overlap_the_directory(directory, workers):
    members = [u for u in directory.users if u["userType"] == "Member"]
    guests = [u for u in directory.users if u["userType"] == "Guest"]
    entra_mail = {u["mail"].lower(): u for u in members if u["mail"]}
    entra_ids = {u["employeeId"]: u for u in members if u["employeeId"]}
    by_mail = {w["Email_Address"]: w for w in workers if "Email_Address" in w}
    by_id = {w["Employee_ID"]: w for w in workers}
    assert len(workers) == len(by_id) == 368, "Employee_ID is unique"
    assert len(by_mail) == 357

    shared = set(entra_mail) & set(by_mail)
    assert len(shared) == 349 and len(entra_mail) == 368  # ~95 % of members with a mail
    # Same address: byte-identical unless Entra's is MixedCase (Workday keeps it in lower case).
    exact = [m for m in shared if entra_mail[m]["mail"] == by_mail[m]["Email_Address"]]
    assert len(exact) == 316
    assert all(entra_mail[m]["mail"] != entra_mail[m]["mail"].lower() for m in shared - set(exact))
    for mail in shared:
        user, worker = entra_mail[mail], by_mail[mail]
        assert (worker["First_Name"], worker["Last_Name"]) == (user["givenName"], user["surname"])
        if user["employeeId"]:
            assert worker["Employee_ID"] == user["employeeId"]
        else:  # Entra has no employee ID: Workday's own, matched by email only
            assert len(worker["Employee_ID"]) == 10 and worker["Employee_ID"] not in entra_ids
    assert sum(entra_mail[m]["employeeId"] is None for m in shared) == 4

    shared_ids = set(entra_ids) & set(by_id)
    assert len(shared_ids) == 352
    id_only = [w for w in workers if w["Employee_ID"] in entra_ids and "Email_Address" not in w]
    assert len(id_only) == 7 and all(entra_ids[w["Employee_ID"]]["mail"] is None for w in id_only)

    workday_only = [w for w in workers
                    if w.get("Email_Address", "").lower() not in entra_mail and w["Employee_ID"] not in entra_ids]
    assert len(workday_only) == 12 == max(2, round(len(directory.users) * 0.03))
    assert Counter(w["Worker_Type"] for w in workday_only) == {"Contingent Worker": 9, "Employee": 3}
    assert sum("Email_Address" not in w for w in workday_only) == 4  # contractors without email
    assert all(w["Employee_ID"][0] in "CE" for w in workday_only)
    assert all(not w.get("Email_Address", "").endswith("@contoso.com") for w in workday_only
               if w["Worker_Type"] == "Contingent Worker")
    new_hires = [w for w in workday_only if w["Worker_Type"] == "Employee"]
    assert all(w["Hire_Date"][:10] > "2025-06-30" for w in new_hires)
    guest_mails = {u["mail"].lower() for u in guests}
    assert not guest_mails & set(by_mail), "guests are never workers"

    entra_only = [u for u in members if not ((u["mail"] and u["mail"].lower() in by_mail)
                                              or u["employeeId"] in by_id)]
    assert len(entra_only) == 32 and sum(1 for u in entra_only if u["mail"]) == 19

    differing = [m for m in shared if by_mail[m].get("Business_Title") != entra_mail[m]["jobTitle"]]
    assert len(differing) == 10
    for mail in differing:
        assert entra_mail[mail]["jobTitle"] is not None
        assert by_mail[mail]["Job_Profile"] == entra_mail[mail]["jobTitle"]

    # Manager_ID points at the Entra manager's worker, when there is one.
    for mail in shared:
        manager = directory.user_by_id(directory.manager_of.get(entra_mail[mail]["id"], ""))
        if manager is not None and manager["employeeId"] and manager["employeeId"] in by_id:
            assert by_mail[mail]["Manager_ID"] == manager["employeeId"]
    assert all(w["Manager_ID"] in by_id for w in workers if "Manager_ID" in w)


def test_worker_values_and_omitted_fields(directory, workers):
    entra_mail = {u["mail"].lower(): u for u in directory.users if u["mail"]}
    for worker in workers:
        assert list(worker) == [c for c in REPORT_COLUMNS if c in worker], "report column order"
        assert all(isinstance(v, str) and v != "" for v in worker.values()), "missing values are omitted"
        assert worker["Worker_Status"] in ("Active", "On Leave", "Terminated")
        assert worker["Worker_Type"] in ("Employee", "Contingent Worker")
        assert ("Termination_Date" in worker) is (worker["Worker_Status"] == "Terminated")
        user = entra_mail.get(worker.get("Email_Address", ""))
        if user is not None:  # a missing Entra value is a missing Workday column
            assert ("Business_Title" in worker) is (user["jobTitle"] is not None)
            assert ("Mobile_Phone" in worker) is (user["mobilePhone"] is not None)
            assert ("Cost_Center" in worker) is (user[directory.extension_property] is not None)
            assert worker.get("Cost_Center") == user[directory.extension_property]
            if not user["accountEnabled"]:
                assert worker["Worker_Status"] in ("Terminated", "On Leave")
    counts = Counter(w["Worker_Status"] for w in workers)
    assert counts == {"Active": 324, "Terminated": 24, "On Leave": 20}
    omitted = Counter(c for w in workers for c in REPORT_COLUMNS if c not in w)
    assert omitted["Email_Address"] == 11 and omitted["Manager_ID"] == 68 and omitted["Business_Title"] == 23

    # Dates carry a zone suffix; a handful of values are deliberately bad, each on one worker here.
    suffixes = Counter(w["Hire_Date"][10:] for w in workers if w["Hire_Date"] not in BAD_DATES)
    assert set(suffixes) == {"-08:00", "-07:00", "Z", "+01:00", "+02:00"}
    for worker in workers:
        for column in ("Hire_Date", "Termination_Date"):
            if column in worker and worker[column] not in BAD_DATES:
                date.fromisoformat(worker[column][:10])
        if "Termination_Date" in worker and worker["Hire_Date"] not in BAD_DATES:
            assert worker["Termination_Date"][:10] > worker["Hire_Date"][:10]
    bad = WorkerReport(directory, seed=SEED).bad_values()
    assert sorted(bad.values()) == sorted([("Hire_Date", d) for d in BAD_DATES]
                                          + [("Standard_Hours", n) for n in BAD_NUMBERS])
    by_id = {w["Employee_ID"]: w for w in workers}
    for employee_id, (column, value) in bad.items():
        assert by_id[employee_id][column] == value and by_id[employee_id].get("Email_Address") in entra_mail
    planted = [(w["Employee_ID"], c) for w in workers for c in ("Hire_Date", "Standard_Hours")
               if w[c] in BAD_DATES + BAD_NUMBERS]
    assert sorted(planted) == sorted((e, c) for e, (c, _) in bad.items())
    assert {w["Standard_Hours"] for w in workers} == {"40", "37.5", "20", *BAD_NUMBERS}


def test_synthetic_report_size_and_rules():
    report = WorkerReport(workers=1000, seed=2)
    entries = list(report)
    assert len(entries) == len(report) == 1000
    assert len({e["Employee_ID"] for e in entries}) == 1000
    assert sum(e["Employee_ID"].startswith("C") or e["Employee_ID"].startswith("E9") for e in entries) == 30
    assert len(report.bad_values()) == 4
    with pytest.raises(ValueError):
        WorkerReport(workers=10)
    with pytest.raises(ValueError):
        WorkerReport()


# ---------------------------------------------------------------------------
# Failure modes


def test_fault_500(session, emulator):
    emulator.faults.add(500, path="/ccx/service/customreport2/")
    response = _report(session, emulator)
    assert response.status_code == 500 and response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert response.json() == {"error": "Processing error occurred. The report could not be run."}
    assert _report(session, emulator).status_code == 200  # one shot
    emulator.faults.add(503, path="/ccx/", retry_after=7, body={"error": "Maintenance window"})
    busy = _report(session, emulator)
    assert (busy.status_code, busy.headers["Retry-After"], busy.json()) == (503, "7", {"error": "Maintenance window"})
    emulator.faults.add(500, path="/ccx/oauth2/")
    assert _token(session, emulator).status_code == 500


def test_truncated_body(session, emulator, workers):
    emulator.faults.truncate_body("/ccx/service/customreport2/")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _report(session, emulator)
    record = emulator.workday_request_log[-1]
    assert record.status == 200 and record.complete is False and record.body_bytes == 32 * 1024

    # Read by a streaming client: 200 and good chunks first, then the link drops.
    emulator.faults.truncate_body("/ccx/", after_bytes=100_000)
    received = bytearray()
    with _report(session, emulator, stream=True) as response:
        assert response.status_code == 200
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for chunk in response.iter_content(chunk_size=8192):
                received += chunk
    # urllib3 drops the part of its last read that came before the error.
    assert received.startswith(b'{"Report_Entry":[{') and 100_000 - 8192 <= len(received) <= 100_000
    assert emulator.workday_request_log[-1].body_bytes == 100_000

    # A body shorter than the cut point is cut at half; the next request is whole again.
    emulator.workday.entries = workers[:3]
    emulator.faults.truncate_body("/ccx/", after_bytes=10**9)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _report(session, emulator)
    assert emulator.workday_request_log[-1].body_bytes == len(json.dumps(
        {"Report_Entry": workers[:3]}, ensure_ascii=False, separators=(",", ":")).encode()) // 2
    assert _report(session, emulator).json() == {"Report_Entry": workers[:3]}


def test_report_without_report_entry(session, emulator):
    emulator.faults.rewrite("/ccx/service/customreport2/", lambda body: {"Report_Entry_Missing": []})
    response = _report(session, emulator)
    assert response.status_code == 200 and response.json() == {"Report_Entry_Missing": []}
    emulator.faults.rewrite("/ccx/service/customreport2/", lambda body: {})
    assert _report(session, emulator).json() == {}
    emulator.faults.rewrite("/ccx/service/customreport2/", lambda body: {"Report_Entry": body["Report_Entry"][:2]})
    assert len(_report(session, emulator).json()["Report_Entry"]) == 2
    assert len(_report(session, emulator).json()["Report_Entry"]) == 368


def test_html_page_by_rewrite_even_with_good_credentials(session, emulator):
    # A proxy or maintenance page in front of a correct sign-in: HTML with 200.
    emulator.faults.rewrite("/ccx/", lambda body: "<html><body>Workday is down for maintenance</body></html>",
                            content_type="text/html;charset=UTF-8")
    response = _report(session, emulator)
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/html;charset=UTF-8"
    assert "maintenance" in response.text


def test_without_workday_nothing_is_served(directory, tmp_path, session):
    with Emulator(directory, tenant_id=DEMO_TENANT_ID, client_id=DEMO_CLIENT_ID, client_secret="s",
                  cert_dir=tmp_path) as plain:
        assert plain.workday is None and plain.workday_report_url is None and plain.workday_token_url is None
        with requests.Session() as s:
            s.trust_env = False
            s.verify = plain.ca_path
            report = s.get(f"{plain.base_url}{TENANT.report_path}", params=JSON, auth=(TENANT.username, PASSWORD))
            token = s.post(f"{plain.base_url}{TENANT.token_path}", data={"grant_type": "refresh_token"})
        assert report.status_code == 400 and report.json()["error"]["message"].startswith("Invalid version: ccx")
        assert token.status_code == 404 and token.json()["error"] == "invalid_request"  # an identity-platform 404
        assert plain.workday_request_log == []


# ---------------------------------------------------------------------------
# A large report: streamed, never held


def _stream_to_devnull(session, emulator) -> tuple[int, int]:
    """(body bytes, entries) of the report, read in 256 KiB chunks and written to /dev/null."""
    size, entries, tail = 0, 0, b""
    with _report(session, emulator, stream=True) as response, open(os.devnull, "wb") as sink:
        assert response.status_code == 200
        for chunk in response.iter_content(chunk_size=256 * 1024):
            sink.write(chunk)
            size += len(chunk)
            window = tail + chunk  # an entry's start may straddle two chunks
            entries += window.count(b'{"Employee_ID":') - tail.count(b'{"Employee_ID":')
            tail = window[-32:]
    assert tail.endswith(b"}]}")
    return size, entries


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_large_report_streams_in_bounded_memory(session, emulator):
    """100k workers go out as one response while the process (emulator and client alike) grows by
    a few MB: its resident size is sampled every 2 ms while the report streams. (tracemalloc would
    be exact but makes 100k workers six times slower; the next test uses it on 20k.)"""
    emulator.workday.entries = report = WorkerReport(workers=100_000, seed=SEED)
    samples, done = [], threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            samples.append(_rss())

    baseline = _rss()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        size, entries = _stream_to_devnull(session, emulator)
    finally:
        done.set()
        sampler.join()
    elapsed = time.perf_counter() - started
    record = emulator.workday_request_log[-1]
    assert record.complete is True and record.body_bytes == size
    assert entries == len(report) == 100_000 and size > 50_000_000
    growth = max(samples) - baseline
    assert len(samples) > 100 and growth < size / 5, f"grew {growth / 1e6:.1f} MB serving {size / 1e6:.1f} MB"
    print(f"\n100k workers: {size / 1e6:.1f} MB in {elapsed:.1f} s; resident size grew {growth / 1e6:.1f} MB")


def test_report_serving_peak_allocation(session, emulator):
    """tracemalloc's peak while 20k workers stream (server threads and client): a few chunks."""
    emulator.workday.entries = WorkerReport(workers=20_000, seed=SEED)
    tracemalloc.start()
    try:
        size, entries = _stream_to_devnull(session, emulator)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert entries == 20_000 and size > 10_000_000
    assert peak < 4_000_000, f"peak {peak / 1e6:.1f} MB"
    print(f"\n20k workers: {size / 1e6:.1f} MB, peak traced allocation {peak / 1e6:.2f} MB")


# ---------------------------------------------------------------------------
# CLI


def test_cli_serves_workday_with_secrets_from_the_environment(tmp_path):
    env = dict(os.environ, **{WORKDAY_PASSWORD_ENV: "cli-isu-Pw9", WORKDAY_CLIENT_SECRET_ENV: "cli-wd-secret",
                              WORKDAY_REFRESH_TOKEN_ENV: "cli-wd-refresh"})
    state_dir = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "entra_pipeline.emulator", "serve", "--users", "40",
                             "--groups", "18", "--seed", "3", "--state-dir", str(state_dir), "--idle-timeout", "60",
                             "--workday-owner", "hr_admin"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (state_dir / "state.json").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "state.json did not appear"
            time.sleep(0.05)
        state = json.loads((state_dir / "state.json").read_text())
        assert state["workday_url"] == state["base_url"]
        assert (state["workday_tenant"], state["workday_owner"], state["workday_report"]) == (
            "contoso_demo", "hr_admin", "Contacts_Sync")
        assert state["workday_report_url"] == f"{state['base_url']}/ccx/service/customreport2/contoso_demo/" \
                                              "hr_admin/Contacts_Sync"
        assert state["workday_token_url"] == f"{state['base_url']}/ccx/oauth2/contoso_demo/token"
        assert (state["workday_password_env"], state["workday_client_secret_env"],
                state["workday_refresh_token_env"]) == (WORKDAY_PASSWORD_ENV, WORKDAY_CLIENT_SECRET_ENV,
                                                        WORKDAY_REFRESH_TOKEN_ENV)
        assert state["workday_username"] == "ISU_Contacts" and state["workday_client_id"] == TENANT.client_id
        expected = generate_workers(generate_directory(users=40, groups=18, seed=3), seed=3)
        assert state["workday_workers"] == len(expected)
        with requests.Session() as s:
            s.trust_env = False
            s.verify = state["ca_path"]
            basic = s.get(state["workday_report_url"], params=JSON, auth=("ISU_Contacts", "cli-isu-Pw9"))
            assert basic.json() == {"Report_Entry": expected}
            token = s.post(state["workday_token_url"], auth=(state["workday_client_id"], "cli-wd-secret"),
                           data={"grant_type": "refresh_token", "refresh_token": "cli-wd-refresh"})
            assert token.status_code == 200
            demo_password = s.get(state["workday_report_url"], params=JSON, auth=("ISU_Contacts", TENANT.password))
            assert demo_password.headers["Content-Type"].startswith("text/html")
        proc.terminate()
        stdout, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert state["workday_report_url"] in stdout and WORKDAY_PASSWORD_ENV in stdout
    assert not any(secret in stdout for secret in ("cli-isu-Pw9", "cli-wd-secret", "cli-wd-refresh"))


def test_cli_without_workday(tmp_path):
    state_dir = tmp_path / "plain"
    proc = subprocess.Popen([sys.executable, "-m", "entra_pipeline.emulator", "serve", "--users", "40",
                             "--groups", "18", "--state-dir", str(state_dir), "--idle-timeout", "1", "--no-workday"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (state_dir / "state.json").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "state.json did not appear"
            time.sleep(0.05)
        state = json.loads((state_dir / "state.json").read_text())
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert not [key for key in state if key.startswith("workday")]
    assert "Workday         not served" in stdout
