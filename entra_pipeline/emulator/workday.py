"""Workday Report-as-a-Service (RaaS) for the demo tenant: the tenant, its report and its workers.

:class:`WorkdayTenant` describes one Workday tenant with one web-service-enabled
custom report; :class:`~.server.Emulator` serves it (``Emulator(...,
workday=WorkdayTenant(...))``, endpoints in the server's module docstring).
Nothing here does HTTP; the server streams :func:`report_chunks`.

Report entries (``WorkdayTenant.entries``)
    A list of dicts (tests change it between requests) or a :class:`WorkerReport`,
    which computes the entries on demand and holds nothing per worker, so a
    100k-worker report costs no more memory than a small one. Entries are
    keyed by the report's column aliases, in :data:`REPORT_COLUMNS` order; a
    missing value is *omitted*, never ``null`` (Workday does that). Every value
    is a string, numbers included (RaaS JSON quotes them too), so a Number
    column still has to be parsed.

    Dates (``Hire_Date``, ``Termination_Date``) carry a time-zone suffix:
    75 % the tenant's Pacific offset (``2024-03-01-08:00``, ``-07:00`` in
    summer), 15 % ``Z`` (``2024-03-01Z``), 10 % Central European
    (``2024-03-01+01:00`` / ``+02:00``).

Who is in the report (:func:`generate_workers`, ``WorkerReport(directory)``)
    Every decision is a pure function of (seed, user id), so the same
    directory and seed give the same report in any process, eagerly or lazily.

    * Shared people: every member (``userType`` Member) of the directory with a
      ``mail`` has a worker, except about 5 % (``ENTRA_ONLY_SHARE``; the
      Entra-only people). ``Email_Address`` is Entra's ``mail`` in lower case:
      byte-identical for ~90 %, different in case for the ~10 % whose Entra
      address is MixedCase (compare ignoring case). ``Employee_ID`` is Entra's
      ``employeeId``; the ~1 % of members without one get a Workday-only id
      ``E`` + 9 digits, so they match by email only.
    * Members without ``mail`` that have an ``employeeId``: about half have a
      worker without ``Email_Address`` (they match by employee ID only); the
      rest, and all guests, have none.
    * Workday-only workers: ``max(2, round(3 %))`` of the directory's users,
      spread evenly through the report. 80 % contractors (``Worker_Type``
      "Contingent Worker", ``Employee_ID`` ``C`` + 6 digits, half of them with
      an address at a staffing vendor's domain, half with no
      ``Email_Address``; 10 % of them "Terminated"), 20 % new hires not yet in
      Entra (``Employee_ID`` ``E9`` + 6 digits, ``first.last.nh{n}@contoso.com``,
      "Active", ``Hire_Date`` after :data:`REPORT_DATE`). Their ``Manager_ID``
      is some worker matched to an Entra user.
    * Values of shared people follow Entra: ``First_Name``/``Last_Name`` =
      ``givenName``/``surname``, ``Work_Phone``/``Mobile_Phone``,
      ``Job_Profile`` = ``jobTitle``, ``Company``, ``Location`` = ``city``,
      ``Country`` (a name), ``Cost_Center`` = the directory's cost-centre
      extension, ``Hire_Date`` = ``employeeHireDate``'s day (a random day when
      Entra has none), ``Supervisory_Organization`` = ``"{department} -
      {Americas|EMEA|APAC}"``. ``Business_Title`` equals ``jobTitle`` except for
      ``TITLE_CHANGE_SHARE`` (4 %) of the workers that have one, who carry
      another title. ``Manager_ID`` is the ``Employee_ID`` of the Entra manager
      when that manager is a user with a worker, else omitted.
    * ``Worker_Status``: disabled Entra accounts are "Terminated" (80 %) or
      "On Leave"; enabled ones "Active" 92 %, "On Leave" 5 %, "Terminated" 3 %.
      Only terminated workers have ``Termination_Date`` (after ``Hire_Date``).
      ``Worker_Type`` is "Contingent Worker" for Entra ``employeeType``
      "Contractor", else "Employee".
    * ``Standard_Hours`` (the Number column): "40" 80 %, "37.5" 12 %, "20" 8 %
      (``Time_Type`` "Part time" for 20, else "Full time").
    * Deliberately bad values, each on ``max(1, round(0.1 %))`` of the
      directory's users, always on workers matched to an Entra user (distinct
      workers): :data:`BAD_DATES` in ``Hire_Date``
      (``"2023-02-29-08:00"``, no such day; ``"2024-13-01Z"``, no such month)
      and :data:`BAD_NUMBERS` in ``Standard_Hours`` (``"n/a"``, ``"40,0"``).
      :meth:`WorkerReport.bad_values` says who.

    ``WorkerReport(workers=N, seed=...)`` without a directory makes exactly N
    synthetic workers (for benchmarks): ``N - max(2, round(3 %))`` people
    shaped like shared ones (all with a worker and an address
    ``first.last{i}@contoso.com``, manager ``(i - 1) // 8``) plus the
    Workday-only ones.

Prompts (``WorkdayTenant.prompts``, name -> default value, "" for none)
    Any other query parameter than ``format`` must name one of them (or
    ``Name!ID_Type`` for a reference prompt), at most once. The emulator gives
    two names a meaning: ``Include_Terminated`` ("1"/"0"/"true"/"false"; false
    leaves out "Terminated" workers) and ``Effective_as_of_Date``
    (``YYYY-MM-DD`` with an optional zone suffix; workers hired after it are
    left out, a hire date that cannot be read is kept); other declared prompts
    are accepted and only recorded.
"""

