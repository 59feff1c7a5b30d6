"""Deterministic synthetic Entra ID directory for the demo tenant.

``generate_directory(users, groups, seed)`` builds a :class:`Directory` whose
content depends only on its arguments: one ``random.Random(seed)`` drives
users, groups, memberships and object ids; the later additions (managers,
``extensionAttribute4``-``6``, members without ``employeeId``) come from their
own streams seeded with the seed plus a constant, so adding them left every
earlier value unchanged for a given seed. The server in :mod:`.server` serves
it as Microsoft Graph; tests elsewhere may rely on the shape documented here.

Users (``Directory.users``, Graph ``microsoft.graph.user`` objects, camelCase)
    Every user dict has every key of :data:`USER_PROPERTIES` plus the
    directory extension ``Directory.extension_property``
    (``extension_<appId>_costCenter``, e.g. ``"CC-1234"`` or ``None``).
    Values may be ``None``; list properties are always lists.

    * guests: ``round(3 %)`` of users (at least 1); ``userType`` ``"Guest"``,
      UPN ``local_domain#EXT#@contoso.onmicrosoft.com``, ``mail`` the external
      address, ``employeeId``/``employeeType``/``employeeHireDate`` ``None``.
    * members without mailbox: ``round(5 %)`` of users (at least 1), all
      members; ``mail`` ``None``, ``proxyAddresses`` ``[]``.
    * disabled: ``round(5 %)`` of users (at least 1), drawn from all users, so
      they overlap guests and mailbox-less members now and then.
    * names: about a third contain non-ASCII letters (José, Zoë, Łukasz, Søren,
      Ñúñez, Müller, 山田 太郎, Ольга, ...). ``mail``/UPN local parts are the
      ASCII-folded ``given.surname`` with a numeric suffix on collision
      (``john.smith2``); mail addresses are unique ignoring case. About 10 % of
      members have a MixedCase ``mail`` (``Jose.Nunez@Contoso.com``) while their
      UPN stays lower-case.
    * ``employeeId``: unique ``"E"`` + 6 digits for members, ``None`` for guests
      and for ``round(1 %)`` of members (at least 1); the non-null ones are
      unique.
    * ``country``/``usageLocation``: ISO codes (US, DE, GB, FR, AT, JP, ES, PL, DK).
    * ``onPremisesExtensionAttributes``: all 15 keys. ``extensionAttribute1`` is
      one of ``"Active"``, ``"Inactive"``, ``"inactive"`` or ``None`` (the
      lower-case variant is deliberate: exclusions are case-sensitive while
      Graph ``$filter`` is not); ``extensionAttribute2`` a division name for
      about 70 % of members; 3 (``"Building A"``..``"F"``, ~5 %), 7
      (``"Badge-NNNNN"``, ~3 %) and 15 (``"Migrated-2019"``, ~2 %) are set
      sparsely. Typed values as text, for mapping tests (members only):

      - ``extensionAttribute4``, a number, for ~60 % of members: ``"12"``
        (55 %), ``"37.5"`` (one decimal, 20 %), ``"-3"`` (13 %) or ``" 42 "``
        padded with spaces (12 %); plus the malformed :data:`BAD_NUMBERS`
        ``"n/a"``, ``"12,5"`` and ``"1e400"`` (overflows a double), each on
        ``round(0.1 %)`` of members (at least 1).
      - ``extensionAttribute5``, a date, for ~60 % of members: ``"2021-03-15"``
        (80 %) or ``"2019-04-01T08:30:00Z"`` (20 %), real dates 2005-2024;
        plus :data:`BAD_DATES` ``"31/02/2024"``, ``"2024-02-30"`` and
        ``"soon"``, each on ``round(0.1 %)`` of members (at least 1).
      - ``extensionAttribute6``, a flag, for ~40 % of members: ``"true"``,
        ``"false"`` (45 % each) or ``"yes"`` (10 %).

      The malformed values overwrite good ones, so the shares are approximate.
      The remaining attributes are ``None``.

Managers (``Directory.manager_of``: ``user id -> manager object id``)
    Graph's ``manager`` is a navigation property (a user or an orgContact),
    never a user property; users without a manager are absent from the dict.
    :meth:`Directory.manager` resolves it.

    * members: all have a manager except the first member in ``users`` and
      ``round(1 %)`` of the others (at least 1 more). About 12 % of members
      are people managers (plus the first member); a member's user manager is
      always a people manager that comes *earlier* in ``users``, so the chain
      has no cycles and ends at a member without a manager (or at an
      orgContact). Spans and depth stay plausible (2,000 users: 7 levels,
      at most ~30 direct reports).
    * orgContact managers: ``max(2, round(0.3 %))`` of members have an
      orgContact from ``other_objects`` as manager.
    * managers without ``mail``: up to 3 mailbox-less members are people
      managers with at least one direct report, so ``mail`` can be null in an
      expanded manager.
    * guests: about 15 % have a manager (a people manager); the rest none.
      Guests never manage anyone.

Groups (``Directory.groups``)
    Keys: id, displayName, description, mail, mailNickname, mailEnabled,
    securityEnabled, groupTypes, createdDateTime, visibility. Kinds follow
    Graph's table: Microsoft 365 (``["Unified"]``, mail-enabled, some also
    security-enabled, a few ``["Unified", "DynamicMembership"]``), mail-enabled
    security (``[]``, true, true), distribution (``[]``, true, false) and
    security (``[]``, false, true, ``mail`` ``None``); roughly 30/20/20/30 %.
    At least :data:`MIN_GROUPS` groups are required for the special groups,
    which ``Directory.special`` names:

    ``all_employees``  M365 "All Employees": every enabled member user (more
                       than 999 direct members once there are ~1,100 users).
    ``cycle``          ``[a, b, c]``: a contains b, b contains c, c contains a
                       (distribution, mail-enabled security, security), each
                       with a few users of its own.
    ``nested_parent``  distribution "Global Operations" containing two security
                       groups and an M365 group (``nested_children``); the first
                       security child contains another security group
                       (``nested_grandchildren``). One user sits on every level.
    ``empty``          an M365 group with no members.
    ``mixed_types``    mail-enabled security group with users, orgContacts,
                       devices, a servicePrincipal and a nested security group.
    ``edge_users``     M365 group with guests, disabled users, users without
                       mail, and a few ordinary users.
    ``duplicate_name`` ``[m365_id, mail_security_id]``: two different groups
                       both called "Marketing Team".
    ``dynamic``        ids of all dynamic-membership groups (at least one).

    Ordinary groups draw a heavy-tailed number of users (mean ~45,
    independent of tenant size) and sometimes nest security groups, so random
    extra nesting and cycles can occur. A few distribution groups hold
    orgContacts and a few security groups hold devices and servicePrincipals.

Members (``Directory.members``)
    ``group id -> [(odata_type, object_id), ...]`` in a stable order, direct
    members only; every group has an entry. ``other_objects`` holds the
    orgContact (id, displayName, mail, companyName), device (id, displayName,
    deviceId, operatingSystem) and servicePrincipal (id, displayName, appId)
    objects that appear as members; each also carries its ``@odata.type``.

Determinism: the same arguments give the same directory in any process
(nothing depends on set or hash order; string seeds of the side streams are
hashed with SHA-512 by ``random``), so a test can regenerate exactly what
a separately started ``python -m entra_pipeline.emulator serve`` serves.

After mutating users, groups or members in place call :meth:`Directory.reindex`
(the server's ``Emulator.reindex()`` does it for you). The ``add_*``/``remove_*``/
``update_*``/``set_manager`` methods change the directory while keeping every
index consistent without a full reindex (each costs about O(1), plus the
cascades they report); they record nothing: the server's change API
(``Emulator.add_user`` ...) wraps them and keeps the delta change log.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass, field
from datetime import date, timedelta
from operator import itemgetter
from typing import Callable, Iterator

__all__ = [
    "Directory",
    "generate_directory",
    "USER_TYPE",
    "GROUP_TYPE",
    "CONTACT_TYPE",
    "DEVICE_TYPE",
    "SERVICE_PRINCIPAL_TYPE",
    "USER_PROPERTIES",
    "GROUP_PROPERTIES",
    "MIN_GROUPS",
    "TENANT_DOMAIN",
    "INITIAL_DOMAIN",
    "BAD_NUMBERS",
    "BAD_DATES",
]

USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"
CONTACT_TYPE = "#microsoft.graph.orgContact"
DEVICE_TYPE = "#microsoft.graph.device"
SERVICE_PRINCIPAL_TYPE = "#microsoft.graph.servicePrincipal"

TENANT_DOMAIN = "contoso.com"
INITIAL_DOMAIN = "contoso.onmicrosoft.com"

#: Keys present on every generated user (the directory extension comes on top).
USER_PROPERTIES = (
    "id",
    "userPrincipalName",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "otherMails",
    "proxyAddresses",
    "jobTitle",
    "department",
    "companyName",
    "officeLocation",
    "city",
    "country",
    "usageLocation",
    "mobilePhone",
    "businessPhones",
    "employeeId",
    "employeeType",
    "employeeHireDate",
    "accountEnabled",
    "userType",
    "preferredLanguage",
    "onPremisesExtensionAttributes",
)

GROUP_PROPERTIES = (
    "id",
    "displayName",
    "description",
    "mail",
    "mailNickname",
    "mailEnabled",
    "securityEnabled",
    "groupTypes",
    "createdDateTime",
    "visibility",
)

_EXTENSION_ATTRIBUTES = tuple(f"extensionAttribute{i}" for i in range(1, 16))

# ---------------------------------------------------------------------------
# Name pools. "display:ascii" gives the romanisation for non-Latin scripts;
# Latin names are folded automatically.
_CULTURES = {
    # culture: (weight, home countries, given names, surnames, family name first)
    "en": (
        34,
        ("US", "GB"),
        "James Mary John Patricia Michael Jennifer David Linda Sarah Daniel Emily "
        "Robert Karen Thomas Nancy Matthew Lisa Andrew Laura Kevin Rachel Brian "
        "Megan Zoë Renée Seán Siobhán Chloë",
        "Smith Johnson Brown Taylor Wilson Clark O'Brien Walker Hall Young Wright "
        "Green Baker Mitchell Carter Roberts Turner Phillips Campbell Parker Evans "
        "Edwards Collins Stewart Morris Murphy Cook Rogers Reed",
        False,
    ),
    "de": (
        20,
        ("DE", "AT"),
        "Jürgen Jörg Anna Lukas Lena Felix Sophie Maximilian Hannah Björn Günther "
        "Käthe Ömer Stefan Katrin Tobias Julia Matthias Sabine Jonas Miriam Uwe",
        "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schäfer "
        "Hoffmann Gößling Köhler Öztürk Richter Klein Wolf Schröder Neumann "
        "Schwarz Zimmermann Krüger Hartmann",
        False,
    ),
    "fr": (
        8,
        ("FR",),
        "François Hélène Chloé Léa Jérôme Amélie Théo Camille Noël Margaux Lucas Inès",
        "Dubois Lefèvre Moreau Laurent Girard Bérénger Roussel Faure Mercier Lambert Bonnet",
        False,
    ),
    "es": (
        8,
        ("ES",),
        "José María Ángel Inés Lucía Álvaro Nuria Jesús Pablo Carmen Sergio Marta",
        "Ñúñez García Fernández Jiménez López Martínez Sánchez Rodríguez Peña Gómez Ruiz",
        False,
    ),
    "pl": (
        7,
        ("PL",),
        "Łukasz Małgorzata Paweł Agnieszka Wojciech Zofia Michał Katarzyna Piotr Ewa",
        "Kowalski Nowak Wiśniewski Wróbel Łukasiewicz Dąbrowska Zieliński Kamiński Lewandowski",
        False,
    ),
    "nordic": (
        6,
        ("DK",),
        "Søren Björn Åsa Mette Jens Signe Øystein Freja Rasmus Ida",
        "Jensen Nielsen Hansen Søndergaard Ærøskøbing Håkansson Ström Østergaard Madsen Larsen",
        False,
    ),
    "ja": (
        5,
        ("JP",),
        "太郎:taro 花子:hanako 健太:kenta 由美:yumi 翔:sho 愛:ai 陽翔:haruto 結衣:yui",
        "山田:yamada 佐藤:sato 鈴木:suzuki 高橋:takahashi 田中:tanaka 渡辺:watanabe 伊藤:ito",
        True,
    ),
    "ja_latin": (
        3,
        ("JP",),
        "Haruto Yui Ren Aoi Sota Hina Yuto Mei",
        "Ito Nakamura Kobayashi Kato Yoshida Yamamoto Sasaki",
        False,
    ),
    "ru": (
        4,
        ("DE", "AT", "PL"),
        "Ольга:olga Дмитрий:dmitry Наталья:natalya Сергей:sergey Анна:anna Иван:ivan Елена:elena",
        "Иванова:ivanova Петров:petrov Смирнова:smirnova Кузнецов:kuznetsov Попов:popov Волкова:volkova",
        False,
    ),
}

# code: (weight, cities, company, language, phone prefix)
_COUNTRIES = {
    "US": (30, ("Seattle", "New York", "Chicago", "Austin"), "Contoso Inc.", "en-US", "+1"),
    "DE": (20, ("Berlin", "München", "Hamburg", "Köln"), "Contoso GmbH", "de-DE", "+49"),
    "GB": (12, ("London", "Manchester", "Edinburgh"), "Contoso Ltd.", "en-GB", "+44"),
    "FR": (8, ("Paris", "Lyon"), "Contoso SAS", "fr-FR", "+33"),
    "AT": (5, ("Wien", "Graz"), "Contoso Austria GmbH", "de-AT", "+43"),
    "JP": (8, ("Tokyo", "Osaka"), "Contoso K.K.", "ja-JP", "+81"),
    "ES": (6, ("Madrid", "Barcelona"), "Contoso S.L.", "es-ES", "+34"),
    "PL": (6, ("Kraków", "Warszawa", "Łódź"), "Contoso Sp. z o.o.", "pl-PL", "+48"),
    "DK": (5, ("København", "Ærøskøbing", "Aarhus"), "Contoso ApS", "da-DK", "+45"),
}

_DEPARTMENTS = (
    "Sales", "Marketing", "Finance", "Human Resources", "Engineering", "Operations",
    "Legal", "Customer Service", "Research & Development", "IT", "Procurement", "Logistics",
)
_JOB_TITLES = (
    "Account Manager", "Software Engineer", "Senior Software Engineer", "Analyst",
    "Project Manager", "Team Lead", "Director", "Consultant", "Specialist",
    "Administrator", "Coordinator", "Vice President", "Technician", "Accountant",
    "Recruiter", "Product Owner", "Designer", "Support Engineer",
)
_DIVISIONS = ("Retail", "Manufacturing", "Corporate", "Logistics", "Research")
_GUEST_DOMAINS = (
    ("fabrikam.com", "Fabrikam"),
    ("northwindtraders.com", "Northwind Traders"),
    ("adatum.com", "Adatum"),
    ("tailspintoys.com", "Tailspin Toys"),
    ("wingtiptoys.com", "Wingtip Toys"),
)
_APPS = ("Salesforce", "SAP", "Workday", "Jira", "VPN", "ServiceNow", "Tableau", "GitHub", "Zoom", "Okta")
_ROLES = ("ReadOnly", "Contributors", "Admins", "Approvers", "Users")
_CODENAMES = (
    "Aurora", "Borealis", "Cobalt", "Delta", "Ember", "Falcon", "Glacier", "Helios",
    "Ivy", "Juniper", "Kestrel", "Lumen", "Meridian", "Nova", "Orion", "Polaris",
    "Quasar", "Raven", "Sierra", "Tundra", "Umbra", "Vega", "Willow", "Zephyr",
)
_SERVICE_PRINCIPALS = (
    "Workday Connector", "Salesforce SSO", "Backup Service", "Print Management",
    "HR Data Sync", "Expense Bot", "Monitoring Agent", "Build Pipeline",
)

# Fold letters that NFKD does not decompose.
_FOLD_EXTRA = str.maketrans({
    "ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "Ae", "ß": "ss",
    "đ": "d", "Đ": "D", "œ": "oe", "Œ": "Oe", "þ": "th", "Þ": "Th", "ı": "i",
})

#: The fewest groups that can hold all special groups plus one ordinary group of each kind.
MIN_GROUPS = 18

_KINDS = ("m365", "mail_security", "distribution", "security")
_KIND_SHARE = {"m365": 0.30, "mail_security": 0.20, "distribution": 0.20, "security": 0.30}


def ascii_fold(text: str) -> str:
    """Latin text without diacritics ("Ñúñez" -> "Nunez", "Łukasz" -> "Lukasz")."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD_EXTRA))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _mail_part(name: str, ascii_name: str | None) -> str:
    folded = ascii_name if ascii_name is not None else ascii_fold(name)
    return "".join(ch for ch in folded.lower() if ch.isascii() and (ch.isalnum() or ch == "-"))


