"""The Graph face: ``/v1.0`` requests authenticated, their query options checked and routed
to users, groups, members and transitive members (``$batch`` and delta go to their own faces)."""

from __future__ import annotations

import re
import time
from typing import Callable
from urllib.parse import parse_qsl, unquote

from ..directory import Directory
from ..model import CONTACT_TYPE, DEVICE_TYPE, GROUP_TYPE, SERVICE_PRINCIPAL_TYPE, USER_TYPE
from ..changes import GROUPS, USERS
from ..identity import GRAPH_READ_PERMISSIONS
from ..odata import (
    EntitySchema,
    ODataError,
    bad_request,
    group_schema,
    member_schema,
    resolve_select,
    schema_for_type,
    unsupported,
    user_schema,
)
from ..transport import Request, Response
from .identity import GRAPH_APP_ID
from .paging import CollectionPager, count_mode
from .responses import GraphError, context_url, graph_error, graph_json, not_found

GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
CASTS = {
    "microsoft.graph.user": USER_TYPE,
    "microsoft.graph.group": GROUP_TYPE,
    "microsoft.graph.orgcontact": CONTACT_TYPE,
    "microsoft.graph.device": DEVICE_TYPE,
    "microsoft.graph.serviceprincipal": SERVICE_PRINCIPAL_TYPE,
}
CAST_ENTITY_SET = {USER_TYPE: "users", GROUP_TYPE: "groups", CONTACT_TYPE: "contacts",
                   DEVICE_TYPE: "devices", SERVICE_PRINCIPAL_TYPE: "servicePrincipals"}

QUERY_OPTIONS = {"$select", "$filter", "$top", "$count", "$skiptoken", "$deltatoken", "$skip", "$orderby",
                 "$search", "$expand", "$format"}
NOT_EMULATED = ("$orderby", "$search", "$format")
#: How Graph names the delta function in a path: ``delta``, ``delta()``, with or without its namespace.
DELTA_SEGMENTS = ("delta", "delta()", "microsoft.graph.delta", "microsoft.graph.delta()")
# Graph expands at most 20 members and gives no nextLink for them (graph-facts.md).
EXPAND_MEMBERS_LIMIT = 20
MEMBERS_EXPAND_RE = re.compile(r"^\s*members\s*(?:\(\s*\$select\s*=\s*([^)]*)\))?\s*$", re.IGNORECASE)
#: Users per page when a user collection is read with ``$expand`` (Graph's known issue: 100 at most).
EXPAND_PAGE_LIMIT = 100
MANAGER_EXPAND_RE = re.compile(r"^\s*manager\s*(?:\((.*)\))?\s*$", re.IGNORECASE | re.DOTALL)


