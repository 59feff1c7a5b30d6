"""Workday as a source: the RaaS report client (no Dagster)."""
