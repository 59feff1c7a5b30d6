"""Paging of Graph collections: ``$top``, ``$count``, ``$filter`` over a snapshot of ids per
directory generation, and opaque, HMAC-signed ``$skiptoken`` nextLinks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import threading
from collections import OrderedDict
from typing import Callable
from urllib.parse import unquote_plus

from ..faults import TRUNCATE_PAGING
from ..odata import EntitySchema, bad_request, unsupported
from ..odata_filter import compile_filter
from ..transport import Request, Response
from .responses import graph_json

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 999
CACHE_ENTRIES = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PagingToken:
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


def page_size(request: Request) -> int:
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

def count_mode(request: Request) -> tuple[bool, bool]:
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

class CollectionPager:
    """Pages collections for the Graph face; filtered id lists are computed once per (directory
    generation, query) and kept in a small LRU cache, so each page costs O(page size)."""

    def __init__(self, emulator) -> None:
        self.emulator = emulator
        self._tokens = PagingToken()
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def _cache_get(self, key: tuple) -> list | None:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit

    def _cached_ids(self, key: tuple, compute: Callable[[], list]) -> list:
        hit = self._cache_get(key)
        if hit is not None:
            return hit
        value = compute()  # outside the lock: other connections keep being served
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return value

    def _next_link(self, request: Request, token: str) -> str:
        kept = [part for part in request.query.split("&")
                if part and unquote_plus(part.partition("=")[0]).lower() != "$skiptoken"]
        kept.append(f"$skiptoken={token}")
        return f"{self.emulator.base_url}{request.path}?{'&'.join(kept)}"

    def page(
        self,
        request: Request,
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
    ) -> Response:
        """Serve one page of a filtered, snapshot-by-generation collection."""
        top = page_size(request)
        if page_limit is not None:
            top = min(top, page_limit)  # $top stays valid and is carried on; the server pages smaller
        count, advanced = count_mode(request)
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
            snapshot, offset = self._tokens.decode(skiptoken, token_key)

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
        if end < len(ids) and self.emulator.faults.take(TRUNCATE_PAGING, request.method, request.path) is None:
            payload["@odata.nextLink"] = self._next_link(request, self._tokens.encode(snapshot, end, token_key))
        payload["value"] = value
        return graph_json(request, payload, resource_units)
