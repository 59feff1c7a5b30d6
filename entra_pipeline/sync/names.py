"""The one set of names for the sync's stages. A stage is a Dagster asset of the same name and
writes the warehouse table of that name (``filtered_contacts`` alone writes ``contacts``, the
synced contacts)."""

from entra_pipeline.warehouse import schema as s

RAW_GRAPH_USERS = s.RAW_GRAPH_USERS
RAW_GRAPH_GROUPS = s.RAW_GRAPH_GROUPS
RAW_WORKDAY_WORKERS = s.RAW_WORKDAY_WORKERS
MAPPED_CONTACTS = s.MAPPED_CONTACTS
FILTERED_CONTACTS = "filtered_contacts"
DISTRIBUTION_LISTS = s.DISTRIBUTION_LISTS
ALL_CONTACTS = s.ALL_CONTACTS
SYNC_PREVIEW = s.SYNC_PREVIEW

#: The table a stage's rows live in.
TABLES = {RAW_GRAPH_USERS: s.RAW_GRAPH_USERS, RAW_GRAPH_GROUPS: s.RAW_GRAPH_GROUPS,
          RAW_WORKDAY_WORKERS: s.RAW_WORKDAY_WORKERS, MAPPED_CONTACTS: s.MAPPED_CONTACTS,
          FILTERED_CONTACTS: s.CONTACTS, DISTRIBUTION_LISTS: s.DISTRIBUTION_LISTS, SYNC_PREVIEW: s.SYNC_PREVIEW,
          ALL_CONTACTS: s.ALL_CONTACTS}

#: Source stages per source type, and the stages every integration runs after them.
GRAPH_STAGES = (RAW_GRAPH_USERS, RAW_GRAPH_GROUPS)
WORKDAY_STAGES = (RAW_WORKDAY_WORKERS,)
CONTACT_STAGES = (MAPPED_CONTACTS, FILTERED_CONTACTS, DISTRIBUTION_LISTS, ALL_CONTACTS)
#: The stages the deletion guard stops, and whose run config approves removals (allow_removals).
GUARDED_STAGES = (FILTERED_CONTACTS, DISTRIBUTION_LISTS, ALL_CONTACTS)

# Bookkeeping names that are not stages: distribution_lists consumes two change logs (the raw
# groups' and the contacts'), and directory_fields_read also records the contact fields a mapping filled.
LISTS_FROM_GROUPS = "distribution_lists:groups"
LISTS_FROM_CONTACTS = "distribution_lists:contacts"
MAPPED_CONTACT_FIELDS = "mapped_contacts.contact_fields"
# filtered_contacts' second change log, of the people (contact ids) whose contact or exclusion
# changed: all_contacts consumes it (a log has one consumer; distribution_lists has the first).
FILTERED_PEOPLE = "filtered_contacts:people"
