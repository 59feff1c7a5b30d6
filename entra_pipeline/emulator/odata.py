"""The slice of OData that the emulated Graph understands: Graph's query errors, the schema of
each directory object type (its properties, which are returned by default, and which ``$filter``
operators each allows without advanced query mode) and ``$select``. ``$filter`` itself is in
:mod:`.odata_filter`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .model import (
    CONTACT_TYPE,
    DEVICE_TYPE,
    GROUP_PROPERTIES,
    GROUP_TYPE,
    SERVICE_PRINCIPAL_TYPE,
    USER_TYPE,
)

__all__ = [
    "ODataError",
    "Prop",
    "EntitySchema",
    "user_schema",
    "group_schema",
    "member_schema",
    "schema_for_type",
    "resolve_select",
]


class ODataError(Exception):
    """A request the emulated service rejects; rendered as a Graph error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad_request(message: str) -> ODataError:
    return ODataError(400, "Request_BadRequest", message)


def unsupported(message: str) -> ODataError:
    return ODataError(400, "Request_UnsupportedQuery", message)


# ---------------------------------------------------------------------------
# Schemas

STRING, BOOL, DATETIME, STRINGS, COMPLEX = "string", "bool", "datetime", "strings", "complex"

# Everything advanced query mode permits per kind of property.
ADVANCED_OPS = {
    STRING: frozenset({"eq", "ne", "in", "startswith", "endswith", "gt", "ge", "lt", "le"}),
    BOOL: frozenset({"eq", "ne", "in"}),
    DATETIME: frozenset({"eq", "ne", "in", "gt", "ge", "lt", "le"}),
    STRINGS: frozenset({"any"}),
    COMPLEX: frozenset(),
}
_EQ = frozenset({"eq", "in"})
_EQ_START = frozenset({"eq", "in", "startswith"})
NO_OPS = frozenset()
_ANY = frozenset({"any"})


@dataclass(frozen=True)
class Prop:
    name: str
    kind: str
    default_ops: frozenset = NO_OPS  # allowed without advanced mode
    filterable: bool = True
    sub: tuple[str, ...] = ()  # sub-properties of a complex property (all strings)


@dataclass
class EntitySchema:
    type_name: str  # "microsoft.graph.user"
    resource: str  # "User", as Graph names it in filter errors
    props: dict[str, Prop]  # lower-case name -> Prop
    defaults: tuple[str, ...]  # returned without $select
    single_only: frozenset[str] = frozenset()  # rejected in a collection $select (501)
    extra_defaults: dict[str, Any] = field(default_factory=dict)  # valid but not modelled
    # Lower-case navigation properties (e.g. "manager"): accepted in $select, as Graph accepts
    # them, but never returned by it; only $expand returns a related object.
    navigation: frozenset[str] = frozenset()

    def prop(self, name: str) -> Prop | None:
        return self.props.get(name.lower())

    def value(self, obj: dict, name: str) -> Any:
        if name in obj:
            return obj[name]
        return self.extra_defaults.get(name)


def _props(*props: Prop) -> dict[str, Prop]:
    return {p.name.lower(): p for p in props}


USER_DEFAULT_SELECT = (
    "id", "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName",
)
USER_SINGLE_ONLY = (
    "aboutMe", "birthday", "hireDate", "interests", "mySite", "pastProjects", "preferredName",
    "responsibilities", "schools", "skills", "mailboxSettings",
)
# Real user properties this emulator does not model: selectable, always empty.
_USER_EXTRAS: dict[str, Any] = {
    "ageGroup": None, "createdDateTime": None, "creationType": None, "deletedDateTime": None,
    "externalUserState": None, "externalUserStateChangeDateTime": None, "faxNumber": None,
    "imAddresses": [], "isResourceAccount": None, "lastPasswordChangeDateTime": None,
    "legalAgeGroupClassification": None, "mailNickname": None, "onPremisesDistinguishedName": None,
    "onPremisesDomainName": None, "onPremisesImmutableId": None, "onPremisesLastSyncDateTime": None,
    "onPremisesSamAccountName": None, "onPremisesSecurityIdentifier": None,
    "onPremisesSyncEnabled": None, "onPremisesUserPrincipalName": None, "passwordPolicies": None,
    "postalCode": None, "preferredDataLocation": None, "showInAddressList": None,
    "signInSessionsValidFromDateTime": None, "state": None, "streetAddress": None,
    "securityIdentifier": None, "employeeOrgData": None, "identities": [],
    "assignedLicenses": [], "assignedPlans": [], "provisionedPlans": [],
}
_GROUP_EXTRAS: dict[str, Any] = {
    "classification": None, "deletedDateTime": None, "expirationDateTime": None,
    "isAssignableToRole": None, "membershipRule": None, "membershipRuleProcessingState": None,
    "onPremisesDomainName": None, "onPremisesLastSyncDateTime": None,
    "onPremisesSamAccountName": None, "onPremisesSecurityIdentifier": None,
    "onPremisesSyncEnabled": None, "preferredDataLocation": None, "preferredLanguage": None,
    "proxyAddresses": [], "renewedDateTime": None, "securityIdentifier": None, "theme": None,
    "resourceBehaviorOptions": [], "resourceProvisioningOptions": [],
}

