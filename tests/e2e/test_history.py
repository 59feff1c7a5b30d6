"""contact_changes: who joined, changed or left, sync by sync."""

from __future__ import annotations

import copy
import json

from tests.support.expected import expected_contacts
from tests.support.integrations import integration
from tests.support.runs import failure_messages


KEY = "acme"


def changes(sync, run_id: str) -> dict[str, tuple]:
    return {r[0]: (r[1], json.loads(r[2]) if r[2] else None) for r in sync.query(
        "SELECT contact_id, change, changes FROM contact_changes WHERE run_id = ?", [run_id])}


def test_history_records_joined_updated_and_left(make_sync, emulator, directory_copy):
    sync = make_sync(integration(KEY, emulator, distribution_lists={"select": "none"}))
    first = sync.run(KEY)
    assert first.success, failure_messages(first)
    contacts = expected_contacts(directory_copy)
    assert changes(sync, first.run_id) == {cid: ("joined", None) for cid in contacts.values()}

    users = {u["id"]: u for u in directory_copy.users}
    mover, leaver = sorted(contacts)[:2]
    old_department = users[mover]["department"]
    users[mover]["department"] = "Moved Department"
    users[leaver]["accountEnabled"] = False
    newcomer = copy.deepcopy(users[mover])
    newcomer.update(id="00000000-0000-4000-8000-00000000c0de", mail="new.starter@contoso.com",
                    userPrincipalName="new.starter@contoso.com", department="Sales")
    directory_copy.users.append(newcomer)
    emulator.reindex()

    second = sync.run(KEY)
    assert second.success, failure_messages(second)
    assert changes(sync, second.run_id) == {
        contacts[mover]: ("updated", [{"field": "department", "old": old_department, "new": "Moved Department"}]),
        contacts[leaver]: ("left", None),
        "new.starter@contoso.com": ("joined", None),
    }

    third = sync.run(KEY)
    assert third.success
    assert changes(sync, third.run_id) == {}
    # History is appended, never rewritten.
    assert sync.query("SELECT count(*) FROM contact_changes") == [(len(contacts) + 3,)]
