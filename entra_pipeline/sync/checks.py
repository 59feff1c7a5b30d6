"""The sync's checks: import errors made visible, and the guards that stop a bad sync.

All checks are evaluated inside their stage, on the data it is about to write. Severity is
chosen per check:
- ERROR and blocking where continuing would damage the synced contacts: a directory read that lost
  pages, a mapping that turns a non-empty directory into zero contacts, exclusions that remove
  everyone. The asset then writes nothing and the assets after it do not run.
- WARN where the sync is still right for everyone else and an administrator has something to fix
  in the directory or the configuration: users without a usable Unique Contact ID, duplicate IDs,
  selected lists that do not exist or are ambiguous.
"""


from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


from entra_pipeline.sources.graph.certificates import CertificateInfo
from entra_pipeline.transform.fields import WORKDAY_ALIAS
from entra_pipeline.sources.graph.client import Collection, DeltaRound
from entra_pipeline.transform import lists, mapping, values
from entra_pipeline.transform.errors import DUPLICATE_WORKER_ID, MISSING_WORKER_ID, ImportIssue
from entra_pipeline.transform.guard import Removal
from entra_pipeline.warehouse import schema as s
from entra_pipeline.sync import names
from entra_pipeline.sync.outcome import Json, Markdown


class Severity(str, Enum):
    """ERROR on a blocking check stops its stage; WARN never does."""

    ERROR = "ERROR"
    WARN = "WARN"


@dataclass(frozen=True)
class CheckOutcome:
    """One evaluation of a check for one integration: whether it passed, how bad it is if not,
    one line for the operator, and the figures behind it."""

    check_name: str
    passed: bool
    severity: Severity
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def asset(self) -> str:
        """The stage (asset) the check belongs to."""
        return CHECKS[self.check_name][0]

    @property
    def blocks(self) -> bool:
        """A failed blocking ERROR: the stage writes nothing."""
        return not self.passed and CHECKS[self.check_name][1] and self.severity == Severity.ERROR

RAW_USERS_COMPLETE = "all_directory_users_read"
RAW_GROUPS_COMPLETE = "all_directory_groups_read"
DIRECTORY_USERS_MAPPED = "directory_users_mapped"
EXCLUSIONS_KEEP_CONTACTS = "exclusions_keep_contacts"
DIRECTORY_NOT_EMPTY = "directory_not_emptied"
CONTACT_REMOVALS_WITHIN_LIMIT = "contact_removals_within_limit"
MEMBERSHIP_REMOVALS_WITHIN_LIMIT = "membership_removals_within_limit"
LEAVERS_MEMBERSHIPS_WITHIN_LIMIT = "leavers_memberships_within_limit"
DIRECTORY_REMOVALS_WITHIN_LIMIT = "directory_removals_within_limit"
DIRECTORY_MEMBERSHIPS_WITHIN_LIMIT = "directory_memberships_within_limit"
CONTACTS_HAVE_UNIQUE_ID = "contacts_have_unique_id"
UNIQUE_CONTACT_IDS_DISTINCT = "unique_contact_ids_distinct"
CONTACT_VALUES_VALID = "contact_values_valid"
EXTENSION_ATTRIBUTES_DECIDED = "extension_attributes_decided"
SELECTED_LISTS_RESOLVED = "selected_lists_resolved"
NO_LIST_REMOVED = "no_list_removed"
NO_ORPHANED_DATA = "no_orphaned_integrations"
CERTIFICATE_NOT_EXPIRING = "certificate_not_expiring"
DIRECTORY_VALUES_FIT = "directory_values_fit"
CERTIFICATE_WARN_DAYS = 30
WORKERS_NOT_EMPTIED = "workday_report_not_emptied"
WORKERS_IDENTIFIED = "workers_identified"
REPORT_COLUMNS_DECIDED = "report_columns_decided"
RULE_COLUMNS_IN_REPORT = "rule_columns_in_report"

SAMPLE = 20  # error rows shown in a check's metadata; the import_errors table has all of them
#: How a blocked guard says to approve its removals (the command line names its flag instead).
APPROVE_HINT = "re-run with allow_removals: true to approve"
_APPROVAL = " Above it nothing is written until an operator re-runs with allow_removals: true."

