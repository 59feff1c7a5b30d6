"""Microsoft's own Graph client against the demo tenant: msgraph-sdk, signed in by azure-identity's
ClientSecretCredential at the emulator's token endpoint, pages every user, every group and the
2,306 members of "All Employees", and runs a users delta round in the ``/users/delta()`` form the
SDK sends. What it reads must be exactly the emulator's own directory."""

from __future__ import annotations

import asyncio
import ssl
import warnings

import httpx
import pytest
from azure.identity.aio import ClientSecretCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)

with warnings.catch_warnings():
    # The SDK's generated modules warn, as they are imported, about classes they define for compatibility.
    warnings.simplefilter("ignore", DeprecationWarning)
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder
    from msgraph.generated.groups.item.members.members_request_builder import MembersRequestBuilder
    from msgraph.generated.users.delta.delta_request_builder import DeltaRequestBuilder
    from msgraph.generated.users.users_request_builder import UsersRequestBuilder
# ... and those it imports while the tests run.
pytestmark = pytest.mark.filterwarnings("ignore:This class is deprecated:DeprecationWarning")
from msgraph_core import GraphClientFactory
from msgraph_core.tasks.page_iterator import PageIterator

from entra_pipeline.emulator import Emulator
from entra_pipeline.emulator.population import generate_directory

from tests.support.tenant import running_emulator

TENANT_ID = "33333333-4444-5555-6666-777777777777"
CLIENT_ID = "cccccccc-dddd-eeee-ffff-000000000000"
SECRET = "msgraph-sdk-test-secret"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


@pytest.fixture(scope="module")
def tenant(tmp_path_factory):
    # users=2500 groups=120 seed=7: "All Employees" has 2,306 direct members (three pages of 999).
    with running_emulator(generate_directory(users=2500, groups=120, seed=7), tmp_path_factory.mktemp("certs"),
                          tenant_id=TENANT_ID, client_id=CLIENT_ID, client_secret=SECRET) as server:
        yield server


async def _read_everything(tenant: Emulator) -> dict:
    """Sign in and read users, groups, the biggest group's members and a users delta round."""
    trust = ssl.create_default_context(cafile=tenant.ca_path)
    host = tenant.base_url.split("://", 1)[1]
    credential = ClientSecretCredential(TENANT_ID, CLIENT_ID, SECRET, authority=host,
                                        connection_verify=tenant.ca_path, disable_instance_discovery=True)
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH_SCOPE],
                                               allowed_hosts=[host.rsplit(":", 1)[0], host])
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(verify=trust, timeout=60))
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = tenant.graph_url
    client = GraphServiceClient(request_adapter=adapter)

    async def every(first_page) -> list:
        items: list = []
        iterator = PageIterator(first_page, adapter)
        await iterator.iterate(lambda item: items.append(item) or True)
        return items

    try:
        users = await every(await client.users.get(RequestConfiguration(
            query_parameters=UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
                select=["id", "userPrincipalName"], top=999))))
        groups = await every(await client.groups.get(
            RequestConfiguration(
                query_parameters=GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(
                    select=["id", "displayName"], top=999))))
        everyone = next(g for g in groups if g.display_name == "All Employees")
        member_pages = []
        members_config = RequestConfiguration(
            query_parameters=MembersRequestBuilder.MembersRequestBuilderGetQueryParameters(select=["id"], top=999))
        page = await client.groups.by_group_id(everyone.id).members.get(members_config)
        while True:  # followed by hand to count the pages Graph's paging makes of 2,306 members
            member_pages.append([m.id for m in page.value])
            if not page.odata_next_link:
                break
            page = await client.groups.by_group_id(everyone.id).members.with_url(page.odata_next_link).get()

        delta_ids, delta_pages = [], 0
        page = await client.users.delta.get(RequestConfiguration(
            query_parameters=DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
                select=["id", "displayName"])))
        while True:
            delta_pages += 1
            delta_ids += [u.id for u in page.value]
            if page.odata_next_link is None:
                break
            page = await client.users.delta.with_url(page.odata_next_link).get()
        return {"users": users, "groups": groups, "everyone": everyone, "member_pages": member_pages,
                "delta_ids": delta_ids, "delta_pages": delta_pages, "delta_link": page.odata_delta_link}
    finally:
        await credential.close()
        await http.aclose()


def test_msgraph_sdk_reads_the_whole_demo_tenant(tenant):
    before = len(tenant.request_log)
    read = asyncio.run(_read_everything(tenant))
    directory = tenant.directory

    assert [u.id for u in read["users"]] == [u["id"] for u in directory.users]
    assert len(read["users"]) == 2500
    assert {u.user_principal_name for u in read["users"]} == {u["userPrincipalName"] for u in directory.users}
    assert [g.id for g in read["groups"]] == [g["id"] for g in directory.groups]
    assert len(read["groups"]) == 120

    expected_members = [member_id for _type, member_id in directory.members[read["everyone"].id]]
    assert len(expected_members) == 2306
    assert [len(page) for page in read["member_pages"]] == [999, 999, 308]
    assert [m for page in read["member_pages"] for m in page] == expected_members

    # A first delta round lists every user once, page by page, and ends on a deltaLink.
    assert sorted(read["delta_ids"]) == sorted(u["id"] for u in directory.users)
    assert len(read["delta_ids"]) == len(set(read["delta_ids"]))
    assert read["delta_pages"] == -(-2500 // tenant.delta_page_size)
    assert read["delta_link"].startswith(f"{tenant.graph_url}/users/delta?$deltatoken=")

    served = tenant.request_log[before:]
    # The SDK asks for the function-call form Graph documents; the emulator answers it.
    assert any(method == "GET" and target.startswith("/v1.0/users/delta()?") and status == 200
               for method, target, status in served)
    assert all(status == 200 for _method, _target, status in served), served