from __future__ import annotations

import hashlib
import html
import json
import random
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Iterable, Iterator

from .directory import Directory
from .names import COUNTRIES, CULTURE_PICK, DEPARTMENTS, JOB_TITLES

__all__ = [
    "BAD_DATES",
    "BAD_NUMBERS",
    "REPORT_COLUMNS",
    "WorkdayError",
    "WorkdayRequest",
    "WorkdayTenant",
    "WorkerReport",
    "generate_workers",
    "report_chunks",
]

#: The demo tenant's Workday side (fixed so configuration can name them; they guard nothing real).
DEMO_WORKDAY_TENANT = "contoso_demo"
DEMO_WORKDAY_USERNAME = "ISU_Contacts"
DEMO_WORKDAY_PASSWORD = "demo-isu-password"
DEMO_WORKDAY_CLIENT_ID = "ZGVtby13b3JrZGF5LWFwaS1jbGllbnQ"
DEMO_WORKDAY_CLIENT_SECRET = "demo-workday-client-secret"
DEMO_WORKDAY_REFRESH_TOKEN = "demo-workday-refresh-token"
DEMO_WORKDAY_OWNER = "lmcneil"
DEMO_WORKDAY_REPORT = "Contacts_Sync"
#: Environment variables the CLI reads the Workday secrets from (never the command line).
WORKDAY_PASSWORD_ENV = "ENTRA_EMULATOR_WORKDAY_PASSWORD"
WORKDAY_CLIENT_SECRET_ENV = "ENTRA_EMULATOR_WORKDAY_CLIENT_SECRET"
WORKDAY_REFRESH_TOKEN_ENV = "ENTRA_EMULATOR_WORKDAY_REFRESH_TOKEN"

DEFAULT_PROMPTS = {"Include_Terminated": "1", "Effective_as_of_Date": ""}
#: Workday's access tokens for API clients live an hour.
ACCESS_TOKEN_TTL = 3600

