"""An HTTPS emulator of the Microsoft identity platform and the Graph v1.0 directory API.

One server answers both roles, so ``Emulator.base_url`` is the authority host
*and* the Graph base URL::

    GET  /{tenant}/v2.0/.well-known/openid-configuration     OIDC discovery (MSAL)
    POST /{tenant}/oauth2/v2.0/token                         client_credentials (secret or certificate),
                                                             device_code, refresh_token
    POST /{tenant}/oauth2/v2.0/devicecode                    device authorization (public client)
    GET  /{tenant}/discovery/v2.0/keys                       empty JWKS (tokens are opaque)
    GET|POST /devicelogin                                    device sign-in page (verification_uri)
    GET  /v1.0/users[/{id|userPrincipalName}]
    GET  /v1.0/groups[/{id}]
    GET  /v1.0/groups/{id}/members[/microsoft.graph.{type}]
    GET  /v1.0/groups/{id}/transitiveMembers[/microsoft.graph.{type}]
    GET  /v1.0/users/delta, /v1.0/groups/delta                delta queries (below)
    GET  /ccx/service/customreport2/{tenant}/{owner}/{report}?format=json[&prompt=value...]
                                                             Workday RaaS (with ``workday=``, below)
    POST /ccx/oauth2/{tenant}/token                          Workday OAuth refresh-token grant

Collections honour ``$select``, ``$filter``, ``$top`` (1..999, default 100),
``$count`` with ``ConsistencyLevel: eventual`` and opaque, HMAC-signed
``$skiptoken`` paging, with Graph's status codes and error bodies (see
``graph-facts.md``). ``$expand=members`` on groups is emulated with Graph's
trap: at most 20 members and no nextLink for them.

``$expand=manager`` on ``/users`` and ``/users/{id}`` (also
``manager($select=id,mail,...)``) adds a ``manager`` object to each user that
has one: ``@odata.type`` (``#microsoft.graph.user`` or
``#microsoft.graph.orgContact``), then the manager type's default properties,
or with a nested ``$select`` ``id`` plus the selected properties that exist on
that type (``userPrincipalName`` is simply left out for an orgContact; the
nested ``$select`` is validated against user, group, orgContact, device and
servicePrincipal properties like a members ``$select``). A user without a
manager has no ``manager`` key at all (never ``null``). ``manager`` is a
navigation property: ``$select=manager`` is accepted (200, as Graph does) but
returns no manager. On the collection, pages with ``$expand`` hold at most
:data:`EXPAND_PAGE_LIMIT` (100) users whatever ``$top`` says, like Graph's
known issue for ``$expand`` on directory objects (``Emulator.expand_page_limit
= None`` lifts it); nextLinks carry the ``$expand``. ``$levels`` inside
``$expand=manager`` is 400 on the collection (Graph supports it on single
users only) and 400 "not emulated" on a single user; other ``$expand`` values
on users are 400.

``POST /v1.0/$batch`` is Graph's JSON batching (learn.microsoft.com/graph/json-batching):
the body is ``{"requests": [{"id", "method", "url", "headers"?}, ...]}``, at most
:data:`MAX_BATCH_REQUESTS` (20) requests with unique string ids, each ``url``
relative to ``/v1.0`` (``/groups/{id}/members?$top=999``; the leading slash is
optional). The outer request must carry the access token; sub-requests inherit
its ``Authorization`` header and nothing else (``ConsistencyLevel`` goes in a
sub-request's own ``headers``). Each sub-request is routed exactly like a
normal request to ``/v1.0{url}`` (paging and absolute nextLinks, ``$select``,
``$count``, 404s, 405 for anything but GET), and answered as ``{"id",
"status", "headers", "body"}`` in ``{"responses": [...]}``; the batch itself
is 200 even when sub-requests fail. Responses come in shuffled order, as Graph
allows (``Emulator.shuffle_batch_responses = False`` keeps request order).
Malformed batches, more than 20 requests, duplicate ids, an absent
``requests`` array and ``dependsOn`` (not emulated) are 400 for the whole
batch; an absolute sub-request URL or a nested ``$batch`` is a 400
sub-response. Graph's resource-unit throttling is not emulated.

Faults (:mod:`.faults`) match each sub-request by method (``GET``) and its
path below ``/v1.0`` (``/v1.0/groups/{id}/members``): the fault's status and
Graph error body, with ``Retry-After`` in the sub-response's ``headers``, come
back inside a 200 batch. A fault on the path ``/v1.0/$batch`` (method
``POST``) answers the outer request instead. ``request_count`` counts HTTP
requests served (a batch is one); ``batched_request_count`` and
``batched_request_log`` count and record the sub-requests.

``faults.rewrite(path, transform, times=, status=, content_type=)`` passes the
next matching Graph answers (outside ``$batch``) through a test's function:
broken answers such as an item without ``id`` or a proxy's HTML page; with
``identity=True`` it rewrites identity answers instead (a foreign token
endpoint in the openid-configuration). ``faults.redirect(path, location,
status=307)`` answers any matching request, identity and Workday included,
with that redirect.

``faults.profile = FaultProfile(seed, throttle=..., ...)`` (:mod:`.faults`)
adds seeded random faults to Graph requests (``/v1.0/...``, never the
identity endpoints): 429 with ``Retry-After``, 503/504 with or without it,
a response cut off mid-body with the connection shut down (``drop``), a body
cut to half with a matching ``Content-Length`` (``malformed``), a delay
(``slow``), and 429 sub-responses inside a 200 ``$batch``
(``batch_throttle``). Scripted faults win; ``faults.profile_hits`` counts
what the profile injected.

Identity platform (:mod:`.identity`; tested with MSAL Python as the client).
Errors are Entra's shape ``{"error", "error_description": "AADSTS<code>: ...",
"error_codes", "timestamp", "trace_id", "correlation_id", "error_uri"}``.

* ``client_credentials`` with ``client_secret`` (post or Basic), or with a
  certificate: ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``
  and ``client_assertion``, a JWT signed RS256 or PS256 by a certificate
  registered with ``add_certificate(cert_pem) -> thumbprint`` (SHA-1, upper-case
  hex; ``remove_certificate(thumbprint)``). The key is found by the header's
  ``x5t#S256`` or ``x5t`` (padded or not); ``aud`` must be this tenant's token
  endpoint, ``iss`` and ``sub`` the client id, ``exp``/``nbf`` current within
  5 minutes of skew. Refusals are 401 ``invalid_client``: 700027 (key not
  registered, certificate past notAfter "The key used is expired", bad
  signature), 700024 (assertion expired or not yet valid), 50027 (malformed JWT,
  wrong ``aud``), 5002738 (other algorithm), 700021 (``iss``), 50048 (``sub``).
  Scope must be one ``{resource}/.default``. The answer has no ``scope``.
* Device code (the app allows public client flows: ``allow_public_client``,
  default True; False makes a credential-less redemption 401 7000218):
  ``/devicecode`` (client_id, scope) answers ``device_code``, ``user_code``,
  ``verification_uri`` (``{base_url}/devicelogin``), ``expires_in``
  (``device_code_ttl``, 900), ``interval`` (``device_code_interval``, 5; MSAL
  sleeps that many whole seconds between polls, 0 means a tight loop) and
  ``message``. Redeeming (grant ``urn:ietf:params:oauth:grant-type:device_code``)
  is 400 ``authorization_pending`` (70016) until the user acts,
  ``authorization_declined`` (65004), ``expired_token`` (70019), and
  ``invalid_grant`` (70000) for an unknown or already redeemed code. Test API:
  ``pending_device_codes() -> [user_code]``, ``approve_device_code(user_code,
  user_principal_name)`` (KeyError: no such pending code or user; ValueError:
  disabled account), ``decline_device_code(user_code)``, ``expire_device_codes()``.
* ``refresh_token`` (client_id, refresh_token, scope): a new access token and a
  new refresh token; the old one stays valid until its own expiry, as in Entra.
  Refresh tokens live ``refresh_token_ttl`` seconds (90 days). 400
  ``invalid_grant``: 700082 expired (or ``expire_refresh_tokens()``), 50173
  revoked (``revoke_sign_in_sessions(upn=None)``; access tokens stay valid),
  9002313 not issued here, 70000 issued to another client, 50034/50057 the user
  is gone or disabled.
* Delegated answers carry ``token_type``, ``scope``, ``expires_in``,
  ``ext_expires_in``, ``access_token``, ``refresh_token`` (only with
  ``offline_access``), ``id_token`` (with ``openid``; v2.0 claims, HS256-signed
  by a server key, which MSAL does not verify) and ``client_info`` (with
  ``client_info=1``) so MSAL stores an account. Scopes are Graph permissions,
  short (``User.Read``) or qualified by ``https://graph.microsoft.com``,
  ``base_url`` or Graph's app id; ``{graph}/.default`` grants
  ``delegated_permissions`` (``User.Read``, ``Directory.Read.All``). ``scope``
  echoes them in the form sent (which keeps MSAL's cache lookups working), then
  ``profile openid`` as requested. ``.default`` with other permissions is
  ``invalid_scope`` 70011; another resource ``invalid_resource`` 500011.

Access tokens (app and delegated alike) are honoured for ``token_ttl`` seconds
(``expire_tokens()`` ends them all at once); then Graph answers 401
``InvalidAuthenticationToken`` "Lifetime validation failed, the token is
expired.". ``token_reported_ttl`` (default None: ``token_ttl``) is the
``expires_in`` the token endpoint reports: set it above ``token_ttl`` and a
client (MSAL caches until 5 minutes before ``expires_in``) keeps using a token
the server already rejects. App tokens may read everything; a delegated token
without ``Directory.Read.All`` (or ``Directory.ReadWrite.All`` /
``Directory.AccessAsUser.All``) gets 403 ``Authorization_RequestDenied``
"Insufficient privileges to complete the operation." on every Graph request.
``issued_credentials()`` lists every access token, refresh token and device
code issued (secret-scanning tests); ``_tokens`` maps live access tokens to
their records.

Delta queries (``/users/delta``, ``/groups/delta``; also inside ``$batch``).
The first request of a round may carry ``$select`` (users: user properties
plus ``manager``; groups: group properties plus ``members``; without it the
default properties); the server then computes the whole round at once (a
snapshot) and keeps it under a random id (LRU of ``delta_rounds_kept`` = 16).
Pages hold ``delta_page_size`` (200) objects; every page but the last has
``@odata.nextLink`` (``.../{resource}/delta?$skiptoken=``), the last one
``@odata.deltaLink`` (``?$deltatoken=``). Tokens are opaque, HMAC-signed and
carry the ``$select`` (a ``$select`` sent with a token is ignored), the
change-log version of the snapshot and their issue time. Shapes::

    {"id", <selected properties>}                                   new / changed
    {"id", "@removed": {"reason": "changed"}}                       soft-deleted (also in a first round)
    {"id", "@removed": {"reason": "deleted"}}                       hard-deleted
    "manager@delta": [{"@odata.type", "id"}]                        set or changed
    "manager@delta": [{"@odata.type", "id", "@removed": {"reason": "deleted"}}]   removed
    "members@delta": [{"@odata.type", "id"[, "@removed": {"reason": "deleted"}]}, ...]

A later round lists objects created or restored since the token in full,
updated ones with ``id`` and only the selected properties whose value differs
(or ``manager@delta``), groups whose membership changed with ``id`` and the
net ``members@delta`` additions and removals; an object created and deleted
in between is reported removed. A page holds at most
``delta_members_per_page`` (1000) member entries: a larger group continues
on the next page(s) as ``{"id", "members@delta"}`` with the next slice.
``$top``, ``$orderby``, ``$expand``, ``$count``, ``$search`` are 400
``Request_UnsupportedQuery``; ``$filter`` is 400 (not emulated). A malformed
or tampered token is 400 ``Request_BadRequest``; one of another emulator,
or a skiptoken whose round was evicted, 400 ``syncStateNotFound``. Tokens
older than ``delta_token_lifetime`` (7 days), or issued before
``expire_delta_tokens()``, ``reindex()`` or a new ``directory``, are expired:
410 ``resyncRequired`` with ``Location: {base}/v1.0/{resource}/delta[?$select=...]``,
or 400 ``syncStateNotFound`` when ``delta_expiry_status = 400``.
``TRUNCATE_PAGING`` faults drop a delta page's nextLink or deltaLink.

Change API (thread-safe; visible at once on every endpoint and recorded for
delta): ``add_user(user)``, ``update_user(id, changes)``, ``set_manager(id,
manager_id | None)``, ``soft_delete_user(id)``, ``restore_user(id)``,
``hard_delete_user(id)``, ``add_group(group, members=())``,
``update_group(id, changes)``, ``delete_group(id, soft=False)``,
``restore_group(id)``, ``add_member(group_id, member_id)``,
``remove_member(group_id, member_id)``. Unknown ids raise ``KeyError``,
invalid changes ``ValueError``, before anything changes. Deleting a user
removes it from its groups and unlinks its direct reports; restoring brings
both back with its own manager (see :mod:`.delta`).

Workday (``Emulator(..., workday=WorkdayTenant(...))``; :mod:`.workday` has the
tenant, its report's entries and how workers are generated; with ``workday=None``,
the default, ``/ccx/`` is not served and nothing below applies).

* ``GET /ccx/service/customreport2/{tenant}/{owner}/{report}?format=json`` answers
  200 ``application/json;charset=UTF-8`` ``{"Report_Entry": [...]}`` with
  ``WorkdayTenant.entries`` as they are when the request arrives (a list is
  copied; a :class:`~.workday.WorkerReport` is computed as it is sent). The
  body is streamed with ``Transfer-Encoding: chunked``, each chunk 64 KiB or a
  little more, and never built whole: serving a 100k-worker report holds one
  chunk at a time. Other query parameters are report prompts
  (``WorkdayTenant.prompts``); an unknown one, a repeated one or a bad value
  is 400 naming it.
* Sign-in: HTTP Basic as the Integration System User (``username`` or
  ``username@tenant``, user name ignoring case) or ``Authorization: Bearer``
  with a token from the token endpoint. A wrong, missing or other credential
  gets Workday's HTML sign-in page, ``text/html;charset=UTF-8`` with status
  ``WorkdayTenant.login_page_status`` (200 by default: what a browser-style
  client lands on, and the case a client only checking status codes gets
  wrong; set 401 to test the other). An unknown or expired bearer token is 401
  ``{"error": "invalid_token", "error_description"}`` with ``WWW-Authenticate:
  Bearer``.
* ``POST /ccx/oauth2/{tenant}/token``, form ``grant_type=refresh_token&
  refresh_token=...``, the API client by HTTP Basic ``client_id:client_secret``
  (or ``client_id``/``client_secret`` in the form): 200 ``{"access_token",
  "token_type": "Bearer", "expires_in": access_token_ttl, "refresh_token"}``
  (the same refresh token: Workday's do not rotate). 401 ``invalid_client``
  (with ``WWW-Authenticate: Basic``), 400 ``unsupported_grant_type``, 400
  ``invalid_grant``; bodies ``{"error", "error_description"}``.
* Errors of the report endpoint are JSON ``{"error": "<message>"}`` (the
  emulator's choice: Workday's RaaS error body is not publicly documented): an
  unknown tenant 503 "Service Unavailable: invalid tenant name" (on the token
  endpoint too; the status third-party Workday connectors report for a wrong
  tenant name), an unknown owner or report 404 (after sign-in, so an
  anonymous client learns nothing), ``format`` other than exactly one ``json``
  400, another method than GET 405, any other ``/ccx/`` path 404.
* Failure modes: ``faults.add(500, path="/ccx/service/customreport2/")``
  (any status; Workday-shaped body, e.g. 500 "Processing error occurred. ...",
  or ``body=`` verbatim; ``Retry-After`` with ``retry_after=``);
  ``faults.truncate_body("/ccx/service/customreport2/", after_bytes=None)``
  (status and headers, part of the body, then the connection is shut down
  inside a chunk); ``faults.rewrite("/ccx/service/customreport2/", lambda
  body: {"Report_Entry_Missing": []})`` (any other answer: the streamed body is
  collected first, so rewrite small reports only); the HTML sign-in page by a
  wrong password. The random ``faults.profile`` never touches Workday.
* Test API: ``workday`` (the :class:`~.workday.WorkdayTenant`; change its
  ``entries``, ``password``, ``refresh_token``, ... between requests),
  ``workday_request_log`` (:class:`~.workday.WorkdayRequest`: method, path,
  prompts as sent, ``auth`` "basic"/"bearer"/"client"/None, status, and
  ``body_bytes`` and ``complete``, set just before the server's last write, so
  a client holding the whole or cut body can read them; requests are also in
  ``request_log``), ``expire_workday_tokens()``, ``workday_report_url`` and
  ``workday_token_url``. Workday access tokens appear in
  ``issued_credentials()``.

``$orderby``, ``$search`` and other ``$expand`` values are answered
with 400 (not emulated). Filtered id lists are computed once per
(directory generation, resource, filter) and paged by offset, so each page
costs O(page size). A paging round that started before ``reindex()`` keeps
its snapshot of ids while it lasts in the cache; objects deleted meanwhile are
skipped, so such a page may be short or empty (as Graph's may be).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import os
import random
import re
import secrets
import shutil
import socket
import socketserver
import ssl
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import parse_qsl, quote, unquote, unquote_plus

import trustme

from .directory import (
    CONTACT_TYPE,
    DEVICE_TYPE,
    GROUP_TYPE,
    INITIAL_DOMAIN,
    SERVICE_PRINCIPAL_TYPE,
    TENANT_DOMAIN,
    USER_TYPE,
    Directory,
)
from .delta import (
    DELTA,
    GROUPS,
    SKIP,
    USERS,
    ChangeTracker,
    DeltaToken,
    Selection,
    TokenCodec,
    TokenError,
    paginate,
)
from .faults import (
    REDIRECT,
    REWRITE,
    STATUS,
    STREAM_CUT_BYTES,
    TRUNCATE_BODY,
    TRUNCATE_PAGING,
    Fault,
    FaultInjector,
    ProfileFault,
)
from .identity import (
    CLIENT_ASSERTION_TYPE,
    DEFAULT_DELEGATED_PERMISSIONS,
    DEVICE_CODE_GRANT,
    DEVICE_CODE_INTERVAL,
    DEVICE_CODE_TTL,
    GRAPH_READ_PERMISSIONS,
    GRAPH_RESOURCE,
    REFRESH_TOKEN_TTL,
    AccessToken,
    DelegatedGrant,
    DeviceAuthorization,
    IdentityError,
    KeyCredentials,
    RefreshGrant,
    SignedInUser,
    client_info,
    duration_text,
    id_token,
    parse_delegated_scope,
    verify_client_assertion,
)
from .odata import (
    EntitySchema,
    ODataError,
    bad_request,
    compile_filter,
    group_schema,
    member_schema,
    resolve_select,
    schema_for_type,
    unsupported,
    user_schema,
)
from .workday import WorkdayError, WorkdayRequest, WorkdayTenant, login_page, report_chunks

__all__ = ["Emulator"]

log = logging.getLogger(__name__)

GRAPH_CONTENT_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
)
IDENTITY_CONTENT_TYPE = "application/json; charset=utf-8"
# Graph's own application id: real 401s name it in WWW-Authenticate.
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 999
_MAX_BODY = 1 << 20
_CACHE_ENTRIES = 32
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

_CASTS = {
    "microsoft.graph.user": USER_TYPE,
    "microsoft.graph.group": GROUP_TYPE,
    "microsoft.graph.orgcontact": CONTACT_TYPE,
    "microsoft.graph.device": DEVICE_TYPE,
    "microsoft.graph.serviceprincipal": SERVICE_PRINCIPAL_TYPE,
}
_CAST_ENTITY_SET = {USER_TYPE: "users", GROUP_TYPE: "groups", CONTACT_TYPE: "contacts",
                    DEVICE_TYPE: "devices", SERVICE_PRINCIPAL_TYPE: "servicePrincipals"}

_FAULT_CODES = {
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

WORKDAY_JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
_WORKDAY_FAULT_MESSAGES = {
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

_IDENTITY_PATH_RE = re.compile(r"^/[^/]+/(?:v2\.0/\.well-known/|oauth2/|discovery/)")
_QUERY_OPTIONS = {"$select", "$filter", "$top", "$count", "$skiptoken", "$deltatoken", "$skip", "$orderby",
                  "$search", "$expand", "$format"}
_NOT_EMULATED = ("$orderby", "$search", "$format")
#: Query options Graph rejects on delta queries (``$filter`` is answered "not emulated" separately).
_DELTA_UNSUPPORTED = ("$top", "$orderby", "$expand", "$count", "$search", "$format")
#: Defaults of the delta attributes of :class:`Emulator`.
DELTA_PAGE_SIZE = 200
DELTA_MEMBERS_PER_PAGE = 1000
DELTA_TOKEN_LIFETIME = 7 * 24 * 3600
DELTA_ROUNDS_KEPT = 16
# Graph expands at most 20 members and gives no nextLink for them (graph-facts.md).
EXPAND_MEMBERS_LIMIT = 20
_EXPAND_RE = re.compile(r"^\s*members\s*(?:\(\s*\$select\s*=\s*([^)]*)\))?\s*$", re.IGNORECASE)
#: Users per page when a user collection is read with ``$expand`` (Graph's known issue: 100 at most).
EXPAND_PAGE_LIMIT = 100
_MANAGER_EXPAND_RE = re.compile(r"^\s*manager\s*(?:\((.*)\))?\s*$", re.IGNORECASE | re.DOTALL)
#: Graph's limit on the requests in one JSON batch.
MAX_BATCH_REQUESTS = 20
_BATCH_PATH = "/v1.0/$batch"


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _json(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _basic_credentials(credential: str) -> tuple[str | None, str | None]:
    """(user, password) of an HTTP Basic credential, (None, None) if it is not one."""
    try:
        user, sep, password = base64.b64decode(credential, validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return (user, password) if sep else (None, None)


@dataclass
class _Request:
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


class _SubHeaders:
    """The headers of one batched sub-request: case-insensitive ``.get`` like ``HTTPMessage``."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = {name.lower(): value for name, value in headers.items()}

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._headers.get(name.lower(), default)


