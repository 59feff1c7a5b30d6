"""Workday Report-as-a-Service: one custom report, read whole and parsed while it streams.

``GET https://{host}/ccx/service/customreport2/{tenant}/{owner}/{report}?format=json&{prompts}``
answers one JSON object ``{"Report_Entry": [{...}, ...]}``; the keys of an entry are the column
aliases the report's author chose, and an empty value is simply absent. There is no paging and no
change tracking: every sync reads the whole report, 100+ MB for 100k workers. ijson parses it
entry by entry as the bytes arrive, so memory holds the entry being parsed, not the document.

Sign-in: HTTP Basic as an Integration System User, or OAuth: the refresh token of an API client
exchanged at ``https://{host}/ccx/oauth2/{tenant}/token`` (client id and secret by Basic) for a
Bearer token. A wrong ISU password gets a browser sign-in page (HTML) instead of JSON; it is
recognised by its content type and reported as a sign-in problem.

Requests go to the configured host only, https, and follow no redirect (a 3xx is one error naming
the refused host); TLS trusts certifi's roots plus ``ca_bundle``. An entry nested deeper than
:data:`MAX_DEPTH` is not a report ("response is not JSON"); a ``Retry-After`` that is negative or
no number means the exponential backoff.

No message raised here contains a password, secret or token.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Union
from urllib.parse import quote

import ijson
import requests
import urllib3

from entra_pipeline.errors import PipelineError
from entra_pipeline.net import OriginSession, SaneRetry, one_line, trust_context

USER_AGENT = "entra-pipeline (Workday RaaS)"
ENTRIES = "Report_Entry"
_ERROR_BODY_BYTES = 4096  # enough of an error answer to quote its first line
# ijson reads the raw urllib3 stream: a cut connection surfaces as urllib3's errors, not requests'.
_BODY_ERRORS = (urllib3.exceptions.HTTPError, requests.RequestException, OSError)
#: A RaaS entry is an object of values and lists of values: a few levels. Deeper nesting is no
#: report (and would exhaust the recursion of whatever reads the entry later).
MAX_DEPTH = 32
#: Longest wait a ``Retry-After`` may ask for; longer ones are capped to this.
MAX_RETRY_AFTER_SECONDS = 120.0


class WorkdayError(PipelineError):
    """The report could not be read whole. ``transient``: a later attempt may succeed (a 5xx, a
    dropped connection, a body cut short); sign-in and configuration problems are not."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message, transient=transient)