_EXT_ATTRS = tuple(f"extensionAttribute{i}" for i in range(1, 16))


@lru_cache(maxsize=16)
def user_schema(extension_property: str) -> EntitySchema:
    """The user schema; the directory extension name differs per tenant."""
    props = _props(
        Prop("id", STRING, _EQ),
        Prop("userPrincipalName", STRING, _EQ_START),
        Prop("displayName", STRING, _EQ_START),
        Prop("givenName", STRING, _EQ_START),
        Prop("surname", STRING, _EQ_START),
        Prop("mail", STRING, _EQ_START),
        Prop("otherMails", STRINGS, _ANY),
        Prop("proxyAddresses", STRINGS, _ANY),
        Prop("jobTitle", STRING, _EQ),
        Prop("department", STRING, _EQ_START),
        Prop("companyName", STRING),
        Prop("officeLocation", STRING),
        Prop("city", STRING, _EQ_START),
        Prop("country", STRING, _EQ_START),
        Prop("usageLocation", STRING, _EQ),
        Prop("mobilePhone", STRING, _EQ),
        Prop("businessPhones", STRINGS, _ANY),
        Prop("employeeId", STRING, _EQ_START),
        Prop("employeeType", STRING),
        Prop("employeeHireDate", DATETIME),
        Prop("accountEnabled", BOOL, _EQ),
        Prop("userType", STRING, _EQ),
        Prop("preferredLanguage", STRING, _EQ),
        Prop("onPremisesExtensionAttributes", COMPLEX, sub=_EXT_ATTRS),
        Prop(extension_property, STRING),
        *(Prop(name, STRING, filterable=False) for name in _USER_EXTRAS),
        *(Prop(name, STRING, filterable=False) for name in USER_SINGLE_ONLY),
    )
    return EntitySchema(
        type_name="microsoft.graph.user",
        resource="User",
        props=props,
        defaults=USER_DEFAULT_SELECT,
        single_only=frozenset(name.lower() for name in USER_SINGLE_ONLY),
        extra_defaults=_USER_EXTRAS,
        navigation=frozenset({"manager"}),
    )


@lru_cache(maxsize=1)
def group_schema() -> EntitySchema:
    props = _props(
        Prop("id", STRING, _EQ),
        Prop("displayName", STRING, _EQ_START),
        Prop("description", STRING),
        Prop("mail", STRING, _EQ_START),
        Prop("mailNickname", STRING, _EQ_START),
        Prop("mailEnabled", BOOL, _EQ),
        Prop("securityEnabled", BOOL, _EQ),
        Prop("groupTypes", STRINGS, _ANY),
        Prop("createdDateTime", DATETIME),
        Prop("visibility", STRING, _EQ),
        *(Prop(name, STRING, filterable=False) for name in _GROUP_EXTRAS),
    )
    return EntitySchema(
        type_name="microsoft.graph.group",
        resource="Group",
        props=props,
        defaults=GROUP_PROPERTIES,
        extra_defaults=_GROUP_EXTRAS,
    )