@dataclass
class _Response:
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


@dataclass
class _DeltaRound:
    """One delta round, computed whole at its first request and paged from memory."""

    round_id: bytes
    resource: str
    select: str | None
    seq: int
    version: int  # change-log version of the snapshot: what its deltaLink resumes from
    pages: list[list[dict]]


class _GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or []


_IdentityError = IdentityError


class _PagingToken:
    """Opaque, HMAC-signed ``$skiptoken``: (directory generation, offset, query digest)."""

    _LAYOUT = struct.Struct(">QQ8s")

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)  # per server: clients cannot mint tokens

    @staticmethod
    def digest(query_key: str) -> bytes:
        return hashlib.sha256(query_key.encode("utf-8")).digest()[:8]

    def encode(self, generation: int, offset: int, query_key: str) -> str:
        payload = self._LAYOUT.pack(generation, offset, self.digest(query_key))
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[:16]
        return _b64(payload + mac)

    def decode(self, token: str, query_key: str) -> tuple[int, int]:
        invalid = bad_request("Invalid $skiptoken: it is malformed or was not issued for this query.")
        try:
            raw = _unb64(token)
        except (ValueError, TypeError):
            raise invalid from None
        if len(raw) != self._LAYOUT.size + 16:
            raise invalid
        payload, mac = raw[: self._LAYOUT.size], raw[self._LAYOUT.size:]
        if not hmac.compare_digest(mac, hmac.new(self._key, payload, hashlib.sha256).digest()[:16]):
            raise invalid
        generation, offset, digest = self._LAYOUT.unpack(payload)
        if not hmac.compare_digest(digest, self.digest(query_key)):
            raise invalid
        return generation, offset


