"""HTTP/TLS plumbing of the demo tenant: one threaded HTTPS server, requests read whole, answers
written whole, streamed in chunks, or cut short on purpose (fault injection).

Nothing here knows Graph, identity or Workday: every request goes to ``app.dispatch`` and comes
back as a :class:`Response`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable

import trustme

from .faults import STREAM_CUT_BYTES

# One logger for the whole server, named as before the split (log filters keep working).
log = logging.getLogger("entra_pipeline.emulator.server")

GRAPH_CONTENT_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
)
IDENTITY_CONTENT_TYPE = "application/json; charset=utf-8"
WORKDAY_JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
MAX_BODY = 1 << 20


def json_body(obj) -> bytes:
    """Compact UTF-8 JSON, as Graph sends it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass
class Request:
    """One request as the faces see it (a ``$batch`` sub-request is one too)."""

    method: str
    target: str  # path with query, as sent
    path: str  # raw path without query
    query: str  # raw query string
    headers: object  # http.client.HTTPMessage (case-insensitive .get)
    body: bytes
    request_id: str
    client_request_id: str
    params: dict[str, str] = field(default_factory=dict)  # $-options, lower-case keys
    workday: dict = field(default_factory=dict)  # what a Workday request sent: "prompts", "auth"


class SubHeaders:
    """The headers of one batched sub-request: case-insensitive ``.get`` like ``HTTPMessage``."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = {name.lower(): value for name, value in headers.items()}

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._headers.get(name.lower(), default)


@dataclass
class Response:
    """An answer: status, headers and a body held whole or streamed."""

    status: int
    body: bytes
    headers: list[tuple[str, str]]
    drop: bool = False  # profile "drop": send half the body, then shut the connection down
    #: With ``drop``: body bytes sent before the shutdown (None: half, or STREAM_CUT_BYTES streamed).
    drop_after: int | None = None
    #: A body too large to hold: sent chunked as the pieces come (``body`` is then ignored).
    stream: Iterable[bytes] | None = None
    #: Told (body bytes sent, whether the whole body goes out) just before the last write.
    on_sent: Callable[[int, bool], None] | None = None

    def materialize(self) -> None:
        """Turn a streamed body into ``body`` (rewrite faults; small reports only)."""
        if self.stream is not None:
            self.body, self.stream = b"".join(self.stream), None


def common_headers(request: Request, content_type: str) -> list[tuple[str, str]]:
    """The headers every answer carries: its type and the request's correlation ids."""
    return [
        ("Content-Type", content_type),
        ("request-id", request.request_id),
        ("client-request-id", request.client_request_id),
        ("Cache-Control", "no-cache"),
    ]


def tls_context(cert_dir: Path, host: str) -> tuple[ssl.SSLContext, str, str]:
    """A fresh CA and a leaf for ``127.0.0.1``, ``localhost`` and ``host``: (server context, the
    public host to put in URLs, the CA file clients trust)."""
    wildcard = host in ("", "0.0.0.0", "::")
    public_host = "127.0.0.1" if wildcard else host
    identities = ["127.0.0.1", "localhost"]
    if public_host not in identities:
        identities.append(public_host)
    ca = trustme.CA(organization_name="entra-pipeline demo tenant")
    leaf = ca.issue_cert(*identities)
    ca_path = cert_dir / "emulator-ca.pem"
    tmp = ca_path.with_suffix(".pem.tmp")
    ca.cert_pem.write_to_path(str(tmp))
    os.replace(tmp, ca_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    return context, public_host, str(ca_path)


def new_cert_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="entra-emulator-"))