_COMPLETE = ("The read of {what} is whole: a delta round reached Graph's deltaLink, a list read reached every "
             "object Graph counted ($count). A read that stopped early writes nothing and blocks the rest of "
             "the sync; a list read Graph gave no count for warns.")

# check name -> (asset, blocking, description)
CHECKS: dict[str, tuple[str, bool, str]] = {
    RAW_USERS_COMPLETE: (s.RAW_GRAPH_USERS, True, _COMPLETE.format(what="users")),
    RAW_GROUPS_COMPLETE: (s.RAW_GRAPH_GROUPS, True, _COMPLETE.format(what="groups and each group's members")),
    DIRECTORY_USERS_MAPPED: (s.MAPPED_CONTACTS, True,
        "A directory with users produced at least one contact. Zero means the Unique Contact ID is "
        "mapped to a field nobody has; nothing is written and the synced contacts stay as they were."),
    EXCLUSIONS_KEEP_CONTACTS: (names.FILTERED_CONTACTS, True,
        "The exclusion rules left at least one contact. Removing everyone means a rule is wrong; nothing is "
        "written and the synced contacts and lists stay as they were."),
    DIRECTORY_NOT_EMPTY: (s.RAW_GRAPH_USERS, True,
        "The directory did not suddenly return zero users where the last sync read some: always blocking "
        "(a permission or scope problem, never a reason to drop everyone)."),
    CONTACT_REMOVALS_WITHIN_LIMIT: (names.FILTERED_CONTACTS, True,
        "This sync removes no more contacts than the integration's deletion_guard allows." + _APPROVAL),
    MEMBERSHIP_REMOVALS_WITHIN_LIMIT: (s.DISTRIBUTION_LISTS, True,
        "This sync removes no more list memberships than the deletion_guard allows." + _APPROVAL),
    LEAVERS_MEMBERSHIPS_WITHIN_LIMIT: (names.FILTERED_CONTACTS, True,
        "The contacts this sync removes (excluded, disabled, gone from the directory) leave every list at once, "
        "in the same transaction; their list memberships count against the deletion_guard like any other "
        "membership removal." + _APPROVAL),
    DIRECTORY_REMOVALS_WITHIN_LIMIT: (names.ALL_CONTACTS, True,
        "The merge removes no more people from the merged directory (all_contacts) than the deletion_guard of "
        "the integration whose sync merges allows: a person leaves when no integration keeps them any more, or "
        "when one excludes them." + _APPROVAL),
    DIRECTORY_MEMBERSHIPS_WITHIN_LIMIT: (names.ALL_CONTACTS, True,
        "The people the merge removes from the merged directory leave every list of all_contact_list_members with "
        "them; those memberships count against the same deletion_guard." + _APPROVAL),
    CONTACTS_HAVE_UNIQUE_ID: (s.MAPPED_CONTACTS, False,
        "Directory users without a usable Unique Contact ID (empty, or not an email address when the ID "
        "is the email). They are not imported; fix them in the directory."),
    UNIQUE_CONTACT_IDS_DISTINCT: (s.MAPPED_CONTACTS, False,
        "Users sharing one Unique Contact ID. An enabled member account is kept first, then the smallest "
        "object id; every user involved is listed in import_errors."),
    CONTACT_VALUES_VALID: (s.MAPPED_CONTACTS, False,
        "Directory values that do not fit their contact field's type (for example a text attribute mapped to "
        "the true/false field account_enabled). The contact is imported with that field empty."),
    EXTENSION_ATTRIBUTES_DECIDED: (s.RAW_GRAPH_USERS, False,
        "Each of extensionAttribute1..15 is mapped to a contact field or skipped (mapping.fields). While some "
        "are undecided this warns, listing them with how many directory users carry a value in each."),
    SELECTED_LISTS_RESOLVED: (s.DISTRIBUTION_LISTS, False,
        "Every configured list (by id, display name or bulk selector file) matched exactly one mail-enabled group."),
    NO_ORPHANED_DATA: (s.MAPPED_CONTACTS, False,
        "Every integration with rows in the warehouse is in the integrations file. Removing an integration "
        "from the file does not delete its contacts: this warns until they are removed on purpose with "
        "python -m entra_pipeline delete-integration KEY --confirm KEY."),
    CERTIFICATE_NOT_EXPIRING: (s.RAW_GRAPH_USERS, False,
        f"The certificate an integration with auth: certificate signs in with is valid for more than "
        f"{CERTIFICATE_WARN_DAYS} days: upload its successor to the app registration and point "
        "source.certificate_path at it before then. Also warns when only a thumbprint is configured (expiry "
        "unknown). Integrations signing in otherwise pass."),
    DIRECTORY_VALUES_FIT: (s.RAW_GRAPH_USERS, False,
        "Every value read from the directory fits Graph's documented limits (displayName 256 characters, "
        "extension attributes 1,024, ...) and is valid text (no NUL, no lone surrogate). Others are not "
        "imported (the field is left empty, the user still syncs) and are listed in import_errors until the "
        "value is fixed in the directory."),
    WORKERS_NOT_EMPTIED: (s.RAW_WORKDAY_WORKERS, True,
        "The Workday report did not suddenly return zero workers where the last sync read some: always "
        "blocking (a changed report, prompt or permission, never a reason to drop everyone)."),
    WORKERS_IDENTIFIED: (s.RAW_WORKDAY_WORKERS, False,
        "Every report entry carries the integration's id_field (Employee_ID by default), and no two carry the "
        "same value. Others are not imported and are listed in import_errors."),
    REPORT_COLUMNS_DECIDED: (s.RAW_WORKDAY_WORKERS, False,
        "Every column of the Workday report is mapped (by default or in mapping.fields), skipped, or used by a "
        "rule, and every column the configuration names is in the report. Warns listing the others, with how "
        "many workers carry a value, like the extension attributes of Entra ID."),
    RULE_COLUMNS_IN_REPORT: (s.RAW_WORKDAY_WORKERS, True,
        "Every report column an exclusion rule or a custom or generated list tests is carried by at least one "
        "worker. A column gone from the report (an edited report, a permission the integration user lost) "
        "would make its rule match nobody, silently: nothing is written until the report has it again."),
    NO_LIST_REMOVED: (s.DISTRIBUTION_LISTS, False,
        "No list of the last sync disappeared. A list goes when its group is deleted in the directory, is no "
        "longer selected, or its custom definition is removed; each is reported so nobody misses it."),
}