class _TLSServer(ThreadingHTTPServer):
    """Threaded HTTPS server that does the TLS handshake on the connection's own thread."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    handshake_timeout = 10.0

    def __init__(self, address, handler, ssl_context: ssl.SSLContext, emulator: "Emulator"):
        self.ssl_context = ssl_context
        self.emulator = emulator
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
            self.emulator.connection_count += 1
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


class _Handler(BaseHTTPRequestHandler):
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
        emulator: Emulator = self.server.emulator
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            response = emulator._plain_error(411, "Length Required: send Content-Length.")
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > _MAX_BODY:
                self.close_connection = True
                response = emulator._plain_error(413, "Request body too large or Content-Length invalid.")
            else:
                body = self.rfile.read(length) if length else b""
                response = emulator._dispatch(self.command, self.path, self.headers, body)
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

    def _send_stream(self, response: _Response) -> None:
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


class Emulator:
    """The demo tenant: Microsoft identity platform + Graph v1.0 over real HTTPS.

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
        self._client_secret = client_secret
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

        self._state_lock = threading.Lock()
        # Serialises the change API, delta rounds and directory replacement (taken before _state_lock).
        self._change_lock = threading.RLock()
        self._directory = directory
        self._tracker = ChangeTracker(directory)
        self._delta_codec = TokenCodec()
        self._delta_rounds: OrderedDict[bytes, _DeltaRound] = OrderedDict()
        self._delta_seq = 0  # the last round's number
        self._delta_min_seq = 1  # rounds numbered below are expired (expire_delta_tokens, reindex)
        self._generation = 1
        self._cache: OrderedDict = OrderedDict()
        self._cache_lock = threading.Lock()
        # Access token -> AccessToken. Under _tokens_lock with the refresh tokens, device codes and
        # the log of everything issued (issued_credentials()).
        self._tokens: dict[str, AccessToken] = {}
        self._tokens_lock = threading.Lock()
        self._refresh_tokens: dict[str, RefreshGrant] = {}
        self._device_codes: dict[str, DeviceAuthorization] = {}
        self._user_codes: dict[str, str] = {}  # user code -> device code
        self._issued: list[str] = []
        self._workday_tokens: dict[str, float] = {}  # Workday access token -> monotonic expiry
        self._key_credentials = KeyCredentials()
        self._id_token_key = secrets.token_bytes(32)
        self._paging = _PagingToken()
        self._last_activity = time.monotonic()

        self._server: _TLSServer | None = None
        self._threads: list[threading.Thread] = []
        self._lifecycle_lock = threading.Lock()
        self._stopping = False
        self._stopped = threading.Event()
        self.port: int | None = None
        self.base_url: str | None = None
        self.authority: str | None = None
        self.ca_path: str | None = None

    # -- directory ------------------------------------------------------------

    @property
    def directory(self) -> Directory:
        return self._directory

    @directory.setter
    def directory(self, value: Directory) -> None:
        """Serve another directory: its recycle bin starts empty and every delta token expires."""
        value.reindex()
        with self._change_lock:
            with self._state_lock:
                self._directory = value
                self._generation += 1
            self._tracker = ChangeTracker(value, self._tracker.version)
            self._invalidate_delta_tokens()

    def reindex(self) -> None:
        """Call after mutating ``directory`` in place; new requests see the change.

        The change log cannot see in-place changes, so every delta token issued
        so far expires (410 ``resyncRequired``): clients start a full round.
        """
        with self._change_lock:
            with self._state_lock:
                self._directory.reindex()
                self._generation += 1
            self._invalidate_delta_tokens()

    def expire_delta_tokens(self) -> None:
        """Expire every delta token issued so far (deltaLinks and skiptokens of running rounds)."""
        with self._change_lock:
            self._invalidate_delta_tokens()

    def _invalidate_delta_tokens(self) -> None:
        self._delta_min_seq = self._delta_seq + 1
        self._tracker.clear_log()  # no valid token can reach back before now

    # -- change API ------------------------------------------------------------

    def _change(self, method: str, *args):
        with self._change_lock:
            result = getattr(self._tracker, method)(*args)
            with self._state_lock:
                self._generation += 1  # cached id lists of collections are recomputed
        return result

    def add_user(self, user: dict) -> dict:
        """Create a user; returns a copy of it as stored.

        ``user`` needs ``id`` (a GUID not used by any object) and a unique
        ``userPrincipalName``; other keys are user properties the schema knows
        (case-insensitive names). Missing :data:`~.directory.USER_PROPERTIES`
        are ``None`` (lists ``[]``), except ``accountEnabled`` True, ``userType``
        ``"Member"`` and all 15 ``onPremisesExtensionAttributes`` (given ones merged).
        """
        return self._change("add_user", user)

    def update_user(self, user_id: str, changes: dict) -> dict:
        """Set top-level properties (None allowed); ``onPremisesExtensionAttributes`` is merged.

        Only values that differ are recorded; returns a copy of the user.
        """
        return self._change("update_user", user_id, changes)

    def set_manager(self, user_id: str, manager_id: str | None) -> None:
        """Set a user's manager (an active user or an orgContact) or remove it with None."""
        self._change("set_manager", user_id, manager_id)

    def soft_delete_user(self, user_id: str) -> None:
        """Move a user to the recycle bin: it leaves its groups; its reports lose their manager."""
        self._change("soft_delete_user", user_id)

    def restore_user(self, user_id: str) -> dict:
        """Bring a soft-deleted user back with its memberships, manager and reports (where they still exist)."""
        return self._change("restore_user", user_id)

    def hard_delete_user(self, user_id: str) -> None:
        """Delete a user for good, active or soft-deleted."""
        self._change("hard_delete_user", user_id)

    def add_group(self, group: dict, members=()) -> dict:
        """Create a group (``id`` GUID and ``displayName`` required) with the given direct member ids.

        Missing properties: ``mailEnabled`` False, ``securityEnabled`` True,
        ``groupTypes`` [], ``createdDateTime`` now, the rest None.
        """
        return self._change("add_group", group, list(members) if not isinstance(members, str) else members)

    def update_group(self, group_id: str, changes: dict) -> dict:
        """Set top-level group properties; returns a copy of the group."""
        return self._change("update_group", group_id, changes)

    def delete_group(self, group_id: str, soft: bool = False) -> None:
        """Delete a group (from the recycle bin too); ``soft`` moves an active one to the recycle bin.

        It leaves the groups it was a member of either way.
        """
        self._change("delete_group", group_id, soft)

    def restore_group(self, group_id: str) -> dict:
        """Bring a soft-deleted group back with the members and parent groups that still exist."""
        return self._change("restore_group", group_id)

    def add_member(self, group_id: str, member_id: str) -> None:
        """Add a user, group or other directory object as a direct member (ValueError if it is one)."""
        self._change("add_member", group_id, member_id)

    def remove_member(self, group_id: str, member_id: str) -> None:
        """Remove a direct member (KeyError if it is not one)."""
        self._change("remove_member", group_id, member_id)

    @property
    def graph_url(self) -> str:
        """``{base_url}/v1.0``."""
        return f"{self.base_url}/v1.0"

    def expire_tokens(self) -> None:
        """Make every issued access token expired (tests of token refresh)."""
        with self._tokens_lock:
            for record in self._tokens.values():
                record.expires = 0.0

    # -- identity test API -------------------------------------------------------

    def add_certificate(self, cert_pem: bytes | str) -> str:
        """Register a public certificate (PEM) as a key credential of the app; returns its SHA-1
        thumbprint (upper-case hex). Client assertions signed with its key are then accepted while
        the certificate is valid (ValueError if ``cert_pem`` is not a certificate)."""
        return self._key_credentials.add(cert_pem)

    def remove_certificate(self, thumbprint: str) -> None:
        """Unregister a certificate by its SHA-1 thumbprint (KeyError if it is not registered)."""
        self._key_credentials.remove(thumbprint)

    def pending_device_codes(self) -> list[str]:
        """User codes of device sign-ins waiting for the user (not expired, approved or declined)."""
        now = time.monotonic()
        with self._tokens_lock:
            return [d.user_code for d in self._device_codes.values()
                    if d.state == "pending" and now < d.expires]

    def approve_device_code(self, user_code: str, user_principal_name: str) -> None:
        """The user enters ``user_code`` and signs in as ``user_principal_name``: the next poll
        gets tokens. KeyError for an unknown, expired or finished code or an unknown user;
        ValueError for a disabled account."""
        with self._state_lock:
            user = self._directory.user_by_upn(user_principal_name)
        if user is None:
            raise KeyError(f"no user {user_principal_name!r} in the directory")
        if not user.get("accountEnabled", True):
            raise ValueError(f"the account {user_principal_name!r} is disabled")
        signed_in = SignedInUser(user["id"], user["userPrincipalName"],
                                 user.get("displayName") or user["userPrincipalName"])
        with self._tokens_lock:
            pending = self._pending_device_code(user_code)
            pending.state, pending.user = "approved", signed_in

    def decline_device_code(self, user_code: str) -> None:
        """The user refuses the sign-in: the next poll gets ``authorization_declined``."""
        with self._tokens_lock:
            self._pending_device_code(user_code).state = "declined"

    def expire_device_codes(self) -> None:
        """End every device code now: polls get ``expired_token`` (tests of an abandoned sign-in)."""
        with self._tokens_lock:
            for pending in self._device_codes.values():
                pending.expires = 0.0

    def _pending_device_code(self, user_code: str) -> DeviceAuthorization:
        device_code = self._user_codes.get(user_code.strip().upper().replace("-", ""))
        pending = self._device_codes.get(device_code) if device_code else None
        if pending is None or pending.state != "pending" or time.monotonic() >= pending.expires:
            raise KeyError(f"no pending device sign-in with user code {user_code!r}")
        return pending

    def expire_workday_tokens(self) -> None:
        """Every Workday access token issued so far expires: report requests with one get 401."""
        with self._tokens_lock:
            for token in self._workday_tokens:
                self._workday_tokens[token] = 0.0

    @property
    def workday_report_url(self) -> str | None:
        """The RaaS URL of the Workday report (without ``?format=json``), or None."""
        return None if self.workday is None or self.base_url is None else self.base_url + self.workday.report_path

    @property
    def workday_token_url(self) -> str | None:
        """The Workday tenant's OAuth token endpoint, or None."""
        return None if self.workday is None or self.base_url is None else self.base_url + self.workday.token_path

    def expire_refresh_tokens(self) -> None:
        """Every refresh token issued so far expires (invalid_grant AADSTS700082, inactivity)."""
        with self._tokens_lock:
            for grant in self._refresh_tokens.values():
                grant.expires = 0.0

    def revoke_sign_in_sessions(self, user_principal_name: str | None = None) -> None:
        """Graph's revokeSignInSessions: the user's refresh tokens (everyone's with None) are revoked
        (invalid_grant AADSTS50173); access tokens stay valid until they expire, as in Entra."""
        wanted = None if user_principal_name is None else user_principal_name.lower()
        now = time.time()
        with self._tokens_lock:
            for grant in self._refresh_tokens.values():
                if grant.revoked_at is None and (wanted is None or grant.user.user_principal_name.lower() == wanted):
                    grant.revoked_at = now

    def issued_credentials(self) -> list[str]:
        """Every access token, refresh token and device code issued so far (secret-scanning tests)."""
        with self._tokens_lock:
            return list(self._issued)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> "Emulator":
        with self._lifecycle_lock:
            if self._server is not None:
                raise RuntimeError("emulator already started")
            if self._cert_dir is None:
                self._cert_dir = Path(tempfile.mkdtemp(prefix="entra-emulator-"))
                self._owns_cert_dir = True
            self._cert_dir.mkdir(parents=True, exist_ok=True)
            wildcard = self.host in ("", "0.0.0.0", "::")
            public_host = "127.0.0.1" if wildcard else self.host
            identities = ["127.0.0.1", "localhost"]
            if public_host not in identities:
                identities.append(public_host)
            ca = trustme.CA(organization_name="entra-pipeline demo tenant")
            leaf = ca.issue_cert(*identities)
            ca_path = self._cert_dir / "emulator-ca.pem"
            tmp = ca_path.with_suffix(".pem.tmp")
            ca.cert_pem.write_to_path(str(tmp))
            os.replace(tmp, ca_path)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            leaf.configure_cert(context)

            self._server = _TLSServer((self.host, self._requested_port), _Handler, context, self)
            self.port = self._server.server_address[1]
            url_host = f"[{public_host}]" if ":" in public_host else public_host
            self.base_url = f"https://{url_host}:{self.port}"
            self.authority = f"{self.base_url}/{self.tenant_id}"
            self.ca_path = str(ca_path)
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

    def _dispatch(self, method: str, target: str, headers, body: bytes) -> _Response:
        self._last_activity = time.monotonic()
        path, _, query = target.partition("?")
        client_request_id = headers.get("client-request-id") or str(uuid.uuid4())
        request = _Request(method.upper(), target, path, query, headers, body,
                           str(uuid.uuid4()), client_request_id)
        # /ccx/oauth2/... would look like an identity path: Workday is routed first, when served.
        workday = self.workday is not None and (path == "/ccx" or path.startswith("/ccx/"))
        identity = not workday and _IDENTITY_PATH_RE.match(path) is not None
        try:
            # One profile draw per Graph request, taken even when a scripted fault wins.
            drawn = self.faults.draw() if not identity and path.startswith("/v1.0/") else None
            fault = self.faults.take(STATUS, request.method, path)
            redirect = None if fault is not None else self.faults.take(REDIRECT, request.method, path)
            if fault is not None:
                drawn = None
                response = (self._workday_fault(request, fault) if workday
                            else self._fault_response(request, fault, identity))
            elif redirect is not None:
                drawn = None
                response = self._redirect_response(request, redirect, identity, workday)
            elif workday:
                response = self._workday(request)
            elif drawn is not None and drawn.status:
                response = self._fault_response(request, self._profile_fault(drawn), False)
            elif identity:
                response = self._identity(request)
            elif path == "/devicelogin":
                response = self._device_login(request)
            elif path == "/v1.0" or path.startswith("/v1.0/"):
                response = self._graph(request)
            else:
                version = unquote(path.split("/")[1]) if path.count("/") else path
                response = self._graph_error(request, _GraphError(
                    400, "BadRequest", f"Invalid version: {version}. The demo-tenant emulator serves v1.0 only."))
        except Exception:
            log.exception("emulator: internal error on %s %s", method, target)
            drawn = None
            response = (self._workday_error(request, 500, "Internal emulator error.") if workday else
                        self._graph_error(request, _GraphError(500, "UnknownError", "Internal emulator error.")))
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
        with self._state_lock:
            self.request_count += 1
            self.request_log.append((request.method, target, response.status))
            if workday:
                record = WorkdayRequest(request.method, path, request.workday.get("prompts", {}),
                                        request.workday.get("auth"), response.status)
                self.workday_request_log.append(record)
                response.on_sent = self._workday_sent(record)
        self._last_activity = time.monotonic()
        return response

    @staticmethod
    def _rewrite(response: _Response, fault: Fault) -> None:
        """A scripted "rewrite" fault: the answer's body through the test's function."""
        try:
            parsed = json.loads(response.body)
        except ValueError:
            parsed = None
        body = fault.transform(parsed)
        response.body = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else _json(body)
        if fault.status:
            response.status = fault.status
        if fault.content_type:
            response.headers = [(k, v) for k, v in response.headers if k.lower() != "content-type"]
            response.headers.append(("Content-Type", fault.content_type))

    def _redirect_response(self, request: _Request, fault: Fault, identity: bool, workday: bool) -> _Response:
        """A scripted "redirect" fault: its status, ``Location`` and a short JSON body saying so."""
        content_type = (IDENTITY_CONTENT_TYPE if identity else WORKDAY_JSON_CONTENT_TYPE if workday
                        else GRAPH_CONTENT_TYPE)
        headers = self._common_headers(request, content_type) + [("Location", fault.location or "")]
        return _Response(fault.status, _json({"redirect": fault.location}), headers)

    @staticmethod
    def _profile_fault(drawn: ProfileFault) -> Fault:
        """The scripted-fault equivalent of a profile error (429/503/504), answered the same way."""
        return Fault(STATUS, status=drawn.status, retry_after=drawn.retry_after, remaining=None)

    def _plain_error(self, status: int, message: str) -> _Response:
        with self._state_lock:
            self.request_count += 1
        body = _json({"error": {"code": "BadRequest", "message": message}})
        rid = str(uuid.uuid4())
        return _Response(status, body, [("Content-Type", GRAPH_CONTENT_TYPE), ("request-id", rid),
                                        ("client-request-id", rid)])

    def _common_headers(self, request: _Request, content_type: str) -> list[tuple[str, str]]:
        return [
            ("Content-Type", content_type),
            ("request-id", request.request_id),
            ("client-request-id", request.client_request_id),
            ("Cache-Control", "no-cache"),
        ]

    def _fault_response(self, request: _Request, fault: Fault, identity: bool) -> _Response:
        status = fault.status
        extra = [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
        if fault.body is not None:
            content_type = IDENTITY_CONTENT_TYPE if identity else GRAPH_CONTENT_TYPE
            headers = self._common_headers(request, content_type) + extra
            return _Response(status, _json(fault.body), headers)
        if identity:
            error = "temporarily_unavailable" if status in (429, 503, 504) else (
                "server_error" if status >= 500 else "invalid_request")
            response = self._identity_error(request, _IdentityError(
                status, error, 50196 if status == 429 else 90033,
                f"Injected fault: HTTP {status}."))
            response.headers.extend(extra)
            return response
        code, message = _FAULT_CODES.get(status, ("UnknownError", f"HTTP {status}."))
        if status == 429 and fault.retry_after is not None:
            message = f"Too many requests. Retry after {fault.retry_after} seconds."
        return self._graph_error(request, _GraphError(status, code, message, extra))

    # -- identity platform ----------------------------------------------------

    _OIDC_RE = re.compile(r"^/([^/]+)/v2\.0/\.well-known/openid-configuration$")
    _TOKEN_RE = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
    _DEVICECODE_RE = re.compile(r"^/([^/]+)/oauth2/v2\.0/devicecode$")
    _KEYS_RE = re.compile(r"^/([^/]+)/discovery/v2\.0/keys$")
    _GRANT_TYPES = ("client_credentials", "refresh_token", DEVICE_CODE_GRANT)

    def _known_tenant(self, tenant: str) -> bool:
        return unquote(tenant).lower() in (self.tenant_id, INITIAL_DOMAIN, TENANT_DOMAIN)

    def _identity(self, request: _Request) -> _Response:
        path = request.path
        try:
            for pattern, method, handler in (
                (self._OIDC_RE, "GET", self._openid_configuration),
                (self._TOKEN_RE, "POST", self._token),
                (self._DEVICECODE_RE, "POST", self._devicecode),
                (self._KEYS_RE, "GET", self._keys),
            ):
                match = pattern.match(path)
                if match:
                    if request.method != method:
                        raise _IdentityError(405, "invalid_request", 900561,
                                             f"The endpoint only accepts {method} requests.")
                    return handler(request, match.group(1))
            raise _IdentityError(404, "invalid_request", 900000,
                                 f"No identity-platform endpoint at '{path}' on the demo-tenant emulator.")
        except _IdentityError as exc:
            return self._identity_error(request, exc)

    def _identity_json(self, request: _Request, payload: dict, status: int = 200) -> _Response:
        headers = self._common_headers(request, IDENTITY_CONTENT_TYPE)
        headers += [("x-ms-request-id", request.request_id), ("Pragma", "no-cache")]
        return _Response(status, _json(payload), headers)

    def _identity_error(self, request: _Request, exc: _IdentityError) -> _Response:
        timestamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        payload = {
            "error": exc.error,
            "error_description": (
                f"AADSTS{exc.aadsts}: {exc.description} Trace ID: {request.request_id} "
                f"Correlation ID: {request.client_request_id} Timestamp: {timestamp}"
            ),
            "error_codes": [exc.aadsts],
            "timestamp": timestamp,
            "trace_id": request.request_id,
            "correlation_id": request.client_request_id,
            "error_uri": f"{self.base_url}/error?code={exc.aadsts}",
        }
        return self._identity_json(request, payload, exc.status)

    def _unknown_tenant(self, tenant: str, error: str) -> _IdentityError:
        return _IdentityError(
            400, error, 90002,
            f"Tenant '{unquote(tenant)}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud.",
        )

    def _openid_configuration(self, request: _Request, tenant: str) -> _Response:
        if not self._known_tenant(tenant):
            raise self._unknown_tenant(tenant, "invalid_tenant")
        base, tid = self.base_url, self.tenant_id
        host = base.split("://", 1)[1]
        return self._identity_json(request, {
            "token_endpoint": f"{base}/{tid}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{base}/{tid}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{tid}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{tid}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "name",
                                 "tid", "ver", "oid", "preferred_username", "email"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": host,
            "cloud_graph_host_name": host,
            "msgraph_host": host,
        })

    def _keys(self, request: _Request, tenant: str) -> _Response:
        if not self._known_tenant(tenant):
            raise self._unknown_tenant(tenant, "invalid_tenant")
        return self._identity_json(request, {"keys": []})

    @staticmethod
    def _missing(name: str, status: int = 400, error: str = "invalid_request") -> _IdentityError:
        return _IdentityError(status, error, 900144,
                              f"The request body must contain the following parameter: '{name}'.")

    @staticmethod
    def _form(request: _Request) -> dict[str, str]:
        try:
            return dict(parse_qsl(request.body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return {}

    def _check_client_id(self, form: dict[str, str]) -> str:
        client_id = form.get("client_id", "")
        if not client_id:
            raise self._missing("client_id")
        if client_id.lower() != self.client_id:
            raise _IdentityError(
                400, "unauthorized_client", 700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{INITIAL_DOMAIN}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You may have "
                "sent your authentication request to the wrong tenant.",
            )
        return client_id

    def _token_audiences(self, tenant: str) -> set[str]:
        """What a client assertion's ``aud`` may be: this tenant's token endpoint (v2.0 or v1), by id or domain."""
        names = {self.tenant_id, INITIAL_DOMAIN, TENANT_DOMAIN, unquote(tenant).lower()}
        return {f"{self.base_url}/{name}/oauth2{version}/token" for name in names for version in ("/v2.0", "")}

    def _authenticate_client(self, form: dict[str, str], tenant: str, *, required: bool) -> str | None:
        """Check the client credential: "secret", "certificate", or None for a public client."""
        secret = form.get("client_secret")
        assertion, assertion_type = form.get("client_assertion"), form.get("client_assertion_type")
        if assertion is not None or assertion_type is not None:
            if secret:
                raise _IdentityError(400, "invalid_request", 90023,
                                     "The request presents both 'client_secret' and 'client_assertion'; "
                                     "send one client credential.")
            if not assertion_type:
                raise self._missing("client_assertion_type")
            if assertion_type != CLIENT_ASSERTION_TYPE:
                raise _IdentityError(400, "invalid_request", 90023,
                                     f"The client_assertion_type '{assertion_type}' is not supported: use "
                                     f"'{CLIENT_ASSERTION_TYPE}'.")
            if not assertion:
                raise self._missing("client_assertion", 401, "invalid_client")
            verify_client_assertion(assertion, self._key_credentials, client_id=self.client_id,
                                    audiences=self._token_audiences(tenant))
            return "certificate"
        if secret:
            if not hmac.compare_digest(secret.encode("utf-8"), self._client_secret.encode("utf-8")):
                raise _IdentityError(
                    401, "invalid_client", 7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the "
                    f"client secret value, not the client secret ID, for a secret added to app '{self.client_id}'.",
                )
            return "secret"
        if required or not self.allow_public_client:
            raise _IdentityError(401, "invalid_client", 7000218,
                                 "The request body must contain the following parameter: "
                                 "'client_assertion' or 'client_secret'.")
        return None

    def _token(self, request: _Request, tenant: str) -> _Response:
        if not self._known_tenant(tenant):
            raise self._unknown_tenant(tenant, "invalid_request")
        form = self._form(request)
        basic = request.headers.get("Authorization") or ""
        if basic[:6].lower() == "basic ":
            # client_secret_basic: URL-encoded id and secret in the Authorization header.
            try:
                user, _, password = base64.b64decode(basic[6:].strip()).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                raise _IdentityError(401, "invalid_client", 7000216,
                                     "The Authorization header is not valid Basic authentication.") from None
            form.setdefault("client_id", unquote_plus(user))
            form.setdefault("client_secret", unquote_plus(password))

        grant_type = form.get("grant_type")
        if not grant_type:
            raise self._missing("grant_type")
        if grant_type not in self._GRANT_TYPES:
            raise _IdentityError(400, "unsupported_grant_type", 70003,
                                 f"The app requested an unsupported grant type '{grant_type}'. The demo-tenant "
                                 f"emulator supports {', '.join(self._GRANT_TYPES)}.")
        client_id = self._check_client_id(form)
        if grant_type == "client_credentials":
            return self._client_credentials(request, tenant, form)
        self._authenticate_client(form, tenant, required=False)
        if grant_type == "refresh_token":
            return self._refresh(request, client_id, form)
        return self._redeem_device_code(request, client_id, form)

    def _client_credentials(self, request: _Request, tenant: str, form: dict[str, str]) -> _Response:
        self._authenticate_client(form, tenant, required=True)
        scope = form.get("scope", "").strip()
        if not scope:
            raise self._missing("scope")
        if " " in scope or not scope.endswith("/.default"):
            raise _IdentityError(
                400, "invalid_scope", 1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have "
                "a scope value with /.default suffixed to the resource identifier (application ID URI).",
            )
        return self._identity_json(request, self._issue_access_token(None, None))

    def _issue_access_token(self, grant: DelegatedGrant | None, user_id: str | None) -> dict:
        """A new access token in the registry; the ``token_type``/``expires_in`` part of the answer."""
        token = "emu." + secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._tokens_lock:
            # Forget tokens that expired long ago; recently expired ones still get "expired".
            stale = [t for t, record in self._tokens.items() if record.expires < now - 3600]
            for t in stale:
                del self._tokens[t]
            self._tokens[token] = AccessToken(now + self.token_ttl, grant, user_id)
            self._issued.append(token)
        reported = self.token_ttl if self.token_reported_ttl is None else self.token_reported_ttl
        payload = {"token_type": "Bearer"}
        if grant is not None:
            payload["scope"] = grant.scope
        payload.update({"expires_in": reported, "ext_expires_in": reported, "access_token": token})
        return payload

    def _user_tokens(self, form: dict[str, str], client_id: str, user: SignedInUser,
                     grant: DelegatedGrant, *, refresh: bool) -> dict:
        """The answer of a delegated grant: access token, then refresh token, id_token, client_info."""
        payload = self._issue_access_token(grant, user.id)
        if refresh or grant.offline:
            token = "emu.rt." + secrets.token_urlsafe(48)
            with self._tokens_lock:
                self._refresh_tokens[token] = RefreshGrant(
                    client_id.lower(), user, grant, time.time(), time.monotonic() + self.refresh_token_ttl)
                self._issued.append(token)
            payload["refresh_token"] = token
        if "openid" in grant.oidc:
            payload["id_token"] = id_token(self._id_token_key, issuer=f"{self.authority}/v2.0",
                                           client_id=client_id.lower(), tenant_id=self.tenant_id, user=user)
        if form.get("client_info") == "1":
            payload["client_info"] = client_info(user.id, self.tenant_id)
        return payload

    def _delegated_grant(self, scope: str) -> DelegatedGrant:
        return parse_delegated_scope(scope, (GRAPH_RESOURCE, GRAPH_APP_ID, self.base_url),
                                     self.delegated_permissions, INITIAL_DOMAIN)

    def _devicecode(self, request: _Request, tenant: str) -> _Response:
        if not self._known_tenant(tenant):
            raise self._unknown_tenant(tenant, "invalid_request")
        form = self._form(request)
        client_id = self._check_client_id(form)
        scope = form.get("scope", "").strip()
        if not scope:
            raise self._missing("scope")
        grant = self._delegated_grant(scope)
        device_code = "emu.dc." + secrets.token_urlsafe(48)
        with self._tokens_lock:
            user_code = DeviceAuthorization.new_user_code()
            while user_code in self._user_codes:
                user_code = DeviceAuthorization.new_user_code()
            self._device_codes[device_code] = DeviceAuthorization(
                device_code, user_code, client_id.lower(), grant, time.monotonic() + self.device_code_ttl)
            self._user_codes[user_code] = device_code
            self._issued.append(device_code)
        uri = f"{self.base_url}/devicelogin"
        return self._identity_json(request, {
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": uri,
            "expires_in": int(self.device_code_ttl),
            "interval": int(self.device_code_interval),
            "message": f"To sign in, use a web browser to open the page {uri} and enter the code "
                       f"{user_code} to authenticate.",
        })

    def _redeem_device_code(self, request: _Request, client_id: str, form: dict[str, str]) -> _Response:
        device_code = form.get("device_code") or form.get("code")  # MSAL sends both
        if not device_code:
            raise self._missing("device_code")
        with self._tokens_lock:
            pending = self._device_codes.get(device_code)
            if pending is None or pending.client_id != client_id.lower():
                raise _IdentityError(400, "invalid_grant", 70000,
                                     "Provided grant is invalid or malformed: the device_code is unknown.")
            if pending.state == "redeemed":
                # Not in the published table for device codes: plausible.
                raise _IdentityError(400, "invalid_grant", 70000,
                                     "Provided grant is invalid or malformed: the device_code was already "
                                     "redeemed. Start a new device sign-in.")
            if time.monotonic() >= pending.expires:
                raise _IdentityError(400, "expired_token", 70019,
                                     "Verification code expired. Have the user retry the sign-in.")
            if pending.state == "declined":
                # Not in the published table for device flow: plausible.
                raise _IdentityError(400, "authorization_declined", 65004,
                                     "User declined to consent to access the app.")
            if pending.state == "pending":
                raise _IdentityError(400, "authorization_pending", 70016,
                                     "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
            pending.state = "redeemed"
            user, grant = pending.user, pending.grant
        return self._identity_json(request, self._user_tokens(form, client_id, user, grant, refresh=False))

    def _refresh(self, request: _Request, client_id: str, form: dict[str, str]) -> _Response:
        token = form.get("refresh_token")
        if not token:
            raise self._missing("refresh_token")
        with self._tokens_lock:
            previous = self._refresh_tokens.get(token)
        if previous is None:
            raise _IdentityError(400, "invalid_grant", 9002313,
                                 "Invalid request. Request is malformed or invalid: the refresh_token is not "
                                 "one this tenant issued.")
        def when(epoch: float) -> str:
            return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")

        issued = when(previous.issued_at)
        if previous.client_id != client_id.lower():
            raise _IdentityError(400, "invalid_grant", 70000,
                                 "Provided grant is invalid or malformed: the refresh token was issued to "
                                 "another client.")
        if previous.revoked_at is not None:
            raise _IdentityError(
                400, "invalid_grant", 50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. The "
                f"user might have changed or reset their password. The grant was issued on '{issued}' and "
                f"the TokensValidFrom date (before which tokens are not valid) for this user is "
                f"'{when(previous.revoked_at)}'.")
        if time.monotonic() >= previous.expires:
            raise _IdentityError(
                400, "invalid_grant", 700082,
                f"The refresh token has expired due to inactivity. The token was issued on {issued} and was "
                f"inactive for {duration_text(self.refresh_token_ttl)}.")
        with self._state_lock:
            user = self._directory.user_by_id(previous.user.id)
        if user is None:
            raise _IdentityError(400, "invalid_grant", 50034,
                                 f"The user account {previous.user.user_principal_name} does not exist in "
                                 f"the {INITIAL_DOMAIN} directory. To sign into this application, the account "
                                 "must be added to the directory.")
        if not user.get("accountEnabled", True):
            raise _IdentityError(400, "invalid_grant", 50057, "The user account is disabled.")
        scope = form.get("scope", "").strip()
        grant = self._delegated_grant(scope) if scope else previous.grant
        # Entra keeps the old refresh token valid until its own expiry: nothing is rotated out.
        return self._identity_json(request, self._user_tokens(form, client_id, previous.user, grant, refresh=True))

    # -- the device sign-in page ------------------------------------------------

    _DEVICE_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Demo tenant: device sign-in</title></head>
<body><h1>Demo tenant: device sign-in</h1>{notice}
<form method="post" action="/devicelogin">
<p><label>Code <input name="code" autocomplete="off" required></label></p>
<p><label>Sign in as (userPrincipalName) <input name="username" size="40"></label></p>
<p><button name="action" value="approve">Sign in</button> <button name="action" value="decline">Decline</button></p>
</form>
<p>No password is asked: this is the demo-tenant emulator.</p></body></html>
"""

    def _device_login(self, request: _Request) -> _Response:
        """The ``verification_uri`` of device sign-ins: a form to approve or decline one by hand
        (tests call ``approve_device_code`` / ``decline_device_code`` instead)."""
        def page(status: int, notice: str = "") -> _Response:
            body = self._DEVICE_LOGIN_PAGE.format(notice=f"<p>{html.escape(notice)}</p>" if notice else "")
            return _Response(status, body.encode("utf-8"),
                             self._common_headers(request, "text/html; charset=utf-8"))

        if request.method == "GET":
            return page(200)
        if request.method != "POST":
            return page(405, "Use GET to see the form and POST to send it.")
        form = self._form(request)
        code, username = form.get("code", "").strip(), form.get("username", "").strip()
        try:
            if form.get("action") == "decline":
                self.decline_device_code(code)
                return page(200, "You declined the sign-in. You can close this window.")
            if not username:
                return page(400, "Enter the userPrincipalName to sign in as.")
            self.approve_device_code(code, username)
            return page(200, f"You signed in as {username} on the device. You can close this window.")
        except (KeyError, ValueError) as exc:
            return page(400, str(exc.args[0]) if exc.args else "The sign-in failed.")

    # -- Workday (RaaS and its OAuth token endpoint) ---------------------------------

    _WD_REPORT_RE = re.compile(r"^/ccx/service/customreport2/([^/]+)/([^/]+)/([^/]+)$")
    _WD_TOKEN_RE = re.compile(r"^/ccx/oauth2/([^/]+)/token$")

    def _workday_sent(self, record: WorkdayRequest) -> Callable[[int, bool], None]:
        def sent(body_bytes: int, complete: bool) -> None:
            with self._state_lock:
                record.body_bytes, record.complete = body_bytes, complete
        return sent

    def _workday_json(self, request: _Request, status: int, payload: dict,
                      extra: list[tuple[str, str]] = ()) -> _Response:
        headers = self._common_headers(request, WORKDAY_JSON_CONTENT_TYPE) + list(extra)
        return _Response(status, _json(payload), headers)

    def _workday_error(self, request: _Request, status: int, message: str,
                       extra: list[tuple[str, str]] = ()) -> _Response:
        # RaaS errors as the emulator's choice of Workday's shape: one "error" message (module docstring).
        return self._workday_json(request, status, {"error": message}, extra)

    def _workday_fault(self, request: _Request, fault: Fault) -> _Response:
        extra = [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
        if fault.body is not None:
            return self._workday_json(request, fault.status, fault.body, extra)
        message = _WORKDAY_FAULT_MESSAGES.get(fault.status, f"HTTP {fault.status}.")
        return self._workday_error(request, fault.status, message, extra)

    def _workday(self, request: _Request) -> _Response:
        tenant = self.workday
        assert tenant is not None
        query = parse_qsl(request.query, keep_blank_values=True)
        request.workday["prompts"] = {name: value for name, value in query if name != "format"}
        try:
            match = self._WD_TOKEN_RE.match(request.path)
            if match:
                return self._workday_token(request, tenant, unquote(match.group(1)))
            match = self._WD_REPORT_RE.match(request.path)
            if match is None:
                raise WorkdayError(404, f"No Workday web service at '{request.path}' on the demo-tenant emulator.")
            name, owner, report = (unquote(part) for part in match.groups())
            if name != tenant.tenant:
                raise WorkdayError(503, f"Service Unavailable: invalid tenant name '{name}'.")
            if request.method != "GET":
                raise WorkdayError(405, "Reports as a Service answer GET requests only.")
            refused = self._workday_authenticate(request, tenant)
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
            headers = self._common_headers(request, WORKDAY_JSON_CONTENT_TYPE)
            return _Response(200, b"", headers, stream=report_chunks(tenant.select(prompts)))
        except WorkdayError as exc:
            return self._workday_error(request, exc.status, exc.message)

    def _workday_authenticate(self, request: _Request, tenant: WorkdayTenant) -> _Response | None:
        """None if the request signed in (recorded in ``request.workday["auth"]``), else the answer."""
        header = (request.headers.get("Authorization") or "").strip()
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() == "bearer":
            with self._tokens_lock:
                expiry = self._workday_tokens.get(credential)
            if expiry is None or time.monotonic() >= expiry:
                problem = "is unknown" if expiry is None else "has expired"
                message = f"The access token {problem}."
                challenge = [("WWW-Authenticate", f'Bearer realm="Workday", error="invalid_token", '
                                                  f'error_description="{message}"')]
                return self._workday_json(request, 401, {"error": "invalid_token", "error_description": message},
                                          challenge)
            request.workday["auth"] = "bearer"
            return None
        if scheme.lower() == "basic":
            user, password = _basic_credentials(credential)
            if user is not None and tenant.accepts_username(user) \
                    and hmac.compare_digest(password.encode(), tenant.password.encode()):
                request.workday["auth"] = "basic"
                return None
        # Like Workday's front door: its sign-in page (HTML), not a JSON error (module docstring).
        headers = self._common_headers(request, "text/html;charset=UTF-8")
        return _Response(tenant.login_page_status, login_page(tenant.tenant, failed=bool(header)), headers)

    def _workday_token(self, request: _Request, tenant: WorkdayTenant, name: str) -> _Response:
        """``POST /ccx/oauth2/{tenant}/token``: the refresh-token grant of an API client."""
        def oauth_error(status: int, error: str, description: str, extra=()) -> _Response:
            return self._workday_json(request, status, {"error": error, "error_description": description}, extra)

        if name != tenant.tenant:
            return self._workday_error(request, 503, f"Service Unavailable: invalid tenant name '{name}'.")
        if request.method != "POST":
            return oauth_error(405, "invalid_request", "The token endpoint accepts POST requests only.")
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, credential = (request.headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() == "basic":
            client_id, client_secret = _basic_credentials(credential.strip())
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
        with self._tokens_lock:
            for stale in [t for t, expiry in self._workday_tokens.items() if expiry < now - 3600]:
                del self._workday_tokens[stale]
            self._workday_tokens[token] = now + tenant.access_token_ttl
            self._issued.append(token)
        # Workday's refresh tokens for integrations do not rotate: the same one comes back.
        payload = {"access_token": token, "token_type": "Bearer", "expires_in": tenant.access_token_ttl,
                   "refresh_token": tenant.refresh_token}
        return self._workday_json(request, 200, payload, [("Pragma", "no-cache")])

    # -- Graph ----------------------------------------------------------------

    def _graph_error(self, request: _Request, exc: _GraphError) -> _Response:
        payload = {"error": {
            "code": exc.code,
            "message": exc.message,
            "innerError": {
                "date": _now_iso(),
                "request-id": request.request_id,
                "client-request-id": request.client_request_id,
            },
        }}
        headers = self._common_headers(request, GRAPH_CONTENT_TYPE) + exc.headers
        return _Response(exc.status, _json(payload), headers)

    def _authenticate(self, request: _Request) -> None:
        header = request.headers.get("Authorization") or ""
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        challenge = [("WWW-Authenticate",
                      f'Bearer realm="", authorization_uri="{self.authority}/oauth2/v2.0/authorize", '
                      f'client_id="{GRAPH_APP_ID}"')]
        if not header.strip() or (scheme.lower() == "bearer" and not token):
            raise _GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", challenge)
        if scheme.lower() != "bearer":
            raise _GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.", challenge)
        with self._tokens_lock:
            record = self._tokens.get(token)
            expiry = None if record is None else record.expires
            grant = None if record is None else record.grant
        if expiry is None:
            raise _GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.", challenge)
        if time.monotonic() >= expiry:
            raise _GraphError(401, "InvalidAuthenticationToken",
                              "Lifetime validation failed, the token is expired.", challenge)
        # App tokens carry the app's roles (all it needs); a user's token needs a directory permission.
        if grant is not None and not grant.names & GRAPH_READ_PERMISSIONS:
            raise _GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")

    def _graph(self, request: _Request, *, batched: bool = False) -> _Response:
        try:
            self._authenticate(request)
            self._parse_options(request)
            segments = [unquote(s) for s in request.path[len("/v1.0"):].split("/")[1:]]
            if len(segments) == 1 and segments[0].lower() == "$batch":
                if batched:
                    raise bad_request("A batch request cannot contain another $batch request.")
                if request.method != "POST":
                    raise _GraphError(405, "Request_BadRequest",
                                      "Specified HTTP method is not allowed for the request target: "
                                      "$batch accepts POST only.")
                return self._batch(request)
            handler, args = self._route(segments)
            if request.method != "GET":
                raise _GraphError(405, "Request_BadRequest",
                                  "Specified HTTP method is not allowed for the request target. "
                                  "(The demo-tenant emulator is read-only.)")
            if handler != self._delta:  # delta answers its options itself
                for key in _NOT_EMULATED:
                    if key in request.params:
                        raise bad_request(f"Query option '{key}' is not supported by the demo-tenant emulator.")
                if "$deltatoken" in request.params:
                    raise bad_request("Query option '$deltatoken' is only valid on /users/delta and "
                                      "/groups/delta.")
            if "$expand" in request.params and handler not in (self._list_groups, self._get_group,
                                                               self._list_users, self._get_user,
                                                               self._delta):
                raise bad_request("Query option '$expand' is not supported here by the demo-tenant emulator.")
            with self._state_lock:
                directory, generation = self._directory, self._generation
            return handler(request, directory, generation, *args)
        except ODataError as exc:
            return self._graph_error(request, _GraphError(exc.status, exc.code, exc.message))
        except _GraphError as exc:
            return self._graph_error(request, exc)

    # -- Graph: JSON batching ---------------------------------------------------

    def _batch(self, request: _Request) -> _Response:
        """``POST /v1.0/$batch``: validate the whole batch, then answer each sub-request."""
        def invalid(message: str) -> _GraphError:
            return _GraphError(400, "BadRequest", message)

        try:
            payload = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise invalid("Invalid batch payload format: the body is not a JSON document.") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("requests"), list):
            raise invalid("Invalid batch payload format: expected a JSON object with a 'requests' array.")
        items = payload["requests"]
        if not items:
            raise invalid("Invalid batch payload format: 'requests' is empty.")
        if len(items) > MAX_BATCH_REQUESTS:
            raise invalid(f"Number of requests in the batch ({len(items)}) exceeds the limit of "
                          f"{MAX_BATCH_REQUESTS}.")
        seen: set[str] = set()
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise invalid(f"Invalid batch payload format: request {index} is not a JSON object.")
            for name in ("id", "method", "url"):
                if not isinstance(item.get(name), str) or not item[name].strip():
                    raise invalid(f"Invalid batch payload format: request {index} needs a non-empty "
                                  f"string '{name}'.")
            headers = item.get("headers", {})
            if not isinstance(headers, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
                raise invalid(f"Invalid batch payload format: 'headers' of request '{item['id']}' must "
                              "be an object of strings.")
            if "dependsOn" in item:
                raise invalid("'dependsOn' is not emulated by the demo-tenant emulator: send independent "
                              "requests.")
            if item["id"] in seen:
                raise invalid(f"Batch request contains duplicate request id '{item['id']}'. Request ids "
                              "must be unique within a batch.")
            seen.add(item["id"])

        answers = [(item["id"], self._sub_request(request, item)) for item in items]
        if self.shuffle_batch_responses:
            random.shuffle(answers)
        parts = []
        for sub_id, answer in answers:
            headers = {name: value for name, value in answer.headers}
            parts.append(b'{"id":' + _json(sub_id) + b',"status":' + str(answer.status).encode()
                         + b',"headers":' + _json(headers) + b',"body":' + (answer.body or b"null") + b"}")
        body = b'{"responses":[' + b",".join(parts) + b"]}"
        headers = self._common_headers(request, GRAPH_CONTENT_TYPE) + [("OData-Version", "4.0")]
        return _Response(200, body, headers)

    def _sub_request(self, outer: _Request, item: dict) -> _Response:
        """One sub-request of a batch, routed like a request of its own to ``/v1.0{url}``."""
        method = item["method"].strip().upper()
        headers = {k: v for k, v in (item.get("headers") or {}).items() if k.lower() != "authorization"}
        authorization = outer.headers.get("Authorization")
        if authorization is not None:
            headers["Authorization"] = authorization  # inherited from the batch, never per request
        url = item["url"].strip()
        relative = url if url.startswith("/") else "/" + url
        target = "/v1.0" + relative
        path, _, query = target.partition("?")
        sub_headers = _SubHeaders(headers)
        sub = _Request(method, target, path, query, sub_headers, b"", str(uuid.uuid4()),
                       sub_headers.get("client-request-id") or str(uuid.uuid4()))
        try:
            drawn = self.faults.draw_batch()  # one draw per sub-request, like the outer request
            if "://" in url or url.startswith("//"):
                response = self._graph_error(sub, _GraphError(
                    400, "BadRequest", f"Invalid request URL '{url}': URLs in a batch must be relative to "
                    "the service version, e.g. '/users'."))
            else:
                fault = self.faults.take(STATUS, method, path)
                if fault is not None:
                    response = self._fault_response(sub, fault, False)
                elif drawn is not None:
                    self.faults.record(drawn)
                    response = self._fault_response(sub, self._profile_fault(drawn), False)
                else:
                    response = self._graph(sub, batched=True)
        except Exception:
            log.exception("emulator: internal error on batched %s %s", method, target)
            response = self._graph_error(sub, _GraphError(500, "UnknownError", "Internal emulator error."))
        with self._state_lock:
            self.batched_request_count += 1
            self.batched_request_log.append((method, target, response.status))
        return response

    def _route(self, segments: list[str]) -> tuple[Callable, tuple]:
        """Map path segments below /v1.0 to a handler.

        Routing is by segment: fixed names (``users/delta``, ``groups/delta``)
        come before the id catch-all.
        """
        lowered = [s.lower() for s in segments]
        if not segments or segments == [""]:
            raise _GraphError(400, "BadRequest", "Resource not found for the segment ''.")
        resource = lowered[0]
        if resource not in ("users", "groups"):
            raise _GraphError(400, "BadRequest", f"Resource not found for the segment '{segments[0]}'.")
        if len(segments) == 1:
            return (self._list_users if resource == "users" else self._list_groups), ()
        if lowered[1] == "delta":
            if len(segments) == 2:
                return self._delta, (USERS if resource == "users" else GROUPS,)
            raise _GraphError(400, "BadRequest", f"Resource not found for the segment '{segments[2]}'.")
        if segments[1] == "":
            raise _GraphError(400, "BadRequest", "Resource not found for the segment ''.")
        if len(segments) == 2:
            return (self._get_user if resource == "users" else self._get_group), (segments[1],)
        if resource == "groups" and lowered[2] in ("members", "transitivemembers"):
            transitive = lowered[2] == "transitivemembers"
            if len(segments) == 3:
                return self._list_members, (segments[1], transitive, None)
            if len(segments) == 4 and lowered[3] in _CASTS:
                return self._list_members, (segments[1], transitive, _CASTS[lowered[3]])
            raise _GraphError(400, "BadRequest", f"Resource not found for the segment '{segments[3]}'.")
        raise _GraphError(400, "BadRequest", f"Resource not found for the segment '{segments[2]}'.")

    def _parse_options(self, request: _Request) -> None:
        params: dict[str, str] = {}
        for name, value in parse_qsl(request.query, keep_blank_values=True):
            key = name.lower()
            if not key.startswith("$"):
                continue  # Graph ignores non-OData parameters
            if key not in _QUERY_OPTIONS:
                raise bad_request(f"The query parameter '{name}' is not supported.")
            if key in params:
                raise bad_request(
                    f"Query option '{name}' was specified more than once, but it must be specified at most once."
                )
            params[key] = value
        if "$skip" in params:
            raise bad_request("'$skip' is not supported by the service. Page with @odata.nextLink instead.")
        request.params = params

    # -- Graph: query helpers ---------------------------------------------------

    @staticmethod
    def _page_size(request: _Request) -> int:
        raw = request.params.get("$top")
        if raw is None:
            return DEFAULT_PAGE_SIZE
        try:
            value = int(raw.strip())
        except ValueError:
            value = 0
        if not raw.strip().isdigit() or not 1 <= value <= MAX_PAGE_SIZE:
            raise bad_request(f"Invalid page size specified: '{raw}'. Must be between 1 and 999 inclusive.")
        return value

    @staticmethod
    def _count_mode(request: _Request) -> tuple[bool, bool]:
        """(``$count=true`` requested, advanced query mode) — validates the combination."""
        raw = request.params.get("$count")
        if raw is None:
            return False, False
        if raw.lower() not in ("true", "false"):
            raise bad_request(f"Invalid value '{raw}' for $count; expected true or false.")
        count = raw.lower() == "true"
        eventual = (request.headers.get("ConsistencyLevel") or "").strip().lower() == "eventual"
        if count and not eventual:
            raise bad_request("$count is not currently supported.")
        return count, count and eventual

    def _cache_get(self, key: tuple) -> list | None:
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit

    def _cached_ids(self, key: tuple, compute: Callable[[], list]) -> list:
        hit = self._cache_get(key)
        if hit is not None:
            return hit
        value = compute()  # outside the lock: other connections keep being served
        with self._cache_lock:
            self._cache[key] = value
            while len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return value

    def _context(self, entity_set: str, select: str | None, *, entity: bool = False) -> str:
        selected = ""
        if select is not None:
            selected = "(" + ",".join(s.strip() for s in select.split(",")) + ")"
        return f"{self.base_url}/v1.0/$metadata#{entity_set}{selected}{'/$entity' if entity else ''}"

    def _next_link(self, request: _Request, token: str) -> str:
        kept = [part for part in request.query.split("&")
                if part and unquote_plus(part.partition("=")[0]).lower() != "$skiptoken"]
        kept.append(f"$skiptoken={token}")
        return f"{self.base_url}{request.path}?{'&'.join(kept)}"

    def _collection(
        self,
        request: _Request,
        generation: int,
        *,
        query_key: str,
        schema: EntitySchema,
        source: Callable[[], list],
        resolve: Callable[[object], tuple[str | None, dict] | None],
        project: Callable[[str | None, dict], dict],
        context: str,
        filter_needs_advanced: bool = False,
        resource_units: int = 1,
        page_limit: int | None = None,
    ) -> _Response:
        """Serve one page of a filtered, snapshot-by-generation collection."""
        top = self._page_size(request)
        if page_limit is not None:
            top = min(top, page_limit)  # $top stays valid and is carried on; the server pages smaller
        count, advanced = self._count_mode(request)
        raw_filter = request.params.get("$filter")
        predicate = None
        if raw_filter is not None:
            if filter_needs_advanced and not advanced:
                raise unsupported(
                    "$filter on this collection requires advanced query parameters: add $count=true "
                    "and the ConsistencyLevel:eventual header."
                )
            predicate = compile_filter(raw_filter, schema, advanced=advanced)
        token_key = f"{query_key.lower()}\n{raw_filter}"
        offset = 0
        snapshot = generation
        skiptoken = request.params.get("$skiptoken")
        if skiptoken is not None:
            snapshot, offset = self._paging.decode(skiptoken, token_key)

        def compute() -> list:
            items = source()
            if predicate is None:
                return items
            matched = []
            for item in items:
                found = resolve(item)
                if found is not None and predicate(found[1]):
                    matched.append(item)
            return matched

        ids = self._cache_get((snapshot, token_key))
        if ids is None:
            # New round, or its snapshot was evicted: continue on the current directory.
            snapshot = generation
            ids = self._cached_ids((generation, token_key), compute)

        end = offset + top
        value = []
        for item in ids[offset:end]:
            found = resolve(item)
            if found is not None:  # deleted since the snapshot was taken
                value.append(project(*found))
        payload: dict = {"@odata.context": context}
        if count and skiptoken is None:
            payload["@odata.count"] = len(ids)
        if end < len(ids) and self.faults.take(TRUNCATE_PAGING, request.method, request.path) is None:
            payload["@odata.nextLink"] = self._next_link(request, self._paging.encode(snapshot, end, token_key))
        payload["value"] = value
        headers = self._common_headers(request, GRAPH_CONTENT_TYPE)
        headers += [("OData-Version", "4.0"), ("x-ms-resource-unit", str(resource_units))]
        return _Response(200, _json(payload), headers)

    def _entity(self, request: _Request, payload: dict) -> _Response:
        headers = self._common_headers(request, GRAPH_CONTENT_TYPE)
        headers += [("OData-Version", "4.0"), ("x-ms-resource-unit", "1")]
        return _Response(200, _json(payload), headers)

    @staticmethod
    def _projector(schema: EntitySchema, names: tuple[str, ...]) -> Callable[[dict], dict]:
        # Modelled properties are always present; the defaults cover valid-but-unmodelled ones.
        pairs = tuple((name, schema.extra_defaults.get(name)) for name in names)
        return lambda obj: {name: obj.get(name, default) for name, default in pairs}

    @staticmethod
    def _not_found(key: str) -> _GraphError:
        return _GraphError(404, "Request_ResourceNotFound",
                           f"Resource '{key}' does not exist or one of its queried reference-property "
                           "objects are not present.")

    # -- Graph: resources -------------------------------------------------------

    def _user_projector(self, request: _Request, directory: Directory, *,
                        collection: bool) -> tuple[Callable[[dict], dict], bool]:
        """(projection of a user, whether ``$expand=manager`` was asked for)."""
        schema = user_schema(directory.extension_property)
        project = self._projector(schema, resolve_select(schema, request.params.get("$select"),
                                                         collection=collection))
        raw_expand = request.params.get("$expand")
        if raw_expand is None:
            return project, False
        match = _MANAGER_EXPAND_RE.match(raw_expand)
        if match is None:
            raise bad_request(f"Could not find a navigation property named '{raw_expand.strip()}' on type "
                              "'microsoft.graph.user' (the emulator expands 'manager' only).")
        nested_select = None
        if match.group(1) is not None:
            options: dict[str, str] = {}
            for part in match.group(1).split(";"):
                name, eq, value = part.partition("=")
                key = name.strip().lower()
                if not eq or key not in ("$select", "$levels"):
                    raise bad_request(f"Invalid $expand option '{part.strip()}' in '{raw_expand}': "
                                      "only $select and $levels are understood inside $expand=manager.")
                if key in options:
                    raise bad_request(f"$expand option '{name.strip()}' given twice in '{raw_expand}'.")
                options[key] = value
            if "$levels" in options:
                if collection:
                    raise unsupported("'$levels' in $expand=manager is only supported on a single user "
                                      "(/users/{id}), not on the collection of users.")
                raise bad_request("'$levels' in $expand=manager is not emulated by the demo-tenant emulator.")
            nested_select = options.get("$select")
        project_manager = self._member_projector(directory, nested_select, cast=None)
        manager_of = directory.manager

        def expanded(user: dict) -> dict:
            item = project(user)
            found = manager_of(user["id"])
            if found is not None:  # no manager: Graph leaves the property out
                item["manager"] = project_manager(*found)
            return item

        return expanded, True

    def _list_users(self, request: _Request, directory: Directory, generation: int) -> _Response:
        schema = user_schema(directory.extension_property)
        select = request.params.get("$select")
        project, expanding = self._user_projector(request, directory, collection=True)
        if expanding and self._count_mode(request)[1]:
            # Graph: "$expand is not currently supported with advanced queries".
            raise unsupported("$expand is not supported with advanced query parameters "
                              "($count=true with ConsistencyLevel: eventual).")
        lookup = directory.user_by_id
        return self._collection(
            request, generation,
            query_key="users",
            schema=schema,
            source=lambda: [u["id"] for u in directory.users],
            resolve=lambda object_id: (None, u) if (u := lookup(object_id)) is not None else None,
            project=lambda _type, obj: project(obj),
            context=self._context("users", select),
            resource_units=1 if select else 2,
            page_limit=self.expand_page_limit if expanding else None,
        )

    def _group_projector(self, request: _Request, directory: Directory, *, collection: bool):
        schema = group_schema()
        project = self._projector(schema, resolve_select(schema, request.params.get("$select"),
                                                         collection=collection))
        raw_expand = request.params.get("$expand")
        if raw_expand is None:
            return project
        match = _EXPAND_RE.match(raw_expand)
        if match is None:
            raise bad_request(f"Could not find a navigation property named '{raw_expand}' on type "
                              "'microsoft.graph.group' (the emulator expands 'members' only).")
        project_member = self._member_projector(directory, match.group(1), cast=None)
        object_by_id = directory.object_by_id

        def expanded(group: dict) -> dict:
            item = project(group)
            members = []
            for odata_type, object_id in directory.members.get(group["id"], ())[:EXPAND_MEMBERS_LIMIT]:
                found = object_by_id(object_id)
                if found is not None:
                    members.append(project_member(odata_type, found[1]))
            item["members"] = members  # silently truncated, exactly the trap Graph sets
            return item

        return expanded

    def _list_groups(self, request: _Request, directory: Directory, generation: int) -> _Response:
        schema = group_schema()
        select = request.params.get("$select")
        project = self._group_projector(request, directory, collection=True)
        lookup = directory.group_by_id
        return self._collection(
            request, generation,
            query_key="groups",
            schema=schema,
            source=lambda: [g["id"] for g in directory.groups],
            resolve=lambda object_id: (None, g) if (g := lookup(object_id)) is not None else None,
            project=lambda _type, obj: project(obj),
            context=self._context("groups", select),
            resource_units=1 if select else 2,
        )

    def _get_user(self, request: _Request, directory: Directory, generation: int, key: str) -> _Response:
        user = directory.user_by_id(key)
        if user is None and "@" in key:
            user = directory.user_by_upn(key)
        if user is None:
            raise self._not_found(key)
        select = request.params.get("$select")
        project, _ = self._user_projector(request, directory, collection=False)
        payload = {"@odata.context": self._context("users", select, entity=True)}
        payload.update(project(user))
        return self._entity(request, payload)

    def _require_group(self, directory: Directory, key: str) -> dict:
        if not _GUID_RE.match(key):
            raise bad_request(f"Invalid object identifier '{key}'.")
        group = directory.group_by_id(key)
        if group is None:
            raise self._not_found(key)
        return group

    def _get_group(self, request: _Request, directory: Directory, generation: int, key: str) -> _Response:
        group = self._require_group(directory, key)
        select = request.params.get("$select")
        payload = {"@odata.context": self._context("groups", select, entity=True)}
        payload.update(self._group_projector(request, directory, collection=False)(group))
        return self._entity(request, payload)

    def _member_projector(self, directory: Directory, select: str | None, *, cast: str | None):
        """Projection of member objects: ``@odata.type`` first, then per-type properties.

        A mixed ``$select`` keeps, for each object, only the properties its type has.
        """
        ext = directory.extension_property
        schema = schema_for_type(cast, ext) if cast else member_schema(ext)
        names = resolve_select(schema, select, collection=True)
        projectors: dict[str, Callable[[dict], dict]] = {}
        for odata_type in _CAST_ENTITY_SET:
            type_schema = schema_for_type(odata_type, ext)
            if select is None:
                type_names = type_schema.defaults
            else:
                type_names = tuple(n for n in names if type_schema.prop(n) is not None)
            projectors[odata_type] = self._projector(type_schema, type_names)

        def project(odata_type: str, obj: dict) -> dict:
            item = {"@odata.type": odata_type}
            item.update(projectors[odata_type](obj))
            return item

        return project

    def _list_members(self, request: _Request, directory: Directory, generation: int, key: str,
                      transitive: bool, cast: str | None) -> _Response:
        group = self._require_group(directory, key)
        group_id = group["id"]
        ext = directory.extension_property
        select = request.params.get("$select")
        schema = schema_for_type(cast, ext) if cast else member_schema(ext)
        project = self._member_projector(directory, select, cast=cast)

        def source() -> list:
            members = directory.transitive_members(group_id) if transitive else list(
                directory.members.get(group_id, ()))
            if cast is not None:
                members = [m for m in members if m[0] == cast]
            return members

        object_by_id = directory.object_by_id

        def resolve(member: tuple[str, str]):
            found = object_by_id(member[1])
            return None if found is None else (member[0], found[1])

        segment = "transitiveMembers" if transitive else "members"
        suffix = f"/{cast[1:]}" if cast else ""
        return self._collection(
            request, generation,
            query_key=f"groups/{group_id}/{segment}{suffix}",
            schema=schema,
            source=source,
            resolve=resolve,
            project=project,
            context=self._context(_CAST_ENTITY_SET[cast] if cast else "directoryObjects", select),
            filter_needs_advanced=True,
            resource_units=5 if transitive else 3,
        )

    # -- Graph: delta queries ----------------------------------------------------

    def _delta(self, request: _Request, directory: Directory, generation: int, resource: str) -> _Response:
        """``GET /v1.0/users/delta`` and ``/v1.0/groups/delta`` (see the module docstring)."""
        params = request.params
        for key in _DELTA_UNSUPPORTED:
            if key in params:
                raise unsupported(f"Query option '{key}' is not supported with delta queries on {resource}: "
                                  "Graph's delta accepts $select (first request only) and the "
                                  "$skiptoken/$deltatoken of its own links.")
        if "$filter" in params:
            raise bad_request("$filter on delta queries is not emulated by the demo-tenant emulator "
                              "(Graph allows only 'id eq' there).")
        skiptoken, deltatoken = params.get("$skiptoken"), params.get("$deltatoken")
        if skiptoken is not None and deltatoken is not None:
            raise bad_request("A delta request carries either $skiptoken or $deltatoken, not both.")
        if skiptoken is not None:
            token = self._delta_token(skiptoken, "$skiptoken", SKIP, resource)
            with self._change_lock:
                round_ = self._delta_rounds.get(token.round_id)
                if round_ is not None:
                    self._delta_rounds.move_to_end(token.round_id)
            if round_ is None or token.page >= len(round_.pages):
                raise _GraphError(400, "syncStateNotFound",
                                  "The sync state of this delta round is no longer available (the server "
                                  "keeps only recent rounds): start again without a token.")
            return self._delta_page(request, round_, token.page)
        if deltatoken is not None:
            token = self._delta_token(deltatoken, "$deltatoken", DELTA, resource)
            round_ = self._delta_round(resource, token.select, token.version)
        else:
            round_ = self._delta_round(resource, params.get("$select"), None)
        return self._delta_page(request, round_, 0)

    def _delta_token(self, text: str, option: str, kind: int, resource: str) -> DeltaToken:
        try:
            token = self._delta_codec.decode(text)
        except TokenError as exc:
            if exc.foreign:
                raise _GraphError(400, "syncStateNotFound",
                                  f"The {option} was not issued by this server (another emulator "
                                  "instance?): start a new round without a token.") from None
            raise bad_request(f"Invalid {option}: it is malformed or was tampered with.") from None
        if token.kind != kind or token.resource != resource:
            raise bad_request(f"Invalid {option}: it was not issued for this kind of request on /{resource}/delta.")
        expired = (token.seq < self._delta_min_seq
                   or time.time() * 1000 - token.issued_ms > self.delta_token_lifetime * 1000)
        if expired:
            if self.delta_expiry_status == 400:
                raise _GraphError(400, "syncStateNotFound",
                                  f"The {option} has expired: start a new round without a token.")
            location = f"{self.base_url}/v1.0/{resource}/delta"
            if token.select is not None:
                location += "?$select=" + quote(token.select, safe=",()")
            raise _GraphError(410, "resyncRequired",
                              f"The {option} has expired: resync required. Start a new round at the "
                              "Location URL.", [("Location", location)])
        return token

    def _delta_selection(self, resource: str, directory: Directory, select: str | None) -> Selection:
        if resource == USERS:
            schema = user_schema(directory.extension_property)
            navigation = "manager"
        else:
            schema = group_schema()
            navigation = "members"
        if select is None:
            return Selection(schema.defaults, False)
        parts = [part.strip() for part in select.split(",")]
        wanted = any(part.lower() == navigation for part in parts)
        rest = [part for part in parts if part.lower() != navigation]
        if wanted and not rest:
            return Selection(("id",), True)  # "$select=members": id plus the navigation property
        return Selection(resolve_select(schema, ",".join(rest), collection=True), wanted)

    def _delta_round(self, resource: str, select: str | None, since: int | None) -> _DeltaRound:
        page_size, per_page = int(self.delta_page_size), int(self.delta_members_per_page)
        if page_size < 1 or per_page < 1:
            raise ValueError("delta_page_size and delta_members_per_page must be at least 1")
        with self._change_lock:
            tracker = self._tracker
            selection = self._delta_selection(resource, tracker.directory, select)
            if resource == USERS:
                entries = tracker.user_round(selection, since)
            else:
                entries = tracker.group_round(selection, since)
            self._delta_seq += 1
            round_ = _DeltaRound(secrets.token_bytes(16), resource, select, self._delta_seq,
                                 tracker.version, [])
        round_.pages = paginate(entries, page_size, per_page)
        with self._change_lock:
            self._delta_rounds[round_.round_id] = round_
            while len(self._delta_rounds) > max(1, int(self.delta_rounds_kept)):
                self._delta_rounds.popitem(last=False)
        return round_

    def _delta_page(self, request: _Request, round_: _DeltaRound, index: int) -> _Response:
        last = index == len(round_.pages) - 1
        payload: dict = {"@odata.context": self._context(round_.resource, round_.select)}
        if self.faults.take(TRUNCATE_PAGING, request.method, request.path) is None:
            token = DeltaToken(
                kind=DELTA if last else SKIP, resource=round_.resource, seq=round_.seq,
                issued_ms=int(time.time() * 1000), version=round_.version,
                round_id=b"" if last else round_.round_id, page=0 if last else index + 1,
                select=round_.select,
            )
            encoded = self._delta_codec.encode(token)
            link = f"{self.base_url}/v1.0/{round_.resource}/delta?"
            if last:
                payload["@odata.deltaLink"] = f"{link}$deltatoken={encoded}"
            else:
                payload["@odata.nextLink"] = f"{link}$skiptoken={encoded}"
        payload["value"] = round_.pages[index]
        headers = self._common_headers(request, GRAPH_CONTENT_TYPE)
        headers += [("OData-Version", "4.0"), ("x-ms-resource-unit", "1")]
        return _Response(200, _json(payload), headers)
