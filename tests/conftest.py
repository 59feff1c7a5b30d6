"""Shared fixtures: a demo directory served by the Graph emulator over real HTTPS, integrations
files pointing at it, and real Dagster runs of the sync job against a real DuckDB file."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from entra_pipeline.definitions import build_defs, run_sync
from entra_pipeline.defs.jobs import SyncResult
from entra_pipeline.emulator.population import generate_directory
from entra_pipeline.emulator.server import Emulator

TENANT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
SECRET_ENV = "ENTRA_TEST_CLIENT_SECRET"
# Recognisable, so tests can prove it never leaks into errors or the warehouse.
SECRET = "s3cr3t-VALUE-that-must-never-leak"

# 2,800 users: three pages of 999, and an "All Employees" group of more than 2,500 members.
USERS, GROUPS, SEED = 2800, 60, 11


@pytest.fixture(scope="session")
def directory():
    return generate_directory(users=USERS, groups=GROUPS, seed=SEED)


@pytest.fixture(scope="session")
def emulator(directory, tmp_path_factory):
    server = Emulator(directory, tenant_id=TENANT_ID, client_id=CLIENT_ID, client_secret=SECRET,
                      cert_dir=tmp_path_factory.mktemp("certs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clean_emulator(request):
    """Faults injected by one test never reach the next."""
    yield
    if "emulator" in request.fixturenames:
        request.getfixturevalue("emulator").faults.clear()


@pytest.fixture
def directory_copy(emulator):
    """The emulator's directory, changeable by the test and restored afterwards."""
    original = emulator.directory
    emulator.directory = copy.deepcopy(original)
    yield emulator.directory
    emulator.directory = original


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return SECRET_ENV


def integration(key: str, emulator: Emulator, **overrides) -> dict:
    """An integration entry pointing at the test emulator; ``overrides`` replace top-level keys."""
    entry = {
        "key": key,
        "title": f"Test {key}",
        "source": {
            "tenant_id": TENANT_ID,
            "client_id": CLIENT_ID,
            "client_secret_env": SECRET_ENV,
            "graph_base_url": emulator.base_url,
            "authority_host": emulator.base_url,
            "ca_bundle": str(emulator.ca_path),
            "max_retries": 4,
            "timeout_seconds": 30,
        },
        "schedule": {"cron": "0 6 * * *"},
        # Disabled accounts and guests are excluded by the built-in switches.
        "exclusions": {"rules": [{"name": "On leave", "field": "extensionAttribute1", "equals": "Inactive"}]},
        "distribution_lists": {"select": "all"},
    }
    for name, value in overrides.items():
        if name == "source":
            entry["source"] = {**entry["source"], **value}
        else:
            entry[name] = value
    return entry


def self_signed_certificate(common_name: str = "entra-pipeline test", *, days: float = 365, not_before_days: float = 1,
                            key_size: int = 2048) -> tuple[bytes, bytes]:
    """A self-signed RSA certificate for an app registration: (private key PEM, certificate PEM),
    valid from ``not_before_days`` ago for ``days`` from now (negative: already expired)."""
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=not_before_days))
            .not_valid_after(now + timedelta(days=days))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> Path:
    """A key file as an administrator keeps it: readable by its owner only."""
    path.write_bytes(data)
    path.chmod(0o600)
    return path


# A Workday tenant in front of a small directory: the same people, as the demo's Workday report has them.
WORKDAY_SEED = 5
WORKDAY_PASSWORD = "isu-PASSWORD-never-shown"
WORKDAY_CLIENT_SECRET, WORKDAY_REFRESH_TOKEN = "client-SECRET-never-shown", "refresh-TOKEN-never-shown"


@pytest.fixture(scope="module")
def hr_directory():
    return generate_directory(users=400, groups=20, seed=WORKDAY_SEED)


@pytest.fixture(scope="module")
def workday(hr_directory, tmp_path_factory):
    """An emulator serving a Workday report of ``hr_directory``'s workers (and that directory)."""
    from entra_pipeline.emulator.workday import WorkdayTenant
    from entra_pipeline.emulator.workday_workers import generate_workers

    tenant = WorkdayTenant(password=WORKDAY_PASSWORD, client_secret=WORKDAY_CLIENT_SECRET,
                           refresh_token=WORKDAY_REFRESH_TOKEN, entries=generate_workers(hr_directory, WORKDAY_SEED))
    server = Emulator(hr_directory, tenant_id=TENANT_ID, client_id=CLIENT_ID, client_secret=SECRET,
                      cert_dir=tmp_path_factory.mktemp("certs"), workday=tenant)
    server.start()
    yield server
    server.stop()


# An operator's approval of one run's mass removal (the deletion guard).
ALLOW_REMOVALS = {"ops": {asset: {"config": {"allow_removals": True}}
                          for asset in ("filtered_contacts", "distribution_lists")}}


def write_config(path: Path, *integrations: dict, runs: dict | None = None) -> Path:
    """An integrations file; Dagster's step retries are off unless ``runs`` says otherwise, so a
    test of a failure sees that failure, not a retry of it a minute later."""
    document = {"integrations": list(integrations), "runs": runs or {"step_retries": 0}}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


