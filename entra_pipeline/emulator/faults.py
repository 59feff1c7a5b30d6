"""Fault injection for the emulator: scripted errors and broken paging.

Tests arm faults between requests; the server consumes them as matching
requests arrive. All methods are thread-safe because the server answers on
several connection threads at once.

Inside ``POST /v1.0/$batch`` every sub-request is matched on its own (method
``GET``, path ``/v1.0/...`` without query): a matching fault becomes that
sub-response's status, Graph error body and ``Retry-After`` header, while the
batch itself stays 200. The batch request is matched as ``POST /v1.0/$batch``,
before its sub-requests, so a fault with no path (or path ``/v1.0``) and no
method hits the batch request, not a sub-request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["Fault", "FaultInjector"]

#: Kinds of fault. "status" answers with an error; "truncate_paging" drops @odata.nextLink.
STATUS = "status"
TRUNCATE_PAGING = "truncate_paging"


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

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return path.startswith(self.path)


class FaultInjector:
    """The faults armed on one emulator; see :meth:`add` and :meth:`truncate_paging`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

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

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> list[Fault]:
        """Faults that can still fire, in the order they were armed."""
        with self._lock:
            return list(self._faults)

    def take(self, kind: str, method: str, path: str) -> Fault | None:
        """Consume one use of the first armed fault of ``kind`` matching the request."""
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind and fault.matches(method, path):
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