# WARN checks over import errors: check name -> (asset, error codes, what the errors are)
ISSUE_CHECKS: dict[str, tuple[str, tuple[str, ...], str]] = {
    CONTACTS_HAVE_UNIQUE_ID: (s.MAPPED_CONTACTS, (mapping.MISSING_UNIQUE_ID, mapping.INVALID_UNIQUE_ID),
                              "users without a usable Unique Contact ID"),
    UNIQUE_CONTACT_IDS_DISTINCT: (s.MAPPED_CONTACTS, (mapping.DUPLICATE_UNIQUE_ID,),
                                  "users sharing a Unique Contact ID"),
    CONTACT_VALUES_VALID: (s.MAPPED_CONTACTS, (mapping.INVALID_VALUE,), "values that do not fit their field"),
    SELECTED_LISTS_RESOLVED: (s.DISTRIBUTION_LISTS,
                              (lists.LIST_NOT_FOUND, lists.LIST_NAME_AMBIGUOUS, lists.LIST_NOT_MAIL_ENABLED),
                              "selected lists not resolved"),
    NO_LIST_REMOVED: (s.DISTRIBUTION_LISTS, (lists.LIST_REMOVED,), "lists removed since the last sync"),
    DIRECTORY_VALUES_FIT: (s.RAW_GRAPH_USERS, values.CODES, "directory values beyond their limits or not valid text"),
    WORKERS_IDENTIFIED: (s.RAW_WORKDAY_WORKERS, (MISSING_WORKER_ID, DUPLICATE_WORKER_ID, values.INVALID_ID),
                         "report entries without a usable worker id"),
}


