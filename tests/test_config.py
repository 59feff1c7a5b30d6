"""The integrations file: bad input gives one clear line naming the file, integration and field."""

from __future__ import annotations

import textwrap

import pytest

from entra_pipeline.config import DEFAULT_CONFIG_PATH, ConfigError, load_integrations, parse_integrations

GOOD = """\
integrations:
  - key: main
    title: Main tenant
    source:
      tenant_id: contoso.onmicrosoft.com
      client_id: 11111111-2222-3333-4444-555555555555
      client_secret_env: MAIN_SECRET
    schedule:
      cron: "30 5 * * 1-5"
      timezone: Europe/Berlin
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_integrations(textwrap.dedent(text), "cfg.yaml")
    return str(info.value)


def test_good_file_and_defaults():
    cfg = parse_integrations(GOOD)
    main = cfg.get("main")
    assert cfg.keys == ["main"]
    assert main.source.graph_url == "https://graph.microsoft.com"
    assert main.source.authority_url == "https://login.microsoftonline.com"
    assert main.mapping.resolved()["email"] == "mail"
    assert main.mapping.unique_id == "email"
    assert main.distribution_lists.select == "none"
    assert main.source.page_size == 999


def test_shipped_file_is_valid():
    cfg = load_integrations(DEFAULT_CONFIG_PATH)
    assert cfg.keys == ["demo"]
    assert cfg.get("demo").source.demo_tenant is not None


def test_national_cloud_preset():
    cfg = parse_integrations(GOOD.replace("client_secret_env: MAIN_SECRET", "client_secret_env: MAIN_SECRET\n      cloud: us_gov"))
    assert cfg.get("main").source.graph_url == "https://graph.microsoft.us"
    assert cfg.get("main").source.authority_url == "https://login.microsoftonline.us"


@pytest.mark.parametrize(
    "change, expected",
    [
        (("title: Main tenant", "title: Main tenant\n    colour: blue"),
         "cfg.yaml: integration 'main', field 'colour': unknown field"),
        (('cron: "30 5 * * 1-5"', 'cron: "every day"'),
         "cfg.yaml: integration 'main', field 'schedule.cron': invalid cron expression 'every day' "
         "(expected five fields, e.g. '0 6 * * *')"),
        (('cron: "30 5 * * 1-5"', 'cron: "0 0 6 * * *"'),
         "cfg.yaml: integration 'main', field 'schedule.cron': invalid cron expression '0 0 6 * * *' "
         "(expected five fields, e.g. '0 6 * * *')"),
        (("timezone: Europe/Berlin", "timezone: Mars/Olympus"),
         "cfg.yaml: integration 'main', field 'schedule.timezone': unknown time zone 'Mars/Olympus'"),
        (("client_secret_env: MAIN_SECRET", "client_secret_env: 'has space'"),
         "cfg.yaml: integration 'main', field 'source.client_secret_env': String should match pattern "
         "'^[A-Za-z_][A-Za-z0-9_]*$'"),
        (("client_secret_env: MAIN_SECRET", "client_secret_env: MAIN_SECRET\n      graph_base_url: http://graph.example"),
         "cfg.yaml: integration 'main', field 'source.graph_base_url': must be an https:// URL without query, "
         "got 'http://graph.example'"),
        (("client_secret_env: MAIN_SECRET", "client_secret_env: MAIN_SECRET\n      ca_bundle: /no/such/ca.pem"),
         "cfg.yaml: integration 'main', field 'source.ca_bundle': CA bundle file '/no/such/ca.pem' does not exist"),
        (("client_secret_env: MAIN_SECRET", "client_secret_env: MAIN_SECRET\n      page_size: 1000"),
         "cfg.yaml: integration 'main', field 'source.page_size': Input should be less than or equal to 999"),
        (("    schedule:", "    mapping:\n      fields:\n        shoe_size: mail\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping.fields': unknown contact field 'shoe_size' (known: email, "
         "first_name, last_name, display_name, job_title, department, company, office_location, city, country, "
         "phone, mobile, employee_id, employee_type, user_principal_name, preferred_language, account_enabled, "
         "user_type)"),
        (("    schedule:", "    mapping:\n      fields:\n        department: favouriteColour\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping.fields': department: unknown directory field 'favouriteColour'"),
        (("    schedule:", "    mapping:\n      fields:\n        email: null\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping': unique_id: the field 'email' cannot be skipped"),
        (("    schedule:", "    exclusions:\n      - {name: x, field: department}\n    schedule:"),
         "cfg.yaml: integration 'main', field 'exclusions.0': each exclusion needs exactly one of equals, "
         "not_equals, in, starts_with, is_empty (got none)"),
        (("    schedule:", "    distribution_lists:\n      select: names\n    schedule:"),
         "cfg.yaml: integration 'main', field 'distribution_lists': select: names needs a non-empty 'names' list"),
        (("key: main", "key: Main Tenant"),
         "cfg.yaml: integration 'Main Tenant', field 'key': String should match pattern '^[a-z][a-z0-9_]{0,62}$'"),
        (("key: main", "key: main-eu"),
         "cfg.yaml: integration 'main-eu', field 'key': String should match pattern '^[a-z][a-z0-9_]{0,62}$'"),
        (("    schedule:", "    exclusions:\n      - {name: x, field: department, equals: null}\n    schedule:"),
         "cfg.yaml: integration 'main', field 'exclusions.0': equals: a value is needed (to match empty fields "
         "use is_empty: true)"),
    ],
)
def test_one_line_per_problem(change, expected):
    old, new = change
    assert old in GOOD
    message = error_of(GOOD.replace(old, new, 1))
    assert message == expected


def test_duplicate_integration_key():
    text = GOOD + GOOD.split("integrations:\n", 1)[1]
    assert error_of(text) == "cfg.yaml: field 'integrations': duplicate integration key 'main'"


def test_duplicate_yaml_key():
    message = error_of(GOOD.replace("    title: Main tenant", "    title: Main tenant\n    title: Other"))
    assert message == "cfg.yaml: line 4, column 5: invalid YAML: duplicate key 'title'"


def test_broken_yaml():
    message = error_of("integrations:\n  - key: [unclosed\n")
    assert message.startswith("cfg.yaml: line 3, column 1: invalid YAML:")
    assert "\n" not in message


def test_empty_and_wrong_shape():
    assert error_of("") == "cfg.yaml: expected a mapping with an 'integrations' list"
    assert error_of("integrations: []") == "cfg.yaml: field 'integrations': List should have at least 1 item after validation, not 0"


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_integrations(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: integrations file not found (set ENTRA_PIPELINE_CONFIG)"


def test_missing_secret_variable(monkeypatch):
    monkeypatch.delenv("MAIN_SECRET", raising=False)
    main = parse_integrations(GOOD).get("main")
    with pytest.raises(ConfigError) as info:
        main.client_secret()
    assert str(info.value) == "integration 'main': environment variable MAIN_SECRET (source.client_secret_env) is not set"
    monkeypatch.setenv("MAIN_SECRET", "x")
    assert main.client_secret() == "x"


def test_several_problems_one_line_each():
    text = GOOD.replace('cron: "30 5 * * 1-5"', 'cron: "bad"').replace("title: Main tenant", "title: ''")
    lines = error_of(text).splitlines()
    assert lines == [
        "cfg.yaml: integration 'main', field 'title': String should have at least 1 character",
        "cfg.yaml: integration 'main', field 'schedule.cron': invalid cron expression 'bad' "
        "(expected five fields, e.g. '0 6 * * *')",
    ]


def test_relative_ca_bundle_is_relative_to_the_file(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    config = tmp_path / "integrations.yaml"
    config.write_text(GOOD.replace("client_secret_env: MAIN_SECRET",
                                   "client_secret_env: MAIN_SECRET\n      ca_bundle: certs/ca.pem"))
    assert load_integrations(config).get("main").source.ca_bundle == tmp_path / "certs" / "ca.pem"
