"""Resources: the integrations file, Graph access per integration, and the DuckDB warehouse."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import dagster as dg
from dagster_duckdb import DuckDBResource

from entra_pipeline.config import ConfigError, Integration, credentials
from entra_pipeline.config.isolation import LoadedIntegrations, load_for_dagster
from entra_pipeline.demo_tenant import ensure_demo_tenant
from entra_pipeline.sources.graph.client import GraphClient, GraphSettings
from entra_pipeline.warehouse.connection import LOCK_WAIT_SECONDS, connect, duckdb_config
from entra_pipeline.sources.workday.client import BasicAuth, WorkdayClient, WorkdaySettings

# Every asset that writes the DuckDB file claims this pool, so concurrent runs take turns instead
# of failing on DuckDB's single-writer lock. The limit is set in dagster-instance.yaml (concurrency.pools).
WAREHOUSE_POOL = "duckdb_warehouse"


class IntegrationsResource(dg.ConfigurableResource):
    """The integrations file, read afresh by each run: the valid integrations, and the broken ones
    set apart (a run of a broken integration fails with its one-line error; the others run)."""

    config_path: str

    def load(self) -> LoadedIntegrations:
        return load_for_dagster(self.config_path)

    def get(self, key: str, kind: str | None = None, loaded: LoadedIntegrations | None = None) -> Integration:
        """The integration ``key`` as the file has it now. A Failure that is not retried (a retry
        cannot fix a file) when the file no longer has it valid, or when it now reads another source
        type (``kind``) than the code location's partitions were made for."""
        try:
            integration = (loaded or self.load()).get(key)
        except ConfigError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None
        if kind is not None and integration.kind != kind:
            raise dg.Failure(f"integration {key!r} now reads {integration.kind}, not {kind}: reload the code "
                             "location (its partitions were made from the file as it was)", allow_retries=False)
        return integration


class GraphResource(dg.ConfigurableResource):
    """Opens a Graph client for an integration: its credential (secret or key password from an
    environment variable, certificate or token cache from a file), and the built-in demo tenant
    started on demand for integrations that ask for it."""

    demo_dir: str | None = None

    def client(self, integration: Integration) -> GraphClient:
        source = integration.source
        credential = credentials.credential(integration)
        graph_url, authority, ca_bundle = source.graph_url, source.authority_url, source.ca_bundle
        if source.demo_tenant is not None:
            endpoint = ensure_demo_tenant(
                source.demo_tenant, tenant_id=source.tenant_id, client_id=source.client_id,
                client_secret=credentials.client_secret(integration), root=Path(self.demo_dir) if self.demo_dir else None,
            )
            graph_url = authority = endpoint.base_url
            ca_bundle = endpoint.ca_path
        return GraphClient(GraphSettings(
            graph_url=graph_url, authority_host=authority, tenant_id=source.tenant_id,
            client_id=source.client_id, credential=credential,
            ca_bundle=str(ca_bundle) if ca_bundle else None, page_size=source.page_size,
            timeout_seconds=source.timeout_seconds, max_retries=source.max_retries,
            max_retry_after_seconds=source.max_retry_after_seconds,
            parallel_requests=source.parallel_requests,
        ))


class WorkdayResource(dg.ConfigurableResource):
    """Opens the Workday report client for a Workday integration: the ISU password or the API
    client's secret and refresh token from their environment variables, and the built-in demo
    tenant (whose Workday side has the demo credentials) started on demand."""

    demo_dir: str | None = None

    def client(self, integration: Integration) -> WorkdayClient:
        source = integration.source
        auth = credentials.workday_auth(integration)
        host, ca_bundle = source.host, source.ca_bundle
        if source.demo_tenant is not None:
            password = auth.password if isinstance(auth, BasicAuth) else None
            endpoint = ensure_demo_tenant(source.demo_tenant, workday_password=password,
                                          root=Path(self.demo_dir) if self.demo_dir else None)
            host, ca_bundle = endpoint.base_url, endpoint.ca_path
        return WorkdayClient(WorkdaySettings(
            host=host, tenant=source.tenant, owner=source.report_owner, report=source.report_name, auth=auth,
            prompts=tuple(source.prompts.items()), ca_bundle=str(ca_bundle) if ca_bundle else None,
            timeout_seconds=source.timeout_seconds, max_retries=source.max_retries,
        ))


class WarehouseResource(DuckDBResource):
    """dagster-duckdb's resource, waiting for another process's lock on the file instead of
    failing (an analyst's read-only session, another integration's run; see warehouse.connect),
    and with the connection closed even when the body raises: a leaked connection would keep the
    file lock until the traceback is collected.

    ``memory_limit`` bounds DuckDB's memory (a size such as 2GB, or a share such as 25%; settable
    with ``dg.EnvVar``); unset, ENTRA_PIPELINE_DUCKDB_MEMORY_LIMIT or 512MB. Work beyond it spills
    to ``<warehouse>.tmp``. ``threads`` caps DuckDB's worker threads; unset,
    ENTRA_PIPELINE_DUCKDB_THREADS or one per core. An invalid value fails the step with one line
    naming the setting."""

    lock_wait_seconds: float = LOCK_WAIT_SECONDS
    memory_limit: str | None = None
    threads: int | None = None

    @contextmanager
    def get_connection(self) -> Iterator:
        try:
            limits = duckdb_config(self.database, self.memory_limit, "the warehouse resource's memory_limit",
                                   self.threads, "the warehouse resource's threads")
        except ConfigError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        con = connect(self.database, wait_seconds=self.lock_wait_seconds,
                      config={**limits, **(self.connection_config or {})})
        try:
            yield con
        finally:
            con.close()
