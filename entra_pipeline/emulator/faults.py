"""Fault injection for the emulator: scripted errors, broken paging and a random profile.

Tests arm faults between requests; the server consumes them as matching
requests arrive. All methods are thread-safe because the server answers on
several connection threads at once.

Inside ``POST /v1.0/$batch`` every sub-request is matched on its own (method
``GET``, path ``/v1.0/...`` without query): a matching fault becomes that
sub-response's status, Graph error body and ``Retry-After`` header, while the
batch itself stays 200. The batch request is matched as ``POST /v1.0/$batch``,
before its sub-requests, so a fault with no path (or path ``/v1.0``) and no
method hits the batch request, not a sub-request.

``truncate_body(path, after_bytes=None)`` answers normally but shuts the
connection down part-way through the body (Graph and Workday alike; see
:meth:`FaultInjector.truncate_body`).

``redirect(path, location, status=307)`` answers a matching request (identity
endpoints, ``$batch`` and Workday included) with a redirect to ``location``;
``rewrite(..., identity=True)`` rewrites identity answers (a discovery document
naming a foreign token endpoint).

Random profile (reliability runs): ``faults.profile = FaultProfile(seed=7,
throttle=0.1, ...)`` makes a seeded fraction of Graph requests (paths under
``/v1.0/``, ``$batch`` included; never the identity endpoints) fail. Every
such request takes exactly one draw from ``random.Random(seed)`` (under a
lock), whether or not a scripted fault answers it; the draw picks at most one
kind, by cumulative probability in the order of :data:`REQUEST_KINDS`:

- ``throttle``: 429 ``TooManyRequests`` with ``Retry-After: retry_after_seconds``;
- ``unavailable`` / ``gateway_timeout``: 503 ``ServiceUnavailable`` / 504
  ``GatewayTimeout``, the lower half of the kind's probability band with
  ``Retry-After``, the upper half without;
- ``drop``: the normal response's status line and headers (full
  ``Content-Length``), half its body, then the connection is shut down;
- ``malformed``: the normal response (200 for a valid request) with its body
  cut to half and ``Content-Length`` matching the cut body (the connection
  stays usable);
- ``slow``: the normal response, sent after ``slow_seconds``.

Each sub-request a ``$batch`` runs (its outer request not answered with an
error) takes one draw of its own: with probability ``batch_throttle`` it is answered 429 with
``Retry-After`` in its sub-response. Scripted faults win over the profile (the
draw is still taken, so the profile's sequence depends only on the request
sequence). Same seed and same request sequence give the same faults;
concurrent requests draw in arrival order. ``profile_hits`` counts the faults
the profile injected per kind (:data:`PROFILE_KINDS`); assigning a profile
restarts its random sequence and zeroes the counts, ``profile = None`` stops it
(counts kept), :meth:`FaultInjector.clear` removes scripted faults and the
profile and zeroes the counts.
"""

from __future__ import annotations

import math
import random
import threading
from typing import Callable
from dataclasses import dataclass

__all__ = ["Fault", "FaultInjector", "FaultProfile", "ProfileFault"]

#: Kinds of fault. "status" answers with an error; "truncate_paging" drops @odata.nextLink.
STATUS = "status"
TRUNCATE_PAGING = "truncate_paging"
#: "rewrite": the real answer, passed through a function the test gives (broken Graph answers).
REWRITE = "rewrite"
#: "truncate_body": the real answer's status and headers, part of its body, then the connection shut.
TRUNCATE_BODY = "truncate_body"
#: "redirect": a 3xx with a Location header instead of the answer (identity endpoints included).
REDIRECT = "redirect"
#: Statuses :meth:`FaultInjector.redirect` answers with.
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})

#: Request-level kinds of the random profile, in the order their probability bands are laid out.
REQUEST_KINDS = ("throttle", "unavailable", "gateway_timeout", "drop", "malformed", "slow")
#: Every kind ``profile_hits`` counts.
PROFILE_KINDS = REQUEST_KINDS + ("batch_throttle",)
#: Where :meth:`FaultInjector.truncate_body` cuts a streamed body by default.
STREAM_CUT_BYTES = 32 * 1024
#: HTTP status of the error kinds.
PROFILE_STATUS = {"throttle": 429, "unavailable": 503, "gateway_timeout": 504, "batch_throttle": 429}


