"""The Workday face: Reports-as-a-Service (a custom report as JSON, streamed) and the tenant's
OAuth refresh-token grant, with Workday's sign-in page for a failed Basic sign-in."""

from __future__ import annotations

import base64
import hmac
import re
import secrets
import threading
import time
from typing import Callable
from urllib.parse import parse_qsl, unquote

from ..faults import Fault
from ..workday import WorkdayError, WorkdayRequest, WorkdayTenant, login_page, report_chunks
from ..transport import WORKDAY_JSON_CONTENT_TYPE, Request, Response, common_headers, json_body

FAULT_MESSAGES = {
    400: "Invalid request.",
    401: "Unauthorized.",
    403: "The task submitted is not authorized.",
    404: "Not found.",
    429: "Too many requests. Please try again later.",
    500: "Processing error occurred. The report could not be run.",
    502: "Bad gateway.",
    503: "Service Unavailable.",
    504: "Gateway timeout: the report took too long to run.",
}


def basic_credentials(credential: str) -> tuple[str | None, str | None]:
    """(user, password) of an HTTP Basic credential, (None, None) if it is not one."""
    try:
        user, sep, password = base64.b64decode(credential, validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return (user, password) if sep else (None, None)


class WorkdayFace:
    """Answers ``/ccx/`` for ``emulator.workday`` and keeps the access tokens it issued."""

    def __init__(self, emulator) -> None:
        self.emulator = emulator
        self.tokens: dict[str, float] = {}  # Workday access token -> monotonic expiry
        self.lock = threading.Lock()

    def expire_tokens(self) -> None:
        """Every access token issued so far expires (``Emulator.expire_workday_tokens``)."""
        with self.lock:
            for token in self.tokens:
                self.tokens[token] = 0.0

    _WD_REPORT_RE = re.compile(r"^/ccx/service/customreport2/([^/]+)/([^/]+)/([^/]+)$")
    _WD_TOKEN_RE = re.compile(r"^/ccx/oauth2/([^/]+)/token$")

    def sent(self, record: WorkdayRequest) -> Callable[[int, bool], None]:
        """What the transport calls before its last write: how much of the body went out."""
        def sent(body_bytes: int, complete: bool) -> None:
            with self.emulator.state_lock:
                record.body_bytes, record.complete = body_bytes, complete
        return sent

    def _json_answer(self, request: Request, status: int, payload: dict,
                     extra: list[tuple[str, str]] = ()) -> Response:
        headers = common_headers(request, WORKDAY_JSON_CONTENT_TYPE) + list(extra)
        return Response(status, json_body(payload), headers)

    def error(self, request: Request, status: int, message: str,
              extra: list[tuple[str, str]] = ()) -> Response:
        # RaaS errors as the emulator's choice of Workday's shape: one "error" message (the emulator README).
        return self._json_answer(request, status, {"error": message}, extra)

    def fault(self, request: Request, fault: Fault) -> Response:
        """A scripted fault's status in Workday's shape (or the fault's own body)."""
        extra = [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
        if fault.body is not None:
            return self._json_answer(request, fault.status, fault.body, extra)
        message = FAULT_MESSAGES.get(fault.status, f"HTTP {fault.status}.")
        return self.error(request, fault.status, message, extra)

    def answer(self, request: Request) -> Response:
        """Answer a request below ``/ccx/``: the report or the token endpoint."""
        tenant = self.emulator.workday
        assert tenant is not None
        query = parse_qsl(request.query, keep_blank_values=True)
        request.workday["prompts"] = {name: value for name, value in query if name != "format"}
        try:
            match = self._WD_TOKEN_RE.match(request.path)
            if match:
                return self._token(request, tenant, unquote(match.group(1)))
            match = self._WD_REPORT_RE.match(request.path)
            if match is None:
                raise WorkdayError(404, f"No Workday web service at '{request.path}' on the demo-tenant emulator.")
            name, owner, report = (unquote(part) for part in match.groups())
            if name != tenant.tenant:
                raise WorkdayError(503, f"Service Unavailable: invalid tenant name '{name}'.")
            if request.method != "GET":
                raise WorkdayError(405, "Reports as a Service answer GET requests only.")
            refused = self._authenticate(request, tenant)
            if refused is not None:
                return refused
            if owner != tenant.owner or report != tenant.report:
                raise WorkdayError(404, f"The report '{owner}/{report}' does not exist in tenant '{name}' "
                                        "or is not enabled as a web service.")
            formats = [value for key, value in query if key == "format"]
            if formats != ["json"]:
                given = "none" if not formats else ", ".join(repr(f) for f in formats)
                raise WorkdayError(400, f"Invalid format ({given}): the demo-tenant emulator serves "
                                        "format=json only.")
            prompts = tenant.parse_prompts(query)
            headers = common_headers(request, WORKDAY_JSON_CONTENT_TYPE)
            return Response(200, b"", headers, stream=report_chunks(tenant.select(prompts)))
        except WorkdayError as exc:
            return self.error(request, exc.status, exc.message)

    def _authenticate(self, request: Request, tenant: WorkdayTenant) -> Response | None:
        """None if the request signed in (recorded in ``request.workday["auth"]``), else the answer."""
        header = (request.headers.get("Authorization") or "").strip()
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() == "bearer":
            with self.lock:
                expiry = self.tokens.get(credential)
            if expiry is None or time.monotonic() >= expiry:
                problem = "is unknown" if expiry is None else "has expired"
                message = f"The access token {problem}."
                challenge = [("WWW-Authenticate", f'Bearer realm="Workday", error="invalid_token", '
                                                  f'error_description="{message}"')]
                return self._json_answer(request, 401, {"error": "invalid_token", "error_description": message},
                                         challenge)
            request.workday["auth"] = "bearer"
            return None
        if scheme.lower() == "basic":
            user, password = basic_credentials(credential)
            if user is not None and tenant.accepts_username(user) \
                    and hmac.compare_digest(password.encode(), tenant.password.encode()):
                request.workday["auth"] = "basic"
                return None
        # Like Workday's front door: its sign-in page (HTML), not a JSON error (the emulator README).
        headers = common_headers(request, "text/html;charset=UTF-8")
        return Response(tenant.login_page_status, login_page(tenant.tenant, failed=bool(header)), headers)

    def _token(self, request: Request, tenant: WorkdayTenant, name: str) -> Response:
        """``POST /ccx/oauth2/{tenant}/token``: the refresh-token grant of an API client."""
        def oauth_error(status: int, error: str, description: str, extra=()) -> Response:
            return self._json_answer(request, status, {"error": error, "error_description": description}, extra)

        if name != tenant.tenant:
            return self.error(request, 503, f"Service Unavailable: invalid tenant name '{name}'.")
        if request.method != "POST":
            return oauth_error(405, "invalid_request", "The token endpoint accepts POST requests only.")
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, credential = (request.headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() == "basic":
            client_id, client_secret = basic_credentials(credential.strip())
        if not client_id or client_secret is None or client_id != tenant.client_id \
                or not hmac.compare_digest(client_secret.encode(), tenant.client_secret.encode()):
            return oauth_error(401, "invalid_client", "Invalid client id or client secret.",
                               [("WWW-Authenticate", 'Basic realm="Workday"')])
        request.workday["auth"] = "client"
        if form.get("grant_type") != "refresh_token":
            return oauth_error(400, "unsupported_grant_type",
                               f"Unsupported grant type '{form.get('grant_type', '')}': use refresh_token.")
        refresh = form.get("refresh_token") or ""
        if not refresh or not hmac.compare_digest(refresh.encode(), tenant.refresh_token.encode()):
            return oauth_error(400, "invalid_grant", "Invalid refresh token.")
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self.lock:
            for stale in [t for t, expiry in self.tokens.items() if expiry < now - 3600]:
                del self.tokens[stale]
            self.tokens[token] = now + tenant.access_token_ttl
            self.emulator.identity.record_issued(token)
        # Workday's refresh tokens for integrations do not rotate: the same one comes back.
        payload = {"access_token": token, "token_type": "Bearer", "expires_in": tenant.access_token_ttl,
                   "refresh_token": tenant.refresh_token}
        return self._json_answer(request, 200, payload, [("Pragma", "no-cache")])
