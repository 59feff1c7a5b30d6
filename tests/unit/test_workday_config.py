"""A Workday integration in the integrations file: its source, its sign-in, and a mapping,
exclusions and lists over the report's column aliases; every mistake one line naming the field."""

from __future__ import annotations

import pytest

from entra_pipeline.config import ConfigError, credentials, parse_integrations
from entra_pipeline.sources.workday.client import BasicAuth, RefreshTokenAuth

GOOD = """\
integrations:
  - key: hr
    title: Workday
    source:
      type: workday
      host: https://wd2-impl-services1.workday.com
      tenant: contoso
      report_owner: lmcneil
      report_name: Contacts_Sync
      prompts: {Include_Terminated: "0"}
      username: ISU_Contacts
      password_env: WD_PASSWORD
"""


def parse(extra: str = "", source: str = ""):
    text = GOOD + extra
    if source:
        text = text.replace("      password_env: WD_PASSWORD\n", f"      password_env: WD_PASSWORD\n{source}")
    return parse_integrations(text, "cfg.yaml")


def error_of(extra: str = "", source: str = "", text: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_integrations(text, "cfg.yaml") if text else parse(extra, source)
    return str(info.value)


def test_a_workday_integration_and_its_defaults():
    hr = parse().get("hr")
    assert hr.kind == "workday"
    assert (hr.source.report_name, hr.source.id_field, hr.source.auth) == ("Contacts_Sync", "Employee_ID", "basic")
    resolved = hr.mapping.resolved()
    assert (resolved["email"], resolved["first_name"], resolved["department"], resolved["hire_date"]) == (
        "Email_Address", "First_Name", "Supervisory_Organization", "Hire_Date")
    assert resolved["account_enabled"] is None and resolved["user_principal_name"] is None
    # Workday has no disabled accounts or guests: no built-in exclusions, no extension attributes.
    assert hr.exclusions.all_rules() == [] and hr.mapping.undecided_extension_attributes() == []
    assert "Employee_ID" in hr.imported_fields() and "userPrincipalName" not in hr.imported_fields()


def test_entra_stays_the_default_source_type():
    text = GOOD.replace("      type: workday\n", "").replace("host: https://wd2-impl-services1.workday.com",
                                                              "tenant_id: contoso.onmicrosoft.com")
    # Without a type the source is read as Entra ID's, which has none of Workday's fields.
    assert error_of(text=text).splitlines()[:2] == [
        "cfg.yaml: integration 'hr', field 'source.client_id': Field required",
        "cfg.yaml: integration 'hr', field 'source.tenant': unknown field"]


def test_mapping_and_rules_name_report_columns(monkeypatch):
    hr = parse(extra="""\
    mapping:
      fields:
        Standard_Hours: weekly_hours
        Cost_Center: cost_center
        Supervisory_Organization: skip
      custom_fields: {weekly_hours: Number, cost_center: Text}
    exclusions:
      rules:
        - {name: Terminated, field: Worker_Status, in: [Terminated, On Leave]}
""").get("hr")
    assert hr.mapping.resolved()["weekly_hours"] == "Standard_Hours"
    assert hr.mapping.resolved()["department"] is None
    assert [r.name for r in hr.exclusions.all_rules()] == ["Terminated"]
    assert {"Worker_Status", "Standard_Hours", "Cost_Center", "Employee_ID"} <= hr.imported_fields()


@pytest.mark.parametrize("extra, source, expected", [
    ("    mapping:\n      fields:\n        Worker Status: department\n", "",
     "field 'mapping.fields': bad report column 'Worker Status' (a Workday column alias: letters, digits and _)"),
    ("    exclusions:\n      rules:\n        - {name: x, field: \"Status');--\", equals: y}\n", "",
     "field 'exclusions.rules.0.field': bad report column \"Status');--\""),
    ("", "      client_id: abc\n",
     "field 'source': client_id is for auth: oauth_refresh, but this integration has auth: basic"),
    ("", "      auth: oauth_refresh\n", "field 'source': username is for auth: basic, but this integration has auth: "
                                       "oauth_refresh"),
    ("", "      prompts: {format: csv}\n", "field 'source.prompts': bad prompt name 'format'"),
    ("", "      id_field: Employee ID\n", "field 'source.id_field': String should match pattern"),
])
def test_workday_mistakes_name_the_field(extra, source, expected):
    text = GOOD + extra
    if source:
        text = text.replace("      prompts: {Include_Terminated: \"0\"}\n", "") if "prompts" in source else text
        text = text.replace("      password_env: WD_PASSWORD\n", f"      password_env: WD_PASSWORD\n{source}")
    assert error_of(text=text).startswith(f"cfg.yaml: integration 'hr', {expected}")


def test_host_must_be_https_and_type_known():
    assert error_of(text=GOOD.replace("https://wd2", "http://wd2")).startswith(
        "cfg.yaml: integration 'hr', field 'source.host': must be an https:// URL")
    assert "Input tag 'sap' found using 'type' does not match any of the expected tags: 'entra', 'workday'" in \
        error_of(text=GOOD.replace("type: workday", "type: sap"))


def test_oauth_refresh_sign_in_from_the_environment(monkeypatch):
    text = GOOD.replace(
        "      username: ISU_Contacts\n      password_env: WD_PASSWORD\n",
        "      auth: oauth_refresh\n      client_id: ZGVtbw\n      client_secret_env: WD_SECRET\n"
        "      refresh_token_env: WD_REFRESH\n")
    hr = parse_integrations(text, "cfg.yaml").get("hr")
    monkeypatch.setenv("WD_SECRET", "s")
    with pytest.raises(ConfigError) as info:
        credentials.workday_auth(hr)
    assert str(info.value) == ("integration 'hr': environment variable WD_REFRESH (source.refresh_token_env) is "
                               "not set")
    monkeypatch.setenv("WD_REFRESH", "r")
    assert credentials.workday_auth(hr) == RefreshTokenAuth("ZGVtbw", "s", "r")
    monkeypatch.setenv("WD_PASSWORD", "p")
    assert credentials.workday_auth(parse().get("hr")) == BasicAuth("ISU_Contacts", "p")


def test_generated_lists_once_per_field():
    assert error_of(text=GOOD + """\
    distribution_lists:
      generated:
        - {field: Location}
        - {field: Location, name: "Site {value}"}
""") == ("cfg.yaml: integration 'hr', field 'distribution_lists': generated lists from 'Location' are defined "
         "twice; one definition per field")
    assert error_of(text=GOOD + """\
    distribution_lists:
      generated:
        - {field: Location, name: "Site {location}"}
""").startswith("cfg.yaml: integration 'hr', field 'distribution_lists.generated.0': name 'Site {location}' must "
                "contain {value}")