@dataclass(frozen=True)
class FaultProfile:
    """Probabilities (0..1) of each random fault per Graph request; see the module docstring.

    ``throttle + unavailable + gateway_timeout + drop + malformed + slow`` must
    not exceed 1 (one draw picks at most one). ``batch_throttle`` applies to
    each ``$batch`` sub-request separately.
    """

    seed: int = 0
    throttle: float = 0.0
    unavailable: float = 0.0
    gateway_timeout: float = 0.0
    drop: float = 0.0
    malformed: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 0.5
    batch_throttle: float = 0.0
    retry_after_seconds: int = 1

    def __post_init__(self) -> None:
        for name in PROFILE_KINDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1, got {value!r}")
        total = sum(getattr(self, name) for name in REQUEST_KINDS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"the request-level probabilities add up to {total:g}, more than 1")
        if isinstance(self.slow_seconds, bool) or not isinstance(self.slow_seconds, (int, float)) \
                or not (0.0 <= self.slow_seconds and math.isfinite(self.slow_seconds)):
            raise ValueError("slow_seconds must be a finite number of seconds >= 0")
        if isinstance(self.retry_after_seconds, bool) or not isinstance(self.retry_after_seconds, int) \
                or self.retry_after_seconds < 0:
            raise ValueError("retry_after_seconds must be an integer >= 0 (Retry-After is whole seconds)")


@dataclass(frozen=True)
class ProfileFault:
    """What one draw of the profile decided: a kind of :data:`PROFILE_KINDS` and how to answer.

    ``status`` is set for the error kinds (429, 503, 504), ``retry_after`` when
    the answer carries ``Retry-After``, ``seconds`` for ``slow``.
    """

    kind: str
    status: int = 0
    retry_after: int | None = None
    seconds: float = 0.0


@dataclass
class Fault:
    """One armed fault. ``remaining`` of ``None`` means it never runs out."""

    kind: str
    path: str = ""
    method: str | None = None
    remaining: int | None = 1
    status: int = 0
    retry_after: int | None = None
    body: dict | None = None
    hits: int = 0
    #: For "rewrite": the parsed JSON answer (None if it is not JSON) -> the new body (dict or
    #: list as JSON, str or bytes as they are), with ``content_type`` replacing the answer's.
    transform: Callable[[object], object] | None = None
    content_type: str | None = None
    #: For "truncate_body": body bytes sent before the connection is shut down (None: see
    #: :meth:`FaultInjector.truncate_body`).
    after_bytes: int | None = None
    #: For "redirect": the Location header sent.
    location: str | None = None
    #: For "rewrite": it applies to the identity endpoints (and only to them) instead of Graph's.
    identity: bool = False

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return path.startswith(self.path)