def failed_blocking(results: list[CheckOutcome]) -> list[CheckOutcome]:
    """Failed results that stop the stage: ERROR severity on a blocking check."""
    return [r for r in results if r.blocks]


def shortfall_allowed(reported: int, page_size: int) -> int:
    # $count is eventually consistent: on a large tenant a few objects deleted during a long read
    # are normal churn (0.1 %), but never as much as half a page, which is what a lost page costs.
    return min(reported // 1000, page_size // 2)


def _short(collection: Collection, page_size: int) -> int | None:
    """How many items paging missed beyond normal churn; None when Graph gave no count."""
    if collection.reported_count is None:
        return None
    missing = collection.reported_count - len(collection.items)
    return missing if missing > shortfall_allowed(collection.reported_count, page_size) else 0


def _result(name: str, passed: bool, description: str, metadata: dict,
            severity: Severity = Severity.ERROR) -> CheckOutcome:
    return CheckOutcome(check_name=name, passed=passed, severity=severity, description=description,
                        metadata=metadata)


def _no_count(name: str, what: str, metadata: dict) -> CheckOutcome:
    # Without $count nothing can be compared: say so loudly, but do not block (WARN).
    return _result(name, False, f"Graph reported no $count for {what}: completeness not verified", metadata,
                   Severity.WARN)


def users_complete_result(users: Collection, page_size: int) -> CheckOutcome:
    fetched, reported = len(users.items), users.reported_count
    meta = {"fetched": fetched, "graph_reported_count": reported, "pages": users.pages}
    short = _short(users, page_size)
    if short is None:
        return _no_count(RAW_USERS_COMPLETE, "users", meta)
    if short:
        return _result(RAW_USERS_COMPLETE, False,
                       f"paging stopped early: read {fetched:,} users but Graph counted {reported:,}", meta)
    return _result(RAW_USERS_COMPLETE, True, f"read {fetched:,} of {reported:,} users Graph counted", meta)


def groups_complete_result(groups: Collection, members: dict[str, Collection], page_size: int) -> CheckOutcome:
    """Groups and every group's member list reached what Graph counted."""
    short_lists = {gid: c for gid, c in members.items() if _short(c, page_size)}
    uncounted = [gid for gid, c in members.items() if c.reported_count is None]
    meta = {"groups_fetched": len(groups.items), "graph_reported_count": groups.reported_count,
            "member_lists_cut_short": len(short_lists), "member_lists_without_count": len(uncounted)}
    short = _short(groups, page_size)
    problems = []
    if short:
        problems.append(f"read {len(groups.items):,} groups but Graph counted {groups.reported_count:,}")
    for gid, c in sorted(short_lists.items())[:5]:
        problems.append(f"group {gid}: read {len(c.items):,} members but Graph counted {c.reported_count:,}")
    if len(short_lists) > 5:
        problems.append(f"and {len(short_lists) - 5} more member lists")
    if problems:
        return _result(RAW_GROUPS_COMPLETE, False, "paging stopped early: " + "; ".join(problems), meta)
    if short is None or uncounted:
        return _no_count(RAW_GROUPS_COMPLETE, "groups or group members", meta)
    return _result(RAW_GROUPS_COMPLETE, True,
                   f"read {len(groups.items):,} groups and {len(members):,} member lists as Graph counted", meta)


def delta_complete_result(name: str, what: str, round_: DeltaRound) -> CheckOutcome:
    """A delta round is whole only when its last page carried the deltaLink."""
    kind = "full round" if round_.full else "changes"
    meta = {"pages": round_.pages, "items": round_.count, "round": kind}
    if not round_.complete:
        return _result(name, False, f"paging stopped early: the {what} delta round ({kind}) ended on page "
                                    f"{round_.pages} without a nextLink or deltaLink", meta)
    return _result(name, True, f"{what} delta round ({kind}) complete: {round_.count:,} items on "
                               f"{round_.pages:,} pages, ending with a deltaLink", meta)


def orphans_result(orphans: dict[str, int], unreadable: int = 0) -> CheckOutcome:
    """Integrations with rows in the warehouse that the integrations file no longer has. With
    integrations in the file whose key cannot be read, nobody can tell: no deletion is suggested."""
    listing = ", ".join(f"{key!r} ({n:,} contacts)" for key, n in sorted(orphans.items()))
    if orphans and unreadable:
        return _result(NO_ORPHANED_DATA, False,
                       f"the warehouse holds integrations the file does not name: {listing}; {unreadable:,} "
                       "integrations of the file have no readable key and may be these: fix the file first",
                       {"orphaned": Json(orphans), "unreadable_keys": unreadable}, Severity.WARN)
    return _result(NO_ORPHANED_DATA, not orphans,
                   f"the warehouse holds integrations that are not configured: {listing}; delete them with "
                   "python -m entra_pipeline delete-integration KEY --confirm KEY, or configure them again"
                   if orphans else "every integration in the warehouse is configured",
                   {"orphaned": Json(orphans)}, Severity.WARN)


def certificate_result(auth: str, info: CertificateInfo | None, now: datetime) -> CheckOutcome:
    """WARN from 30 days before the sign-in certificate expires (Entra refuses it after)."""
    if auth != "certificate":
        return _result(CERTIFICATE_NOT_EXPIRING, True, f"signs in with auth: {auth}, no certificate",
                       {"auth": auth}, Severity.WARN)
    if info is None:
        return _result(CERTIFICATE_NOT_EXPIRING, False, "only certificate_thumbprint is configured, so the "
                       "certificate's expiry cannot be watched; set source.certificate_path",
                       {"auth": auth}, Severity.WARN)
    days = (info.not_after - now).total_seconds() / 86400
    metadata = {"auth": auth, "thumbprint": info.thumbprint, "subject": info.subject,
                "not_after": info.not_after.isoformat(), "days_left": round(days, 1)}
    if days >= CERTIFICATE_WARN_DAYS:
        return _result(CERTIFICATE_NOT_EXPIRING, True, f"certificate {info.thumbprint} valid until "
                       f"{info.not_after:%Y-%m-%d} ({int(days)} days)", metadata, Severity.WARN)
    when = (f"expires on {info.not_after:%Y-%m-%d %H:%M} UTC, in {int(days)} days" if days >= 0 else
            f"expired on {info.not_after:%Y-%m-%d %H:%M} UTC, {int(-days)} days ago")
    return _result(CERTIFICATE_NOT_EXPIRING, False,
                   f"certificate {info.thumbprint} {when}: add a new certificate to the app registration and set "
                   "source.certificate_path to it", metadata, Severity.WARN)


def workers_not_emptied_result(workers: int, previous: int) -> CheckOutcome:
    emptied = workers == 0 and previous > 0
    return _result(WORKERS_NOT_EMPTIED, not emptied,
                   f"the Workday report returned no workers; the last sync read {previous:,}" if emptied
                   else f"{workers:,} workers read (last sync: {previous:,})",
                   {"workers": workers, "previous": previous})


def rule_columns_result(columns: dict[str, int], tested: set[str]) -> CheckOutcome:
    missing = sorted(tested - set(columns))
    return _result(RULE_COLUMNS_IN_REPORT, not missing,
                   f"no worker in the report carries {', '.join(missing)}, which the exclusion rules or lists test; "
                   "add the column to the report (or check the integration user's permissions)" if missing
                   else f"the {len(tested)} columns the rules and lists test are in the report",
                   {"tested": ", ".join(sorted(tested)), "missing": ", ".join(missing)})


def report_columns_result(columns: dict[str, int], decided: set[str], named: set[str]) -> CheckOutcome:
    """Report columns nobody decided about, and configured columns the report does not have.
    A column name Workday would not produce (not letters, digits and _) is never used, only named."""
    odd = sorted(name for name in columns if not WORKDAY_ALIAS.fullmatch(name))
    columns = {name: n for name, n in columns.items() if name not in odd}
    undecided = {name: n for name, n in columns.items() if name not in decided}
    missing = sorted(named - set(columns))
    parts = []
    if odd:
        parts.append(f"{len(odd)} column names are not Workday aliases (letters, digits and _) and are ignored: "
                     + ", ".join(repr(name[:60]) for name in odd[:10]))
    if undecided:
        parts.append("report columns neither mapped, skipped nor used: "
                     + ", ".join(f"{name} ({n:,} workers)" for name, n in sorted(undecided.items())))
    if missing:
        parts.append("columns the configuration names that no worker in the report carries: " + ", ".join(missing))
    return _result(REPORT_COLUMNS_DECIDED, not parts, "; ".join(parts) or f"all {len(columns)} report columns are "
                   "mapped, skipped or used", {"columns": Json(columns), "undecided": len(undecided),
                                               "missing": ", ".join(missing)}, Severity.WARN)


def users_mapped_result(directory_users: int, contacts: int) -> CheckOutcome:
    return _result(DIRECTORY_USERS_MAPPED, not (directory_users > 0 and contacts == 0),
                   f"{contacts:,} contacts from {directory_users:,} directory users",
                   {"directory_users": directory_users, "mapped_contacts": contacts})


def contacts_kept_result(mapped: int, kept: int) -> CheckOutcome:
    return _result(EXCLUSIONS_KEEP_CONTACTS, not (mapped > 0 and kept == 0),
                   f"{kept:,} of {mapped:,} mapped contacts kept after exclusions",
                   {"mapped_contacts": mapped, "contacts": kept})


def extension_attributes_result(undecided: list[str], values: dict[str, int]) -> CheckOutcome:
    counts = {name: values.get(name, 0) for name in undecided}
    listing = ", ".join(f"{name} ({n:,} users with a value)" for name, n in counts.items())
    return _result(EXTENSION_ATTRIBUTES_DECIDED, not undecided,
                   f"{len(undecided)} extension attributes neither mapped nor skipped: {listing}" if undecided
                   else "all 15 extension attributes are mapped or skipped",
                   {"undecided": Json(counts)}, Severity.WARN)


def directory_not_empty_result(fetched: int, previous: int) -> CheckOutcome:
    emptied = fetched == 0 and previous > 0
    return _result(DIRECTORY_NOT_EMPTY, not emptied,
                   f"the directory returned no users; the last sync read {previous:,}" if emptied
                   else f"{fetched:,} users read (last sync: {previous:,})",
                   {"users": fetched, "previous_users": previous})


def removal_result(name: str, what: str, removal: Removal, allowed: bool) -> CheckOutcome:
    """The deletion guard's verdict: over the limit blocks unless this run was approved."""
    sample = "\n".join(f"- {item}" for item in removal.sample) or "_none_"
    metadata = {"current": removal.current, "removed": removal.removed, "approved": allowed,
                "sample": Markdown(sample)}
    if not removal.over_limit:
        return _result(name, True, f"{removal.removed:,} of {removal.current:,} {what} removed", metadata)
    if allowed:
        return _result(name, True, f"{removal.removed:,} of {removal.current:,} {what} removed "
                                   f"({removal.limit_text}), approved by allow_removals", metadata)
    return _result(name, False, f"this sync would remove {removal.removed:,} of {removal.current:,} {what} "
                                f"({removal.limit_text}); {APPROVE_HINT}", metadata)


def issues_result(name: str, issues: list[ImportIssue]) -> CheckOutcome:
    """A WARN check over one class of import errors, with counts and a sample."""
    _, codes, what = ISSUE_CHECKS[name]
    rows = [i for i in issues if i.code in codes]
    by_code: dict[str, int] = {}
    for issue in rows:
        by_code[issue.code] = by_code.get(issue.code, 0) + 1
    sample = "\n".join(f"- `{i.code}` {i.record}: {i.message}" for i in rows[:SAMPLE])
    return CheckOutcome(
        check_name=name, passed=not rows, severity=Severity.WARN,
        description=f"{len(rows):,} {what}" if rows else f"no {what}",
        metadata={"count": len(rows), "by_code": Json(by_code),
                  "sample": Markdown(sample or "_none_")},
    )
