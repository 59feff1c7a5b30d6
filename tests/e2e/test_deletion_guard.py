"""The deletion guard: a sync that would remove many contacts or list memberships writes nothing
until an operator approves that run, whatever removes the memberships (a list change or contacts
leaving); a directory that suddenly returns no users is always blocked."""

from __future__ import annotations

import copy

from entra_pipeline.sync import checks as c

from tests.support.expected import expected_contacts
from tests.support.integrations import ALLOW_REMOVALS, integration, write_config
from tests.support.runs import check_evaluations, failure_messages, materialized


KEY = "acme"
# What the guard protects. raw_graph_* and mapped_contacts are the latest read and mapping: they
# move on, and the contacts and lists wait for the approval.
CONTACT_TABLES = ("contacts", "excluded_contacts", "distribution_lists", "distribution_list_members",
                  "distribution_list_non_members")


def contacts_of(sync) -> dict[str, str]:
    return dict(sync.query("SELECT source_id, contact_id FROM contacts"))


def test_mass_removal_is_blocked_then_approved(make_sync, emulator, directory_copy):
    sync = make_sync(integration(KEY, emulator))
    assert sync.run(KEY).success
    before = sync.snapshot()
    # A third of the contacts' accounts disabled at once (say, a bad HR import).
    targets = sorted(expected_contacts(directory_copy))[::3]
    for user in directory_copy.users:
        if user["id"] in targets:
            user["accountEnabled"] = False
    emulator.reindex()
    now = len(expected_contacts(directory_copy))
    current = len(before["contacts"])

    result = sync.run(KEY)
    assert not result.success
    evaluation = check_evaluations(result)[c.CONTACT_REMOVALS_WITHIN_LIMIT]
    assert (evaluation.passed, evaluation.severity.value) == (False, "ERROR")
    assert evaluation.description == (
        f"this sync would remove {len(targets):,} of {current:,} contacts (more than 500 and more than 10 % of "
        f"{current:,}); re-run with allow_removals: true to approve")
    assert evaluation.metadata["removed"].value == len(targets) == current - now
    assert not {"filtered_contacts", "distribution_lists"} & materialized(result)
    after = sync.snapshot()
    for table in CONTACT_TABLES:
        assert after[table] == before[table], table

    # Blocked again on the next scheduled run: the source has not changed back.
    assert not sync.run(KEY).success
    approved = sync.run(KEY, ALLOW_REMOVALS)
    assert approved.success, failure_messages(approved)
    assert check_evaluations(approved)[c.CONTACT_REMOVALS_WITHIN_LIMIT].description.endswith(
        "approved by allow_removals")
    assert contacts_of(sync) == expected_contacts(directory_copy)
    # Nobody disabled stays on any list.
    members = {r[0] for r in sync.query("SELECT DISTINCT contact_id FROM distribution_list_members")}
    assert not members - set(expected_contacts(directory_copy).values())


def test_blocked_run_clears_itself_when_the_source_changes_back(make_sync, emulator, directory_copy):
    sync = make_sync(integration(KEY, emulator))
    assert sync.run(KEY).success
    before = contacts_of(sync)
    saved = copy.deepcopy(directory_copy.users)
    for user in directory_copy.users:
        user["accountEnabled"] = False
    emulator.reindex()
    assert not sync.run(KEY).success
    directory_copy.users = saved
    emulator.reindex()
    result = sync.run(KEY)
    assert result.success, failure_messages(result)
    assert contacts_of(sync) == before


