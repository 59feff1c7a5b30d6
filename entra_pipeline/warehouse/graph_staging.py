"""A full delta round of Graph users or groups, staged into a scratch DuckDB file page by page as
Graph sends it, then applied to the warehouse in one step: memory holds a batch of items, never
the directory (a million users would be gigabytes of Python objects).

Once the round is whole (``finish``), the scratch file holds what it says each object is now:
``users`` (one row per user, the manager's mail filled in as ``$expand=manager`` gives it), or
``groups`` and their direct ``members``. Items are applied exactly as graph.delta applies them
in memory: an object the round carries more than once (a large group's members come in slices,
replays are normal) is its items in order, ``@removed`` resets it, the last mention of a member
wins. ``apply_staged_users`` / ``apply_staged_groups`` replace the integration's raw rows with it
inside the warehouse transaction.
"""

from __future__ import annotations

import queue
import secrets
import tempfile
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pandas as pd

from entra_pipeline.sources.graph import delta
from entra_pipeline.sources.graph.pages import member_type
from entra_pipeline.transform import lists, values
from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.warehouse import connection
from entra_pipeline.warehouse import schema as s
from entra_pipeline.warehouse.raw_tables import RawChange, from_json, replace_compared, to_json
from entra_pipeline.warehouse.table_rows import insert_rows, utc_now

#: Rows per insert into the scratch file: memory holds this many, not the round.
BATCH = 5000
#: The schema name a scratch file is attached under in the warehouse connection (plus a suffix:
#: attached databases belong to the DuckDB instance, which connections to one file share).
STAGED = "staged_graph"
#: DuckDB's memory for a scratch file: it only appends and groups, and spills next to itself
#: beyond this; with the warehouse's bound (512MB) it would keep a large round in memory.
SCRATCH_MEMORY_LIMIT = "128MB"
#: Pages waiting for the staging thread. Staging a page costs more than downloading it: on its
#: own thread it runs while the reader waits for the next page (with 200 ms per request,
#: the round takes its page chain, not the chain plus the staging). The bound keeps memory to a
#: few pages when staging falls behind.
QUEUE_PAGES = 4
_USER_COLUMNS = {"seq": "BIGINT", "id": "VARCHAR", "removed": "BOOLEAN", "user_principal_name": "VARCHAR",
                 "display_name": "VARCHAR", "mail": "VARCHAR", "manager_id": "VARCHAR", "data": "VARCHAR",
                 "item": "VARCHAR"}
_GROUP_COLUMNS = {"seq": "BIGINT", "id": "VARCHAR", "removed": "BOOLEAN", "display_name": "VARCHAR",
                  "mail": "VARCHAR", "kind": "VARCHAR", "mail_enabled": "BOOLEAN", "security_enabled": "BOOLEAN",
                  "group_types": "VARCHAR[]", "data": "VARCHAR"}
_LINK_COLUMNS = {"seq": "BIGINT", "link": "BIGINT", "group_id": "VARCHAR", "member_id": "VARCHAR",
                 "member_type": "VARCHAR"}


class Staged:
    """A scratch DuckDB file in its own temporary directory, written in batches by a staging
    thread that takes the pages ``add`` queues; ``close`` ends the thread and removes the file
    (every reader closes it, failed or not)."""

    def __init__(self, kind: str, stage: str, tables: dict[str, dict[str, str]]) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix=f"graph-{kind}s-")
        self.path = str(Path(self._dir.name) / "round.duckdb")
        self.alias = f"{STAGED}_{secrets.token_hex(6)}"
        self.items = 0
        self.issues: list[ImportIssue] = []
        self._check = values.PageCheck(kind, stage)
        self._columns = tables
        self._batches: dict[str, list[tuple]] = {name: [] for name in tables}
        self._con = connection.connect(self.path, wait_seconds=0, config={"memory_limit": SCRATCH_MEMORY_LIMIT})
        for name, columns in tables.items():
            self._con.execute(f"CREATE TABLE {name} ({', '.join(f'{c} {t}' for c, t in columns.items())})")
        self._pages: queue.Queue[list[dict] | None] = queue.Queue(QUEUE_PAGES)
        self._failure: BaseException | None = None
        self._stopping = False
        self._worker = threading.Thread(target=self._stage_pages, name=f"stage-{kind}s", daemon=True)
        self._worker.start()

    def add(self, page: list[dict]) -> None:
        """Queue one delta page (Graph's items, unchecked) for staging; raises what staging an
        earlier page raised."""
        self._raise_failure()
        self._pages.put(page)

    def _stage(self, page: list[dict]) -> None:
        raise NotImplementedError

    def _stage_pages(self) -> None:
        while (page := self._pages.get()) is not None:
            if self._failure is None and not self._stopping:
                try:
                    self._stage(page)
                except BaseException as exc:  # noqa: BLE001 - raised in the reader's thread
                    self._failure = exc

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _drain(self) -> None:
        """Wait until every queued page is staged (the staging thread then ends)."""
        if self._worker.is_alive():
            self._pages.put(None)
            self._worker.join()
        self._raise_failure()

    def _append(self, table: str, row: tuple) -> None:
        batch = self._batches[table]
        batch.append(row)
        if len(batch) >= BATCH:
            self._flush(table)

    def _flush(self, table: str) -> None:
        insert_rows(self._con, table, pd.DataFrame(self._batches[table], columns=list(self._columns[table]),
                                                   dtype=object))
        self._batches[table].clear()

    def _repeated(self) -> list[str]:
        """Stage what is queued and flush everything; the ids the round carried more than once
        (kept in temp table ``repeated``)."""
        self._drain()
        for table in self._batches:
            self._flush(table)
        self.issues = self._check.issues()
        ids = [r[0] for r in self._con.execute("SELECT id FROM items GROUP BY id HAVING count(*) > 1").fetchall()]
        self._con.execute("CREATE TEMP TABLE repeated AS SELECT unnest(?::VARCHAR[]) AS id", [ids])
        return ids

    def close(self) -> None:
        """Remove the scratch file (also after a failed read: pages still queued are dropped)."""
        self._stopping = True
        try:
            if self._worker.is_alive():
                self._pages.put(None)
                self._worker.join()
            self._con.close()
        finally:
            self._dir.cleanup()


