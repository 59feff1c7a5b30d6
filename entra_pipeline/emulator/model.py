"""What a directory object is: its ``@odata.type``, the tenant's domains, and the properties
users and groups carry."""

from __future__ import annotations


USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"
CONTACT_TYPE = "#microsoft.graph.orgContact"
DEVICE_TYPE = "#microsoft.graph.device"
SERVICE_PRINCIPAL_TYPE = "#microsoft.graph.servicePrincipal"

TENANT_DOMAIN = "contoso.com"
INITIAL_DOMAIN = "contoso.onmicrosoft.com"

#: Keys present on every generated user (the directory extension comes on top).
USER_PROPERTIES = (
    "id",
    "userPrincipalName",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "otherMails",
    "proxyAddresses",
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
    "onPremisesExtensionAttributes",
)

GROUP_PROPERTIES = (
    "id",
    "displayName",
    "description",
    "mail",
    "mailNickname",
    "mailEnabled",
    "securityEnabled",
    "groupTypes",
    "createdDateTime",
    "visibility",
)

EXTENSION_ATTRIBUTES = tuple(f"extensionAttribute{i}" for i in range(1, 16))
