"""Pure transformation rules: directory users -> contacts -> filtered contacts -> lists.

No Dagster, no HTTP, no SQL: plain functions over dicts, unit-testable on their own.
"""
