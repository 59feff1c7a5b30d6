"""The test tenant: its identifiers and secrets, the emulator that serves it, and an HTTPS session to it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from entra_pipeline.emulator import Directory, Emulator

TENANT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
SECRET_ENV = "ENTRA_TEST_CLIENT_SECRET"
# Recognisable, so tests can prove it never leaks into errors or the warehouse.
SECRET = "s3cr3t-VALUE-that-must-never-leak"

# 2,800 users: three pages of 999, and an "All Employees" group of more than 2,500 members.
USERS, GROUPS, SEED = 2800, 60, 11

# A Workday tenant in front of a small directory: the same people, as the demo's Workday report has them.
WORKDAY_SEED = 5
WORKDAY_PASSWORD = "isu-PASSWORD-never-shown"
WORKDAY_CLIENT_SECRET, WORKDAY_REFRESH_TOKEN = "client-SECRET-never-shown", "refresh-TOKEN-never-shown"


#: What an app asks Graph's token endpoint for (client credentials): every permission granted to it.
GRAPH_DEFAULT_SCOPE = "https://graph.microsoft.com/.default"


def token_response(session: requests.Session, emulator: Emulator, secret: str, **kwargs) -> requests.Response:
    """The emulator's answer to a client-credentials token request of its own app (``kwargs`` go to
    the request, e.g. ``allow_redirects``)."""
    return session.post(f"{emulator.authority}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": emulator.client_id, "client_secret": secret,
        "scope": GRAPH_DEFAULT_SCOPE}, **kwargs)


def app_token(session: requests.Session, emulator: Emulator, secret: str) -> str:
    """An access token of the emulator's app (the request must succeed)."""
    response = token_response(session, emulator, secret)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def bearer(session: requests.Session, emulator: Emulator, secret: str) -> dict[str, str]:
    """The Authorization header of a request with an app token."""
    return {"Authorization": f"Bearer {app_token(session, emulator, secret)}"}


@contextmanager
def running_emulator(directory: Directory, cert_dir: Path, *, tenant_id: str = TENANT_ID, client_id: str = CLIENT_ID,
                     client_secret: str = SECRET, **options) -> Iterator[Emulator]:
    """The emulator serving ``directory`` over HTTPS (its CA in ``cert_dir``) as the test tenant unless the
    identifiers say otherwise, stopped when the block ends; ``options`` go to the Emulator (a Workday tenant, ...)."""
    with Emulator(directory, tenant_id=tenant_id, client_id=client_id, client_secret=client_secret,
                  cert_dir=cert_dir, **options) as server:
        yield server


@contextmanager
def https_session(ca_path: str | Path) -> Iterator[requests.Session]:
    """A session trusting only an emulator's CA (its ``ca_path``), ignoring the environment's CA bundle and proxies."""
    with requests.Session() as session:
        session.trust_env = False
        session.verify = str(ca_path)
        yield session