def test_a_directory_that_returns_no_users_is_always_blocked(make_sync, emulator, directory_copy):
    sync = make_sync(integration(KEY, emulator))
    assert sync.run(KEY).success
    before = sync.snapshot()
    directory_copy.users = []
    emulator.reindex()
    for run_config in (None, ALLOW_REMOVALS):
        result = sync.run(KEY, run_config)
        assert not result.success
        evaluation = check_evaluations(result)[c.DIRECTORY_NOT_EMPTY]
        assert (evaluation.passed, evaluation.description) == (
            False, f"the directory returned no users; the last sync read {len(before['raw_graph_users']):,}")
        assert "raw_graph_users" not in materialized(result)
        after = sync.snapshot()
        for table in ("raw_graph_users", *CONTACT_TABLES):
            assert after[table] == before[table], table


def test_deselecting_lists_is_a_membership_removal(make_sync, emulator, directory):
    sync = make_sync(integration(KEY, emulator, distribution_lists={"select": "all"}))
    assert sync.run(KEY).success
    before = sync.snapshot()
    kept = directory.special["nested_parent"]
    current = len(before["distribution_list_members"])
    staying = len(sync.query("SELECT 1 FROM distribution_list_members WHERE list_id = ?", [kept]))

    write_config(sync.config, integration(KEY, emulator, distribution_lists={"select": "ids", "ids": [kept]}))
    result = sync.run(KEY)
    assert not result.success
    evaluation = check_evaluations(result)[c.MEMBERSHIP_REMOVALS_WITHIN_LIMIT]
    assert evaluation.description.startswith(
        f"this sync would remove {current - staying:,} of {current:,} list memberships")
    assert check_evaluations(result)[c.CONTACT_REMOVALS_WITHIN_LIMIT].passed
    assert sync.snapshot()["distribution_list_members"] == before["distribution_list_members"]
    assert sync.run(KEY, ALLOW_REMOVALS).success
    assert {r[0] for r in sync.query("SELECT list_id FROM distribution_lists")} == {kept}


def test_limits_can_be_switched_off(make_sync, emulator, directory_copy):
    sync = make_sync(integration(KEY, emulator, deletion_guard={"max_removed": None, "max_removed_percent": None}))
    assert sync.run(KEY).success
    for user in directory_copy.users:
        user["userType"] = "Guest"
    emulator.reindex()
    result = sync.run(KEY)
    # Everyone excluded: the guard lets it through, but exclusions_keep_contacts still blocks.
    assert not result.success
    assert check_evaluations(result)[c.CONTACT_REMOVALS_WITHIN_LIMIT].passed
    assert not check_evaluations(result)[c.EXCLUSIONS_KEEP_CONTACTS].passed


def test_contacts_leaving_count_their_list_memberships_against_the_guard(make_sync, emulator):
    # A count limit only, as an operator might set it: the 8 contacts leave within it, their
    # memberships must not.
    guard = {"max_removed": 10, "max_removed_percent": None}
    sync = make_sync(integration(KEY, emulator, deletion_guard=guard))
    assert sync.run(KEY).success
    before = sync.snapshot()
    total = len(before["distribution_list_members"])
    # The 8 contacts on the most lists (ties by contact id).
    top = sync.query("SELECT contact_id, count(*) AS n FROM distribution_list_members "
                     "GROUP BY contact_id ORDER BY n DESC, contact_id LIMIT 8")
    leavers, memberships = [r[0] for r in top], sum(r[1] for r in top)
    assert memberships > 10
    rules = [{"name": "On leave", "field": "extensionAttribute1", "equals": "Inactive"},
             {"name": "Leavers", "contact_field": "email", "in": leavers}]
    write_config(sync.config, integration(KEY, emulator, deletion_guard=guard, exclusions={"rules": rules}))

    # The preview names the check; the sync is blocked by it alone, and changes nothing.
    assert sync.run(KEY, preview=True).success
    assert sync.query("SELECT json_extract_string(details, '$.check') FROM sync_preview "
                      "WHERE change = 'check_would_block'") == [(c.LEAVERS_MEMBERSHIPS_WITHIN_LIMIT,)]
    result = sync.run(KEY)
    assert not result.success
    evaluations = check_evaluations(result)
    assert evaluations[c.CONTACT_REMOVALS_WITHIN_LIMIT].passed
    evaluation = evaluations[c.LEAVERS_MEMBERSHIPS_WITHIN_LIMIT]
    assert (evaluation.passed, evaluation.severity.value) == (False, "ERROR")
    assert evaluation.description == (f"this sync would remove {memberships:,} of {total:,} list memberships "
                                      "(more than 10); re-run with allow_removals: true to approve")
    assert evaluation.metadata["removed"].value == memberships
    assert not {"filtered_contacts", "distribution_lists"} & materialized(result)
    after = sync.snapshot()
    for table in CONTACT_TABLES:
        assert after[table] == before[table], table

    approved = sync.run(KEY, ALLOW_REMOVALS)
    assert approved.success, failure_messages(approved)
    assert check_evaluations(approved)[c.LEAVERS_MEMBERSHIPS_WITHIN_LIMIT].description == (
        f"{memberships:,} of {total:,} list memberships removed (more than 10), approved by allow_removals")
    assert not {r[0] for r in sync.query("SELECT contact_id FROM distribution_list_members")} & set(leavers)
    assert len(sync.query("SELECT * FROM distribution_list_members")) == total - memberships
    # The run's summary counts the memberships that left with their contacts.
    run_id = sync.query("SELECT run_id FROM sync_runs ORDER BY started_at DESC LIMIT 1")[0][0]
    assert sync.query("SELECT contacts_removed, list_members_removed FROM sync_runs WHERE run_id = ?",
                      [run_id]) == [(8, memberships)]


