"""The benchmark's floor reads exactly the pages a sync reads: the same delta rounds, page for
page, for a full round and for the changes after it (a real sync in a child process against a
real emulator, as ``make bench`` runs them). Nothing here is timed."""

from __future__ import annotations

import pytest
import yaml

from entra_pipeline.emulator.population import generate_directory
from entra_pipeline.emulator.server import Emulator
from entra_pipeline.measure import bench
from entra_pipeline.measure.bench_sync import CLIENT_ID, SECRET_ENV, TENANT_ID, graph_reads

USERS, GROUPS = 600, 30


@pytest.fixture
def tenant(tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "floor-test-secret")
    emulator = Emulator(generate_directory(users=USERS, groups=GROUPS, seed=5), tenant_id=TENANT_ID,
                        client_id=CLIENT_ID, client_secret="floor-test-secret", cert_dir=tmp_path / "certs")
    # Small pages, so that both chains have several pages and a group's members span pages.
    emulator.delta_page_size = 50
    emulator.delta_members_per_page = 100
    with emulator:
        yield emulator


def test_the_floor_reads_the_pages_a_sync_reads(tenant, tmp_path):
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(bench._config(USERS, GROUPS, tenant.base_url, tenant.ca_path)))
    warehouse = tmp_path / "warehouse.duckdb"

    full = bench.measured_sync(tenant, config, warehouse, tmp_path, "full sync")
    selects = full["reads"]["selects"]
    assert set(selects) == {"users", "groups"} and "members" in selects["groups"].split(",")
    assert full["reads"]["pages"]["users"] == USERS // 50  # 600 users, 50 a page, nobody deleted
    links = tmp_path / "links.json"
    for mode in ("sequential", "concurrent"):
        mark = len(tenant.request_log)
        floor = bench.floor(tenant, selects, mode, mode, links_out=links if mode == "sequential" else None)
        seen = graph_reads(tenant.request_log[mark:])
        pages = {name: chain["pages"] for name, chain in floor["chains"].items()}
        assert pages == full["reads"]["pages"] == seen["pages"]
        assert floor["requests"] == full["reads"]["requests"] == sum(pages.values())
        assert seen["selects"] == selects
        assert floor["chains"]["users"]["objects"] == USERS

    bench.change_users(tenant)
    mark = len(tenant.request_log)
    changes = bench.floor(tenant, selects, "sequential", "changes", links_in=links)
    assert graph_reads(tenant.request_log[mark:])["pages"] == {name: c["pages"] for name, c in changes["chains"].items()}
    incremental = bench.measured_sync(tenant, config, warehouse, tmp_path, "incremental sync")
    assert {name: c["pages"] for name, c in changes["chains"].items()} == incremental["reads"]["pages"]
    assert changes["requests"] == incremental["reads"]["requests"]


def test_graph_reads_tells_overlapping_chains_from_consecutive_ones():
    users = ("GET", "/v1.0/users/delta?%24select=id%2Cmail", 200)
    more_users = ("GET", "/v1.0/users/delta?%24skiptoken=a", 200)
    groups = ("GET", "/v1.0/groups/delta?%24select=id%2Cmembers", 200)
    more_groups = ("GET", "/v1.0/groups/delta?%24skiptoken=b", 200)
    token = ("POST", "/tenant/oauth2/v2.0/token", 200)
    one_after_the_other = graph_reads([token, users, more_users, groups, more_groups])
    assert one_after_the_other == {"requests": 4, "pages": {"users": 2, "groups": 2},
                                   "selects": {"users": "id,mail", "groups": "id,members"}, "concurrent": False}
    assert graph_reads([groups, more_groups, users, more_users])["concurrent"] is False
    assert graph_reads([users, groups, more_users, more_groups])["concurrent"] is True