class StagedUsers(Staged):
    """A full round of users as it streams: ``add`` each page's items (Graph's, unchecked),
    ``finish`` once the round is whole, then ``apply_staged_users`` in the warehouse."""

    def __init__(self, stage: str, managers: bool) -> None:
        super().__init__("user", stage, {"items": _USER_COLUMNS})
        self.managers = managers

    def _stage(self, page: list[dict]) -> None:
        """One delta page: its items within the limits of transform.values, as rows."""
        for item in self._check.page(page):
            self.items += 1
            # A user that comes again is its rows applied in order: a row says all its item did,
            # unless the item removed a manager link (that depends on the manager before): then
            # the item itself is kept.
            links = item.get(delta.MANAGER_DELTA) or ()
            kept = to_json(item) if any(delta.REMOVED in link for link in links) else None
            self._append("items", _user_row(self.items, item["id"], delta.apply_users({}, [item])[item["id"]], kept))

    def finish(self) -> None:
        """The round is whole: one row per user in table ``users``."""
        con = self._con
        if self._repeated():
            merged: dict[str, dict | None] = {}
            for uid, removed, data, item in con.execute("SELECT id, removed, data, item FROM items WHERE id IN "
                                                        "(SELECT id FROM repeated) ORDER BY seq").fetchall():
                before = merged.get(uid)
                if item is not None:
                    merged[uid] = delta.apply_users({uid: before} if before else {}, [from_json(item)])[uid]
                else:
                    merged[uid] = None if removed else {**(before or {}), **from_json(data)}
            con.execute("DELETE FROM items WHERE id IN (SELECT id FROM repeated)")
            for uid, user in merged.items():
                self._append("items", _user_row(0, uid, user, None))
            self._flush("items")
        # A manager named by id gets the mail the round gave that user (none: not a user here, e.g. an orgContact).
        data = ("CASE WHEN u.manager_id IS NULL THEN u.data ELSE json_merge_patch(u.data, json_object('manager', "
                "json_object('id', u.manager_id, 'mail', m.mail)))::VARCHAR END" if self.managers else "u.data")
        join = "LEFT JOIN items m ON m.id = u.manager_id AND NOT m.removed" if self.managers else ""
        con.execute(f"CREATE TABLE users AS SELECT u.id, u.user_principal_name, u.display_name, u.mail, {data} AS data "
                    f"FROM items u {join} WHERE NOT u.removed")
        con.execute("DROP TABLE items")
        con.close()


def _user_row(seq: int, uid: str, user: dict | None, item_json: str | None) -> tuple:
    if user is None:
        return seq, uid, True, None, None, None, None, None, item_json
    manager = user.get("manager")
    return (seq, uid, False, user.get("userPrincipalName"), user.get("displayName"), user.get("mail"),
            manager["id"] if manager else None, to_json(user), item_json)


