"""Graph's JSON batching, ``POST /v1.0/$batch``: the whole batch validated, then each
sub-request answered as if sent on its own (see the emulator README)."""

from __future__ import annotations

import json
import logging
import random
import uuid

from ..faults import STATUS, profile_fault
from ..transport import GRAPH_CONTENT_TYPE, Request, Response, SubHeaders, common_headers, json_body
from .responses import GraphError, graph_error

log = logging.getLogger("entra_pipeline.emulator.server")

#: Graph's limit on the requests in one JSON batch.
MAX_BATCH_REQUESTS = 20


class BatchFace:
    """Answers ``$batch`` through the emulator's Graph face, one fault draw per sub-request."""

    def __init__(self, emulator) -> None:
        self.emulator = emulator

    def answer(self, request: Request) -> Response:
        """``POST /v1.0/$batch``: validate the whole batch, then answer each sub-request."""
        def invalid(message: str) -> GraphError:
            return GraphError(400, "BadRequest", message)

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
        if self.emulator.shuffle_batch_responses:
            random.shuffle(answers)
        parts = []
        for sub_id, answer in answers:
            headers = {name: value for name, value in answer.headers}
            parts.append(b'{"id":' + json_body(sub_id) + b',"status":' + str(answer.status).encode()
                         + b',"headers":' + json_body(headers) + b',"body":' + (answer.body or b"null") + b"}")
        body = b'{"responses":[' + b",".join(parts) + b"]}"
        headers = common_headers(request, GRAPH_CONTENT_TYPE) + [("OData-Version", "4.0")]
        return Response(200, body, headers)

    def _sub_request(self, outer: Request, item: dict) -> Response:
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
        sub_headers = SubHeaders(headers)
        sub = Request(method, target, path, query, sub_headers, b"", str(uuid.uuid4()),
                       sub_headers.get("client-request-id") or str(uuid.uuid4()))
        try:
            drawn = self.emulator.faults.draw_batch()  # one draw per sub-request, like the outer request
            if "://" in url or url.startswith("//"):
                response = graph_error(sub, GraphError(
                    400, "BadRequest", f"Invalid request URL '{url}': URLs in a batch must be relative to "
                    "the service version, e.g. '/users'."))
            else:
                fault = self.emulator.faults.take(STATUS, method, path)
                if fault is not None:
                    response = self.emulator.fault_response(sub, fault, False)
                elif drawn is not None:
                    self.emulator.faults.record(drawn)
                    response = self.emulator.fault_response(sub, profile_fault(drawn), False)
                else:
                    response = self.emulator.graph.answer(sub, batched=True)
        except Exception:
            log.exception("emulator: internal error on batched %s %s", method, target)
            response = graph_error(sub, GraphError(500, "UnknownError", "Internal emulator error."))
        with self.emulator.state_lock:
            self.emulator.batched_request_count += 1
            self.emulator.batched_request_log.append((method, target, response.status))
        return response
