"""Graph's delta queries, ``/users/delta`` and ``/groups/delta``: each round computed whole from
the change log at its first request, paged from memory with signed skiptokens, and ended with a
deltaLink that resumes from the round's version (see the emulator README)."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import quote

from ..changes import USERS
from ..delta import DELTA, SKIP, DeltaToken, Selection, TokenCodec, TokenError, group_round, paginate, user_round
from ..directory import Directory
from ..faults import TRUNCATE_PAGING
from ..odata import bad_request, group_schema, resolve_select, unsupported, user_schema
from ..transport import Request, Response
from .responses import GraphError, context_url, graph_json

#: Query options Graph rejects on delta queries (``$filter`` is answered "not emulated" separately).
DELTA_UNSUPPORTED = ("$top", "$orderby", "$expand", "$count", "$search", "$format")
#: Defaults of the delta attributes of :class:`Emulator`.
DELTA_PAGE_SIZE = 200


def max_page_size(prefer: str | None) -> int | None:
    """The ``odata.maxpagesize`` of a Prefer header, if it asks for a positive one."""
    for part in (prefer or "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "odata.maxpagesize" and value.strip().isdigit() and int(value) > 0:
            return int(value)
    return None
DELTA_MEMBERS_PER_PAGE = 1000
DELTA_TOKEN_LIFETIME = 7 * 24 * 3600
DELTA_ROUNDS_KEPT = 16


@dataclass
class DeltaRound:
    """One delta round, computed whole at its first request and paged from memory."""

    round_id: bytes
    resource: str
    select: str | None
    seq: int
    version: int  # change-log version of the snapshot: what its deltaLink resumes from
    pages: list[list[dict]]


class DeltaFace:
    """Answers delta requests and keeps the recent rounds (an LRU of ``delta_rounds_kept``)."""

    def __init__(self, emulator) -> None:
        self.emulator = emulator
        self._codec = TokenCodec()
        self._rounds: OrderedDict[bytes, DeltaRound] = OrderedDict()
        self._seq = 0  # the last round's number
        self._min_seq = 1  # rounds numbered below are expired (expire_delta_tokens, reindex)

    def expire_tokens(self) -> None:
        """Expire every token issued so far; the caller holds the emulator's change lock."""
        self._min_seq = self._seq + 1
        self.emulator.tracker.clear_log()  # no valid token can reach back before now

    def answer(self, request: Request, directory: Directory, generation: int, resource: str) -> Response:
        """``GET /v1.0/users/delta`` and ``/v1.0/groups/delta`` (see the emulator README)."""
        params = request.params
        for key in DELTA_UNSUPPORTED:
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
            token = self._token(skiptoken, "$skiptoken", SKIP, resource)
            with self.emulator.change_lock:
                round_ = self._rounds.get(token.round_id)
                if round_ is not None:
                    self._rounds.move_to_end(token.round_id)
            if round_ is None or token.page >= len(round_.pages):
                raise GraphError(400, "syncStateNotFound",
                                 "The sync state of this delta round is no longer available (the server "
                                 "keeps only recent rounds): start again without a token.")
            return self._page(request, round_, token.page)
        # Graph honours Prefer: odata.maxpagesize on delta below its own cap, never above it.
        wanted = max_page_size(request.headers.get("Prefer"))
        if deltatoken is not None:
            token = self._token(deltatoken, "$deltatoken", DELTA, resource)
            round_ = self._round(resource, token.select, token.version, wanted)
        else:
            round_ = self._round(resource, params.get("$select"), None, wanted)
        return self._page(request, round_, 0)

    def _token(self, text: str, option: str, kind: int, resource: str) -> DeltaToken:
        try:
            token = self._codec.decode(text)
        except TokenError as exc:
            if exc.foreign:
                raise GraphError(400, "syncStateNotFound",
                                 f"The {option} was not issued by this server (another emulator "
                                 "instance?): start a new round without a token.") from None
            raise bad_request(f"Invalid {option}: it is malformed or was tampered with.") from None
        if token.kind != kind or token.resource != resource:
            raise bad_request(f"Invalid {option}: it was not issued for this kind of request on /{resource}/delta.")
        expired = (token.seq < self._min_seq
                   or time.time() * 1000 - token.issued_ms > self.emulator.delta_token_lifetime * 1000)
        if expired:
            if self.emulator.delta_expiry_status == 400:
                raise GraphError(400, "syncStateNotFound",
                                 f"The {option} has expired: start a new round without a token.")
            location = f"{self.emulator.base_url}/v1.0/{resource}/delta"
            if token.select is not None:
                location += "?$select=" + quote(token.select, safe=",()")
            raise GraphError(410, "resyncRequired",
                             f"The {option} has expired: resync required. Start a new round at the "
                             "Location URL.", [("Location", location)])
        return token

    def _selection(self, resource: str, directory: Directory, select: str | None) -> Selection:
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

    def _round(self, resource: str, select: str | None, since: int | None, wanted: int | None = None) -> DeltaRound:
        page_size, per_page = int(self.emulator.delta_page_size), int(self.emulator.delta_members_per_page)
        if wanted is not None:
            page_size = min(page_size, wanted)
        if page_size < 1 or per_page < 1:
            raise ValueError("delta_page_size and delta_members_per_page must be at least 1")
        with self.emulator.change_lock:
            tracker = self.emulator.tracker
            selection = self._selection(resource, tracker.directory, select)
            if resource == USERS:
                entries = user_round(tracker, selection, since)
            else:
                entries = group_round(tracker, selection, since)
            self._seq += 1
            round_ = DeltaRound(secrets.token_bytes(16), resource, select, self._seq,
                                 tracker.version, [])
        round_.pages = paginate(entries, page_size, per_page)
        with self.emulator.change_lock:
            self._rounds[round_.round_id] = round_
            while len(self._rounds) > max(1, int(self.emulator.delta_rounds_kept)):
                self._rounds.popitem(last=False)
        return round_

    def _page(self, request: Request, round_: DeltaRound, index: int) -> Response:
        last = index == len(round_.pages) - 1
        payload: dict = {"@odata.context": context_url(self.emulator.base_url, round_.resource, round_.select)}
        if self.emulator.faults.take(TRUNCATE_PAGING, request.method, request.path) is None:
            token = DeltaToken(
                kind=DELTA if last else SKIP, resource=round_.resource, seq=round_.seq,
                issued_ms=int(time.time() * 1000), version=round_.version,
                round_id=b"" if last else round_.round_id, page=0 if last else index + 1,
                select=round_.select,
            )
            encoded = self._codec.encode(token)
            link = f"{self.emulator.base_url}/v1.0/{round_.resource}/delta?"
            if last:
                payload["@odata.deltaLink"] = f"{link}$deltatoken={encoded}"
            else:
                payload["@odata.nextLink"] = f"{link}$skiptoken={encoded}"
        payload["value"] = round_.pages[index]
        return graph_json(request, payload)