class StagedGroups(Staged):
    """A full round of groups as it streams: the groups' properties in ``items``, every
    ``members@delta`` link in ``links`` (in order), then ``finish`` and ``apply_staged_groups``."""

    def __init__(self, stage: str) -> None:
        super().__init__("group", stage, {"items": _GROUP_COLUMNS, "links": _LINK_COLUMNS})
        self._links = 0

    def _stage(self, page: list[dict]) -> None:
        """One delta page (GraphError for a member without a Graph type)."""
        for item in self._check.page(page):
            self.items += 1
            gid = item["id"]
            if delta.REMOVED in item:
                self._append("items", _group_row(self.items, gid, None))
                continue
            self._append("items", _group_row(self.items, gid, delta.properties(item)))
            for link in item.get(delta.MEMBERS_DELTA) or ():
                self._links += 1
                self._append("links", (self.items, self._links, gid, link["id"],
                                       None if delta.REMOVED in link else member_type(link)))

    def finish(self) -> None:
        """The round is whole: one row per group in ``groups``, its direct members in ``members``."""
        con = self._con
        repeated = self._repeated()
        # Before repeated groups become one row: where the round removed a group, for its links.
        con.execute("CREATE TEMP TABLE cuts AS SELECT id, max(seq) AS seq FROM items WHERE removed GROUP BY id")
        if repeated:
            groups: dict[str, dict | None] = {}
            for gid, removed, data in con.execute("SELECT id, removed, data FROM items WHERE id IN "
                                                  "(SELECT id FROM repeated) ORDER BY seq").fetchall():
                groups[gid] = None if removed else {**(groups.get(gid) or {}), **from_json(data)}
            con.execute("DELETE FROM items WHERE id IN (SELECT id FROM repeated)")
            for gid, group in groups.items():
                self._append("items", _group_row(0, gid, group))
            self._flush("items")
        con.execute("CREATE TABLE groups AS SELECT id, display_name, mail, kind, mail_enabled, security_enabled, "
                    "group_types, data FROM items WHERE NOT removed")
        # A group removed in the round loses the members it had before; the last mention of a member wins.
        con.execute("""
            CREATE TABLE members AS
            WITH latest AS (SELECT l.group_id, l.member_id, l.member_type,
                                   row_number() OVER (PARTITION BY l.group_id, l.member_id ORDER BY l.link DESC) AS n
                            FROM links l LEFT JOIN cuts c ON c.id = l.group_id
                            WHERE c.seq IS NULL OR l.seq > c.seq)
            SELECT group_id, member_id, member_type FROM latest
            WHERE n = 1 AND member_type IS NOT NULL AND group_id IN (SELECT id FROM groups)""")
        con.execute("DROP TABLE items")
        con.execute("DROP TABLE links")
        con.close()


def _group_row(seq: int, gid: str, group: dict | None) -> tuple:
    if group is None:
        return seq, gid, True, None, None, None, None, None, None, None
    return (seq, gid, False, group.get("displayName"), group.get("mail"), lists.group_kind(group),
            group.get("mailEnabled"), group.get("securityEnabled"), list(group.get("groupTypes") or []),
            to_json(group))


def attached(con, staged: Staged | None) -> AbstractContextManager:
    """A staged round attached read-only to the warehouse connection (what apply_staged_* read);
    with None (a round of changes, in memory) nothing."""
    return nullcontext() if staged is None else connection.attached(con, staged.path, staged.alias)


def apply_staged_users(con, integration: str, run_id: str, staged: StagedUsers) -> RawChange:
    """Replace an integration's raw users with a staged full round (see ``attached``)."""
    return replace_compared(con, s.RAW_GRAPH_USERS, integration, run_id, f"{staged.alias}.users",
                    ["id", "user_principal_name", "display_name", "mail", "data"])


def apply_staged_groups(con, integration: str, run_id: str, staged: StagedGroups) -> RawChange:
    """Replace an integration's raw groups and direct memberships with a staged full round (see
    ``attached``); the memberships it added and removed are counted too."""
    change = replace_compared(con, s.RAW_GRAPH_GROUPS, integration, run_id, f"{staged.alias}.groups",
                      ["id", "display_name", "mail", "kind", "mail_enabled", "security_enabled", "group_types", "data"])
    edges, source = f'"{s.RAW_GRAPH_GROUP_MEMBERS}"', f"{staged.alias}.members"
    change.memberships_added, change.memberships_removed = con.execute(f"""
        SELECT (SELECT count(*) FROM {source} n WHERE NOT EXISTS (SELECT 1 FROM {edges} e WHERE e.integration = ?
                AND e.group_id = n.group_id AND e.member_id = n.member_id)),
               (SELECT count(*) FROM {edges} e WHERE e.integration = ? AND NOT EXISTS (SELECT 1 FROM {source} n
                WHERE n.group_id = e.group_id AND n.member_id = e.member_id))""", [integration, integration]).fetchone()
    con.execute(f"DELETE FROM {edges} WHERE integration = ?", [integration])
    con.execute(f"INSERT INTO {edges} (integration, group_id, member_id, member_type, run_id, synced_at) "
                f"SELECT ?, group_id, member_id, member_type, ?, ? FROM {source}", [integration, run_id, utc_now()])
    return change
