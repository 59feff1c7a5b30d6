"""Graph's answers shared by the Graph faces: its error body, and JSON pages and entities with
Graph's headers."""

from __future__ import annotations

from datetime import datetime, timezone

from ..transport import GRAPH_CONTENT_TYPE, Request, Response, common_headers, json_body


class GraphError(Exception):
    """An answer Graph gives as an error: status, Graph's error code and message, extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or []


def graph_error(request: Request, exc: GraphError) -> Response:
    """Graph's error body, with the request ids in ``innerError``."""
    payload = {"error": {
        "code": exc.code,
        "message": exc.message,
        "innerError": {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
            "request-id": request.request_id,
            "client-request-id": request.client_request_id,
        },
    }}
    headers = common_headers(request, GRAPH_CONTENT_TYPE) + exc.headers
    return Response(exc.status, json_body(payload), headers)


def graph_json(request: Request, payload: dict, resource_units: int = 1) -> Response:
    """A 200 answer: a page or an entity, with the resource units Graph reports for it."""
    headers = common_headers(request, GRAPH_CONTENT_TYPE)
    headers += [("OData-Version", "4.0"), ("x-ms-resource-unit", str(resource_units))]
    return Response(200, json_body(payload), headers)


def context_url(base_url: str, entity_set: str, select: str | None, *, entity: bool = False) -> str:
    """``@odata.context`` of an answer: the entity set, the selected properties, ``/$entity``."""
    selected = ""
    if select is not None:
        selected = "(" + ",".join(s.strip() for s in select.split(",")) + ")"
    return f"{base_url}/v1.0/$metadata#{entity_set}{selected}{'/$entity' if entity else ''}"


def not_found(key: str) -> GraphError:
    return GraphError(404, "Request_ResourceNotFound",
                      f"Resource '{key}' does not exist or one of its queried reference-property "
                      "objects are not present.")
