"""Generated people and other directory objects: users (members, guests, the disabled and the
mailless), org contacts, devices and service principals, extension attributes with planted bad
values, and managers."""

from __future__ import annotations

import random
from datetime import date, timedelta

from .model import (
    CONTACT_TYPE,
    DEVICE_TYPE,
    EXTENSION_ATTRIBUTES,
    INITIAL_DOMAIN,
    SERVICE_PRINCIPAL_TYPE,
    TENANT_DOMAIN,
)
from .names import (
    COUNTRIES,
    CULTURE_PICK,
    DEPARTMENTS,
    DIVISIONS,
    GUEST_DOMAINS,
    JOB_TITLES,
    SERVICE_PRINCIPALS,
    MailAllocator,
    random_guid,
    random_phone,
    random_timestamp,
)


def _pick_count(n: int, share: float) -> int:
    return max(1, round(n * share))


#: ``employeeId`` numbers are drawn below this. Up to 999,000 users they come from
#: ``range(1000, 1_000_000)`` exactly as they always did ("E" + 6 digits), so every directory
#: generated before keeps its values.
EMPLOYEE_NUMBERS_BELOW = 1_000_000
#: Larger directories draw from ``range(1000, 9_000_000)``: "E" + 6 or 7 digits, never a 7-digit
#: number starting with 9, which would be "E9" + 6 digits, the Workday report's ids of new hires.
LARGE_EMPLOYEE_NUMBERS_BELOW = 9_000_000


def employee_numbers(rng: random.Random, n: int) -> list[int]:
    """``n`` distinct employee numbers (one per user, members and guests alike)."""
    if n <= EMPLOYEE_NUMBERS_BELOW - 1000:
        return rng.sample(range(1000, EMPLOYEE_NUMBERS_BELOW), n)
    return rng.sample(range(1000, LARGE_EMPLOYEE_NUMBERS_BELOW), n)


