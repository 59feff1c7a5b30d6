"""Integrations files as an administrator writes them, pointing at the test tenant."""

from __future__ import annotations

from pathlib import Path

import yaml

from entra_pipeline.emulator import Emulator

from tests.support.tenant import CLIENT_ID, SECRET_ENV, TENANT_ID

# An operator's approval of one run's mass removal (the deletion guard).
ALLOW_REMOVALS = {"ops": {asset: {"config": {"allow_removals": True}}
                          for asset in ("filtered_contacts", "distribution_lists", "all_contacts")}}
#: The variable the Workday integrations' password is read from.
WORKDAY_PASSWORD_ENV = "WD_TEST_PASSWORD"


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


def workday_integration(workday: Emulator, **overrides) -> dict:
    """The Workday integration "hr" reading the test Workday tenant's report; ``overrides`` replace
    top-level keys."""
    entry = {
        "key": "hr", "title": "Workday",
        "source": {"type": "workday", "host": workday.base_url, "tenant": "contoso_demo", "report_owner": "lmcneil",
                   "report_name": "Contacts_Sync", "username": "ISU_Contacts", "password_env": WORKDAY_PASSWORD_ENV,
                   "ca_bundle": str(workday.ca_path), "max_retries": 1},
        "mapping": {"fields": {"Standard_Hours": "weekly_hours", "Cost_Center": "cost_center"},
                    "custom_fields": {"weekly_hours": "Number", "cost_center": "Text"}},
        "exclusions": {"rules": [{"name": "Left or on leave", "field": "Worker_Status",
                                  "in": ["Terminated", "On Leave"]}]},
    }
    entry.update(overrides)
    return entry


def write_config(path: Path, *integrations: dict, runs: dict | None = None, directory: dict | None = None) -> Path:
    """An integrations file; Dagster's step retries are off unless ``runs`` says otherwise, so a
    test of a failure sees that failure, not a retry of it a minute later. ``directory``: its
    contacts_directory section."""
    document = {"integrations": list(integrations), "runs": runs or {"step_retries": 0}}
    if directory is not None:
        document["contacts_directory"] = directory
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path
