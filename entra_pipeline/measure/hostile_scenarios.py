"""The hostile answers of ``make reliability``'s hostile-network series: the integrations it
syncs, a foreign host that records whatever reaches it, and each scenario's hostile answer and
the outcome it must have. The runs and the report are in :mod:`entra_pipeline.measure.hostile`."""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import trustme

from entra_pipeline.measure.reliability import TENANT_ID

# The integrations of the series: Entra ID read by delta queries and by lists ($batch), Workday
# signed in with a password and with a refresh token.
ENTRA, LISTED, HR, HR_OAUTH = "hostile", "hostile_list", "hostile_hr", "hostile_hr_oauth"
KEYS = (ENTRA, LISTED, HR, HR_OAUTH)
WORKDAY_PASSWORD_ENV = "ENTRA_RELIABILITY_WORKDAY_PASSWORD"
WORKDAY_SECRET_ENV = "ENTRA_RELIABILITY_WORKDAY_CLIENT_SECRET"
WORKDAY_REFRESH_ENV = "ENTRA_RELIABILITY_WORKDAY_REFRESH_TOKEN"
WORKDAY_SECRETS = {WORKDAY_PASSWORD_ENV: "reliability-isu-password", WORKDAY_SECRET_ENV: "reliability-wd-secret",
                   WORKDAY_REFRESH_ENV: "reliability-wd-refresh-token"}

USERS_DELTA, GROUPS_DELTA, BATCH = "/v1.0/users/delta", "/v1.0/groups/delta", "/v1.0/$batch"
TOKEN_PATH = f"/{TENANT_ID}/oauth2/v2.0/token"
DISCOVERY_PATH = f"/{TENANT_ID}/v2.0/.well-known/openid-configuration"
REPORT = "/ccx/service/customreport2/"
WORKDAY_TOKEN = "/ccx/oauth2/"
DEEP = "[" * 200_000 + "]" * 200_000


# -- another host that records everything ----------------------------------------------------------------