@lru_cache(maxsize=1)
def _contact_schema() -> EntitySchema:
    extras = {"givenName": None, "surname": None, "jobTitle": None, "department": None,
              "mailNickname": None, "proxyAddresses": []}
    props = _props(
        Prop("id", STRING, _EQ),
        Prop("displayName", STRING, _EQ_START),
        Prop("mail", STRING, _EQ_START),
        Prop("companyName", STRING),
        *(Prop(name, STRING, filterable=False) for name in extras),
    )
    return EntitySchema("microsoft.graph.orgContact", "OrgContact", props,
                        ("id", "displayName", "mail", "companyName"), extra_defaults=extras)


@lru_cache(maxsize=1)
def _device_schema() -> EntitySchema:
    extras = {"accountEnabled": None, "operatingSystemVersion": None, "trustType": None}
    props = _props(
        Prop("id", STRING, _EQ),
        Prop("displayName", STRING, _EQ_START),
        Prop("deviceId", STRING, _EQ),
        Prop("operatingSystem", STRING, _EQ),
        *(Prop(name, STRING, filterable=False) for name in extras),
    )
    return EntitySchema("microsoft.graph.device", "Device", props,
                        ("id", "displayName", "deviceId", "operatingSystem"), extra_defaults=extras)


@lru_cache(maxsize=1)
def _service_principal_schema() -> EntitySchema:
    extras = {"accountEnabled": None, "servicePrincipalType": None, "appDisplayName": None}
    props = _props(
        Prop("id", STRING, _EQ),
        Prop("displayName", STRING, _EQ_START),
        Prop("appId", STRING, _EQ),
        *(Prop(name, STRING, filterable=False) for name in extras),
    )
    return EntitySchema("microsoft.graph.servicePrincipal", "ServicePrincipal", props,
                        ("id", "displayName", "appId"), extra_defaults=extras)


def schema_for_type(odata_type: str, extension_property: str) -> EntitySchema:
    """Schema for an ``@odata.type`` such as ``#microsoft.graph.user``."""
    if odata_type == USER_TYPE:
        return user_schema(extension_property)
    if odata_type == GROUP_TYPE:
        return group_schema()
    if odata_type == CONTACT_TYPE:
        return _contact_schema()
    if odata_type == DEVICE_TYPE:
        return _device_schema()
    if odata_type == SERVICE_PRINCIPAL_TYPE:
        return _service_principal_schema()
    raise KeyError(odata_type)


MEMBER_TYPES = (USER_TYPE, GROUP_TYPE, CONTACT_TYPE, DEVICE_TYPE, SERVICE_PRINCIPAL_TYPE)


@lru_cache(maxsize=16)
def member_schema(extension_property: str) -> EntitySchema:
    """``microsoft.graph.directoryObject``: the union used for mixed member lists."""
    props: dict[str, Prop] = {}
    extras: dict[str, Any] = {}
    single_only: frozenset[str] = frozenset()
    for odata_type in MEMBER_TYPES:
        schema = schema_for_type(odata_type, extension_property)
        for key, prop in schema.props.items():
            props.setdefault(key, prop)
        extras.update(schema.extra_defaults)
        single_only |= schema.single_only
    return EntitySchema("microsoft.graph.directoryObject", "DirectoryObject", props, ("id",),
                        single_only=single_only, extra_defaults=extras)


# ---------------------------------------------------------------------------
# $select


def resolve_select(schema: EntitySchema, raw: str | None, *, collection: bool) -> tuple[str, ...]:
    """Canonical property names to return: ``id`` first, then the selected ones in order.

    Without ``$select`` the schema's default set. Unknown names give 400;
    single-object-only user properties in a collection request give 501, as Graph does.
    Navigation properties (``manager`` on users) are accepted and yield nothing: Graph
    answers ``$select=manager`` with 200 and no manager; ``$expand=manager`` returns it.
    """
    if raw is None:
        return schema.defaults
    if not raw.strip():
        raise bad_request("Syntax error in $select: no property named.")
    names = ["id"]
    for part in raw.split(","):
        token = part.strip()
        if not token:
            raise bad_request(f"Syntax error in $select '{raw}': empty property name.")
        if token.lower() in schema.navigation:
            continue
        prop = schema.prop(token)
        if prop is None:
            raise bad_request(f"Could not find a property named '{token}' on type '{schema.type_name}'.")
        if collection and prop.name.lower() in schema.single_only:
            raise ODataError(501, "NotImplemented", "This operation target is not yet supported.")
        if prop.name not in names:
            names.append(prop.name)
    return tuple(names)