def test_every_sync_run_counts_the_memberships_it_removed(make_sync, emulator, directory_copy):
    sync = make_sync(integration(KEY, emulator))
    assert sync.run(KEY).success
    first = sync.query("SELECT list_members_added, list_members_removed FROM sync_runs")
    assert first == [(len(sync.snapshot()["distribution_list_members"]), 0)]
    # One contact disabled: it leaves its lists with it.
    member = sync.query("SELECT m.contact_id, c.source_id, count(*) FROM distribution_list_members m "
                        "JOIN contacts c USING (integration, contact_id) GROUP BY ALL "
                        "ORDER BY 3 DESC, 1 LIMIT 1")[0]
    for user in directory_copy.users:
        if user["id"] == member[1]:
            user["accountEnabled"] = False
    emulator.reindex()
    assert sync.run(KEY).success
    last = sync.query("SELECT contacts_removed, list_members_removed FROM sync_runs "
                      "ORDER BY started_at DESC LIMIT 1")
    assert last == [(1, member[2])]


def test_a_blocked_cli_sync_names_the_cli_flag_and_the_flag_approves(tmp_path, emulator, directory_copy, secret_env):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    config = write_config(tmp_path / "integrations.yaml", integration(
        KEY, emulator, deletion_guard={"max_removed": 5, "max_removed_percent": None}))
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "ENTRA_PIPELINE_WAREHOUSE": str(tmp_path / "w.duckdb")}
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text((root / "dagster-instance.yaml").read_text())

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "entra_pipeline", "--config", str(config), *args], env=env,
                              cwd=root, capture_output=True, text=True, timeout=600)

    assert cli("sync").returncode == 0
    targets = sorted(expected_contacts(directory_copy))[:8]
    for user in directory_copy.users:
        if user["id"] in targets:
            user["accountEnabled"] = False
    emulator.reindex()
    blocked = cli("sync")
    assert blocked.returncode == 1
    [line] = [line for line in blocked.stdout.splitlines() if line.startswith("  filtered_contacts: ")]
    assert line.startswith(f"  filtered_contacts: integration {KEY!r}: this sync would remove 8 of ")
    assert line.endswith("(more than 5); re-run with sync --allow-removals to approve; nothing was written")
    approved = cli("sync", "--allow-removals")
    assert approved.returncode == 0, approved.stdout + approved.stderr