def _parse_names(spec: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in spec.split():
        display, _, ascii_name = item.partition(":")
        out.append((display, _mail_part(display, ascii_name or None)))
    return tuple(out)


_CULTURE_TABLE = tuple(
    (name, weight, homes, _parse_names(given), _parse_names(surnames), family_first)
    for name, (weight, homes, given, surnames, family_first) in _CULTURES.items()
)
_CULTURE_PICK = tuple(entry for entry in _CULTURE_TABLE for _ in range(entry[1]))
_COUNTRY_PICK = tuple(code for code, spec in _COUNTRIES.items() for _ in range(spec[0]))


def _uuid(rng: random.Random) -> str:
    """A random-looking (version 4 style) GUID string drawn from ``rng``."""
    h = "%032x" % rng.getrandbits(128)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _timestamp(rng: random.Random, first_year: int, last_year: int, *, midnight: bool = False) -> str:
    year = rng.randint(first_year, last_year)
    month = rng.randint(1, 12)
    day = rng.randint(1, 28)
    if midnight:
        return f"{year:04d}-{month:02d}-{day:02d}T00:00:00Z"
    return (
        f"{year:04d}-{month:02d}-{day:02d}T{rng.randint(6, 19):02d}:"
        f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
    )


def _phone(rng: random.Random, prefix: str) -> str:
    return f"{prefix} {rng.randint(20, 899)} {rng.randint(100000, 9999999)}"


class _Positions:
    """Where each element of a list sits, by key; cheap to keep under appends and removals.

    Exact right after :meth:`rebuild`. A removal shifts later elements one to
    the left, so a recorded position overshoots the real one by at most the
    removals since the rebuild: :meth:`remove` looks in that window only and
    rebuilds once the window outgrows ``sqrt(len)``. A list changed behind the
    index's back (other length, or the element not in its window) is rebuilt.
    """

    __slots__ = ("items", "key", "pos", "removed", "length")

    def __init__(self, items: list, key: Callable) -> None:
        self.items, self.key = items, key
        self.rebuild()

    def rebuild(self) -> None:
        key = self.key
        self.pos = {key(item): i for i, item in enumerate(self.items)}
        self.removed = 0
        self.length = len(self.items)

    def current(self, items: list | None) -> bool:
        return items is self.items and len(items) == self.length

    def __contains__(self, k) -> bool:
        return k in self.pos

    def append(self, item) -> None:
        self.pos[self.key(item)] = len(self.items)
        self.items.append(item)
        self.length += 1

    def remove(self, k):
        """Remove and return the element whose key is ``k`` (None if there is none)."""
        p = self.pos.get(k)
        if p is None:
            return None
        items, key = self.items, self.key
        for i in range(min(p, len(items) - 1), max(0, p - self.removed) - 1, -1):
            if key(items[i]) == k:
                break
        else:
            self.rebuild()
            i = self.pos.get(k)
            if i is None:
                return None
        item = items.pop(i)
        del self.pos[k]
        self.removed += 1
        self.length -= 1
        if self.removed > 32 and self.removed * self.removed > self.length:
            self.rebuild()
        return item


_id_of = itemgetter("id")
_member_id = itemgetter(1)


@dataclass
class Directory:
    """An in-memory tenant: users, groups, direct memberships and other member objects."""

    users: list[dict]
    groups: list[dict]
    members: dict[str, list[tuple[str, str]]]
    other_objects: dict[str, dict]
    extension_app_id: str
    extension_property: str
    special: dict = field(default_factory=dict)
    #: ``user id -> manager object id`` (a user or an orgContact); users without a manager are absent.
    manager_of: dict[str, str] = field(default_factory=dict)

    _users_by_id: dict = field(init=False, repr=False, compare=False, default_factory=dict)
    _users_by_upn: dict = field(init=False, repr=False, compare=False, default_factory=dict)
    _groups_by_id: dict = field(init=False, repr=False, compare=False, default_factory=dict)
    # Built on first use by the mutation methods below; reindex() drops them.
    _user_positions: _Positions | None = field(init=False, repr=False, compare=False, default=None)
    _group_positions: _Positions | None = field(init=False, repr=False, compare=False, default=None)
    _member_positions: dict = field(init=False, repr=False, compare=False, default_factory=dict)
    _groups_of: dict | None = field(init=False, repr=False, compare=False, default=None)
    _reports_of: dict | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        """Rebuild the lookup tables after users/groups were changed in place."""
        self._users_by_id = {u["id"]: u for u in self.users}
        self._users_by_upn = {
            u["userPrincipalName"].lower(): u for u in self.users if u.get("userPrincipalName")
        }
        self._groups_by_id = {g["id"]: g for g in self.groups}
        self._user_positions = self._group_positions = None
        self._member_positions = {}
        self._groups_of = self._reports_of = None

    def user_by_id(self, object_id: str) -> dict | None:
        return self._users_by_id.get(object_id)

    def user_by_upn(self, upn: str) -> dict | None:
        """Case-insensitive lookup by userPrincipalName (Graph accepts ``/users/{upn}``)."""
        return self._users_by_upn.get(upn.lower())

    def group_by_id(self, object_id: str) -> dict | None:
        return self._groups_by_id.get(object_id)

    def object_by_id(self, object_id: str) -> tuple[str, dict] | None:
        """``(odata_type, object)`` for any user, group or other directory object."""
        user = self._users_by_id.get(object_id)
        if user is not None:
            return USER_TYPE, user
        group = self._groups_by_id.get(object_id)
        if group is not None:
            return GROUP_TYPE, group
        other = self.other_objects.get(object_id)
        if other is not None:
            return other["@odata.type"], other
        return None

    def manager(self, user_id: str) -> tuple[str, dict] | None:
        """``(odata_type, object)`` of the user's manager, or None (no manager, or it was deleted)."""
        manager_id = self.manager_of.get(user_id)
        return None if manager_id is None else self.object_by_id(manager_id)

    def transitive_members(self, group_id: str) -> list[tuple[str, str]]:
        """Flattened membership as Graph's ``transitiveMembers`` lists it.

        Depth-first in direct-member order; nested groups appear themselves and
        are expanded once, so cycles terminate. Each object appears once and the
        group itself is never listed, even when a cycle leads back to it.
        Raises ``KeyError`` for an unknown group.
        """
        if group_id not in self._groups_by_id:
            raise KeyError(group_id)
        out: list[tuple[str, str]] = []
        seen = {group_id}
        expanded = {group_id}
        stack: list[Iterator[tuple[str, str]]] = [iter(self.members.get(group_id, ()))]
        while stack:
            for odata_type, object_id in stack[-1]:
                if object_id not in seen:
                    seen.add(object_id)
                    out.append((odata_type, object_id))
                if odata_type == GROUP_TYPE and object_id not in expanded:
                    expanded.add(object_id)
                    stack.append(iter(self.members.get(object_id, ())))
                    break
            else:
                stack.pop()
        return out

    # -- index-preserving mutations (no change log: see the server's change API) ----------

    def _users_index(self) -> _Positions:
        if self._user_positions is None or not self._user_positions.current(self.users):
            self._user_positions = _Positions(self.users, _id_of)
        return self._user_positions

    def _groups_index(self) -> _Positions:
        if self._group_positions is None or not self._group_positions.current(self.groups):
            self._group_positions = _Positions(self.groups, _id_of)
        return self._group_positions

    def _members_index(self, group_id: str) -> _Positions:
        members = self.members.get(group_id)
        if members is None:
            members = self.members[group_id] = []
        index = self._member_positions.get(group_id)
        if index is None or not index.current(members):
            index = self._member_positions[group_id] = _Positions(members, _member_id)
        return index

    def _membership(self) -> dict[str, dict[str, None]]:
        """``member id -> {group id: None}`` (an ordered set) over the direct members of groups."""
        if self._groups_of is None:
            groups_of: dict[str, dict[str, None]] = {}
            for group_id, members in self.members.items():
                if group_id in self._groups_by_id:
                    for _, member_id in members:
                        groups_of.setdefault(member_id, {})[group_id] = None
            self._groups_of = groups_of
        return self._groups_of

    def _reports(self) -> dict[str, dict[str, None]]:
        if self._reports_of is None:
            reports: dict[str, dict[str, None]] = {}
            for user_id, manager_id in self.manager_of.items():
                reports.setdefault(manager_id, {})[user_id] = None
            self._reports_of = reports
        return self._reports_of

    def groups_of(self, member_id: str) -> list[str]:
        """Ids of the groups ``member_id`` is a direct member of."""
        return list(self._membership().get(member_id, ()))

    def direct_reports(self, manager_id: str) -> list[str]:
        """Ids of the users whose manager is ``manager_id``."""
        return list(self._reports().get(manager_id, ()))

    def has_member(self, group_id: str, member_id: str) -> bool:
        return group_id in self._groups_by_id and member_id in self._members_index(group_id)

    def add_user(self, user: dict) -> None:
        """Append a user (the caller checked that its id and UPN are free)."""
        self._users_index().append(user)
        self._users_by_id[user["id"]] = user
        if user.get("userPrincipalName"):
            self._users_by_upn[user["userPrincipalName"].lower()] = user

    def update_user(self, user_id: str, values: dict) -> dict:
        """Set top-level properties in place; returns ``{name: old value}`` of those that changed."""
        user = self._users_by_id[user_id]
        old_upn = user.get("userPrincipalName")
        changed = _assign(user, values)
        if "userPrincipalName" in changed:
            if old_upn and self._users_by_upn.get(old_upn.lower()) is user:
                del self._users_by_upn[old_upn.lower()]
            if user.get("userPrincipalName"):
                self._users_by_upn[user["userPrincipalName"].lower()] = user
        return changed

    def remove_user(self, user_id: str) -> tuple[dict, list[str], str | None, list[str]]:
        """Remove a user and every link to it: ``(user, group ids, manager id, report ids)``.

        The user leaves every group it was a direct member of, its own manager
        link is dropped and its direct reports lose their manager.
        """
        user = self._users_by_id.pop(user_id)
        self._users_index().remove(user_id)
        upn = user.get("userPrincipalName")
        if upn and self._users_by_upn.get(upn.lower()) is user:
            del self._users_by_upn[upn.lower()]
        groups = self.groups_of(user_id)
        for group_id in groups:
            self.remove_member(group_id, user_id)
        manager = self.set_manager(user_id, None)
        reports = self.direct_reports(user_id)
        for report in reports:
            self.set_manager(report, None)
        return user, groups, manager, reports

    def set_manager(self, user_id: str, manager_id: str | None) -> str | None:
        """Set (or with None remove) a user's manager link; returns the previous manager id."""
        reports = self._reports()
        old = self.manager_of.pop(user_id, None)
        if old is not None:
            mine = reports.get(old)
            if mine is not None:
                mine.pop(user_id, None)
                if not mine:
                    del reports[old]
        if manager_id is not None:
            self.manager_of[user_id] = manager_id
            reports.setdefault(manager_id, {})[user_id] = None
        return old

    def add_group(self, group: dict) -> None:
        """Append a group with no members (the caller checked that its id is free)."""
        self._groups_index().append(group)
        self._groups_by_id[group["id"]] = group
        self.members[group["id"]] = []
        self._member_positions.pop(group["id"], None)

    def update_group(self, group_id: str, values: dict) -> dict:
        """Set top-level properties in place; returns ``{name: old value}`` of those that changed."""
        return _assign(self._groups_by_id[group_id], values)

    def remove_group(self, group_id: str) -> tuple[dict, list[tuple[str, str]], list[str]]:
        """Remove a group: ``(group, its direct members, ids of the groups it was a member of)``."""
        group = self._groups_by_id[group_id]
        parents = self.groups_of(group_id)
        for parent in parents:
            self.remove_member(parent, group_id)
        membership = self._membership()
        members = self.members.pop(group_id, [])
        self._member_positions.pop(group_id, None)
        for _, member_id in members:
            groups = membership.get(member_id)
            if groups is not None:
                groups.pop(group_id, None)
                if not groups:
                    del membership[member_id]
        del self._groups_by_id[group_id]
        self._groups_index().remove(group_id)
        return group, members, parents

    def add_member(self, group_id: str, odata_type: str, member_id: str) -> bool:
        """Add a direct member at the end of the group's list; False if it already was one."""
        index = self._members_index(group_id)
        if member_id in index:
            return False
        index.append((odata_type, member_id))
        self._membership().setdefault(member_id, {})[group_id] = None
        return True

    def remove_member(self, group_id: str, member_id: str) -> str | None:
        """Remove a direct member; its ``@odata.type``, or None if it was not a member."""
        removed = self._members_index(group_id).remove(member_id)
        if removed is None:
            return None
        membership = self._membership()
        groups = membership.get(member_id)
        if groups is not None:
            groups.pop(group_id, None)
            if not groups:
                del membership[member_id]
        return removed[0]


def _assign(obj: dict, values: dict) -> dict:
    changed = {}
    for name, value in values.items():
        old = obj.get(name)
        if name not in obj or old != value:
            changed[name] = old
        obj[name] = value
    return changed


# ---------------------------------------------------------------------------
# Generation


class _MailAllocator:
    """Hands out ``local`` parts unique per domain, ignoring case."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def allocate(self, base: str, domain: str) -> str:
        key = f"{base}@{domain}".lower()
        n = self._counts.get(key, 0) + 1
        self._counts[key] = n
        # Names carry no digits, so "john.smith2" can never collide with a base name.
        return base if n == 1 else f"{base}{n}"


def _pick_count(n: int, share: float) -> int:
    return max(1, round(n * share))


def _generate_users(rng: random.Random, n: int, ext_prop: str) -> tuple[list[dict], dict]:
    guests = set(rng.sample(range(n), _pick_count(n, 0.03)))
    members = [i for i in range(n) if i not in guests]
    no_mail = set(rng.sample(members, min(len(members), _pick_count(n, 0.05))))
    disabled = set(rng.sample(range(n), _pick_count(n, 0.05)))
    employee_numbers = rng.sample(range(1000, 1_000_000), n)
    mails = _MailAllocator()
    country_codes = tuple(_COUNTRIES)
    users: list[dict] = []

    for i in range(n):
        _, _, homes, given_pool, surname_pool, family_first = rng.choice(_CULTURE_PICK)
        given, given_ascii = rng.choice(given_pool)
        surname, surname_ascii = rng.choice(surname_pool)
        display = f"{surname} {given}" if family_first else f"{given} {surname}"
        base = f"{given_ascii}.{surname_ascii}"
        country = rng.choice(homes) if rng.random() < 0.75 else rng.choice(country_codes)
        _, cities, company, language, phone_prefix = _COUNTRIES[country]
        city = rng.choice(cities)
        ext_attrs = dict.fromkeys(_EXTENSION_ATTRIBUTES)

        if i in guests:
            domain, company_name = rng.choice(_GUEST_DOMAINS)
            local = mails.allocate(base, domain)
            mail = f"{local}@{domain}"
            user = {
                "id": _uuid(rng),
                "userPrincipalName": f"{local}_{domain}#EXT#@{INITIAL_DOMAIN}",
                "displayName": display,
                "givenName": given,
                "surname": surname,
                "mail": mail,
                "otherMails": [mail],
                "proxyAddresses": [f"SMTP:{mail}"],
                "jobTitle": rng.choice(_JOB_TITLES) if rng.random() < 0.4 else None,
                "department": None,
                "companyName": company_name,
                "officeLocation": None,
                "city": None,
                "country": None,
                "usageLocation": country if rng.random() < 0.5 else None,
                "mobilePhone": None,
                "businessPhones": [],
                "employeeId": None,
                "employeeType": None,
                "employeeHireDate": None,
                "accountEnabled": i not in disabled,
                "userType": "Guest",
                "preferredLanguage": None,
                "onPremisesExtensionAttributes": ext_attrs,
                ext_prop: None,
            }
            users.append(user)
            continue

        local = mails.allocate(base, TENANT_DOMAIN)
        upn = f"{local}@{TENANT_DOMAIN}"
        if i in no_mail:
            mail = None
            proxies: list[str] = []
        else:
            if rng.random() < 0.10:
                # MixedCase primary address: comparisons must ignore case.
                mixed = ".".join(part.capitalize() for part in local.split("."))
                mail = f"{mixed}@Contoso.com"
            else:
                mail = upn
            proxies = [f"SMTP:{mail}", f"smtp:{local}@{INITIAL_DOMAIN}"]
        other_mails = [f"{local}@example.net"] if rng.random() < 0.08 else []

        roll = rng.random()
        ext_attrs["extensionAttribute1"] = (
            "Active" if roll < 0.85 else "Inactive" if roll < 0.91 else "inactive" if roll < 0.94 else None
        )
        if rng.random() < 0.70:
            ext_attrs["extensionAttribute2"] = rng.choice(_DIVISIONS)
        if rng.random() < 0.05:
            ext_attrs["extensionAttribute3"] = f"Building {rng.choice('ABCDEF')}"
        if rng.random() < 0.03:
            ext_attrs["extensionAttribute7"] = f"Badge-{rng.randint(10000, 99999)}"
        if rng.random() < 0.02:
            ext_attrs["extensionAttribute15"] = "Migrated-2019"

        phones_roll = rng.random()
        if phones_roll < 0.80:
            phones = [_phone(rng, phone_prefix)]
        elif phones_roll < 0.85:
            phones = [_phone(rng, phone_prefix), _phone(rng, phone_prefix)]
        else:
            phones = []
        type_roll = rng.random()
        user = {
            "id": _uuid(rng),
            "userPrincipalName": upn,
            "displayName": display,
            "givenName": given,
            "surname": surname,
            "mail": mail,
            "otherMails": other_mails,
            "proxyAddresses": proxies,
            "jobTitle": rng.choice(_JOB_TITLES) if rng.random() < 0.95 else None,
            "department": rng.choice(_DEPARTMENTS) if rng.random() < 0.97 else None,
            "companyName": company if rng.random() < 0.9 else None,
            "officeLocation": f"{city} {rng.randint(1, 9)}.{rng.randint(10, 60)}",
            "city": city,
            "country": country,
            "usageLocation": country,
            "mobilePhone": _phone(rng, phone_prefix) if rng.random() < 0.6 else None,
            "businessPhones": phones,
            "employeeId": f"E{employee_numbers[i]:06d}",
            "employeeType": (
                "Employee" if type_roll < 0.80 else "Contractor" if type_roll < 0.92
                else "Intern" if type_roll < 0.95 else None
            ),
            "employeeHireDate": _timestamp(rng, 2005, 2024, midnight=True) if rng.random() < 0.97 else None,
            "accountEnabled": i not in disabled,
            "userType": "Member",
            "preferredLanguage": language if rng.random() < 0.8 else None,
            "onPremisesExtensionAttributes": ext_attrs,
            ext_prop: f"CC-{rng.randint(1000, 9999)}" if rng.random() < 0.8 else None,
        }
        users.append(user)

    pools = {
        "guests": sorted(guests),
        "no_mail": sorted(no_mail),
        "disabled": sorted(disabled),
    }
    return users, pools


def _generate_other_objects(rng: random.Random, n_users: int) -> dict[str, list[dict]]:
    contacts, devices, principals = [], [], []
    mails = _MailAllocator()
    for _ in range(max(10, n_users // 100)):
        _, _, _, given_pool, surname_pool, _ = rng.choice(_CULTURE_PICK)
        given, given_ascii = rng.choice(given_pool)
        surname, surname_ascii = rng.choice(surname_pool)
        domain, company = rng.choice(_GUEST_DOMAINS)
        local = mails.allocate(f"{given_ascii}.{surname_ascii}", domain)
        contacts.append({
            "@odata.type": CONTACT_TYPE,
            "id": _uuid(rng),
            "displayName": f"{given} {surname} ({company})",
            "mail": f"{local}@{domain}",
            "companyName": company,
        })
    for _ in range(max(10, n_users // 50)):
        kind = rng.choice(("DESKTOP", "LAPTOP", "IPHONE", "ANDROID"))
        os_name = {"DESKTOP": "Windows", "LAPTOP": "Windows", "IPHONE": "iOS", "ANDROID": "Android"}[kind]
        devices.append({
            "@odata.type": DEVICE_TYPE,
            "id": _uuid(rng),
            "displayName": f"{kind}-{rng.getrandbits(24):06X}",
            "deviceId": _uuid(rng),
            "operatingSystem": os_name,
        })
    for index in range(max(5, n_users // 500)):
        name = _SERVICE_PRINCIPALS[index % len(_SERVICE_PRINCIPALS)]
        if index >= len(_SERVICE_PRINCIPALS):
            name = f"{name} {index // len(_SERVICE_PRINCIPALS) + 1}"
        principals.append({
            "@odata.type": SERVICE_PRINCIPAL_TYPE,
            "id": _uuid(rng),
            "displayName": name,
            "appId": _uuid(rng),
        })
    return {"contacts": contacts, "devices": devices, "principals": principals}


class _GroupFactory:
    """Creates group objects with unique mail nicknames."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.groups: list[dict] = []
        self.kind_of: dict[str, str] = {}
        self._nicknames: dict[str, int] = {}

    def _nickname(self, name: str) -> str:
        slug = "".join(ch if ch.isalnum() else "-" for ch in ascii_fold(name).lower() if ch.isascii())
        slug = "-".join(part for part in slug.split("-") if part) or "group"
        n = self._nicknames.get(slug, 0) + 1
        self._nicknames[slug] = n
        return slug if n == 1 else f"{slug}-{n}"

    def make(self, kind: str, name: str, *, dynamic: bool = False, m365_security: bool = False,
             description: str | None = None) -> dict:
        rng = self.rng
        nickname = self._nickname(name)
        mail_enabled = kind != "security"
        if kind == "m365":
            group_types = ["Unified", "DynamicMembership"] if dynamic else ["Unified"]
            security_enabled = m365_security
            visibility = "Public" if rng.random() < 0.6 else "Private"
        else:
            group_types = []
            security_enabled = kind in ("security", "mail_security")
            visibility = None
        group = {
            "id": _uuid(rng),
            "displayName": name,
            "description": description,
            "mail": f"{nickname}@{TENANT_DOMAIN}" if mail_enabled else None,
            "mailNickname": nickname,
            "mailEnabled": mail_enabled,
            "securityEnabled": security_enabled,
            "groupTypes": group_types,
            "createdDateTime": _timestamp(rng, 2015, 2024),
            "visibility": visibility,
        }
        self.groups.append(group)
        self.kind_of[group["id"]] = kind
        return group


def _regular_kind_counts(n_groups: int, special_kinds: list[str]) -> dict[str, int]:
    """How many ordinary groups of each kind bring the total near the 30/20/20/30 mix."""
    available = n_groups - len(special_kinds)
    deficits = {
        kind: max(0.0, _KIND_SHARE[kind] * n_groups - special_kinds.count(kind)) for kind in _KINDS
    }
    total_deficit = sum(deficits.values()) or 1.0
    exact = {kind: available * deficits[kind] / total_deficit for kind in _KINDS}
    counts = {kind: int(exact[kind]) for kind in _KINDS}
    by_remainder = sorted(_KINDS, key=lambda k: exact[k] - counts[k], reverse=True)
    for kind in by_remainder[: available - sum(counts.values())]:
        counts[kind] += 1
    # Every kind gets at least one ordinary group so filters always have something to find.
    for kind in _KINDS:
        if counts[kind] == 0:
            donor = max(_KINDS, key=lambda k: counts[k])
            counts[donor] -= 1
            counts[kind] = 1
    return counts


# ---------------------------------------------------------------------------
# Additions drawn from their own random streams. They run after everything
# above and never touch ``rng``, so every value that existed before them stays
# byte-identical for a given seed.

#: Malformed values planted in the typed extension attributes (see the module docstring).
BAD_NUMBERS = ("n/a", "12,5", "1e400")
BAD_DATES = ("31/02/2024", "2024-02-30", "soon")


def _side_rng(seed: int, purpose: str) -> random.Random:
    """A stream independent of the main one: str seeds are hashed with SHA-512, not ``hash()``."""
    return random.Random(f"entra-emulator:{seed}:{purpose}")


def _number_text(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.55:
        return str(rng.randint(0, 500))
    if roll < 0.75:
        return f"{rng.randint(0, 4999) / 10:.1f}"
    if roll < 0.88:
        return f"-{rng.randint(1, 50)}"
    return f" {rng.randint(0, 500)} "  # padded: parsers must strip


def _date_text(rng: random.Random) -> str:
    day = date(2005, 1, 1) + timedelta(days=rng.randint(0, 7304))  # 2005-01-01 .. 2024-12-30
    if rng.random() < 0.8:
        return day.isoformat()
    return f"{day.isoformat()}T{rng.randint(6, 19):02d}:{rng.choice((0, 15, 30, 45)):02d}:00Z"


def _add_typed_attributes(rng: random.Random, users: list[dict], member_indices: list[int]) -> None:
    """extensionAttribute4/5/6 and the members without employeeId (mutates ``users``)."""
    for i in member_indices:
        attrs = users[i]["onPremisesExtensionAttributes"]
        if rng.random() < 0.60:
            attrs["extensionAttribute4"] = _number_text(rng)
        if rng.random() < 0.60:
            attrs["extensionAttribute5"] = _date_text(rng)
        if rng.random() < 0.40:
            roll = rng.random()
            attrs["extensionAttribute6"] = "true" if roll < 0.45 else "false" if roll < 0.90 else "yes"
    per_bad = _pick_count(len(member_indices), 0.001)
    for key, bad_values in (("extensionAttribute4", BAD_NUMBERS), ("extensionAttribute5", BAD_DATES)):
        for bad in bad_values:
            for i in rng.sample(member_indices, min(per_bad, len(member_indices))):
                users[i]["onPremisesExtensionAttributes"][key] = bad
    for i in rng.sample(member_indices, _pick_count(len(member_indices), 0.01)):
        users[i]["employeeId"] = None


def _assign_managers(rng: random.Random, users: list[dict], member_indices: list[int],
                     guest_indices: list[int], no_mail: list[int], contacts: list[dict]) -> dict[str, str]:
    """``user id -> manager object id``: a forest over members, no cycles (see the module docstring)."""
    first = member_indices[0]
    # Members without a manager: the first member (the top of the tree) and ~1 % others.
    no_manager = {first} | set(rng.sample(member_indices[1:], _pick_count(len(member_indices), 0.01)))
    candidates = [i for i in member_indices if i not in no_manager]
    by_contact = set(rng.sample(candidates, min(len(candidates), max(2, round(len(member_indices) * 0.003)))))
    # People managers: ~12 % of members, the first member, and a few without a mailbox.
    early_no_mail = [i for i in no_mail if i < member_indices[len(member_indices) // 2]]
    mailless_managers = rng.sample(early_no_mail, min(3, len(early_no_mail)))
    managers = {first, *mailless_managers}
    managers.update(i for i in member_indices if rng.random() < 0.12)

    manager_of: dict[str, str] = {}
    earlier_managers: list[int] = []  # people managers with a lower index: no cycles possible
    reports: dict[int, int] = {}
    level: dict[int, int] = {}  # depth below a member without a manager
    for i in member_indices:
        level[i] = 0
        if i in by_contact:
            manager_of[users[i]["id"]] = rng.choice(contacts)["id"]
        elif i not in no_manager:
            # Two random earlier managers: a manager goes under the shallower one, anybody else
            # under the one with fewer reports (keeps depth and spans plausible).
            a = earlier_managers[rng.randrange(len(earlier_managers))]
            b = earlier_managers[rng.randrange(len(earlier_managers))]
            key = (lambda m: (level[m], reports[m])) if i in managers else (lambda m: reports[m])
            boss = b if key(b) < key(a) else a
            reports[boss] += 1
            level[i] = level[boss] + 1
            manager_of[users[i]["id"]] = users[boss]["id"]
        if i in managers:
            earlier_managers.append(i)
            reports[i] = 0
    # Make sure every mailbox-less manager really manages someone later in the list.
    managed = set(manager_of.values())
    mailless_ids = {users[m]["id"] for m in mailless_managers}
    for m in sorted(mailless_managers):
        if users[m]["id"] in managed:
            continue
        for j in member_indices:
            if (j > m and j not in by_contact and users[j]["id"] in manager_of
                    and manager_of[users[j]["id"]] not in mailless_ids):
                manager_of[users[j]["id"]] = users[m]["id"]
                managed.add(users[m]["id"])
                break
    # Guests: most have no manager; ~15 % have a member (any people manager) as their sponsor.
    pool = sorted(managers)
    for i in guest_indices:
        if rng.random() < 0.15:
            manager_of[users[i]["id"]] = users[rng.choice(pool)]["id"]
    return {u["id"]: manager_of[u["id"]] for u in users if u["id"] in manager_of}


def generate_directory(users: int = 2000, groups: int = 150, seed: int = 7) -> Directory:
    """Build a deterministic demo tenant; see the module docstring for its shape."""
    if users < 20:
        raise ValueError("users must be at least 20")
    if groups < MIN_GROUPS:
        raise ValueError(f"groups must be at least {MIN_GROUPS} (room for the special groups)")
    rng = random.Random(seed)
    extension_app_id = "%032x" % rng.getrandbits(128)
    ext_prop = f"extension_{extension_app_id}_costCenter"

    user_list, pools = _generate_users(rng, users, ext_prop)
    others = _generate_other_objects(rng, users)
    user_ids = [u["id"] for u in user_list]

    factory = _GroupFactory(rng)
    members: dict[str, list[tuple[str, str]]] = {}

    def add_users(group: dict, indices) -> None:
        members[group["id"]].extend((USER_TYPE, user_ids[i]) for i in indices)

    def new(kind: str, name: str, **kwargs) -> dict:
        group = factory.make(kind, name, **kwargs)
        members[group["id"]] = []
        return group

    def sample(k: int, exclude: tuple[int, ...] = ()) -> list[int]:
        """k distinct user indices, none of them in ``exclude``."""
        picked = rng.sample(range(users), min(k + len(exclude), users))
        return [i for i in picked if i not in exclude][:k]

    # --- special groups -----------------------------------------------------
    all_employees = new("m365", "All Employees", description="Every enabled employee.")
    add_users(all_employees, (
        i for i, u in enumerate(user_list) if u["accountEnabled"] and u["userType"] == "Member"
    ))

    cycle = [
        new("distribution", "Sales Leadership", description="Nesting cycle, part 1 of 3."),
        new("mail_security", "Sales Leadership EMEA", description="Nesting cycle, part 2 of 3."),
        new("security", "Sales Leadership Approvers", description="Nesting cycle, part 3 of 3."),
    ]
    for index, group in enumerate(cycle):
        add_users(group, sample(3 + index))
        nxt = cycle[(index + 1) % 3]
        members[group["id"]].append((GROUP_TYPE, nxt["id"]))

    parent = new("distribution", "Global Operations", description="Nested distribution list.")
    children = [
        new("security", "SG Operations Germany"),
        new("security", "SG Operations United States"),
        new("m365", "Operations Leadership", m365_security=True),
    ]
    grandchild = new("security", "SG Operations Berlin")
    everywhere = sample(1)[0]  # one user on every level: transitive lists must de-duplicate
    add_users(parent, sample(4, (everywhere,)) + [everywhere])
    members[parent["id"]].extend((GROUP_TYPE, g["id"]) for g in children)
    for child in children:
        add_users(child, sample(6, (everywhere,)) + [everywhere])
    members[children[0]["id"]].append((GROUP_TYPE, grandchild["id"]))
    add_users(grandchild, sample(5, (everywhere,)) + [everywhere])

    empty = new("m365", "Project Phoenix (archived)", description="No members left.")

    mixed = new("mail_security", "Facilities & Devices", description="Users, contacts, devices and apps.")
    add_users(mixed, sample(5))
    members[mixed["id"]].extend((CONTACT_TYPE, c["id"]) for c in others["contacts"][:2])
    members[mixed["id"]].extend((DEVICE_TYPE, d["id"]) for d in others["devices"][:2])
    members[mixed["id"]].append((SERVICE_PRINCIPAL_TYPE, others["principals"][0]["id"]))
    members[mixed["id"]].append((GROUP_TYPE, grandchild["id"]))

    edge = new("m365", "External Collaboration", description="Guests, disabled and mailbox-less users.")
    edge_indices: list[int] = []
    for pool in ("guests", "disabled", "no_mail"):
        edge_indices.extend(i for i in pools[pool][:5] if i not in edge_indices)
    edge_indices.extend(i for i in sample(5) if i not in edge_indices)
    add_users(edge, edge_indices)

    duplicates = [
        new("m365", "Marketing Team", description="Marketing (Microsoft 365 group)."),
        new("mail_security", "Marketing Team", description="Marketing (mail-enabled security group)."),
    ]
    for group in duplicates:
        add_users(group, sample(8))

    special_kinds = [factory.kind_of[g["id"]] for g in factory.groups]
    reserved_names = {g["displayName"] for g in factory.groups}

    # --- ordinary groups ------------------------------------------------------
    counts = _regular_kind_counts(groups, special_kinds)
    used_names = set(reserved_names)
    countries = tuple(_COUNTRIES)

    def regular_name(kind: str) -> str:
        dept = rng.choice(_DEPARTMENTS)
        country = rng.choice(countries)
        city = rng.choice(_COUNTRIES[country][1])
        if kind == "m365":
            name = rng.choice((f"{dept} Team {city}", f"Project {rng.choice(_CODENAMES)}", f"{city} Office",
                               f"{dept} – {country}"))
        elif kind == "distribution":
            name = rng.choice((f"DL {dept} {country}", f"{city} Announcements", f"{dept} Newsletter"))
        elif kind == "mail_security":
            name = rng.choice((f"{dept} Approvers", f"{dept} Managers {country}", f"MES {dept} {city}"))
        else:
            name = rng.choice((f"SG-{ascii_fold(dept).replace(' ', '')}-{rng.choice(_ROLES)}",
                               f"SG {rng.choice(_APPS)} Users", f"SG {city} Badge Access"))
        candidate, n = name, 1
        while candidate in used_names:
            n += 1
            candidate = f"{name} {n}"
        used_names.add(candidate)
        return candidate

    regular: list[dict] = []
    first_m365 = True
    for kind in _KINDS:
        for _ in range(counts[kind]):
            dynamic = kind == "m365" and (first_m365 or rng.random() < 0.15)
            if kind == "m365":
                first_m365 = False
            group = new(
                kind,
                regular_name(kind),
                dynamic=dynamic,
                m365_security=kind == "m365" and rng.random() < 0.2,
                description=None if rng.random() < 0.3 else f"{kind.replace('_', ' ')} group",
            )
            # Heavy-tailed sizes with a mean around 45, independent of tenant size.
            size = min(int(rng.paretovariate(1.5) * 15), 1500, users)
            add_users(group, sample(size))
            regular.append(group)

    security_ids = [g["id"] for g in factory.groups if factory.kind_of[g["id"]] == "security"]
    for group in regular:
        kind = factory.kind_of[group["id"]]
        group_members = members[group["id"]]
        if kind != "security" and rng.random() < 0.15:
            for nested in rng.sample(security_ids, min(2, len(security_ids))):
                if nested != group["id"]:
                    group_members.append((GROUP_TYPE, nested))
        elif kind == "security" and rng.random() < 0.10:
            nested = rng.choice(security_ids)
            if nested != group["id"]:
                group_members.append((GROUP_TYPE, nested))
        if kind == "distribution" and rng.random() < 0.2:
            for contact in rng.sample(others["contacts"], rng.randint(1, 3)):
                group_members.append((CONTACT_TYPE, contact["id"]))
        if kind == "security" and rng.random() < 0.2:
            for device in rng.sample(others["devices"], rng.randint(1, 4)):
                group_members.append((DEVICE_TYPE, device["id"]))
            if rng.random() < 0.5:
                group_members.append((SERVICE_PRINCIPAL_TYPE, rng.choice(others["principals"])["id"]))

    group_list = factory.groups[:]
    rng.shuffle(group_list)  # special groups should not all sit on the first page
    other_objects = {
        obj["id"]: obj for kind in ("contacts", "devices", "principals") for obj in others[kind]
    }
    special = {
        "all_employees": all_employees["id"],
        "cycle": [g["id"] for g in cycle],
        "nested_parent": parent["id"],
        "nested_children": [g["id"] for g in children],
        "nested_grandchildren": [grandchild["id"]],
        "empty": empty["id"],
        "mixed_types": mixed["id"],
        "edge_users": edge["id"],
        "duplicate_name": [g["id"] for g in duplicates],
        "dynamic": [g["id"] for g in group_list if "DynamicMembership" in g["groupTypes"]],
    }
    # --- additions from separate streams (existing values stay as they were) ----
    guest_set = set(pools["guests"])
    member_indices = [i for i in range(users) if i not in guest_set]
    _add_typed_attributes(_side_rng(seed, "typed-attributes"), user_list, member_indices)
    manager_of = _assign_managers(_side_rng(seed, "managers"), user_list, member_indices, pools["guests"],
                                  pools["no_mail"], others["contacts"])
    return Directory(
        users=user_list,
        groups=group_list,
        members={g["id"]: members[g["id"]] for g in group_list},
        other_objects=other_objects,
        extension_app_id=extension_app_id,
        extension_property=ext_prop,
        special=special,
        manager_of=manager_of,
    )
