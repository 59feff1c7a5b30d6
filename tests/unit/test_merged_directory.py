"""The merge behind all_contacts on a real DuckDB file, without Dagster: precedence with empty values,
exclusions across integrations, batches of people, and the write touching only who changed."""

from __future__ import annotations

import json

import duckdb
import pytest

from entra_pipeline.config import ContactsDirectory
from entra_pipeline.sync.all_contacts import settings
from entra_pipeline.warehouse import directory_tables as d
from entra_pipeline.warehouse import schema as s

KEYS = ["entra", "hr"]


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    s.ensure_schema(connection)
    yield connection
    connection.close()


def add(con, integration: str, contact_id: str, **fields) -> None:
    columns = ["integration", "contact_id", "source_id", *fields, "run_id", "synced_at"]
    con.execute(f'INSERT INTO contacts ({", ".join(columns)}) VALUES ({", ".join("?" * len(columns))})',
                [integration, contact_id, f"{integration}-{contact_id}", *fields.values(), "r", "2026-01-01"])


def merged(con, directory: ContactsDirectory, only=None) -> dict[str, int]:
    merge = settings(con, directory, KEYS)
    d.merge(con, merge, only)
    return d.write(con, "run", "entra", merge, only)


def person(con, contact_id: str) -> tuple:
    return con.execute("SELECT job_title, department, mobile, sources, integrations FROM all_contacts "
                       "WHERE contact_id = ?", [contact_id]).fetchone()


def test_each_field_from_the_first_integration_with_a_value(con):
    add(con, "entra", "ann@x.com", job_title="Engineer", department="", mobile=None)
    add(con, "hr", "ann@x.com", job_title="Senior Engineer", department="R&D", mobile="+43 1")
    add(con, "hr", "bob@x.com", job_title="Clerk")
    assert merged(con, ContactsDirectory()) == {"joined": 2, "updated": 0, "left": 0}
    title, department, mobile, sources, integrations = person(con, "ann@x.com")
    # Empty text and NULL in the preferred integration do not hide the other's value.
    assert (title, department, mobile, integrations) == ("Engineer", "R&D", "+43 1", ["entra", "hr"])
    assert {k: v for k, v in json.loads(sources).items() if k in ("job_title", "department", "mobile", "email")} == {
        "job_title": "entra", "department": "hr", "mobile": "hr"}
    assert person(con, "bob@x.com")[0] == "Clerk" and person(con, "bob@x.com")[4] == ["hr"]

    hr_first = ContactsDirectory.model_validate({"precedence": {"fields": {"job_title": ["hr"]}}})
    assert merged(con, hr_first) == {"joined": 0, "updated": 1, "left": 0}
    assert person(con, "ann@x.com")[0] == "Senior Engineer"
    [(changes,)] = con.execute("SELECT changes FROM all_contact_changes WHERE change = 'updated'").fetchall()
    assert json.loads(changes) == [{"field": "job_title", "old": "Engineer", "new": "Senior Engineer",
                                    "old_source": "entra", "new_source": "hr"}]
    # The same merge again changes nobody.
    assert merged(con, hr_first) == {"joined": 0, "updated": 0, "left": 0}


def test_excluded_anywhere_and_its_opposite(con):
    add(con, "entra", "ann@x.com", job_title="Engineer")
    con.execute("INSERT INTO excluded_contacts VALUES ('hr', 'ann@x.com', 'E1', 'On leave', 'r', '2026-01-01')")
    assert merged(con, ContactsDirectory()) == {"joined": 0, "updated": 0, "left": 0}
    assert con.execute("SELECT contact_id, excluded_by, rule, kept_by FROM all_contacts_excluded").fetchall() == [
        ("ann@x.com", "hr", "On leave", ["entra"])]
    assert merged(con, ContactsDirectory(excluded_anywhere=False)) == {"joined": 1, "updated": 0, "left": 0}
    assert person(con, "ann@x.com")[4] == ["entra"]
    assert con.execute("SELECT count(*) FROM all_contacts_excluded").fetchone() == (0,)


def test_batches_and_an_incremental_merge_give_the_rows_of_one_merge(con, monkeypatch):
    for i in range(50):
        add(con, "entra", f"p{i}@x.com", job_title=f"E{i}", department=None if i % 3 else "D")
        if i % 2:
            add(con, "hr", f"p{i}@x.com", job_title=None if i % 5 else f"H{i}", department=f"HD{i}")
    merged(con, ContactsDirectory())
    whole = con.execute("SELECT * EXCLUDE (run_id, synced_at) FROM all_contacts ORDER BY contact_id").fetchall()

    con.execute("DELETE FROM all_contacts")
    monkeypatch.setattr(d, "MERGE_BATCH", 4)  # 25 shared people in 7 batches
    merged(con, ContactsDirectory())
    assert con.execute("SELECT * EXCLUDE (run_id, synced_at) FROM all_contacts ORDER BY contact_id").fetchall() == whole

    con.execute("UPDATE contacts SET job_title = 'Moved' WHERE contact_id = 'p3@x.com' AND integration = 'entra'")
    con.execute("DELETE FROM contacts WHERE contact_id = 'p4@x.com'")
    assert merged(con, ContactsDirectory(), only={"p3@x.com", "p4@x.com"}) == {"joined": 0, "updated": 1, "left": 1}
    assert person(con, "p3@x.com")[0] == "Moved"
    assert con.execute("SELECT count(*) FROM all_contacts").fetchone() == (49,)
