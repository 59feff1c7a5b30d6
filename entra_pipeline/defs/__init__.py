"""Dagster definitions only: assets, checks, schedules and resources. Logic lives elsewhere."""