def generate_users(rng: random.Random, n: int, ext_prop: str) -> tuple[list[dict], dict]:
    guests = set(rng.sample(range(n), _pick_count(n, 0.03)))
    members = [i for i in range(n) if i not in guests]
    no_mail = set(rng.sample(members, min(len(members), _pick_count(n, 0.05))))
    disabled = set(rng.sample(range(n), _pick_count(n, 0.05)))
    numbers = employee_numbers(rng, n)
    mails = MailAllocator()
    country_codes = tuple(COUNTRIES)
    users: list[dict] = []

    for i in range(n):
        _, _, homes, given_pool, surname_pool, family_first = rng.choice(CULTURE_PICK)
        given, given_ascii = rng.choice(given_pool)
        surname, surname_ascii = rng.choice(surname_pool)
        display = f"{surname} {given}" if family_first else f"{given} {surname}"
        base = f"{given_ascii}.{surname_ascii}"
        country = rng.choice(homes) if rng.random() < 0.75 else rng.choice(country_codes)
        _, cities, company, language, phone_prefix = COUNTRIES[country]
        city = rng.choice(cities)
        ext_attrs = dict.fromkeys(EXTENSION_ATTRIBUTES)

        if i in guests:
            domain, company_name = rng.choice(GUEST_DOMAINS)
            local = mails.allocate(base, domain)
            mail = f"{local}@{domain}"
            user = {
                "id": random_guid(rng),
                "userPrincipalName": f"{local}_{domain}#EXT#@{INITIAL_DOMAIN}",
                "displayName": display,
                "givenName": given,
                "surname": surname,
                "mail": mail,
                "otherMails": [mail],
                "proxyAddresses": [f"SMTP:{mail}"],
                "jobTitle": rng.choice(JOB_TITLES) if rng.random() < 0.4 else None,
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
            ext_attrs["extensionAttribute2"] = rng.choice(DIVISIONS)
        if rng.random() < 0.05:
            ext_attrs["extensionAttribute3"] = f"Building {rng.choice('ABCDEF')}"
        if rng.random() < 0.03:
            ext_attrs["extensionAttribute7"] = f"Badge-{rng.randint(10000, 99999)}"
        if rng.random() < 0.02:
            ext_attrs["extensionAttribute15"] = "Migrated-2019"

        phones_roll = rng.random()
        if phones_roll < 0.80:
            phones = [random_phone(rng, phone_prefix)]
        elif phones_roll < 0.85:
            phones = [random_phone(rng, phone_prefix), random_phone(rng, phone_prefix)]
        else:
            phones = []
        type_roll = rng.random()
        user = {
            "id": random_guid(rng),
            "userPrincipalName": upn,
            "displayName": display,
            "givenName": given,
            "surname": surname,
            "mail": mail,
            "otherMails": other_mails,
            "proxyAddresses": proxies,
            "jobTitle": rng.choice(JOB_TITLES) if rng.random() < 0.95 else None,
            "department": rng.choice(DEPARTMENTS) if rng.random() < 0.97 else None,
            "companyName": company if rng.random() < 0.9 else None,
            "officeLocation": f"{city} {rng.randint(1, 9)}.{rng.randint(10, 60)}",
            "city": city,
            "country": country,
            "usageLocation": country,
            "mobilePhone": random_phone(rng, phone_prefix) if rng.random() < 0.6 else None,
            "businessPhones": phones,
            "employeeId": f"E{numbers[i]:06d}",
            "employeeType": (
                "Employee" if type_roll < 0.80 else "Contractor" if type_roll < 0.92
                else "Intern" if type_roll < 0.95 else None
            ),
            "employeeHireDate": random_timestamp(rng, 2005, 2024, midnight=True) if rng.random() < 0.97 else None,
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


def generate_other_objects(rng: random.Random, n_users: int) -> dict[str, list[dict]]:
    contacts, devices, principals = [], [], []
    mails = MailAllocator()
    for _ in range(max(10, n_users // 100)):
        _, _, _, given_pool, surname_pool, _ = rng.choice(CULTURE_PICK)
        given, given_ascii = rng.choice(given_pool)
        surname, surname_ascii = rng.choice(surname_pool)
        domain, company = rng.choice(GUEST_DOMAINS)
        local = mails.allocate(f"{given_ascii}.{surname_ascii}", domain)
        contacts.append({
            "@odata.type": CONTACT_TYPE,
            "id": random_guid(rng),
            "displayName": f"{given} {surname} ({company})",
            "mail": f"{local}@{domain}",
            "companyName": company,
        })
    for _ in range(max(10, n_users // 50)):
        kind = rng.choice(("DESKTOP", "LAPTOP", "IPHONE", "ANDROID"))
        os_name = {"DESKTOP": "Windows", "LAPTOP": "Windows", "IPHONE": "iOS", "ANDROID": "Android"}[kind]
        devices.append({
            "@odata.type": DEVICE_TYPE,
            "id": random_guid(rng),
            "displayName": f"{kind}-{rng.getrandbits(24):06X}",
            "deviceId": random_guid(rng),
            "operatingSystem": os_name,
        })
    for index in range(max(5, n_users // 500)):
        name = SERVICE_PRINCIPALS[index % len(SERVICE_PRINCIPALS)]
        if index >= len(SERVICE_PRINCIPALS):
            name = f"{name} {index // len(SERVICE_PRINCIPALS) + 1}"
        principals.append({
            "@odata.type": SERVICE_PRINCIPAL_TYPE,
            "id": random_guid(rng),
            "displayName": name,
            "appId": random_guid(rng),
        })
    return {"contacts": contacts, "devices": devices, "principals": principals}


# ---------------------------------------------------------------------------
# Additions drawn from their own random streams. They run after everything
# above and never touch ``rng``, so every value that existed before them stays
# byte-identical for a given seed.

#: Malformed values planted in the typed extension attributes (see the emulator README).
BAD_NUMBERS = ("n/a", "12,5", "1e400")
BAD_DATES = ("31/02/2024", "2024-02-30", "soon")


def side_rng(seed: int, purpose: str) -> random.Random:
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


def add_typed_attributes(rng: random.Random, users: list[dict], member_indices: list[int]) -> None:
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


def assign_managers(rng: random.Random, users: list[dict], member_indices: list[int],
                     guest_indices: list[int], no_mail: list[int], contacts: list[dict]) -> dict[str, str]:
    """``user id -> manager object id``: a forest over members, no cycles (see the emulator README)."""
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
