"""The vocabulary of the mapping: imported (directory) fields and contact fields.

Imported fields are Microsoft Graph user properties as Graph names them, plus the 15 on-premises
extension attributes flattened to ``extensionAttribute1``..``extensionAttribute15`` (Graph returns
them inside one ``onPremisesExtensionAttributes`` object and cannot select them singly), plus
directory extensions ``extension_{appIdWithoutHyphens}_{name}``.
"""

from __future__ import annotations

import re
from typing import Iterable

# Graph user properties a contact could use. Graph only returns some of them with $select,
# so every request names exactly what the mapping and the exclusions need.
GRAPH_USER_PROPERTIES: tuple[str, ...] = (
    "id",
    "mail",
    "userPrincipalName",
    "givenName",
    "surname",
    "displayName",
    "jobTitle",
    "department",
    "companyName",
    "officeLocation",
    "city",
    "country",
    "usageLocation",
    "mobilePhone",
    "businessPhones",
    "employeeId",
    "employeeType",
    "employeeHireDate",
    "accountEnabled",
    "userType",
    "preferredLanguage",
    "otherMails",
    "proxyAddresses",
)

EXTENSION_ATTRIBUTES: tuple[str, ...] = tuple(f"extensionAttribute{i}" for i in range(1, 16))
EXTENSION_CONTAINER = "onPremisesExtensionAttributes"

# Graph: extension_{appId without hyphens}_{name}; the name is validated before it reaches $select.
DIRECTORY_EXTENSION = re.compile(r"^extension_[0-9a-fA-F]{32}_[A-Za-z][A-Za-z0-9_]{0,119}$")

# Contact field -> the imported field that feeds it by default (automatic mapping).
DEFAULT_MAPPING: dict[str, str | None] = {
    "email": "mail",
    "first_name": "givenName",
    "last_name": "surname",
    "display_name": "displayName",
    "job_title": "jobTitle",
    "department": "department",
    "company": "companyName",
    "office_location": "officeLocation",
    "city": "city",
    "country": "country",
    "phone": "businessPhones",
    "mobile": "mobilePhone",
    "employee_id": "employeeId",
    "employee_type": "employeeType",
    "user_principal_name": "userPrincipalName",
    "preferred_language": "preferredLanguage",
    "account_enabled": "accountEnabled",
    "user_type": "userType",
}

CONTACT_FIELDS: tuple[str, ...] = tuple(DEFAULT_MAPPING)
# Every other contact field is text.
BOOLEAN_CONTACT_FIELDS: frozenset[str] = frozenset({"account_enabled"})


def is_valid_source_field(name: str) -> bool:
    """True for a Graph user property, extensionAttribute1..15 or a directory extension."""
    return (
        name in GRAPH_USER_PROPERTIES
        or name in EXTENSION_ATTRIBUTES
        or bool(DIRECTORY_EXTENSION.match(name))
    )


def graph_select_for(fields: set[str]) -> list[str]:
    """The Graph ``$select`` list that returns ``fields`` (imported-field names), sorted."""
    select = {"id"}
    for name in fields:
        select.add(EXTENSION_CONTAINER if name in EXTENSION_ATTRIBUTES else name)
    return sorted(select)


def flatten_user(user: dict) -> dict:
    """A Graph user object as imported fields: extension attributes lifted to the top level."""
    flat = {k: v for k, v in user.items() if k != EXTENSION_CONTAINER and not k.startswith("@")}
    ext = user.get(EXTENSION_CONTAINER)
    if isinstance(ext, dict):
        for name in EXTENSION_ATTRIBUTES:
            flat[name] = ext.get(name)
    return flat


def imported_fields_for(select: Iterable[str]) -> set[str]:
    """The imported fields a Graph ``$select`` returns (the inverse of ``graph_select_for``)."""
    fields: set[str] = set()
    for name in select:
        if name == EXTENSION_CONTAINER:
            fields.update(EXTENSION_ATTRIBUTES)
        else:
            fields.add(name)
    return fields
