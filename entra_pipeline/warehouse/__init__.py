"""The DuckDB contact warehouse: its tables and the SQL that reads and writes them. No Dagster here.

One module per topic; callers import the module (``from entra_pipeline.warehouse import
contact_tables``), this package re-exports nothing:

- ``connection``: opening the file (lock waits, memory bound) and ``Transaction``
- ``schema``: the tables and their columns
- ``table_rows``: replacing and reading an integration's rows in any table
- ``raw_tables`` / ``raw_workers``: the raw Graph tables and delta state / the raw Workday table
- ``contact_tables``: mapped contacts, contacts, exclusions and contact history
- ``list_tables``: distribution lists, members, non-members and available groups
- ``import_errors``: per-record problems of each stage
- ``change_log``: what each stage changed and the next one consumed (incremental stages)
- ``run_log``: one row per committed stage of every sync run
- ``preview_report``: what a sync would change
- ``admin``: integrations present in the warehouse, deleting one
"""
