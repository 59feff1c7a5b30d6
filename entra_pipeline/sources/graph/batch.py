"""JSON batching: GETs sent through ``POST /v1.0/$batch`` (at most 20 a request), throttled
sub-requests re-batched, and every group's member pages read that way.

A mixin of :class:`~entra_pipeline.sources.graph.client.GraphClient`: it uses the client's
settings, stats, base URL and ``_request_json``.
"""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable
from urllib.parse import quote

from entra_pipeline.sources.graph.errors import RETRY_SUB_STATUS, GraphError, describe, error_from, header, \
    retry_after, short
from entra_pipeline.sources.graph.pages import Collection, PageGuard

#: Graph's limit on the requests in one JSON batch.
BATCH_LIMIT = 20

Progress = Callable[[str, int, int | None], None]


class BatchReads:
    """``batch_get`` and ``group_members`` for the Graph client."""

    def batch_get(self, relative_urls: list[str], headers: dict[str, str] | None = None) -> list[dict]:
        """GET each URL through ``POST /v1.0/$batch`` and return one sub-response per URL, in the
        order of ``relative_urls``.

        URLs are relative to ``/v1.0`` (``/groups/{id}/members?$top=999``); ``headers`` (e.g.
        ``ConsistencyLevel``) go into every sub-request, the token into the batch request. URLs
        are sent at most :data:`BATCH_LIMIT` to a batch, up to ``parallel_requests`` batches at
        once. Each answer is Graph's ``{"id", "status", "headers", "body"}`` (``headers`` always a
        dict). Sub-responses with 429, 500, 502, 503 or 504 are sent again, only they, re-batched, after
        the largest ``Retry-After`` among them (capped at ``max_retry_after_seconds``; without
        one, exponential backoff), for at most ``max_retries`` rounds; after that their last
        answer is returned. Other error statuses are returned as they came, not raised. A
        ``$batch`` request that fails (after urllib3's retries) or a malformed batch answer
        raises GraphError.
        """
        return self._batch_get(list(relative_urls), headers)

    def _batch_get(self, urls: list[str], headers: dict[str, str] | None,
                   on_final: Callable[[list[int], list[dict | None]], None] | None = None) -> list[dict]:
        """``batch_get``; ``on_final(indices, results)`` is called in the calling thread each time
        a batch leaves final answers (``results[i]`` for ``i`` in ``indices``)."""
        results: list[dict | None] = [None] * len(urls)
        pending = list(range(len(urls)))
        settings = self.settings
        for round_ in range(settings.max_retries + 1):
            last_round = round_ == settings.max_retries
            chunks = [pending[i:i + BATCH_LIMIT] for i in range(0, len(pending), BATCH_LIMIT)]
            retry: list[int] = []
            wait: float | None = None
            throttled = 0
            batches = self._map_batches(chunks, urls, headers)
            try:
                for chunk, answers in batches:
                    final = []
                    for index, answer in zip(chunk, answers):
                        if answer["status"] in RETRY_SUB_STATUS and not last_round:
                            retry.append(index)
                            throttled += answer["status"] == 429
                            after = retry_after(answer["headers"])
                            if after is not None:
                                wait = after if wait is None else max(wait, after)
                        else:
                            results[index] = answer
                            final.append(index)
                    if on_final is not None and final:
                        on_final(final, results)
            finally:
                batches.close()  # on an error: batches not yet sent are cancelled now
            if not retry:
                break
            with self._stats_lock:
                self.stats.retries += len(retry)
                self.stats.throttled += throttled
            if wait is None:
                wait = min(30.0, settings.backoff_factor * 2 ** round_) + random.uniform(0, settings.backoff_factor)
            time.sleep(min(wait, settings.max_retry_after_seconds))
            pending = sorted(retry)
        return results  # type: ignore[return-value]  # every index was answered in some round

    def _map_batches(self, chunks: list[list[int]], urls: list[str], headers: dict[str, str] | None):
        """(chunk, answers) for each chunk, in order, ``parallel_requests`` batches in flight."""
        workers = min(self.settings.parallel_requests, len(chunks))
        if workers <= 1:
            for chunk in chunks:
                yield chunk, self._post_batch([urls[i] for i in chunk], headers)
            return
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = [pool.submit(self._post_batch, [urls[i] for i in chunk], headers) for chunk in chunks]
            for chunk, future in zip(chunks, futures):
                yield chunk, future.result()
        finally:
            # On an error (or an abandoned generator) batches not yet started are not sent.
            pool.shutdown(wait=True, cancel_futures=True)

    def _post_batch(self, urls: list[str], headers: dict[str, str] | None) -> list[dict]:
        """One ``$batch`` request; the sub-responses in the order of ``urls``."""
        what = f"POST {describe(self.base)}/$batch"
        requests_ = []
        for n, url in enumerate(urls, 1):
            request = {"id": str(n), "method": "GET", "url": url}
            if headers:
                request["headers"] = dict(headers)
            requests_.append(request)
        response, body = self._request_json("POST", f"{self.base}/$batch", json_body={"requests": requests_})
        if body is None:
            raise error_from(response, f"{describe(self.base)}/$batch", "POST")
        with self._stats_lock:
            self.stats.batched_requests += len(urls)
        rid = response.headers.get("request-id", "none")
        answers = body.get("responses")
        if not isinstance(answers, list):
            raise GraphError(f"{what}: answer has no 'responses' list (request-id {rid})")
        by_id: dict[str, dict] = {}
        for answer in answers:  # Graph may answer in any order
            sub_id = answer.get("id") if isinstance(answer, dict) else None
            if (not isinstance(sub_id, str) or not sub_id.isdigit() or not 1 <= int(sub_id) <= len(urls)
                    or sub_id in by_id or not isinstance(answer.get("status"), int)):
                raise GraphError(f"{what}: unexpected sub-response "
                                 f"{short(json.dumps(answer, default=str), 120)} (request-id {rid})")
            sub_headers = answer.get("headers")
            by_id[sub_id] = {**answer, "headers": sub_headers if isinstance(sub_headers, dict) else {}}
        if len(by_id) != len(urls):
            missing = [url for n, url in enumerate(urls, 1) if str(n) not in by_id]
            raise GraphError(f"{what}: no sub-response for {len(missing)} of {len(urls)} requests, e.g. "
                             f"GET {describe(missing[0])} (request-id {rid})")
        return [by_id[str(n)] for n in range(1, len(urls) + 1)]

    def _sub_error(self, url: str, answer: dict) -> GraphError:
        """GraphError for a failed sub-request: its path, status, Graph code and request-id."""
        status = answer["status"]
        body = answer.get("body")
        error = body.get("error") if isinstance(body, dict) else None
        code = message = None
        request_id = header(answer["headers"], "request-id")
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            inner = error.get("innerError")
            if not request_id and isinstance(inner, dict):
                request_id = inner.get("request-id")
        tries = f" after {self.settings.max_retries} retries" if status in RETRY_SUB_STATUS else ""
        return GraphError(
            f"GET {describe(self.base)}{describe(url)} (in $batch): HTTP {status} {short(str(code or 'error'), 100)}"
            f"{tries}: {short(str(message or 'no error message'))} "
            f"(request-id {short(str(request_id or 'none'), 100)})",
            status=status, code=code, request_id=request_id,
        )

    def group_members(self, group_ids: list[str], progress: Progress | None = None) -> dict[str, Collection | None]:
        """Direct members of each group, items carrying ``@odata.type``; None for a group that was
        deleted after it was listed (404). With ``$count`` so that a membership list cut short can
        be noticed.

        Read through ``$batch``: the first pages of up to 20 groups a batch, then the groups'
        nextLinks, up to 20 a batch, round after round until no group has more pages."""
        ids = list(dict.fromkeys(group_ids))
        query = f"$select=id&$top={self.settings.page_size}&$count=true"
        # Graph does not carry ConsistencyLevel to later pages: every sub-request sends it.
        headers = {"ConsistencyLevel": "eventual"}
        items: dict[str, list[dict]] = {gid: [] for gid in ids}
        reported: dict[str, int | None] = {}
        pages: dict[str, int] = dict.fromkeys(ids, 0)
        gone: set[str] = set()
        pending = [(gid, f"/groups/{quote(gid, safe='')}/members?{query}") for gid in ids]
        guards = {gid: PageGuard(f"GET {describe(self.base)}{describe(url)} (in $batch)", url,
                                  self.settings.page_size) for gid, url in pending}
        done = 0

        while pending:
            following: list[tuple[str, str]] = []
            current = pending

            def on_final(indices: list[int], results: list[dict | None]) -> None:
                nonlocal done
                before = done
                for index in indices:
                    gid, url = current[index]
                    answer = results[index]
                    assert answer is not None
                    if answer["status"] == 404:
                        gone.add(gid)  # deleted since it was listed
                        done += 1
                        continue
                    if answer["status"] != 200:
                        raise self._sub_error(url, answer)
                    next_url = self._member_page(gid, url, answer, items, reported, pages)
                    if pages[gid] == 1:
                        guards[gid].expect(reported[gid])
                    if next_url is None:
                        done += 1
                    else:
                        guards[gid].follow(next_url, pages[gid] + 1)
                        following.append((gid, next_url))
                if progress is not None and done != before and (
                        done // 100 != before // 100 or done == len(ids)):
                    progress("group memberships", done, len(ids))

            self._batch_get([url for _, url in current], headers, on_final)
            pending = following

        with self._stats_lock:
            self.stats.pages += sum(pages.values())
        return {gid: None if gid in gone else Collection(items[gid], reported.get(gid), pages[gid])
                for gid in group_ids}

    def _member_page(self, gid: str, url: str, answer: dict, items: dict[str, list[dict]],
                     reported: dict[str, int | None], pages: dict[str, int]) -> str | None:
        """Take one 200 page of a group's members; the next page's relative URL, if any."""
        what = f"GET {describe(self.base)}{describe(url)} (in $batch)"
        body = answer.get("body")
        pages[gid] += 1
        page = pages[gid]
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, list):
            raise GraphError(f"{what}: response has no 'value' list (page {page}, request-id "
                             f"{header(answer['headers'], 'request-id') or 'none'})")
        if page == 1:
            count = body.get("@odata.count")
            reported[gid] = count if isinstance(count, int) and not isinstance(count, bool) else None
        for item in value:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
                raise GraphError(f"{what}: page {page} has an item without a string "
                                 f"'id': {short(json.dumps(item, default=str), 120)}")
            odata_type = item.get("@odata.type")
            if not isinstance(odata_type, str) or not odata_type.startswith("#microsoft.graph."):
                raise GraphError(f"{what}: page {page} has member {short(repr(item['id']), 80)} without a usable "
                                 f"@odata.type: {short(repr(odata_type), 80)}")
        items[gid].extend(value)
        next_link = body.get("@odata.nextLink")
        return None if next_link is None else self._relative(next_link, what)
