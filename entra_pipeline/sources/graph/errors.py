"""What Graph's failures mean: one GraphError line naming the request, its status, Graph's code
and request-id, and whether trying again later may help."""

from __future__ import annotations

import math
from urllib.parse import urlsplit

import requests

from entra_pipeline.errors import PipelineError
from entra_pipeline.net import one_line

#: Sub-responses that are retried (re-batched) by ``batch_get``.
RETRY_SUB_STATUS = frozenset({429, 500, 502, 503, 504})
#: Statuses that say "try again later".
TRANSIENT_STATUS = RETRY_SUB_STATUS


class GraphError(PipelineError):
    """A Graph request failed for good; the message is one line with path and request-id."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 request_id: str | None = None, transient: bool | None = None) -> None:
        # Worth trying again later (throttled, unavailable, connection lost), after the client's
        # own retries gave up.
        super().__init__(message, transient=status in TRANSIENT_STATUS if transient is None else transient)
        self.status = status
        self.code = code
        self.request_id = request_id


class DeltaExpired(GraphError):
    """Graph no longer knows the stored delta state (400 syncStateNotFound, 410 resyncRequired):
    a full round has to start again."""


#: Graph's codes for a delta token it can no longer use.
DELTA_RESYNC_CODES = frozenset({"syncStateNotFound", "resyncRequired"})


def describe(url: str) -> str:
    """The request's path without query: skip tokens are long and say nothing to a reader."""
    return urlsplit(url).path


def short(text: str, limit: int = 200) -> str:
    return one_line(text, limit)


def header(headers: dict, name: str) -> str | None:
    """A sub-response header, whatever its case."""
    name = name.lower()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name:
            return str(value)
    return None


def retry_after(headers: dict) -> float | None:
    """A sub-response's ``Retry-After`` in seconds (Graph sends whole seconds), if usable."""
    raw = header(headers, "Retry-After")
    try:
        seconds = float(raw) if raw is not None else None
    except ValueError:
        return None
    # Negative, "nan" or "inf": no usable advice, the exponential backoff applies.
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def error_code(response: requests.Response) -> str | None:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError, RecursionError):
        return None
    return error.get("code") if isinstance(error, dict) else None


def error_from(response: requests.Response, what: str, method: str = "GET") -> GraphError:
    request_id = response.headers.get("request-id")
    code, message = None, None
    try:
        error = response.json().get("error")
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            inner = error.get("innerError") or {}
            request_id = request_id or inner.get("request-id")
    except (ValueError, AttributeError, RecursionError):
        message = short(response.text, 120) or None
    retries = getattr(response.raw, "retries", None)
    tries = f" after {len(retries.history)} retries" if retries is not None and retries.history else ""
    return GraphError(
        f"{method} {what}: HTTP {response.status_code} {short(str(code or response.reason), 100)}{tries}: "
        f"{short(str(message or 'no error message'))} (request-id {short(str(request_id or 'none'), 100)})",
        status=response.status_code, code=code, request_id=request_id,
    )
