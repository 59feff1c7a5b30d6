"""The workers of the demo Workday report, generated to overlap a generated directory: who is
in it (shared with Entra ID, only in Workday, only an id), their values (Workday's date and
number formats, a few bad values on purpose) and their managers; deterministic per seed and
computed on demand, so a 100k-worker report holds nothing per worker. See the emulator README."""

from __future__ import annotations

import hashlib
import random
from datetime import date, timedelta
from typing import Iterator

from .directory import Directory
from .names import COUNTRIES, CULTURE_PICK, DEPARTMENTS, JOB_TITLES

__all__ = ["BAD_DATES", "BAD_NUMBERS", "WorkerReport", "generate_workers"]


BAD_DATES = ("2023-02-29-08:00", "2024-13-01Z")
BAD_NUMBERS = ("n/a", "40,0")
#: "Today" for the generated report: new hires start after it, terminations happen before it.
REPORT_DATE = date(2025, 6, 30)
ENTRA_ONLY_SHARE = 0.05
ID_ONLY_SHARE = 0.5
TITLE_CHANGE_SHARE = 0.04
WORKDAY_ONLY_SHARE = 0.03
BAD_VALUE_SHARE = 0.001

_SHARED, _ID_ONLY = "shared", "id_only"
_COUNTRY_NAMES = {
    "US": "United States of America", "DE": "Germany", "GB": "United Kingdom", "FR": "France",
    "AT": "Austria", "JP": "Japan", "ES": "Spain", "PL": "Poland", "DK": "Denmark",
}
_REGIONS = {"US": "Americas", "JP": "APAC"}
_VENDOR_DOMAINS = ("litwareinc.com", "lucernepublishing.com", "proseware.com")
_BAD_KINDS = tuple(("Hire_Date", v) for v in BAD_DATES) + tuple(("Standard_Hours", v) for v in BAD_NUMBERS)


# ---------------------------------------------------------------------------
# Generation


def _digest(seed: int, key: str) -> bytes:
    return hashlib.blake2b(f"workday:{seed}:{key}".encode(), digest_size=16).digest()