class Sync:
    """Runs the real sync (the integration's source job, then the contacts job) for one config file
    and warehouse, on an ephemeral instance."""

    def __init__(self, config: Path, warehouse: Path) -> None:
        self.config, self.warehouse = config, warehouse
        self.instance = dg.DagsterInstance.ephemeral()

    def run(self, key: str, run_config: dict | None = None, preview: bool = False) -> SyncResult:
        defs = build_defs(self.config, self.warehouse)
        return run_sync(defs, key, self.instance, run_config=run_config, preview=preview)

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        con = duckdb.connect(str(self.warehouse), read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    def snapshot(self, content_only: bool = False) -> dict[str, list[str]]:
        """Every row of every table, for "nothing changed" assertions. ``content_only`` leaves out
        the run id and timestamps, which a successful re-read of the same directory renews, the run
        log (sync_run_stages and its view sync_runs), to which every committed stage adds a row, and
        delta_state, whose deltaLink every successful read renews."""
        if not self.warehouse.exists():
            return {}
        columns = "COLUMNS(lambda c: c NOT IN ('run_id', 'synced_at', 'created_at'))" if content_only else "*"
        con = duckdb.connect(str(self.warehouse), read_only=True)
        try:
            tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
                      if not (content_only and r[0] in ("sync_run_stages", "sync_runs", "delta_state"))]
            return {t: sorted(map(repr, con.execute(f'SELECT {columns} FROM "{t}"').fetchall()))
                    for t in sorted(tables)}
        finally:
            con.close()

    def unchanged_except(self, before: dict, after: dict, renewed: set[str]) -> None:
        """Tables in ``renewed`` were rewritten by a step that succeeded; all others are byte-equal.
        A step that succeeded also logged itself (sync_run_stages, the sync_runs view over it), a
        raw step stored its delta state, and the incremental stages their bookkeeping."""
        if renewed:
            renewed = renewed | {"sync_run_stages", "sync_runs"}
        if renewed & {"raw_graph_users", "raw_graph_groups"}:
            renewed = renewed | {"delta_state"}
        # The incremental stages' bookkeeping: change logs, consumed positions, the mapped ids.
        if renewed & {"raw_graph_users", "raw_graph_groups", "mapped_contacts", "contacts"}:
            renewed = renewed | {"stage_state", "stage_changes"}
        if "mapped_contacts" in renewed:
            renewed = renewed | {"mapped_user_ids"}
        assert set(after) == set(before)
        for table in before:
            if table not in renewed:
                assert after[table] == before[table], table


@pytest.fixture
def make_sync(tmp_path, secret_env):
    def make(*integrations: dict) -> Sync:
        config = write_config(tmp_path / "integrations.yaml", *integrations)
        return Sync(config, tmp_path / "warehouse.duckdb")

    return make


def recorded_text(sync: Sync, results: list[SyncResult], caplog) -> dict[str, str]:
    """Everything the runs left behind, as text, for secret scans: the serialised Dagster event log
    (messages, metadata, errors), every captured log record, and every warehouse table."""

    events = "\n".join(dg.serialize_value(entry) for r in results for run_id in r.run_ids
                       for entry in sync.instance.all_logs(run_id))
    logs = "\n".join(f"{record.getMessage()} {record.args!r} {record.exc_text or ''}" for record in caplog.records)
    con = duckdb.connect(str(sync.warehouse), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        warehouse = "\n".join(repr(con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables)
    finally:
        con.close()
    return {"event log": events, "log records": logs, "warehouse": warehouse}


def failure_messages(result: SyncResult) -> list[str]:
    messages = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        text = []
        while error is not None:
            text.append(error.message)
            error = error.cause
        messages.append(" | ".join(text))
    return messages


# -- expected outcomes, computed from the directory independently of the pipeline's code ---------

def expected_mapped(directory) -> dict[str, str]:
    """user id -> contact id for users with a mail address (the default Unique Contact ID)."""
    return {u["id"]: u["mail"].strip().lower() for u in directory.users if u["mail"]}


def expected_contacts(directory) -> dict[str, str]:
    """The default test exclusions applied: disabled, guests, extensionAttribute1 exactly 'Inactive'."""
    kept = {}
    for user in directory.users:
        ext1 = (user["onPremisesExtensionAttributes"] or {}).get("extensionAttribute1")
        if user["mail"] and user["accountEnabled"] and user["userType"] != "Guest" and ext1 != "Inactive":
            kept[user["id"]] = user["mail"].strip().lower()
    return kept


def offered_group_ids(directory) -> set[str]:
    return {g["id"] for g in directory.groups if g["mailEnabled"]}


def expected_members(directory, group_id: str, contacts: dict[str, str]) -> set[str]:
    """Contacts among the group's transitive members, as Graph's transitiveMembers computes them."""
    return {contacts[oid] for otype, oid in directory.transitive_members(group_id)
            if otype == "#microsoft.graph.user" and oid in contacts}


def pytest_configure(config):
    # The emulator's CA must come from config, never from these variables (graph-facts).
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.setdefault(name, "/nonexistent/ca-bundle.pem")
