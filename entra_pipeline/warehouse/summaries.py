"""Read-only summaries of one integration's rows that the stages show an operator: a table's
columns, who each exclusion rule excluded, the lists by size. No Dagster here."""

from __future__ import annotations

from entra_pipeline.warehouse import schema as s

LIST_SUMMARY_COLUMNS = ("display_name", "kind", "member_count", "users_excluded", "users_without_contact_id",
                        "nested_groups")


def table_columns(con, table: str) -> list[tuple[str, str]]:
    """(column, DuckDB type) of a warehouse table, in table order."""
    return con.execute("SELECT column_name, data_type FROM information_schema.columns "
                       "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
                       [table]).fetchall()


def excluded_by_rule(con, integration: str) -> dict[str, int]:
    """Exclusion rule -> how many of the integration's people it excludes."""
    return dict(con.execute(f'SELECT rule, count(*) FROM "{s.EXCLUDED_CONTACTS}" WHERE integration = ? '
                            "GROUP BY rule ORDER BY rule", [integration]).fetchall())


def list_summaries(con, integration: str) -> list[dict]:
    """The integration's lists, largest first, as LIST_SUMMARY_COLUMNS."""
    columns = ", ".join(LIST_SUMMARY_COLUMNS)
    return [dict(zip(LIST_SUMMARY_COLUMNS, row)) for row in con.execute(
        f'SELECT {columns} FROM "{s.DISTRIBUTION_LISTS}" WHERE integration = ? ORDER BY member_count DESC, list_id',
        [integration]).fetchall()]