class Foreign:
    """A server on another origin (127.0.0.2 where the system routes it, else 127.0.0.1 on another
    port) that counts every connection, records every request it reads, and answers anything with
    200 and a body that would pass for a token, a delta page and a Workday report."""

    def __init__(self, ca: trustme.CA | None) -> None:
        self.connections = 0
        self.requests: list[str] = []
        lock = threading.Lock()
        outer = self
        context = None
        if ca is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1", "127.0.0.2").configure_cert(context)

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                if context is not None:
                    # Handshake here, in the connection's thread: a client refusing our certificate
                    # still counts as a connection, and never blocks the accepting thread.
                    self.request = context.wrap_socket(self.request, server_side=True)
                super().setup()

            def _any(self) -> None:
                body = self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1 << 20))
                with lock:
                    outer.requests.append(f"{self.command} {self.path}\n{self.headers}\n"
                                          f"{body.decode('utf-8', 'replace')}")
                answer = json.dumps({
                    "token_type": "Bearer", "expires_in": 3599, "access_token": "foreign-token",
                    "value": [{"id": "66666666-0000-4000-8000-000000000666", "mail": "injected@evil.example",
                               "displayName": "Injected"}],
                    "@odata.deltaLink": f"{outer.origin}/v1.0/users/delta?$deltatoken=foreign",
                    "Report_Entry": [{"Employee_ID": "666", "Email_Address": "injected@evil.example"}],
                    "responses": [],
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request, client_address) -> bool:
                with lock:
                    outer.connections += 1
                return True

            def handle_error(self, request, client_address) -> None:
                pass  # a refused handshake or a dropped connection: counted already

        try:
            self.server = Server(("127.0.0.2", 0), Handler)
        except OSError:  # no 127.0.0.2 on this system (macOS): another port of 127.0.0.1
            self.server = Server(("127.0.0.1", 0), Handler)
        host, port = self.server.server_address[:2]
        self.scheme = "https" if ca is not None else "http"
        self.origin = f"{self.scheme}://{host}:{port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def reset(self) -> None:
        self.connections = 0
        self.requests.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- scenarios -------------------------------------------------------------------------------------------

@dataclass
class Context:
    emulator: object
    http: Foreign
    https: Foreign
    #: The user whose displayName the value scenarios replace, and their original name.
    planted_user: str = ""
    planted_original: str = ""


@dataclass
class Scenario:
    name: str
    key: str
    #: Arms the hostile answer; returns the fault when the scenario checks how often it fired.
    arm: Callable[[Context], object]
    #: "fails": these steps fail, nothing of them is written; "succeeds": the run succeeds.
    outcome: str
    steps: tuple[str, ...] = ()
    #: What the user's line must contain (``{http}`` / ``{https}``: that foreign origin).
    says: str = ""
    #: The planted value (value scenarios): the run must add exactly one import error for it.
    value: str | None = None


def plant(ctx: Context, value: object) -> Callable[[object], object]:
    """A rewrite of users delta pages giving the planted user's displayName ``value``, sent as JSON
    with non-ASCII escaped: a lone surrogate travels as the valid escape \\ud800, a NUL as \\u0000."""
    def transform(body):
        for item in body.get("value", []):
            if item.get("id") == ctx.planted_user:
                item["displayName"] = value
        return json.dumps(body)
    return transform


def _pages(links: list[str]) -> Callable[[object], object]:
    """Each page empty, its nextLink the next of ``links`` in a cycle."""
    state = {"n": 0}

    def transform(body):
        link = links[state["n"] % len(links)]
        state["n"] += 1
        return {"value": [], "@odata.nextLink": link}
    return transform


def _foreign_discovery(ctx: Context):
    elsewhere = {"token_endpoint": f"{ctx.https.origin}{TOKEN_PATH}",
                 "device_authorization_endpoint": f"{ctx.https.origin}/{TENANT_ID}/oauth2/v2.0/devicecode"}
    return ctx.emulator.faults.rewrite(DISCOVERY_PATH, lambda body: {**body, **elsewhere}, times=None, identity=True)


def _loop(ctx: Context, cycle: int):
    links = [f"{ctx.emulator.graph_url}/users/delta?$skiptoken=loop{n}" for n in range(cycle)]
    # Bounded, so that a client without the loop check still ends (on the emulator's 400 for the
    # made-up token) instead of running on.
    return ctx.emulator.faults.rewrite(USERS_DELTA, _pages(links), times=40, status=200)


GRAPH_STEPS = ("raw_graph_users", "raw_graph_groups")
SCENARIOS = [
    Scenario("token endpoint 307 to plain http", ENTRA,
             lambda c: c.emulator.faults.redirect(TOKEN_PATH, f"{c.http.origin}{TOKEN_PATH}", status=307, times=None,
                                                  method="POST"),
             "fails", GRAPH_STEPS, "redirected to {http}: refused"),
    Scenario("token endpoint 307 to https on another host", ENTRA,
             lambda c: c.emulator.faults.redirect(TOKEN_PATH, f"{c.https.origin}{TOKEN_PATH}", status=307, times=None,
                                                  method="POST"),
             "fails", GRAPH_STEPS, "redirected to {https}: refused"),
    Scenario("openid-configuration naming a foreign token_endpoint", ENTRA, _foreign_discovery,
             "fails", GRAPH_STEPS, "names token_endpoint on {https}"),
    Scenario("users delta 302 to another host", ENTRA,
             lambda c: c.emulator.faults.redirect(USERS_DELTA, f"{c.https.origin}{USERS_DELTA}?$deltatoken=foreign",
                                                  status=302, times=None, method="GET"),
             "fails", ("raw_graph_users",), "redirected to {https}: refused"),
    Scenario("groups delta 307 to plain http", ENTRA,
             lambda c: c.emulator.faults.redirect(GROUPS_DELTA, f"{c.http.origin}{GROUPS_DELTA}?$deltatoken=foreign",
                                                  status=307, times=None, method="GET"),
             "fails", ("raw_graph_groups",), "redirected to {http}: refused"),
    Scenario("$batch 307 to another host (list read)", LISTED,
             lambda c: c.emulator.faults.redirect(BATCH, f"{c.https.origin}{BATCH}", status=307, times=None,
                                                  method="POST"),
             "fails", ("raw_graph_groups",), "redirected to {https}: refused"),
    Scenario("nextLink pointing to its own page", ENTRA, lambda c: _loop(c, 1),
             "fails", ("raw_graph_users",), "nextLink loop"),
    Scenario("nextLink cycle of 3 pages", ENTRA, lambda c: _loop(c, 3),
             "fails", ("raw_graph_users",), "nextLink loop"),
    Scenario("users delta answer nested 200,000 deep", ENTRA,
             lambda c: c.emulator.faults.rewrite(USERS_DELTA, lambda body: DEEP, times=None),
             "fails", ("raw_graph_users",), "GET /v1.0/users/delta: response is not JSON"),
    Scenario("Workday report 302 to another host", HR,
             lambda c: c.emulator.faults.redirect(REPORT, f"{c.https.origin}{REPORT}x", status=302, times=None),
             "fails", ("raw_workday_workers",), "redirected to {https}: refused"),
    Scenario("Workday token endpoint 307 to plain http", HR_OAUTH,
             lambda c: c.emulator.faults.redirect(WORKDAY_TOKEN, f"{c.http.origin}{WORKDAY_TOKEN}x/token", status=307,
                                                  times=None),
             "fails", ("raw_workday_workers",), "redirected to {http}: refused"),
    Scenario("503 with Retry-After: -5", ENTRA,
             lambda c: c.emulator.faults.add(503, path=USERS_DELTA, times=1, retry_after=-5), "succeeds"),
    Scenario("a 20 MB displayName", ENTRA, lambda c: c.emulator.faults.rewrite(
        USERS_DELTA, plant(c, "A" * (20 * 1024 * 1024)), times=None), "succeeds", value="value_too_long"),
    Scenario("a lone surrogate in a displayName", ENTRA, lambda c: c.emulator.faults.rewrite(
        USERS_DELTA, plant(c, "Ann \ud800 Lee"), times=None), "succeeds", value="invalid_text"),
    Scenario("a NUL in a displayName", ENTRA, lambda c: c.emulator.faults.rewrite(
        USERS_DELTA, plant(c, "Ann \x00 Lee"), times=None), "succeeds", value="invalid_text"),
]
