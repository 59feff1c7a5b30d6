"""The Workday tenant the demo tenant serves: one tenant with one web-service-enabled custom
report (RaaS), its credentials and prompts, the record of each request, the report streamed as
JSON, and Workday's sign-in page. Nothing here does HTTP (``faces/workday.py`` does); who is in
the report is generated in :mod:`.workday_workers`. See the emulator README."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Iterable, Iterator

from .workday_workers import WorkerReport

__all__ = [
    "REPORT_COLUMNS",
    "WorkdayError",
    "WorkdayRequest",
    "WorkdayTenant",
    "report_chunks",
]


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
