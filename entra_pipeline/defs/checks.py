"""Asset checks: import errors made visible, and the guards that stop a bad sync.

All checks are evaluated inside their asset, on the data it is about to write. Severity is
chosen per check:
- ERROR and blocking where continuing would damage the synced contacts: a directory read that lost
  pages (nothing is written) and a mapping that turns a non-empty directory into zero contacts
  (the contacts table is left as it was, because filtered_contacts does not run).
- WARN where the sync is still right for everyone else and an administrator has something to fix
  in the directory or the configuration: users without a usable Unique Contact ID, duplicate IDs,
  selected lists that do not exist or are ambiguous.
"""


import dagster as dg

from entra_pipeline.graph.client import Collection
from entra_pipeline.transform import lists, mapping
from entra_pipeline.transform.errors import ImportIssue
from entra_pipeline.warehouse import schema as s

RAW_USERS_COMPLETE = "all_directory_users_read"
RAW_GROUPS_COMPLETE = "all_directory_groups_read"
DIRECTORY_USERS_MAPPED = "directory_users_mapped"
CONTACTS_HAVE_UNIQUE_ID = "contacts_have_unique_id"
UNIQUE_CONTACT_IDS_DISTINCT = "unique_contact_ids_distinct"
SELECTED_LISTS_RESOLVED = "selected_lists_resolved"

SAMPLE = 20  # error rows shown in a check's metadata; the import_errors table has all of them

_COMPLETE = ("Paging reached every object Graph counted ($count). A read that stopped early writes "
             "nothing and blocks the rest of the sync.")

# check name -> (asset, blocking, description)
CHECKS: dict[str, tuple[str, bool, str]] = {
    RAW_USERS_COMPLETE: (s.RAW_GRAPH_USERS, True, _COMPLETE),
    RAW_GROUPS_COMPLETE: (s.RAW_GRAPH_GROUPS, True, _COMPLETE),
    DIRECTORY_USERS_MAPPED: (s.MAPPED_CONTACTS, True,
        "A directory with users produced at least one contact. Zero means the Unique Contact ID is "
        "mapped to a field nobody has; nothing is written and the synced contacts stay as they were."),
    CONTACTS_HAVE_UNIQUE_ID: (s.MAPPED_CONTACTS, False,
        "Directory users without a usable Unique Contact ID (empty, or not an email address when the ID "
        "is the email). They are not imported; fix them in the directory."),
    UNIQUE_CONTACT_IDS_DISTINCT: (s.MAPPED_CONTACTS, False,
        "Users sharing one Unique Contact ID. The user with the smallest object id is kept; every user "
        "involved is listed in import_errors."),
    SELECTED_LISTS_RESOLVED: (s.DISTRIBUTION_LISTS, False,
        "Every configured list (by id or display name) matched exactly one mail-enabled group."),
}

# WARN checks over import errors: check name -> (asset, error codes, what the errors are)
ISSUE_CHECKS: dict[str, tuple[str, tuple[str, ...], str]] = {
    CONTACTS_HAVE_UNIQUE_ID: (s.MAPPED_CONTACTS, (mapping.MISSING_UNIQUE_ID, mapping.INVALID_UNIQUE_ID),
                              "users without a usable Unique Contact ID"),
    UNIQUE_CONTACT_IDS_DISTINCT: (s.MAPPED_CONTACTS, (mapping.DUPLICATE_UNIQUE_ID,),
                                  "users sharing a Unique Contact ID"),
    SELECTED_LISTS_RESOLVED: (s.DISTRIBUTION_LISTS,
                              (lists.LIST_NOT_FOUND, lists.LIST_NAME_AMBIGUOUS, lists.LIST_NOT_MAIL_ENABLED),
                              "selected lists not resolved"),
}


def specs(*names: str) -> list[dg.AssetCheckSpec]:
    """Check specs for an asset. Checks run inside the asset, before it writes: a failing blocking
    check means the asset wrote nothing and downstream assets do not run."""
    return [dg.AssetCheckSpec(name, asset=CHECKS[name][0], blocking=CHECKS[name][1],
                              description=CHECKS[name][2]) for name in names]


def failed_blocking(results: list[dg.AssetCheckResult]) -> list[dg.AssetCheckResult]:
    return [r for r in results if not r.passed and CHECKS[r.check_name][1]]


def shortfall_allowed(reported: int) -> int:
    # $count is eventually consistent: on a large tenant a few objects deleted during a long read
    # are normal churn (0.1 %); a lost page is far more than that.
    return reported // 1000


def completeness_result(name: str, what: str, collection: Collection) -> dg.AssetCheckResult:
    fetched, reported = len(collection.items), collection.reported_count
    meta = {"fetched": fetched, "graph_reported_count": reported, "pages": collection.pages}
    if reported is None:
        return dg.AssetCheckResult(asset_key=CHECKS[name][0], check_name=name, passed=True,
                                   severity=dg.AssetCheckSeverity.ERROR,
                                   description=f"Graph reported no count for {what}", metadata=meta)
    missing = reported - fetched
    passed = missing <= shortfall_allowed(reported)
    description = (f"read {fetched:,} of {reported:,} {what} Graph counted" if passed else
                   f"paging stopped early: read {fetched:,} {what} but Graph counted {reported:,}")
    return dg.AssetCheckResult(asset_key=CHECKS[name][0], check_name=name, passed=passed,
                               severity=dg.AssetCheckSeverity.ERROR, description=description, metadata=meta)


def users_mapped_result(directory_users: int, contacts: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=s.MAPPED_CONTACTS, check_name=DIRECTORY_USERS_MAPPED,
        passed=not (directory_users > 0 and contacts == 0), severity=dg.AssetCheckSeverity.ERROR,
        description=f"{contacts:,} contacts from {directory_users:,} directory users",
        metadata={"directory_users": directory_users, "mapped_contacts": contacts},
    )


def issues_result(name: str, issues: list[ImportIssue]) -> dg.AssetCheckResult:
    """A WARN check over one class of import errors, with counts and a sample."""
    asset, codes, what = ISSUE_CHECKS[name]
    rows = [i for i in issues if i.code in codes]
    by_code: dict[str, int] = {}
    for issue in rows:
        by_code[issue.code] = by_code.get(issue.code, 0) + 1
    sample = "\n".join(f"- `{i.code}` {i.record}: {i.message}" for i in rows[:SAMPLE])
    return dg.AssetCheckResult(
        asset_key=asset, check_name=name, passed=not rows, severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(rows):,} {what}" if rows else f"no {what}",
        metadata={"count": len(rows), "by_code": dg.MetadataValue.json(by_code),
                  "sample": dg.MetadataValue.md(sample or "_none_")},
    )
