"""What the tests share: the test tenant, the integrations they sync, running the real sync and reading its
results, expected outcomes computed from the directory, and certificates. Fixtures live in tests/conftest.py."""
