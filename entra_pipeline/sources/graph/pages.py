"""What a paged read returns (a collection, a delta round) and the guard that ends a read that
loops or runs far beyond its size."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from entra_pipeline.sources.graph.errors import GraphError, short

#: Pages one read (a collection, a delta round, one group's members) may take, whatever the
#: server says: 10 million objects at 100 a page (Graph's smallest default page), so a server
#: minting ever-new nextLinks cannot keep a sync running forever.
MAX_PAGES_PER_READ = 100_000
#: A read whose first page reported ``@odata.count`` may take twice the pages that count needs
#: (at the smaller of page_size and 100 a page: Graph may send less than ``$top``) plus this many;
#: eventual consistency moves the count a little, never by half the collection.
COUNT_MARGIN_PAGES = 10


class PageGuard:
    """Ends a paged read that loops (a nextLink seen before in the same read) or runs far beyond
    its expected size, with one GraphError line. Links are remembered as digests: a hostile
    server's long links cost 32 bytes each."""

    def __init__(self, what: str, first_url: str, page_size: int) -> None:
        self.what = what
        self.page_size = max(1, min(page_size, 100))
        self.limit = MAX_PAGES_PER_READ
        self.reported: int | None = None
        self._seen = {self._key(first_url): 1}

    @staticmethod
    def _key(url: str) -> bytes:
        return hashlib.sha256(url.encode("utf-8", "surrogatepass")).digest()

    def expect(self, count: object) -> None:
        """The first page's ``@odata.count``, if it is a count."""
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            self.reported = count
            self.limit = min(MAX_PAGES_PER_READ, 2 * math.ceil(count / self.page_size) + COUNT_MARGIN_PAGES)

    def follow(self, link: str, page: int) -> None:
        """``link`` leads to page number ``page``; raises GraphError instead of reading it when the
        read loops or has gone on too long."""
        key = self._key(link)
        if key in self._seen:
            raise GraphError(f"nextLink loop: page {page} repeats page {self._seen[key]} of {self.what}; "
                             "the read was ended", transient=False)
        if page > self.limit:
            if self.reported is not None and self.limit < MAX_PAGES_PER_READ:
                raise GraphError(f"{self.what}: page {page} is far beyond the {self.reported:,} objects Graph reported "
                                 f"(@odata.count; at most {self.limit:,} pages expected); the read was ended",
                                 transient=False)
            raise GraphError(f"{self.what}: more than {MAX_PAGES_PER_READ:,} pages; the read was ended",
                             transient=False)
        self._seen[key] = page


@dataclass
class Collection:
    items: list[dict]
    reported_count: int | None
    pages: int


@dataclass
class DeltaRound:
    """One round of a delta query: every page from the start (or the stored deltaLink) up to the
    page carrying the next ``@odata.deltaLink``.

    ``items`` are Graph's objects in page order (changed properties only, ``@removed`` entries,
    ``members@delta`` / ``manager@delta``); an object may appear more than once. They are empty
    when the pages went elsewhere as they came (``count`` says how many there were). ``complete``
    is False when a page carried neither nextLink nor deltaLink: the round was cut short and must
    not be applied as if it were whole."""

    items: list[dict]
    delta_link: str | None
    pages: int
    full: bool
    complete: bool
    count: int = 0


def check_delta_item(item: object, what: str, page: int) -> None:
    """A delta item needs a string id; its ``*@delta`` lists need ids and types (or @removed)."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
        raise GraphError(f"{what}: delta page {page} has an item without a string 'id': "
                         f"{short(json.dumps(item, default=str), 120)}")
    for key in ("members@delta", "manager@delta"):
        links = item.get(key)
        if links is None:
            continue
        if not isinstance(links, list) or not all(
                isinstance(l, dict) and isinstance(l.get("id"), str) and l["id"]
                and (isinstance(l.get("@odata.type"), str) or isinstance(l.get("@removed"), dict))
                for l in links):
            raise GraphError(f"{what}: delta page {page}: {key} of {short(repr(item['id']), 80)} is not a list of "
                             f"objects with an id and an @odata.type: {short(json.dumps(links, default=str), 120)}")


def member_type(item: dict) -> str:
    """``#microsoft.graph.user`` -> ``user``; GraphError for an item without a Graph type."""
    odata_type = item.get("@odata.type")
    if not isinstance(odata_type, str) or not odata_type.startswith("#microsoft.graph."):
        raise GraphError(f"member {short(repr(item.get('id')), 80)} has no usable @odata.type: {short(repr(odata_type), 80)}")
    return odata_type.removeprefix("#microsoft.graph.")