REPORT_COLUMNS = (
    "Employee_ID", "Worker_WID", "Worker_Type", "Worker_Status", "Time_Type", "First_Name", "Last_Name",
    "Email_Address", "Work_Phone", "Mobile_Phone", "Business_Title", "Job_Profile", "Management_Level",
    "Supervisory_Organization", "Company", "Cost_Center", "Location", "Country", "Hire_Date",
    "Termination_Date", "Manager_ID", "Standard_Hours",
)
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
_PROMPT_DATE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:Z|[+-]\d{2}:\d{2})?$")
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class WorkdayError(Exception):
    """A request the Workday endpoints refuse: HTTP ``status`` and a message for the JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class WorkdayTenant:
    """One Workday tenant with one web-service-enabled custom report (RaaS).

    ``entries`` is read at the start of each report request: a list (change it
    between requests) or a lazily computed :class:`WorkerReport`.
    """

    tenant: str = DEMO_WORKDAY_TENANT
    #: The Integration System User; ``username`` and ``username@tenant`` both sign in.
    username: str = DEMO_WORKDAY_USERNAME
    password: str = DEMO_WORKDAY_PASSWORD
    #: The API client for integrations (OAuth refresh-token grant).
    client_id: str = DEMO_WORKDAY_CLIENT_ID
    client_secret: str = DEMO_WORKDAY_CLIENT_SECRET
    refresh_token: str = DEMO_WORKDAY_REFRESH_TOKEN
    owner: str = DEMO_WORKDAY_OWNER
    report: str = DEMO_WORKDAY_REPORT
    #: Prompt name -> default value ("" for none); any other query parameter is refused.
    prompts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    access_token_ttl: int = ACCESS_TOKEN_TTL
    entries: list[dict] | WorkerReport = field(default_factory=list)
    #: Status of the HTML sign-in page that failed Basic credentials get (200 like a browser's
    #: landing page, so a client must look at Content-Type; 401 for tests of the other case).
    login_page_status: int = 200

    @property
    def report_path(self) -> str:
        return f"/ccx/service/customreport2/{self.tenant}/{self.owner}/{self.report}"

    @property
    def token_path(self) -> str:
        return f"/ccx/oauth2/{self.tenant}/token"

    def accepts_username(self, username: str) -> bool:
        wanted = self.username.lower()
        return username.lower() in (wanted, f"{wanted}@{self.tenant.lower()}")

    def parse_prompts(self, query: list[tuple[str, str]]) -> dict[str, str]:
        """The report's prompts from the query (``format`` excluded); WorkdayError 400 if refused."""
        given: dict[str, str] = {}
        for name, value in query:
            if name == "format":
                continue
            if name.partition("!")[0] not in self.prompts:
                known = ", ".join(sorted(self.prompts)) or "none"
                raise WorkdayError(400, f"Invalid request parameter '{name}': the report '{self.report}' "
                                        f"has no such prompt (prompts: {known}).")
            if name in given:
                raise WorkdayError(400, f"Prompt '{name}' given more than once (the emulator's prompts "
                                        "are single-instance).")
            given[name] = value
        include = given.get("Include_Terminated", self.prompts.get("Include_Terminated", "1")) or "1"
        if include.lower() not in ("0", "1", "true", "false"):
            raise WorkdayError(400, f"Invalid value '{include}' for prompt 'Include_Terminated': "
                                    "expected 1, 0, true or false.")
        as_of = given.get("Effective_as_of_Date", self.prompts.get("Effective_as_of_Date", ""))
        if as_of and _prompt_date(as_of) is None:
            raise WorkdayError(400, f"Invalid value '{as_of}' for prompt 'Effective_as_of_Date': "
                                    "expected a date like 2024-03-01 or 2024-03-01-08:00.")
        return given

    def select(self, prompts: dict[str, str]) -> Iterable[dict]:
        """The entries to answer with, given validated prompts (lazy; a list is copied first)."""
        entries = list(self.entries) if isinstance(self.entries, list) else self.entries
        include = (prompts.get("Include_Terminated") or self.prompts.get("Include_Terminated") or "1").lower()
        as_of_text = prompts.get("Effective_as_of_Date", self.prompts.get("Effective_as_of_Date", ""))
        as_of = _prompt_date(as_of_text) if as_of_text else None
        drop_terminated = include in ("0", "false")
        if not drop_terminated and as_of is None:
            return entries
        return (e for e in entries if _selected(e, drop_terminated, as_of))


@dataclass
class WorkdayRequest:
    """One request to the Workday endpoints (``Emulator.workday_request_log``)."""

    method: str
    path: str
    #: The report prompts sent (query parameters other than ``format``), as given.
    prompts: dict[str, str]
    #: How the request signed in: "basic", "bearer", or None (refused or not needed).
    auth: str | None
    status: int
    #: Body bytes sent and whether the body went out whole; set just before the server's last
    #: write (so a client that has read the response can rely on them), None until then.
    body_bytes: int | None = None
    complete: bool | None = None


def _prompt_date(text: str) -> date | None:
    match = _PROMPT_DATE_RE.match(text)
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def _selected(entry: dict, drop_terminated: bool, as_of: date | None) -> bool:
    if drop_terminated and entry.get("Worker_Status") == "Terminated":
        return False
    if as_of is not None:
        hired = _prompt_date(entry.get("Hire_Date", ""))
        if hired is not None and hired > as_of:
            return False
    return True


def report_chunks(entries: Iterable[dict], batch: int = 200) -> Iterator[bytes]:
    """The report body ``{"Report_Entry":[...]}`` as UTF-8 pieces of about ``batch`` entries."""
    yield b'{"Report_Entry":['
    encode = _ENCODER.encode
    pending: list[str] = []
    separator = ""
    for entry in entries:
        pending.append(encode(entry))
        if len(pending) >= batch:
            yield (separator + ",".join(pending)).encode("utf-8")
            pending.clear()
            separator = ","
    if pending:
        yield (separator + ",".join(pending)).encode("utf-8")
    yield b"]}"


def login_page(tenant: str, *, failed: bool) -> bytes:
    """Workday's sign-in page, which the front door shows instead of the report."""
    notice = ('<div class="error" role="alert">Invalid user name or password. Please try again.</div>'
              if failed else "")
    t = html.escape(tenant)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"UTF-8\"><title>Workday</title></head>\n"
        f"<body class=\"wd-SignIn\"><h1>Sign in to {t}</h1>{notice}\n"
        f"<form method=\"post\" action=\"/wday/authgwy/{t}/login-auth.xml\">"
        "<label>Username <input name=\"userName\" autocomplete=\"username\"></label>"
        "<label>Password <input name=\"password\" type=\"password\"></label>"
        "<button type=\"submit\">Sign In</button></form>\n</body></html>\n"
    ).encode("utf-8")


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
    makes exactly N synthetic workers. See the module docstring for the rules.
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
    """The demo report's entries for ``directory``, as a list (see the module docstring)."""
    return list(WorkerReport(directory, seed=seed))