class FaultInjector:
    """The faults of one emulator: scripted (:meth:`add`, :meth:`truncate_paging`) and :attr:`profile`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._profile: FaultProfile | None = None
        self._rng = random.Random(0)
        self._hits = dict.fromkeys(PROFILE_KINDS, 0)

    def add(
        self,
        status: int,
        *,
        path: str = "",
        method: str | None = None,
        times: int | None = 1,
        retry_after: int | None = None,
        body: dict | None = None,
    ) -> Fault:
        """Answer the next ``times`` requests whose URL path starts with ``path`` with ``status``.

        The response carries a Graph error body for that status (or ``body``
        verbatim) and a ``Retry-After`` header when ``retry_after`` is given.
        ``times=None`` keeps the fault armed until :meth:`clear`.
        """
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        self._check_times(times)
        fault = Fault(STATUS, path=path, method=method, remaining=times, status=status,
                      retry_after=retry_after, body=body)
        with self._lock:
            self._faults.append(fault)
        return fault

    def rewrite(self, path: str, transform: Callable[[object], object], *, times: int | None = 1,
                method: str | None = "GET", status: int | None = None, content_type: str | None = None,
                identity: bool = False) -> Fault:
        """Pass the next ``times`` answers to matching Graph requests through ``transform`` (the
        parsed JSON answer -> the body to send instead; dicts and lists go out as JSON, str and
        bytes as they are), optionally with another ``status`` and ``content_type``: an item
        without ``id``, a ``null`` where a list belongs, a proxy's HTML page.

        ``identity=True`` rewrites answers of the identity endpoints instead (an openid-configuration
        naming a foreign token endpoint, a token answer that is no JSON); such a fault never
        applies to Graph, nor an ordinary one to the identity endpoints."""
        self._check_times(times)
        fault = Fault(REWRITE, path=path, method=method, remaining=times, status=status or 0,
                      transform=transform, content_type=content_type, identity=identity)
        with self._lock:
            self._faults.append(fault)
        return fault

    def truncate_paging(self, path: str = "", *, times: int | None = 1, method: str | None = "GET") -> Fault:
        """Drop ``@odata.nextLink`` from the next ``times`` matching pages that would have one.

        The response is otherwise normal (200, a full page), which is exactly
        what a paging-completeness check has to catch. On ``/users/delta`` and
        ``/groups/delta`` every page matches and loses its link, nextLink or
        deltaLink: the page carries neither.
        """
        self._check_times(times)
        fault = Fault(TRUNCATE_PAGING, path=path, method=method, remaining=times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def truncate_body(self, path: str = "", *, after_bytes: int | None = None, times: int | None = 1,
                      method: str | None = "GET") -> Fault:
        """Cut the next ``times`` matching answers short: their status line and headers, the first
        ``after_bytes`` bytes of the body, then the connection is shut down (no TLS close_notify),
        as when a link drops mid-download. Never applies to the identity endpoints.

        ``after_bytes=None`` cuts a whole body at half its length, and a streamed body (a Workday
        report, sent chunked) after :data:`STREAM_CUT_BYTES`, or at half the body if the body is
        shorter; either way the body is incomplete. A streamed body is cut inside a chunk whose header
        announced the whole chunk.
        """
        self._check_times(times)
        if after_bytes is not None and after_bytes < 0:
            raise ValueError("after_bytes must be >= 0")
        fault = Fault(TRUNCATE_BODY, path=path, method=method, remaining=times, after_bytes=after_bytes)
        with self._lock:
            self._faults.append(fault)
        return fault

    def redirect(self, path: str, location: str, *, status: int = 307, times: int | None = 1,
                 method: str | None = None) -> Fault:
        """Answer the next ``times`` requests whose URL path starts with ``path`` with ``status``
        (301, 302, 303, 307 or 308) and ``Location: location`` instead of the real answer: any
        request, the identity endpoints (token, devicecode, openid-configuration), ``$batch``
        and Workday included. A redirect to another host is what no client of ours may follow."""
        if status not in REDIRECT_STATUS:
            raise ValueError(f"status must be a redirect status {sorted(REDIRECT_STATUS)}")
        if not location or any(c in location for c in "\r\n"):
            raise ValueError("location must be a non-empty header value without line breaks")
        self._check_times(times)
        fault = Fault(REDIRECT, path=path, method=method, remaining=times, status=status, location=location)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every scripted fault and the random profile; zero ``profile_hits``."""
        with self._lock:
            self._faults.clear()
            self._profile = None
            self._hits = dict.fromkeys(PROFILE_KINDS, 0)

    # -- random profile -----------------------------------------------------------

    @property
    def profile(self) -> FaultProfile | None:
        """The random fault profile, or None (the default: no random faults)."""
        return self._profile

    @profile.setter
    def profile(self, value: FaultProfile | None) -> None:
        if value is not None and not isinstance(value, FaultProfile):
            raise TypeError("profile must be a FaultProfile or None")
        with self._lock:
            self._profile = value
            if value is not None:
                self._rng = random.Random(value.seed)
                self._hits = dict.fromkeys(PROFILE_KINDS, 0)

    @property
    def profile_hits(self) -> dict[str, int]:
        """Faults the profile injected so far, per kind (every kind present, 0 if none); a copy."""
        with self._lock:
            return dict(self._hits)

    def draw(self) -> ProfileFault | None:
        """One draw for one Graph request: the fault the profile picked, or None.

        Without a profile nothing is drawn. The caller reports a fault it
        actually injected with :meth:`record` (a scripted fault may win).
        """
        with self._lock:
            profile = self._profile
            if profile is None:
                return None
            u = self._rng.random()
        low = 0.0
        for kind in REQUEST_KINDS:
            p = getattr(profile, kind)
            if u < low + p:
                retry_after = None
                if kind == "throttle" or (kind in ("unavailable", "gateway_timeout") and u < low + p / 2):
                    retry_after = profile.retry_after_seconds
                return ProfileFault(kind, PROFILE_STATUS.get(kind, 0), retry_after,
                                    profile.slow_seconds if kind == "slow" else 0.0)
            low += p
        return None

    def draw_batch(self) -> ProfileFault | None:
        """One draw for one ``$batch`` sub-request: a ``batch_throttle`` 429, or None."""
        with self._lock:
            profile = self._profile
            if profile is None:
                return None
            u = self._rng.random()
        if u < profile.batch_throttle:
            return ProfileFault("batch_throttle", 429, profile.retry_after_seconds)
        return None

    def record(self, fault: ProfileFault) -> None:
        """Count a profile fault that was injected (``profile_hits``)."""
        with self._lock:
            self._hits[fault.kind] = self._hits.get(fault.kind, 0) + 1

    @property
    def pending(self) -> list[Fault]:
        """Faults that can still fire, in the order they were armed."""
        with self._lock:
            return list(self._faults)

    def take(self, kind: str, method: str, path: str, *, identity: bool = False) -> Fault | None:
        """Consume one use of the first armed fault of ``kind`` matching the request;
        ``identity`` selects the rewrite faults armed for the identity endpoints."""
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind and fault.identity == identity and fault.matches(method, path):
                    fault.hits += 1
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    @staticmethod
    def _check_times(times: int | None) -> None:
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for 'until cleared')")


def profile_fault(drawn: ProfileFault) -> Fault:
    """The scripted-fault equivalent of a profile error (429/503/504), answered the same way."""
    return Fault(STATUS, status=drawn.status, retry_after=drawn.retry_after, remaining=None)