class GraphFace:
    """Answers ``/v1.0`` for the emulator's current directory."""

    def __init__(self, emulator) -> None:
        self.emulator = emulator
        self.pager = CollectionPager(emulator)

    def answer(self, request: Request, *, batched: bool = False) -> Response:
        """Answer a ``/v1.0`` request (``batched``: a ``$batch`` sub-request, which cannot nest)."""
        try:
            self._authenticate(request)
            self._parse_options(request)
            segments = [unquote(s) for s in request.path[len("/v1.0"):].split("/")[1:]]
            if len(segments) == 1 and segments[0].lower() == "$batch":
                if batched:
                    raise bad_request("A batch request cannot contain another $batch request.")
                if request.method != "POST":
                    raise GraphError(405, "Request_BadRequest",
                                     "Specified HTTP method is not allowed for the request target: "
                                     "$batch accepts POST only.")
                return self.emulator.batch.answer(request)
            handler, args = self._route(segments)
            if request.method != "GET":
                raise GraphError(405, "Request_BadRequest",
                                 "Specified HTTP method is not allowed for the request target. "
                                 "(The demo-tenant emulator is read-only.)")
            if handler != self.emulator.delta.answer:  # delta answers its options itself
                for key in NOT_EMULATED:
                    if key in request.params:
                        raise bad_request(f"Query option '{key}' is not supported by the demo-tenant emulator.")
                if "$deltatoken" in request.params:
                    raise bad_request("Query option '$deltatoken' is only valid on /users/delta and "
                                      "/groups/delta.")
            if "$expand" in request.params and handler not in (self._list_groups, self._get_group,
                                                               self._list_users, self._get_user,
                                                               self.emulator.delta.answer):
                raise bad_request("Query option '$expand' is not supported here by the demo-tenant emulator.")
            with self.emulator.state_lock:
                directory, generation = self.emulator.directory, self.emulator.generation
            return handler(request, directory, generation, *args)
        except ODataError as exc:
            return graph_error(request, GraphError(exc.status, exc.code, exc.message))
        except GraphError as exc:
            return graph_error(request, exc)

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("Authorization") or ""
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        challenge = [("WWW-Authenticate",
                      f'Bearer realm="", authorization_uri="{self.emulator.authority}/oauth2/v2.0/authorize", '
                      f'client_id="{GRAPH_APP_ID}"')]
        if not header.strip() or (scheme.lower() == "bearer" and not token):
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", challenge)
        if scheme.lower() != "bearer":
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.", challenge)
        record = self.emulator.identity.access_token(token)
        expiry = None if record is None else record.expires
        grant = None if record is None else record.grant
        if expiry is None:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.", challenge)
        if time.monotonic() >= expiry:
            raise GraphError(401, "InvalidAuthenticationToken",
                             "Lifetime validation failed, the token is expired.", challenge)
        # App tokens carry the app's roles (all it needs); a user's token needs a directory permission.
        if grant is not None and not grant.names & GRAPH_READ_PERMISSIONS:
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")

    def _route(self, segments: list[str]) -> tuple[Callable, tuple]:
        """Map path segments below /v1.0 to a handler.

        Routing is by segment: fixed names (``users/delta``, ``groups/delta``)
        come before the id catch-all.
        """
        lowered = [s.lower() for s in segments]
        if not segments or segments == [""]:
            raise GraphError(400, "BadRequest", "Resource not found for the segment ''.")
        resource = lowered[0]
        if resource not in ("users", "groups"):
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segments[0]}'.")
        if len(segments) == 1:
            return (self._list_users if resource == "users" else self._list_groups), ()
        if lowered[1] in DELTA_SEGMENTS:
            if len(segments) == 2:
                return self.emulator.delta.answer, (USERS if resource == "users" else GROUPS,)
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segments[2]}'.")
        if segments[1] == "":
            raise GraphError(400, "BadRequest", "Resource not found for the segment ''.")
        if len(segments) == 2:
            return (self._get_user if resource == "users" else self._get_group), (segments[1],)
        if resource == "groups" and lowered[2] in ("members", "transitivemembers"):
            transitive = lowered[2] == "transitivemembers"
            if len(segments) == 3:
                return self._list_members, (segments[1], transitive, None)
            if len(segments) == 4 and lowered[3] in CASTS:
                return self._list_members, (segments[1], transitive, CASTS[lowered[3]])
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segments[3]}'.")
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segments[2]}'.")

    def _parse_options(self, request: Request) -> None:
        params: dict[str, str] = {}
        for name, value in parse_qsl(request.query, keep_blank_values=True):
            key = name.lower()
            if not key.startswith("$"):
                continue  # Graph ignores non-OData parameters
            if key not in QUERY_OPTIONS:
                raise bad_request(f"The query parameter '{name}' is not supported.")
            if key in params:
                raise bad_request(
                    f"Query option '{name}' was specified more than once, but it must be specified at most once."
                )
            params[key] = value
        if "$skip" in params:
            raise bad_request("'$skip' is not supported by the service. Page with @odata.nextLink instead.")
        request.params = params

    def _context(self, entity_set: str, select: str | None, *, entity: bool = False) -> str:
        return context_url(self.emulator.base_url, entity_set, select, entity=entity)

    @staticmethod
    def _projector(schema: EntitySchema, names: tuple[str, ...]) -> Callable[[dict], dict]:
        # Modelled properties are always present; the defaults cover valid-but-unmodelled ones.
        pairs = tuple((name, schema.extra_defaults.get(name)) for name in names)
        return lambda obj: {name: obj.get(name, default) for name, default in pairs}

    # -- Graph: resources -------------------------------------------------------

    def _user_projector(self, request: Request, directory: Directory, *,
                        collection: bool) -> tuple[Callable[[dict], dict], bool]:
        """(projection of a user, whether ``$expand=manager`` was asked for)."""
        schema = user_schema(directory.extension_property)
        project = self._projector(schema, resolve_select(schema, request.params.get("$select"),
                                                         collection=collection))
        raw_expand = request.params.get("$expand")
        if raw_expand is None:
            return project, False
        match = MANAGER_EXPAND_RE.match(raw_expand)
        if match is None:
            raise bad_request(f"Could not find a navigation property named '{raw_expand.strip()}' on type "
                              "'microsoft.graph.user' (the emulator expands 'manager' only).")
        nested_select = None
        if match.group(1) is not None:
            options: dict[str, str] = {}
            for part in match.group(1).split(";"):
                name, eq, value = part.partition("=")
                key = name.strip().lower()
                if not eq or key not in ("$select", "$levels"):
                    raise bad_request(f"Invalid $expand option '{part.strip()}' in '{raw_expand}': "
                                      "only $select and $levels are understood inside $expand=manager.")
                if key in options:
                    raise bad_request(f"$expand option '{name.strip()}' given twice in '{raw_expand}'.")
                options[key] = value
            if "$levels" in options:
                if collection:
                    raise unsupported("'$levels' in $expand=manager is only supported on a single user "
                                      "(/users/{id}), not on the collection of users.")
                raise bad_request("'$levels' in $expand=manager is not emulated by the demo-tenant emulator.")
            nested_select = options.get("$select")
        project_manager = self._member_projector(directory, nested_select, cast=None)
        manager_of = directory.manager

        def expanded(user: dict) -> dict:
            item = project(user)
            found = manager_of(user["id"])
            if found is not None:  # no manager: Graph leaves the property out
                item["manager"] = project_manager(*found)
            return item

        return expanded, True

    def _list_users(self, request: Request, directory: Directory, generation: int) -> Response:
        schema = user_schema(directory.extension_property)
        select = request.params.get("$select")
        project, expanding = self._user_projector(request, directory, collection=True)
        if expanding and count_mode(request)[1]:
            # Graph: "$expand is not currently supported with advanced queries".
            raise unsupported("$expand is not supported with advanced query parameters "
                              "($count=true with ConsistencyLevel: eventual).")
        lookup = directory.user_by_id
        return self.pager.page(
            request, generation,
            query_key="users",
            schema=schema,
            source=lambda: [u["id"] for u in directory.users],
            resolve=lambda object_id: (None, u) if (u := lookup(object_id)) is not None else None,
            project=lambda _type, obj: project(obj),
            context=self._context("users", select),
            resource_units=1 if select else 2,
            page_limit=self.emulator.expand_page_limit if expanding else None,
        )

    def _group_projector(self, request: Request, directory: Directory, *, collection: bool):
        schema = group_schema()
        project = self._projector(schema, resolve_select(schema, request.params.get("$select"),
                                                         collection=collection))
        raw_expand = request.params.get("$expand")
        if raw_expand is None:
            return project
        match = MEMBERS_EXPAND_RE.match(raw_expand)
        if match is None:
            raise bad_request(f"Could not find a navigation property named '{raw_expand}' on type "
                              "'microsoft.graph.group' (the emulator expands 'members' only).")
        project_member = self._member_projector(directory, match.group(1), cast=None)
        object_by_id = directory.object_by_id

        def expanded(group: dict) -> dict:
            item = project(group)
            members = []
            for odata_type, object_id in directory.members.get(group["id"], ())[:EXPAND_MEMBERS_LIMIT]:
                found = object_by_id(object_id)
                if found is not None:
                    members.append(project_member(odata_type, found[1]))
            item["members"] = members  # silently truncated, exactly the trap Graph sets
            return item

        return expanded

    def _list_groups(self, request: Request, directory: Directory, generation: int) -> Response:
        schema = group_schema()
        select = request.params.get("$select")
        project = self._group_projector(request, directory, collection=True)
        lookup = directory.group_by_id
        return self.pager.page(
            request, generation,
            query_key="groups",
            schema=schema,
            source=lambda: [g["id"] for g in directory.groups],
            resolve=lambda object_id: (None, g) if (g := lookup(object_id)) is not None else None,
            project=lambda _type, obj: project(obj),
            context=self._context("groups", select),
            resource_units=1 if select else 2,
        )

    def _get_user(self, request: Request, directory: Directory, generation: int, key: str) -> Response:
        user = directory.user_by_id(key)
        if user is None and "@" in key:
            user = directory.user_by_upn(key)
        if user is None:
            raise not_found(key)
        select = request.params.get("$select")
        project, _ = self._user_projector(request, directory, collection=False)
        payload = {"@odata.context": self._context("users", select, entity=True)}
        payload.update(project(user))
        return graph_json(request, payload)

    def _require_group(self, directory: Directory, key: str) -> dict:
        if not GUID_RE.match(key):
            raise bad_request(f"Invalid object identifier '{key}'.")
        group = directory.group_by_id(key)
        if group is None:
            raise not_found(key)
        return group

    def _get_group(self, request: Request, directory: Directory, generation: int, key: str) -> Response:
        group = self._require_group(directory, key)
        select = request.params.get("$select")
        payload = {"@odata.context": self._context("groups", select, entity=True)}
        payload.update(self._group_projector(request, directory, collection=False)(group))
        return graph_json(request, payload)

    def _member_projector(self, directory: Directory, select: str | None, *, cast: str | None):
        """Projection of member objects: ``@odata.type`` first, then per-type properties.

        A mixed ``$select`` keeps, for each object, only the properties its type has.
        """
        ext = directory.extension_property
        schema = schema_for_type(cast, ext) if cast else member_schema(ext)
        names = resolve_select(schema, select, collection=True)
        projectors: dict[str, Callable[[dict], dict]] = {}
        for odata_type in CAST_ENTITY_SET:
            type_schema = schema_for_type(odata_type, ext)
            if select is None:
                type_names = type_schema.defaults
            else:
                type_names = tuple(n for n in names if type_schema.prop(n) is not None)
            projectors[odata_type] = self._projector(type_schema, type_names)

        def project(odata_type: str, obj: dict) -> dict:
            item = {"@odata.type": odata_type}
            item.update(projectors[odata_type](obj))
            return item

        return project

    def _list_members(self, request: Request, directory: Directory, generation: int, key: str,
                      transitive: bool, cast: str | None) -> Response:
        group = self._require_group(directory, key)
        group_id = group["id"]
        ext = directory.extension_property
        select = request.params.get("$select")
        schema = schema_for_type(cast, ext) if cast else member_schema(ext)
        project = self._member_projector(directory, select, cast=cast)

        def source() -> list:
            members = directory.transitive_members(group_id) if transitive else list(
                directory.members.get(group_id, ()))
            if cast is not None:
                members = [m for m in members if m[0] == cast]
            return members

        object_by_id = directory.object_by_id

        def resolve(member: tuple[str, str]):
            found = object_by_id(member[1])
            return None if found is None else (member[0], found[1])

        segment = "transitiveMembers" if transitive else "members"
        suffix = f"/{cast[1:]}" if cast else ""
        return self.pager.page(
            request, generation,
            query_key=f"groups/{group_id}/{segment}{suffix}",
            schema=schema,
            source=source,
            resolve=resolve,
            project=project,
            context=self._context(CAST_ENTITY_SET[cast] if cast else "directoryObjects", select),
            filter_needs_advanced=True,
            resource_units=5 if transitive else 3,
        )
