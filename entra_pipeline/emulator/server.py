"""The demo tenant's server: one HTTPS endpoint that is at once the Microsoft identity platform,
Microsoft Graph v1.0 and a Workday tenant. What it answers, and how, is specified in
``README.md`` beside this module; each service is a face under ``faces/``, and this facade
starts and stops the server, routes each request to its face and applies injected faults."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import unquote

from .changes import ChangeTracker
from .directory import Directory
from .faces.batch import BatchFace
from .faces.control import ControlAPI
from .faces.delta import (
    DELTA_MEMBERS_PER_PAGE,
    DELTA_PAGE_SIZE,
    DELTA_ROUNDS_KEPT,
    DELTA_TOKEN_LIFETIME,
    DeltaFace,
)
from .faces.device_login import device_login
from .faces.graph import EXPAND_PAGE_LIMIT, GraphFace
from .faces.identity import PATH_RE as IDENTITY_PATH_RE
from .faces.identity import IdentityFace
from .faces.responses import GraphError, graph_error
from .faces.workday import WorkdayFace
from .faults import REDIRECT, REWRITE, STATUS, TRUNCATE_BODY, Fault, FaultInjector, profile_fault
from .identity import (
    DEFAULT_DELEGATED_PERMISSIONS,
    DEVICE_CODE_INTERVAL,
    DEVICE_CODE_TTL,
    REFRESH_TOKEN_TTL,
    IdentityError,
)
from .transport import (
    GRAPH_CONTENT_TYPE,
    IDENTITY_CONTENT_TYPE,
    WORKDAY_JSON_CONTENT_TYPE,
    Handler,
    Request,
    Response,
    TLSServer,
    common_headers,
    json_body,
    new_cert_dir,
    tls_context,
)
from .workday import WorkdayRequest, WorkdayTenant

__all__ = ["Emulator"]

log = logging.getLogger(__name__)

FAULT_CODES = {
    400: ("BadRequest", "Bad request."),
    401: ("InvalidAuthenticationToken", "Access token validation failure."),
    403: ("Authorization_RequestDenied", "Insufficient privileges to complete the operation."),
    404: ("Request_ResourceNotFound", "Resource does not exist."),
    409: ("Conflict", "Conflict."),
    429: ("TooManyRequests", "Too many requests."),
    500: ("UnknownError", "An internal server error occurred."),
    502: ("BadGateway", "Bad gateway."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable. Please retry later."),
    504: ("GatewayTimeout", "The operation timed out."),
}


class Emulator(ControlAPI):
    """The demo tenant: Microsoft identity platform + Graph v1.0 (+ Workday) over real HTTPS.

    ``start()`` returns once the port is bound; requests are served on
    background daemon threads. Change what Graph returns with the change API
    (``add_user`` ..., tracked by delta queries), or replace :attr:`directory`
    or mutate it and call :meth:`reindex` (both expire every delta token).
    """

    def __init__(
        self,
        directory: Directory,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
        cert_dir: str | Path | None = None,
        token_ttl: int = 3599,
        token_reported_ttl: int | None = None,
        idle_timeout: float | None = None,
        workday: WorkdayTenant | None = None,
    ) -> None:
        self.tenant_id = tenant_id.lower()
        self.client_id = client_id.lower()
        self.host = host
        self._requested_port = port
        self._cert_dir = Path(cert_dir) if cert_dir is not None else None
        self._owns_cert_dir = False
        #: Seconds an access token is honoured after it was issued.
        self.token_ttl = int(token_ttl)
        #: ``expires_in`` told to the client; None: ``token_ttl``. Larger than ``token_ttl``, the
        #: client caches a token the server rejects later (401 InvalidAuthenticationToken, expired).
        self.token_reported_ttl: int | None = None if token_reported_ttl is None else int(token_reported_ttl)
        self.idle_timeout = idle_timeout
        self.faults = FaultInjector()
        #: Page-size cap for ``/users?$expand=manager`` (None: honour ``$top`` up to 999).
        self.expand_page_limit: int | None = EXPAND_PAGE_LIMIT
        #: Shuffle the sub-responses of a ``$batch`` (Graph may answer them in any order).
        self.shuffle_batch_responses = True
        #: HTTP requests served, a ``$batch`` counting once; (method, target, status) of each.
        self.request_log: list[tuple[str, str, int]] = []
        self.request_count = 0
        #: Sub-requests answered inside ``$batch`` requests; (method, /v1.0 target, status) of each.
        self.batched_request_log: list[tuple[str, str, int]] = []
        self.batched_request_count = 0
        self.connection_count = 0  # TLS connections accepted (keep-alive reuse shows here)
        #: Objects per delta page (Graph does not document its size).
        self.delta_page_size = DELTA_PAGE_SIZE
        #: ``members@delta`` entries per groups delta page; a larger group continues on the next page.
        self.delta_members_per_page = DELTA_MEMBERS_PER_PAGE
        #: Seconds a delta token (deltaLink or skiptoken) stays valid after it was issued.
        self.delta_token_lifetime: float = DELTA_TOKEN_LIFETIME
        #: Status for an expired delta token: 410 (resyncRequired + Location) or 400 (syncStateNotFound).
        self.delta_expiry_status = 410
        #: Delta rounds kept server-side (LRU); a skiptoken of an evicted round is 400 syncStateNotFound.
        self.delta_rounds_kept = DELTA_ROUNDS_KEPT
        #: The app allows public client flows: device code and refresh without a client credential.
        self.allow_public_client = True
        #: Seconds a device code can be redeemed (``expires_in`` of ``/devicecode``).
        self.device_code_ttl: float = DEVICE_CODE_TTL
        #: ``interval`` of ``/devicecode``: MSAL sleeps this many whole seconds between polls (0: none).
        self.device_code_interval: int = DEVICE_CODE_INTERVAL
        #: Seconds a refresh token stays usable; each refresh issues a new one with a fresh lifetime.
        self.refresh_token_ttl: float = REFRESH_TOKEN_TTL
        #: Admin-consented delegated Graph permissions: what ``{graph}/.default`` grants a user.
        self.delegated_permissions: tuple[str, ...] = DEFAULT_DELEGATED_PERMISSIONS
        #: The Workday tenant served under ``/ccx/`` (None: no Workday endpoints).
        self.workday: WorkdayTenant | None = workday
        #: Every request to the Workday endpoints (also in ``request_log``), in arrival order.
        self.workday_request_log: list[WorkdayRequest] = []

        #: Guards the directory reference, its generation and the request counters.
        self.state_lock = threading.Lock()
        #: Serialises the change API, delta rounds and directory replacement (taken before state_lock).
        self.change_lock = threading.RLock()
        self._directory = directory
        #: Bumped by every change: collections recompute their cached id lists.
        self.generation = 1
        #: The change log delta queries read (it owns the directory's changes).
        self.tracker = ChangeTracker(directory)
        self.identity = IdentityFace(self, client_secret)
        self.graph = GraphFace(self)
        self.batch = BatchFace(self)
        self.delta = DeltaFace(self)
        self.workday_face = WorkdayFace(self)
        self._last_activity = time.monotonic()

        self._server: TLSServer | None = None
        self._threads: list[threading.Thread] = []
        self._lifecycle_lock = threading.Lock()
        self._stopping = False
        self._stopped = threading.Event()
        self.port: int | None = None
        self.base_url: str | None = None
        self.authority: str | None = None
        self.ca_path: str | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> "Emulator":
        with self._lifecycle_lock:
            if self._server is not None:
                raise RuntimeError("emulator already started")
            if self._cert_dir is None:
                self._cert_dir = new_cert_dir()
                self._owns_cert_dir = True
            self._cert_dir.mkdir(parents=True, exist_ok=True)
            context, public_host, ca_path = tls_context(self._cert_dir, self.host)
            self._server = TLSServer((self.host, self._requested_port), Handler, context, self)
            self.port = self._server.server_address[1]
            url_host = f"[{public_host}]" if ":" in public_host else public_host
            self.base_url = f"https://{url_host}:{self.port}"
            self.authority = f"{self.base_url}/{self.tenant_id}"
            self.ca_path = ca_path
            self._last_activity = time.monotonic()
            serve = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                     name=f"entra-emulator:{self.port}", daemon=True)
            serve.start()
            self._threads.append(serve)
            if self.idle_timeout is not None:
                watch = threading.Thread(target=self._watch_idle, name="entra-emulator-idle", daemon=True)
                watch.start()
                self._threads.append(watch)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and remove a temporary cert dir. Idempotent."""
        with self._lifecycle_lock:
            if self._server is None:
                return
            if self._stopping:
                first = False
            else:
                self._stopping = first = True
        if not first:
            self._stopped.wait()
            return
        try:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            if self._owns_cert_dir and self._cert_dir is not None:
                shutil.rmtree(self._cert_dir, ignore_errors=True)
        finally:
            self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the emulator stopped (e.g. idle timeout); True if it did."""
        return self._stopped.wait(timeout)

    @property
    def running(self) -> bool:
        return self._server is not None and not self._stopped.is_set()

    def __enter__(self) -> "Emulator":
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _watch_idle(self) -> None:
        assert self.idle_timeout is not None
        step = max(0.05, min(1.0, self.idle_timeout / 4))
        while not self._stopped.wait(step):
            if time.monotonic() - self._last_activity >= self.idle_timeout:
                self.stop()
                return

    # -- dispatch -------------------------------------------------------------

    def dispatch(self, method: str, target: str, headers, body: bytes) -> Response:
        """Answer one request: scripted and profile faults first, then the face its path names."""
        self._last_activity = time.monotonic()
        path, _, query = target.partition("?")
        client_request_id = headers.get("client-request-id") or str(uuid.uuid4())
        request = Request(method.upper(), target, path, query, headers, body,
                          str(uuid.uuid4()), client_request_id)
        # /ccx/oauth2/... would look like an identity path: Workday is routed first, when served.
        workday = self.workday is not None and (path == "/ccx" or path.startswith("/ccx/"))
        identity = not workday and IDENTITY_PATH_RE.match(path) is not None
        try:
            # One profile draw per Graph request, taken even when a scripted fault wins.
            drawn = self.faults.draw() if not identity and path.startswith("/v1.0/") else None
            fault = self.faults.take(STATUS, request.method, path)
            redirect = None if fault is not None else self.faults.take(REDIRECT, request.method, path)
            if fault is not None:
                drawn = None
                response = (self.workday_face.fault(request, fault) if workday
                            else self.fault_response(request, fault, identity))
            elif redirect is not None:
                drawn = None
                response = self._redirect_response(request, redirect, identity, workday)
            elif workday:
                response = self.workday_face.answer(request)
            elif drawn is not None and drawn.status:
                response = self.fault_response(request, profile_fault(drawn), False)
            elif identity:
                response = self.identity.answer(request)
            elif path == "/devicelogin":
                response = device_login(self.identity, request)
            elif path == "/v1.0" or path.startswith("/v1.0/"):
                response = self.graph.answer(request)
            else:
                version = unquote(path.split("/")[1]) if path.count("/") else path
                response = graph_error(request, GraphError(
                    400, "BadRequest", f"Invalid version: {version}. The demo-tenant emulator serves v1.0 only."))
        except Exception:
            log.exception("emulator: internal error on %s %s", method, target)
            drawn = None
            response = (self.workday_face.error(request, 500, "Internal emulator error.") if workday else
                        graph_error(request, GraphError(500, "UnknownError", "Internal emulator error.")))
        rewrite = self.faults.take(REWRITE, request.method, path, identity=identity)
        if rewrite is not None:
            response.materialize()
            self._rewrite(response, rewrite)
        truncate = None if identity else self.faults.take(TRUNCATE_BODY, request.method, path)
        if truncate is not None:
            response.drop, response.drop_after = True, truncate.after_bytes
        if drawn is not None:
            self.faults.record(drawn)
            if drawn.kind == "drop":
                response.drop = True
            elif drawn.kind == "malformed":
                response.body = response.body[: len(response.body) // 2]
            elif drawn.kind == "slow":
                time.sleep(drawn.seconds)
        with self.state_lock:
            self.request_count += 1
            self.request_log.append((request.method, target, response.status))
            if workday:
                record = WorkdayRequest(request.method, path, request.workday.get("prompts", {}),
                                        request.workday.get("auth"), response.status)
                self.workday_request_log.append(record)
                response.on_sent = self.workday_face.sent(record)
        self._last_activity = time.monotonic()
        return response

    @staticmethod
    def _rewrite(response: Response, fault: Fault) -> None:
        """A scripted "rewrite" fault: the answer's body through the test's function."""
        try:
            parsed = json.loads(response.body)
        except ValueError:
            parsed = None
        body = fault.transform(parsed)
        response.body = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json_body(body)
        if fault.status:
            response.status = fault.status
        if fault.content_type:
            response.headers = [(k, v) for k, v in response.headers if k.lower() != "content-type"]
            response.headers.append(("Content-Type", fault.content_type))

    def _redirect_response(self, request: Request, fault: Fault, identity: bool, workday: bool) -> Response:
        """A scripted "redirect" fault: its status, ``Location`` and a short JSON body saying so."""
        content_type = (IDENTITY_CONTENT_TYPE if identity else WORKDAY_JSON_CONTENT_TYPE if workday
                        else GRAPH_CONTENT_TYPE)
        headers = common_headers(request, content_type) + [("Location", fault.location or "")]
        return Response(fault.status, json_body({"redirect": fault.location}), headers)

    def plain_error(self, status: int, message: str) -> Response:
        """An answer for a request the transport refused before reading it (no face saw it)."""
        with self.state_lock:
            self.request_count += 1
        body = json_body({"error": {"code": "BadRequest", "message": message}})
        rid = str(uuid.uuid4())
        return Response(status, body, [("Content-Type", GRAPH_CONTENT_TYPE), ("request-id", rid),
                                       ("client-request-id", rid)])

    def fault_response(self, request: Request, fault: Fault, identity: bool) -> Response:
        """A scripted or profile error status, in the shape of the identity platform or Graph."""
        status = fault.status
        extra = [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
        if fault.body is not None:
            content_type = IDENTITY_CONTENT_TYPE if identity else GRAPH_CONTENT_TYPE
            headers = common_headers(request, content_type) + extra
            return Response(status, json_body(fault.body), headers)
        if identity:
            error = "temporarily_unavailable" if status in (429, 503, 504) else (
                "server_error" if status >= 500 else "invalid_request")
            response = self.identity.error(request, IdentityError(
                status, error, 50196 if status == 429 else 90033,
                f"Injected fault: HTTP {status}."))
            response.headers.extend(extra)
            return response
        code, message = FAULT_CODES.get(status, ("UnknownError", f"HTTP {status}."))
        if status == 429 and fault.retry_after is not None:
            message = f"Too many requests. Retry after {fault.retry_after} seconds."
        return graph_error(request, GraphError(status, code, message, extra))