@dataclass(frozen=True)
class BasicAuth:
    """An Integration System User and its password."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class RefreshTokenAuth:
    """An API client registered in Workday and a refresh token issued for it."""

    client_id: str
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)


@dataclass(frozen=True)
class WorkdaySettings:
    host: str  # https://wd2-impl-services1.workday.com
    tenant: str
    owner: str
    report: str
    auth: Union[BasicAuth, RefreshTokenAuth] = field(repr=False)
    prompts: tuple[tuple[str, str], ...] = ()
    ca_bundle: str | None = None
    # A large report is generated before its first byte arrives: minutes, not seconds.
    timeout_seconds: float = 600.0
    max_retries: int = 4
    backoff_factor: float = 1.0


@dataclass
class ReportStats:
    """What one read cost and found: for run metadata and the benchmark."""

    requests: int = 0
    token_requests: int = 0
    bytes: int = 0
    entries: int = 0
    seconds: float = 0.0
    #: column alias -> entries carrying it (Workday omits empty values)
    columns: Counter = field(default_factory=Counter)


class _CountingReader:
    """The response body as ijson reads it, counting bytes as they pass."""

    def __init__(self, raw, stats: ReportStats) -> None:
        self._raw, self._stats = raw, stats

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._stats.bytes += len(data)
        return data


class WorkdayClient:
    """Reads one RaaS report. Not thread-safe; one read at a time."""

    def __init__(self, settings: WorkdaySettings) -> None:
        self.settings = settings
        self.stats = ReportStats()
        retry = SaneRetry(
            total=settings.max_retries, connect=settings.max_retries, read=settings.max_retries,
            status=settings.max_retries, other=0, backoff_factor=settings.backoff_factor, backoff_max=60.0,
            status_forcelist=(429, 500, 502, 503, 504), allowed_methods=frozenset({"GET", "POST"}),
            respect_retry_after_header=True, retry_after_max=MAX_RETRY_AFTER_SECONDS, raise_on_status=False,
        )
        try:
            context = trust_context(settings.ca_bundle)
        except ValueError as exc:
            raise WorkdayError(str(exc)) from None
        # The report and the token endpoint live on the configured host: the password, the client
        # secret and the tokens go nowhere else, and no redirect is followed.
        self.session = OriginSession(settings.host, name="Workday (source.host)", refuse=WorkdayError,
                                     ssl_context=context, timeout=settings.timeout_seconds, retry=retry,
                                     user_agent=USER_AGENT)
        self._access_token: str | None = None

    def __enter__(self) -> WorkdayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    @property
    def report_url(self) -> str:
        s = self.settings
        path = "/".join(quote(part, safe="") for part in (s.tenant, s.owner, s.report))
        return f"{s.host.rstrip('/')}/ccx/service/customreport2/{path}"

    @property
    def token_url(self) -> str:
        s = self.settings
        return f"{s.host.rstrip('/')}/ccx/oauth2/{quote(s.tenant, safe='')}/token"

    # -- sign-in -----------------------------------------------------------------------------------
    def _bearer(self) -> str:
        auth = self.settings.auth
        assert isinstance(auth, RefreshTokenAuth)
        try:
            response = self.session.post(
                self.token_url, data={"grant_type": "refresh_token", "refresh_token": auth.refresh_token},
                auth=(auth.client_id, auth.client_secret), timeout=60)
        except requests.RequestException as exc:
            raise WorkdayError(f"token endpoint {self.token_url} unreachable: {type(exc).__name__}", transient=True) from None
        self.stats.token_requests += 1
        try:
            body = response.json()
        except (ValueError, RecursionError):
            body = {}
        if not isinstance(body, dict):
            body = {}
        if response.status_code != 200 or "access_token" not in body:
            error = one_line(body.get("error") or f"HTTP {response.status_code}", 100)
            hint = {"invalid_client": " (check source.client_id and source.client_secret_env)",
                    "invalid_grant": " (the refresh token in source.refresh_token_env was revoked or is wrong)"}
            raise WorkdayError(f"token request to {self.token_url} refused: {error}"
                               f"{hint.get(error, '')}: {_first_line(str(body.get('error_description', '')))}",
                               transient=response.status_code >= 500)
        return body["access_token"]

    def _get(self) -> requests.Response:
        response = self._send()
        # A Bearer token that lapsed since it was issued: one renewal, then it is a real refusal.
        if response.status_code == 401 and isinstance(self.settings.auth, RefreshTokenAuth):
            response.close()
            self._access_token = None
            response = self._send()
        return response

    def _send(self) -> requests.Response:
        s = self.settings
        headers, auth = {"Accept": "application/json"}, None
        if isinstance(s.auth, BasicAuth):
            auth = (s.auth.username, s.auth.password)
        else:
            if self._access_token is None:
                self._access_token = self._bearer()
            headers["Authorization"] = f"Bearer {self._access_token}"
        try:
            response = self.session.get(self.report_url, params=[("format", "json"), *s.prompts], headers=headers,
                                        auth=auth, stream=True, timeout=s.timeout_seconds)
        except requests.RequestException as exc:
            raise WorkdayError(f"{self.report_url} unreachable: {type(exc).__name__}: {_first_line(str(exc))}",
                               transient=True) from None
        self.stats.requests += 1
        return response

    # -- the report ----------------------------------------------------------------------------------
    def entries(self) -> Iterator[dict]:
        """The report's entries in order, each a dict of column alias -> value, parsed while the
        body streams. Raises WorkdayError when the report is not there whole: nothing read
        before the error may be used."""
        started = time.monotonic()
        response = self._get()
        try:
            self._check(response)
            response.raw.decode_content = True  # gzip, if the server chose it
            seen: set[str] = set()
            # Small reads: what arrived before a cut is parsed (and counted) before the cut is seen.
            events = self._root_keys(ijson.parse(_CountingReader(response.raw, self.stats), buf_size=16 * 1024,
                                                 use_float=True), seen)
            try:
                for entry in ijson.items(events, f"{ENTRIES}.item"):
                    if not isinstance(entry, dict):
                        raise WorkdayError(f"{self.report_url}: entry {self.stats.entries + 1} of {ENTRIES} is not an "
                                           "object")
                    self.stats.entries += 1
                    self.stats.columns.update(entry.keys())
                    yield entry
                # Drain the rest of the document: a cut after the last entry is still a cut.
                for _ in events:
                    pass
            except ijson.JSONError as exc:
                raise WorkdayError(f"{self.report_url}: the report was cut short or is not JSON after "
                                   f"{self.stats.bytes:,} bytes and {self.stats.entries:,} entries "
                                   f"({_first_line(str(exc))})", transient=True) from None
            except _BODY_ERRORS as exc:
                raise WorkdayError(f"{self.report_url}: the connection broke after {self.stats.bytes:,} bytes and "
                                   f"{self.stats.entries:,} entries ({type(exc).__name__})", transient=True) from None
            if ENTRIES not in seen:
                found = one_line(", ".join(sorted(seen)) or "nothing")
                raise WorkdayError(f"{self.report_url}: the answer has no {ENTRIES} (found: {found}); is this a RaaS "
                                   "report with JSON output?")
        finally:
            response.close()
            self.stats.seconds = round(time.monotonic() - started, 3)

    def _root_keys(self, events, seen: set[str]):
        depth = 0
        for prefix, event, value in events:
            if event in ("start_map", "start_array"):
                depth += 1
                if depth > MAX_DEPTH:
                    raise WorkdayError(f"{self.report_url}: response is not JSON a report sends: nested more than "
                                       f"{MAX_DEPTH} levels deep (after {self.stats.bytes:,} bytes)")
            elif event in ("end_map", "end_array"):
                depth -= 1
            elif event == "map_key" and not prefix:
                seen.add(value)
            yield prefix, event, value

    def _check(self, response: requests.Response) -> None:
        """A 200 with a JSON body, or one clear error."""
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        s = self.settings
        if content_type == "text/html" and response.status_code in (200, 401, 403):
            who = (f"the Integration System User {s.auth.username!r} (source.username, source.password_env)"
                   if isinstance(s.auth, BasicAuth) else f"the API client {s.auth.client_id!r}")
            raise WorkdayError(f"{self.report_url}: Workday answered with a sign-in page instead of the report: "
                               f"wrong password, or {who} is locked, expired or not allowed to run the report")
        if response.status_code != 200:
            text = response.raw.read(_ERROR_BODY_BYTES, decode_content=True).decode("utf-8", "replace")
            raise WorkdayError(f"{self.report_url}: HTTP {response.status_code}: {_first_line(_error_text(text))}",
                               transient=response.status_code == 429 or response.status_code >= 500)
        if "json" not in content_type:
            raise WorkdayError(f"{self.report_url}: expected JSON, got {content_type or 'no content type'}")


def _error_text(text: str) -> str:
    # Workday's error bodies are JSON {"error": ...} or an HTML/XML page; quote what a person reads.
    try:
        body = json.loads(text)
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])
    except (ValueError, RecursionError):
        pass
    return text.strip() or "no details"


def _first_line(text: str) -> str:
    text = text.strip()
    return one_line(text.splitlines()[0], 300) if text else ""