def _unit(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from (seed, key): the same in every process."""
    return int.from_bytes(_digest(seed, key)[:7], "big") / float(1 << 56)


def _rng(seed: int, key: str) -> random.Random:
    return random.Random(int.from_bytes(_digest(seed, key), "big"))


def _workday_date(day: date, roll: float) -> str:
    summer = (3, 15) <= (day.month, day.day) < (11, 1)  # close enough to both DST rules
    if roll < 0.75:
        suffix = "-07:00" if summer else "-08:00"
    elif roll < 0.90:
        suffix = "Z"
    else:
        suffix = "+02:00" if summer else "+01:00"
    return day.isoformat() + suffix


def _random_day(rng: random.Random, first: date, last: date) -> date:
    return first + timedelta(days=rng.randint(0, (last - first).days))


def _management_level(title: str | None) -> str | None:
    if title is None:
        return None
    if title in ("Director", "Vice President"):
        return "Executive"
    if title in ("Team Lead", "Project Manager", "Account Manager"):
        return "Manager"
    return "Individual Contributor"


def _organization(department: str | None, country: str | None) -> str | None:
    if department is None:
        return None
    return f"{department} - {_REGIONS.get(country or '', 'EMEA')}"


def _hours(rng: random.Random) -> str:
    roll = rng.random()
    return "40" if roll < 0.80 else "37.5" if roll < 0.92 else "20"


def _put(entry: dict, name: str, value) -> None:
    if value is not None and value != "":
        entry[name] = value


class WorkerReport:
    """A report's entries computed on demand: iterable any number of times, nothing kept per worker.

    ``WorkerReport(directory, seed=7)`` overlaps ``directory`` (a snapshot of its
    user list and managers, taken now); ``WorkerReport(workers=N, seed=7)``
    makes exactly N synthetic workers. See the emulator README for the rules.
    """

    def __init__(self, directory: Directory | None = None, *, seed: int = 7, workers: int | None = None) -> None:
        if (directory is None) == (workers is None):
            raise ValueError("give a directory or a number of workers, not both")
        self.seed = seed
        if directory is not None:
            self._users: list[dict] | None = list(directory.users)
            self._by_id = {u["id"]: u for u in self._users}
            self._manager_of = dict(directory.manager_of)
            self._cost_center = directory.extension_property
            self._people = len(self._users)
            self._extras = max(2, round(self._people * WORKDAY_ONLY_SHARE))
        else:
            if workers < 20:
                raise ValueError("workers must be at least 20")
            self._users = None
            self._cost_center = "costCenter"
            self._extras = max(2, round(workers * WORKDAY_ONLY_SHARE))
            self._people = workers - self._extras
        # Workday-only worker j comes right before person index _extra_at[j].
        self._extra_at = [(j + 1) * self._people // (self._extras + 1) for j in range(self._extras)]
        self._bad = self._pick_bad_values()
        self._length: int | None = None

    # -- who is who ---------------------------------------------------------

    def _person(self, i: int) -> dict:
        return self._users[i] if self._users is not None else self._synthetic_user(i)

    def _plan(self, user: dict) -> str | None:
        if self._users is None:
            return _SHARED
        if user.get("userType") != "Member":
            return None
        if user.get("mail"):
            return None if _unit(self.seed, f"entra-only:{user['id']}") < ENTRA_ONLY_SHARE else _SHARED
        if user.get("employeeId") and _unit(self.seed, f"id-only:{user['id']}") < ID_ONLY_SHARE:
            return _ID_ONLY
        return None

    def _employee_id(self, user: dict) -> str:
        if user.get("employeeId"):
            return user["employeeId"]
        # Unknown to Entra: a 9-digit id, which cannot collide with Entra's 6-digit ones.
        return f"E{int.from_bytes(_digest(self.seed, 'id:' + user['id'])[:8], 'big') % 10**9:09d}"

    def _manager_id(self, i: int, user: dict) -> str | None:
        if self._users is None:
            return None if i == 0 else f"E{(i - 1) // 8 + 1:06d}"
        manager = self._by_id.get(self._manager_of.get(user["id"], ""))
        if manager is None or self._plan(manager) is None:
            return None  # no manager, an orgContact, or one without a worker
        return self._employee_id(manager)

    def _pick_bad_values(self) -> dict[int, tuple[str, str]]:
        per_kind = max(1, round(self._people * BAD_VALUE_SHARE))
        bad: dict[int, tuple[str, str]] = {}
        for kind, (name, value) in enumerate(_BAD_KINDS):
            for j in range(per_kind):
                start = int.from_bytes(_digest(self.seed, f"bad:{kind}:{j}")[:8], "big") % self._people
                for step in range(self._people):
                    i = (start + step) % self._people
                    if i not in bad and self._plan(self._person(i)) is not None:
                        bad[i] = (name, value)
                        break
        return bad

    def bad_values(self) -> dict[str, tuple[str, str]]:
        """``Employee_ID -> (column, bad value)`` of the workers given a deliberately bad value."""
        return {self._employee_id(self._person(i)): bad for i, bad in sorted(self._bad.items())}

    # -- entries --------------------------------------------------------------

    def __iter__(self) -> Iterator[dict]:
        j = 0
        for i in range(self._people):
            while j < self._extras and self._extra_at[j] == i:
                yield self._extra_entry(j)
                j += 1
            user = self._person(i)
            plan = self._plan(user)
            if plan is not None:
                yield self._entry(i, user, plan)
        while j < self._extras:
            yield self._extra_entry(j)
            j += 1

    def __len__(self) -> int:
        if self._length is None:
            if self._users is None:
                self._length = self._people + self._extras
            else:
                self._length = self._extras + sum(self._plan(u) is not None for u in self._users)
        return self._length

    def _entry(self, i: int, user: dict, plan: str) -> dict:
        rng = _rng(self.seed, f"worker:{user['id']}")
        entry = {"Employee_ID": self._employee_id(user), "Worker_WID": "%032x" % rng.getrandbits(128),
                 "Worker_Type": "Contingent Worker" if user.get("employeeType") == "Contractor" else "Employee"}
        roll = rng.random()
        if not user.get("accountEnabled", True):
            status = "Terminated" if roll < 0.80 else "On Leave"
        else:
            status = "Active" if roll < 0.92 else "On Leave" if roll < 0.97 else "Terminated"
        entry["Worker_Status"] = status
        hours = _hours(rng)
        entry["Time_Type"] = "Part time" if hours == "20" else "Full time"
        _put(entry, "First_Name", user.get("givenName"))
        _put(entry, "Last_Name", user.get("surname"))
        if plan == _SHARED:
            entry["Email_Address"] = user["mail"].lower()
        phones = user.get("businessPhones") or ()
        _put(entry, "Work_Phone", phones[0] if phones else None)
        _put(entry, "Mobile_Phone", user.get("mobilePhone"))
        title = user.get("jobTitle")
        business_title = title
        if title is not None and rng.random() < TITLE_CHANGE_SHARE:
            business_title = rng.choice([t for t in JOB_TITLES if t != title])
        _put(entry, "Business_Title", business_title)
        _put(entry, "Job_Profile", title)
        _put(entry, "Management_Level", _management_level(title))
        _put(entry, "Supervisory_Organization", _organization(user.get("department"), user.get("country")))
        _put(entry, "Company", user.get("companyName"))
        _put(entry, "Cost_Center", user.get(self._cost_center))
        _put(entry, "Location", user.get("city"))
        _put(entry, "Country", _COUNTRY_NAMES.get(user.get("country") or ""))
        hire_text = user.get("employeeHireDate")
        hired = date.fromisoformat(hire_text[:10]) if hire_text else _random_day(rng, date(2005, 1, 1),
                                                                                  date(2024, 12, 31))
        entry["Hire_Date"] = _workday_date(hired, rng.random())
        if status == "Terminated":
            left = _random_day(rng, max(hired + timedelta(days=30), date(2023, 1, 1)),
                               max(hired + timedelta(days=60), REPORT_DATE))
            entry["Termination_Date"] = _workday_date(left, rng.random())
        _put(entry, "Manager_ID", self._manager_id(i, user))
        entry["Standard_Hours"] = hours
        bad = self._bad.get(i)
        if bad is not None:
            entry[bad[0]] = bad[1]
        return entry

    def _synthetic_user(self, i: int) -> dict:
        rng = _rng(self.seed, f"synthetic:{i}")
        _, _, homes, given_pool, surname_pool, _ = rng.choice(CULTURE_PICK)
        given, given_ascii = rng.choice(given_pool)
        surname, surname_ascii = rng.choice(surname_pool)
        country = rng.choice(homes)
        _, cities, company, _, prefix = COUNTRIES[country]
        type_roll = rng.random()
        return {
            "id": f"synthetic-{i}",
            "givenName": given,
            "surname": surname,
            "mail": f"{given_ascii}.{surname_ascii}{i}@contoso.com",
            "businessPhones": [f"{prefix} {rng.randint(20, 899)} {rng.randint(100000, 9999999)}"],
            "mobilePhone": f"{prefix} {rng.randint(20, 899)} {rng.randint(100000, 9999999)}"
            if rng.random() < 0.6 else None,
            "jobTitle": rng.choice(JOB_TITLES) if rng.random() < 0.95 else None,
            "department": rng.choice(DEPARTMENTS) if rng.random() < 0.97 else None,
            "companyName": company,
            "city": rng.choice(cities),
            "country": country,
            "employeeId": f"E{i + 1:06d}",
            "employeeType": "Contractor" if type_roll < 0.12 else "Employee",
            "employeeHireDate": f"{_random_day(rng, date(2005, 1, 1), date(2024, 12, 31))}T00:00:00Z",
            "accountEnabled": rng.random() >= 0.03,
            "userType": "Member",
            self._cost_center: f"CC-{rng.randint(1000, 9999)}" if rng.random() < 0.8 else None,
        }

    def _extra_entry(self, j: int) -> dict:
        """Workday-only worker ``j``: a contractor (80 %) or a new hire not yet in Entra."""
        rng = _rng(self.seed, f"extra:{j}")
        contractor = rng.random() < 0.80
        _, _, homes, given_pool, surname_pool, _ = rng.choice(CULTURE_PICK)
        given, given_ascii = rng.choice(given_pool)
        surname, surname_ascii = rng.choice(surname_pool)
        country = rng.choice(homes)
        _, cities, company, _, prefix = COUNTRIES[country]
        entry = {
            "Employee_ID": f"C{100000 + j:06d}" if contractor else f"E9{j:06d}",
            "Worker_WID": "%032x" % rng.getrandbits(128),
            "Worker_Type": "Contingent Worker" if contractor else "Employee",
        }
        status = "Terminated" if contractor and rng.random() < 0.10 else "Active"
        entry["Worker_Status"] = status
        hours = _hours(rng)
        entry["Time_Type"] = "Part time" if hours == "20" else "Full time"
        entry["First_Name"], entry["Last_Name"] = given, surname
        if not contractor:
            entry["Email_Address"] = f"{given_ascii}.{surname_ascii}.nh{j}@contoso.com"
        elif rng.random() < 0.5:
            entry["Email_Address"] = f"{given_ascii}.{surname_ascii}{j}@{rng.choice(_VENDOR_DOMAINS)}"
        if rng.random() < 0.7:
            entry["Work_Phone"] = f"{prefix} {rng.randint(20, 899)} {rng.randint(100000, 9999999)}"
        title = rng.choice(JOB_TITLES)
        entry["Business_Title"] = entry["Job_Profile"] = title
        entry["Management_Level"] = _management_level(title)
        entry["Supervisory_Organization"] = _organization(rng.choice(DEPARTMENTS), country)
        entry["Company"] = company
        if not contractor or rng.random() < 0.5:
            entry["Cost_Center"] = f"CC-{rng.randint(1000, 9999)}"
        entry["Location"] = rng.choice(cities)
        entry["Country"] = _COUNTRY_NAMES[country]
        if contractor:
            hired = _random_day(rng, date(2019, 1, 1), REPORT_DATE)
        else:
            hired = REPORT_DATE + timedelta(days=rng.randint(1, 60))  # pre-hires: start after "today"
        entry["Hire_Date"] = _workday_date(hired, rng.random())
        if status == "Terminated":
            entry["Termination_Date"] = _workday_date(
                _random_day(rng, hired + timedelta(days=30), hired + timedelta(days=400)), rng.random())
        manager = self._some_manager(rng)
        _put(entry, "Manager_ID", manager)
        entry["Standard_Hours"] = hours
        return entry

    def _some_manager(self, rng: random.Random) -> str | None:
        start = rng.randrange(self._people)
        for step in range(min(self._people, 1000)):
            user = self._person((start + step) % self._people)
            if self._plan(user) is not None:
                return self._employee_id(user)
        return None


def generate_workers(directory: Directory, seed: int = 7) -> list[dict]:
    """The demo report's entries for ``directory``, as a list (see the emulator README)."""
    return list(WorkerReport(directory, seed=seed))
