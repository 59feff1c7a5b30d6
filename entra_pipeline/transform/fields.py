"""The vocabulary of the mapping: imported (directory) fields and contact fields.

Imported fields are what the sync reads about a user:
- Microsoft Graph user properties, named as Graph names them (``givenName``, ``employeeId``, ...);
- ``extensionAttribute1``..``extensionAttribute15``: the on-premises extension attributes, which
  Graph returns inside one ``onPremisesExtensionAttributes`` object and cannot select singly;
- directory extensions (custom fields) ``extension_{appIdWithoutHyphens}_{name}``;
- ``managerId`` and ``managerMail``: the user's manager, read with ``$expand=manager`` (list
  reads) or as ``manager@delta`` plus the manager's own ``mail`` (delta reads).

Contact fields are what the warehouse stores: built-in fields with fixed types, plus custom
fields an integration creates with a type (Text, Number or Date).
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

# The manager is a navigation property: read with $expand, not $select.
MANAGER_FIELDS: dict[str, str] = {"managerId": "id", "managerMail": "mail"}

# Graph: extension_{appId without hyphens}_{name}; the name is validated before it reaches $select.
DIRECTORY_EXTENSION = re.compile(r"^extension_[0-9a-fA-F]{32}_[A-Za-z][A-Za-z0-9_]{0,119}$")

TEXT, NUMBER, DATE, BOOLEAN = "Text", "Number", "Date", "Boolean"
CUSTOM_FIELD_TYPES: tuple[str, ...] = (TEXT, NUMBER, DATE)

# Built-in contact fields and their types, in column order.
BUILTIN_FIELDS: dict[str, str] = {
    "email": TEXT,
    "first_name": TEXT,
    "last_name": TEXT,
    "display_name": TEXT,
    "job_title": TEXT,
    "department": TEXT,
    "company": TEXT,
    "office_location": TEXT,
    "city": TEXT,
    "country": TEXT,
    "usage_location": TEXT,
    "phone": TEXT,
    "mobile": TEXT,
    "employee_id": TEXT,
    "employee_type": TEXT,
    "hire_date": DATE,
    "user_principal_name": TEXT,
    "preferred_language": TEXT,
    "manager_id": TEXT,
    "manager_email": TEXT,
    "account_enabled": BOOLEAN,
    "user_type": TEXT,
}
CONTACT_FIELDS: tuple[str, ...] = tuple(BUILTIN_FIELDS)

# Automatic mapping: imported field -> contact field. The manager is not mapped by default: it
# costs an $expand on every page of users.
DEFAULT_MAPPING: dict[str, str] = {
    "mail": "email",
    "givenName": "first_name",
    "surname": "last_name",
    "displayName": "display_name",
    "jobTitle": "job_title",
    "department": "department",
    "companyName": "company",
    "officeLocation": "office_location",
    "city": "city",
    "country": "country",
    "usageLocation": "usage_location",
    "businessPhones": "phone",
    "mobilePhone": "mobile",
    "employeeId": "employee_id",
    "employeeType": "employee_type",
    "employeeHireDate": "hire_date",
    "userPrincipalName": "user_principal_name",
    "preferredLanguage": "preferred_language",
    "accountEnabled": "account_enabled",
    "userType": "user_type",
}


# Workday: imported fields are the column aliases the report's author chose. The defaults follow
# the names Workday suggests for the usual columns; anything else is mapped by hand.
WORKDAY_DEFAULT_MAPPING: dict[str, str] = {
    "Email_Address": "email",
    "First_Name": "first_name",
    "Last_Name": "last_name",
    "Business_Title": "job_title",
    "Supervisory_Organization": "department",
    "Company": "company",
    "Location": "office_location",
    "Country": "country",
    "Work_Phone": "phone",
    "Mobile_Phone": "mobile",
    "Employee_ID": "employee_id",
    "Worker_Type": "employee_type",
    "Hire_Date": "hire_date",
    "Manager_ID": "manager_id",
}
# A report column alias: what Workday allows (letters, digits, _), and safe in a JSON path.
WORKDAY_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")

ENTRA, WORKDAY = "entra", "workday"
SOURCE_KINDS = (ENTRA, WORKDAY)


def is_valid_source_field(name: str, kind: str = ENTRA) -> bool:
    """True for a field the source can give: for Entra ID a Graph user property, an extension
    attribute, a directory extension or a manager field; for Workday a report column alias."""
    if kind == WORKDAY:
        return bool(WORKDAY_ALIAS.fullmatch(name))
    return (
        name in GRAPH_USER_PROPERTIES
        or name in EXTENSION_ATTRIBUTES
        or name in MANAGER_FIELDS
        or bool(DIRECTORY_EXTENSION.fullmatch(name))
    )


def default_mapping(kind: str) -> dict[str, str]:
    return WORKDAY_DEFAULT_MAPPING if kind == WORKDAY else DEFAULT_MAPPING


def graph_select_for(fields: Iterable[str]) -> list[str]:
    """The Graph ``$select`` list that returns ``fields`` (imported-field names), sorted."""
    select = {"id"}
    for name in fields:
        if name in MANAGER_FIELDS:
            continue
        select.add(EXTENSION_CONTAINER if name in EXTENSION_ATTRIBUTES else name)
    return sorted(select)


#: The group properties every read selects (a delta round adds ``members``).
GROUP_SELECT = ["id", "displayName", "description", "mail", "mailNickname", "mailEnabled", "securityEnabled",
                "groupTypes"]


def reads_manager(fields: Iterable[str]) -> bool:
    """Whether ``fields`` name the manager: a delta read then gives each manager its mail."""
    return any(name in MANAGER_FIELDS for name in fields)


def delta_select_for(fields: Iterable[str]) -> list[str]:
    """The ``$select`` of a users delta round returning ``fields``: delta has no ``$expand``, so
    the manager comes as ``manager@delta`` (an id) and its mail from the users' own ``mail``."""
    select = set(graph_select_for(fields))
    if reads_manager(fields):
        select |= {"manager", "mail"}
    return sorted(select)


def manager_expand_for(fields: Iterable[str]) -> str | None:
    """The ``$expand`` that returns the manager fields among ``fields``, or None."""
    props = {MANAGER_FIELDS[name] for name in fields if name in MANAGER_FIELDS}
    return f"manager($select={','.join(sorted(props | {'id'}))})" if props else None


def imported_fields_for(fields: Iterable[str]) -> set[str]:
    """Every imported field a read of ``fields`` returns: asking for one extension attribute
    returns all fifteen."""
    result = set()
    for name in fields:
        result.update(EXTENSION_ATTRIBUTES if name in EXTENSION_ATTRIBUTES else (name,))
    return result
