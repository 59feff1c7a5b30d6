"""A whole generated tenant: :func:`generate_directory` draws people (``people``) and groups
of every kind from one seed, so the same seed always gives the same directory; see the
emulator README for its shape."""

from __future__ import annotations

import gc
import random

from .directory import Directory
from .model import CONTACT_TYPE, DEVICE_TYPE, GROUP_TYPE, SERVICE_PRINCIPAL_TYPE, TENANT_DOMAIN, USER_TYPE
from .names import APPS, CODENAMES, COUNTRIES, DEPARTMENTS, ROLES, ascii_fold, random_guid, random_timestamp
from .people import add_typed_attributes, assign_managers, generate_other_objects, generate_users, side_rng


#: The fewest groups that can hold all special groups plus one ordinary group of each kind.
MIN_GROUPS = 18

_KINDS = ("m365", "mail_security", "distribution", "security")
_KIND_SHARE = {"m365": 0.30, "mail_security": 0.20, "distribution": 0.20, "security": 0.30}


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
            "id": random_guid(rng),
            "displayName": name,
            "description": description,
            "mail": f"{nickname}@{TENANT_DOMAIN}" if mail_enabled else None,
            "mailNickname": nickname,
            "mailEnabled": mail_enabled,
            "securityEnabled": security_enabled,
            "groupTypes": group_types,
            "createdDateTime": random_timestamp(rng, 2015, 2024),
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


def generate_directory(users: int = 2000, groups: int = 150, seed: int = 7) -> Directory:
    """Build a deterministic demo tenant; see the emulator README for its shape."""
    # Generation creates millions of dicts and lists and frees almost none of them: every
    # collection the allocations trigger walks all of them again for nothing (a million users:
    # 69 s with the collector, 40 s without). Paused here only, and as it was afterwards.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _generate_directory(users, groups, seed)
    finally:
        if enabled:
            gc.enable()


def _generate_directory(users: int, groups: int, seed: int) -> Directory:
    if users < 20:
        raise ValueError("users must be at least 20")
    if groups < MIN_GROUPS:
        raise ValueError(f"groups must be at least {MIN_GROUPS} (room for the special groups)")
    rng = random.Random(seed)
    extension_app_id = "%032x" % rng.getrandbits(128)
    ext_prop = f"extension_{extension_app_id}_costCenter"

    user_list, pools = generate_users(rng, users, ext_prop)
    others = generate_other_objects(rng, users)
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
    countries = tuple(COUNTRIES)

    def regular_name(kind: str) -> str:
        dept = rng.choice(DEPARTMENTS)
        country = rng.choice(countries)
        city = rng.choice(COUNTRIES[country][1])
        if kind == "m365":
            name = rng.choice((f"{dept} Team {city}", f"Project {rng.choice(CODENAMES)}", f"{city} Office",
                               f"{dept} – {country}"))
        elif kind == "distribution":
            name = rng.choice((f"DL {dept} {country}", f"{city} Announcements", f"{dept} Newsletter"))
        elif kind == "mail_security":
            name = rng.choice((f"{dept} Approvers", f"{dept} Managers {country}", f"MES {dept} {city}"))
        else:
            name = rng.choice((f"SG-{ascii_fold(dept).replace(' ', '')}-{rng.choice(ROLES)}",
                               f"SG {rng.choice(APPS)} Users", f"SG {city} Badge Access"))
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
    add_typed_attributes(side_rng(seed, "typed-attributes"), user_list, member_indices)
    manager_of = assign_managers(side_rng(seed, "managers"), user_list, member_indices, pools["guests"],
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
