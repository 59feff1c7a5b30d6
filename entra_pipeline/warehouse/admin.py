"""Looking after the warehouse as a whole: which integrations have rows in it (an integration
removed from the configuration leaves orphans), and deleting one integration's rows everywhere.
"""

from __future__ import annotations

from entra_pipeline.warehouse import schema as s


def integrations_in_warehouse(con) -> dict[str, int]:
    """Integration key -> contacts held, for every integration with any row in the warehouse."""
    s.ensure_schema(con)
    keys: set[str] = set()
    for name, _, _ in s.INTEGRATION_TABLES:
        keys |= {r[0] for r in con.execute(f'SELECT DISTINCT integration FROM "{name}"').fetchall()}
    counts = dict(con.execute(f'SELECT integration, count(*) FROM "{s.CONTACTS}" GROUP BY 1').fetchall())
    return {key: counts.get(key, 0) for key in sorted(keys)}


def delete_integration(con, integration: str) -> dict[str, int]:
    """Remove every row of one integration from every table (contacts, lists, errors, history,
    delta state, bookkeeping, run log), inside the caller's transaction; table -> rows removed."""
    return {name: con.execute(f'DELETE FROM "{name}" WHERE integration = ?', [integration]).fetchone()[0]
            for name, _, _ in s.INTEGRATION_TABLES}