class TLSServer(ThreadingHTTPServer):
    """Threaded HTTPS server that does the TLS handshake on the connection's own thread."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    handshake_timeout = 10.0

    def __init__(self, address, handler, ssl_context: ssl.SSLContext, app):
        self.ssl_context = ssl_context
        self.app = app  # dispatch(), plain_error(), connection_count
        self.connections: set = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address) -> None:
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request.settimeout(self.handshake_timeout)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return  # failed handshake (e.g. client without our CA): nothing to answer
        with self.connections_lock:
            self.connections.add(tls)
            self.app.connection_count += 1
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            with self.connections_lock:
                self.connections.discard(tls)
            try:
                tls.close()
            except OSError:
                pass

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        # Clients dropping keep-alive connections is normal; anything else is a bug worth seeing.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError, OSError)):
            return
        log.exception("emulator: unhandled error serving %s", client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "entra-emulator"
    sys_version = ""
    wbufsize = 64 * 1024  # headers and body leave in one write (no Nagle stalls)
    timeout = 120  # idle keep-alive connections are closed after this

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format, *args) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet: request_log records every request

    def _serve(self) -> None:
        app = self.server.app
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            response = app.plain_error(411, "Length Required: send Content-Length.")
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                response = app.plain_error(413, "Request body too large or Content-Length invalid.")
            else:
                body = self.rfile.read(length) if length else b""
                response = app.dispatch(self.command, self.path, self.headers, body)
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        if response.stream is not None:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._send_stream(response)
            return
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.drop:
            self._drop(response.body, response.drop_after, response.on_sent)
            return
        if response.on_sent is not None:
            response.on_sent(len(response.body), True)
        self.wfile.write(response.body)

    def _drop(self, body: bytes, after: int | None = None,
              on_sent: Callable[[int, bool], None] | None = None) -> None:
        """Send the headers and half of ``body`` (or ``after`` bytes), then shut the connection down
        without the rest."""
        self.close_connection = True  # never reused: the client sees an incomplete body
        part = body[: len(body) // 2 if after is None else min(after, max(len(body) - 1, 0))]
        if on_sent is not None:
            on_sent(len(part), False)
        try:
            self.wfile.write(part)
            self._shut_down()
        except OSError:
            pass  # the client went away first; nothing left to do

    def _shut_down(self) -> None:
        self.wfile.flush()
        # No TLS close_notify: the peer sees the TCP stream end mid-body, as on a dropped link.
        self.connection.shutdown(socket.SHUT_RDWR)

    _CHUNK = 64 * 1024

    def _send_stream(self, response: Response) -> None:
        """Send a streamed body in chunks of 64 KiB or a little more, one at a time. With ``drop``,
        cut it inside a chunk and shut the connection down (the body stays incomplete).

        ``on_sent`` hears the outcome before the last write, so a client that has the whole (or
        the cut) body can already read it in the request log."""
        def on_sent(body_bytes: int, complete: bool) -> None:
            if response.on_sent is not None:
                response.on_sent(body_bytes, complete)

        sent = 0
        cut = (STREAM_CUT_BYTES if response.drop_after is None else response.drop_after) if response.drop else None
        pending = bytearray()
        try:
            for piece in response.stream:
                pending += piece
                if cut is not None and sent + len(pending) >= cut:
                    break
                if len(pending) >= self._CHUNK:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(pending), pending))
                    sent += len(pending)
                    pending.clear()
            else:
                if cut is None:
                    last = (b"%x\r\n%s\r\n" % (len(pending), pending) if pending else b"") + b"0\r\n\r\n"
                    on_sent(sent + len(pending), True)
                    self.wfile.write(last)
                    return
                cut = (sent + len(pending)) // 2  # shorter than the cut point: cut at half
            self.close_connection = True
            part = max(0, cut - sent) if pending else 0
            on_sent(sent + part, False)
            if pending:
                # The chunk header announces the whole chunk; the connection ends inside it.
                self.wfile.write(b"%x\r\n%s" % (len(pending), pending[:part]))
            self._shut_down()
        except OSError:
            self.close_connection = True  # the client went away mid-body
            on_sent(sent, False)
        except Exception:
            self.close_connection = True
            on_sent(sent, False)
            log.exception("emulator: error while streaming %s", self.path)
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

