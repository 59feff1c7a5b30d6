"""Clients of the sources the contacts come from: Microsoft Graph (with the identity platform) and Workday.
No Dagster and no warehouse here: they read and return records."""
