"""The integrations file: bad input gives one clear line naming the file, integration and field."""

from __future__ import annotations

import textwrap
from datetime import date

import pytest

from entra_pipeline.config import DEFAULT_CONFIG_PATH, ConfigError, credentials, load_integrations, parse_integrations

from tests.support.certificates import self_signed_certificate


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
    assert main.mapping.undecided_extension_attributes() == [f"extensionAttribute{i}" for i in range(1, 16)]
    assert [r.name for r in main.exclusions.all_rules()] == ["Disabled account", "Guest"]
    assert main.mapping.unique_id == "email"
    assert main.distribution_lists.select == "none"
    assert main.source.page_size == 999


def test_shipped_file_is_valid():
    cfg = load_integrations(DEFAULT_CONFIG_PATH)
    assert cfg.keys == ["demo", "demo_workday"]
    assert cfg.get("demo").source.demo_tenant is not None
    # Both demo integrations use one demo tenant: the same people in Entra ID and Workday.
    assert cfg.get("demo_workday").kind == "workday"
    assert cfg.get("demo_workday").source.demo_tenant == cfg.get("demo").source.demo_tenant


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
         "cfg.yaml: integration 'main', field 'source.graph_base_url': must be an https:// URL without query or user name, "
         "got 'http://graph.example'"),
        (("client_secret_env: MAIN_SECRET", "client_secret_env: MAIN_SECRET\n      ca_bundle: /no/such/ca.pem"),
         "cfg.yaml: integration 'main', field 'source.ca_bundle': CA bundle file '/no/such/ca.pem' does not exist"),
        (("client_secret_env: MAIN_SECRET", "client_secret_env: MAIN_SECRET\n      page_size: 1000"),
         "cfg.yaml: integration 'main', field 'source.page_size': Input should be less than or equal to 999"),
        # Mapping (issue 3, item 6): one line each.
        (("    schedule:", "    mapping:\n      fields:\n        mail: skip\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping': unique_id: the Unique Contact ID field 'email' cannot be "
         "skipped"),
        (("    schedule:", "    mapping:\n      unique_id: employee_id\n      fields:\n        employeeId: skip\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping': unique_id: the Unique Contact ID field 'employee_id' cannot "
         "be skipped"),
        (("    schedule:", "    mapping:\n      fields:\n        department: shoe_size\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping': fields.department: unknown contact field 'shoe_size' "
         "(a built-in field, a custom field, or skip)"),
        (("    schedule:", "    mapping:\n      fields:\n        favouriteColour: department\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping.fields': unknown directory field 'favouriteColour'"),
        (("    schedule:", "    mapping:\n      fields:\n        department: division\n        extensionAttribute2: "
          "division\n      custom_fields:\n        division: Text\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping': two imported fields map to contact field 'division': "
         "department, extensionAttribute2"),
        (("    schedule:", "    mapping:\n      fields:\n        extension_123_costCenter: department\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping.fields': bad custom field ID 'extension_123_costCenter' "
         "(expected extension_{appId without hyphens: 32 hex digits}_{name}, as the directory shows it)"),
        (("    schedule:", "    mapping:\n      fields:\n        extensionAttribute4: badge\n      custom_fields:\n"
          "        badge: Boolean\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping.custom_fields.badge.type': unknown type 'Boolean' "
         "(use Text, Number or Date)"),
        (("    schedule:", "    mapping:\n      fields:\n        extensionAttribute4: badge\n      custom_fields:\n"
          "        badge: {type: Number, format: '%d'}\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping.custom_fields.badge': format applies to Date fields only"),
        (("    schedule:", "    mapping:\n      custom_fields:\n        badge: Text\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping': custom field 'badge' is not mapped from any imported field"),
        (("    schedule:", "    mapping:\n      fields:\n        extensionAttribute4: email_2\n      custom_fields:\n"
          "        Email 2: Text\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping.custom_fields': custom field name 'Email 2' must be lower "
         "case letters, digits and _"),
        (("    schedule:", "    mapping:\n      fields:\n        extensionAttribute4: city\n      custom_fields:\n"
          "        city: Text\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping.custom_fields': custom field name 'city' is taken by a "
         "built-in field"),
        (("    schedule:", "    mapping:\n      fields:\n        extensionAttribute5: start\n      custom_fields:\n"
          "        start: {type: Date, format: '%d/%Q/%Y'}\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping.custom_fields.start': format '%d/%Q/%Y' is not a valid "
         "date format (Failed to parse format specifier %d/%Q/%Y: Unrecognized format for strftime/strptime: %Q)"),
        (("    schedule:", "    mapping:\n      unique_id: account_enabled\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping': unique_id: 'account_enabled' is a true/false field and "
         "cannot identify a contact"),
        (("    schedule:", "    mapping:\n      fields:\n        \"extension_0123456789abcdef0123456789abcdef_cost\\n\": "
          "department\n    schedule:"),
         "cfg.yaml: integration 'main', field 'mapping.fields': bad custom field ID "
         "'extension_0123456789abcdef0123456789abcdef_cost\\n' (expected extension_{appId without hyphens: 32 hex "
         "digits}_{name}, as the directory shows it)"),
        # Exclusions: values YAML retypes, and values that can never match their field's type.
        (("    schedule:", "    exclusions:\n      rules:\n        - {name: Nordics, field: country, in: [SE, NO]}\n"
          "    schedule:"),
         "cfg.yaml: integration 'main': exclusions.rules.0 ('Nordics'): in value False for 'country' (Text) is not "
         "text (quote it in YAML: 'NO', '00123' and 'on' are read as other types)"),
        (("    schedule:", "    exclusions:\n      rules:\n        - {name: Old badge, field: employeeId, equals: 00123}\n"
          "    schedule:"),
         "cfg.yaml: integration 'main': exclusions.rules.0 ('Old badge'): equals value 83 for 'employeeId' (Text) is "
         "not text (quote it in YAML: 'NO', '00123' and 'on' are read as other types)"),
        (("    schedule:", "    exclusions:\n      rules:\n        - {name: x, field: accountEnabled, equals: 'false'}\n"
          "    schedule:"),
         "cfg.yaml: integration 'main': exclusions.rules.0 ('x'): equals value 'false' for 'accountEnabled' (Boolean) "
         "is not true or false"),
        (("    schedule:", "    exclusions:\n      rules:\n        - {name: x, contact_field: hire_date, equals: 01/03/2024}\n"
          "    schedule:"),
         "cfg.yaml: integration 'main': exclusions.rules.0 ('x'): equals value '01/03/2024' for 'hire_date' (Date) is "
         "not an ISO date (YYYY-MM-DD)"),
        (("    schedule:", "    exclusions:\n      rules:\n        - {name: x, contact_field: hire_date, contains: '2024'}\n"
          "    schedule:"),
         "cfg.yaml: integration 'main': exclusions.rules.0 ('x'): contains and starts_with apply to text, and "
         "'hire_date' is Date"),
        (("    schedule:", "    exclusions:\n      rules:\n        - name: x\n          any:\n            - {contact_field: "
          "email, equals: Ann@X.com}\n    schedule:"),
         "cfg.yaml: integration 'main': exclusions.rules.0 ('x'): equals value 'Ann@X.com': emails are stored "
         "lower-case, so it never matches"),
        (("    schedule:", "    distribution_lists:\n      custom:\n        - {name: Sales DACH, when: {field: country, "
          "equals: DE}}\n        - {name: sales-dach, when: {field: country, equals: AT}}\n    schedule:"),
         "cfg.yaml: integration 'main', field 'distribution_lists': custom lists 'Sales DACH' and 'sales-dach' would "
         "share the id 'custom:sales-dach'; rename one"),
        # Exclusions.
        (("    schedule:", "    exclusions:\n      rules:\n        - {name: x, field: department, matches: 'S.*'}\n"
          "    schedule:"),
         "cfg.yaml: integration 'main', field 'exclusions.rules.0': unknown exclusion operator 'matches' (use "
         "equals, not_equals, in, not_in, contains, starts_with, is_empty, is_not_empty, all, any)"),
        (("    schedule:", "    exclusions:\n      rules:\n        - {name: x, field: department}\n    schedule:"),
         "cfg.yaml: integration 'main', field 'exclusions.rules.0': each condition needs exactly one of equals, "
         "not_equals, in, not_in, contains, starts_with, is_empty, is_not_empty (got none)"),
        (("    schedule:", "    exclusions:\n      rules:\n        - {name: x, field: department, equals: null}\n"
          "    schedule:"),
         "cfg.yaml: integration 'main', field 'exclusions.rules.0': equals: a value is needed (to match empty "
         "fields use is_empty: true)"),
        (("    schedule:", "    exclusions:\n      rules:\n        - {name: x, contact_field: division, equals: A}\n"
          "    schedule:"),
         "cfg.yaml: integration 'main': exclusions.rules.0 ('x'): unknown contact field 'division'"),
        (("    schedule:", "    exclusions:\n      rules:\n        - name: x\n          all:\n            - {field: "
          "department, equals: A}\n            - {field: country, is_empty: false}\n    schedule:"),
         "cfg.yaml: integration 'main', field 'exclusions.rules.0.all.1': is_empty takes true"),
        (("    schedule:", "    exclusions:\n      - {name: x, field: department, equals: A}\n    schedule:"),
         "cfg.yaml: integration 'main', field 'exclusions': exclusions takes disabled_accounts, guests and "
         "rules; put the list of rules under rules:"),
        (("    schedule:", "    distribution_lists:\n      select: names\n    schedule:"),
         "cfg.yaml: integration 'main', field 'distribution_lists': select: names needs a non-empty 'names' list"),
        (("key: main", "key: Main Tenant"),
         "cfg.yaml: integration 'Main Tenant', field 'key': String should match pattern '^[a-z][a-z0-9_]{0,62}$'"),
        (("key: main", "key: main-eu"),
         "cfg.yaml: integration 'main-eu', field 'key': String should match pattern '^[a-z][a-z0-9_]{0,62}$'"),
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
        credentials.client_secret(main)
    assert str(info.value) == "integration 'main': environment variable MAIN_SECRET (source.client_secret_env) is not set"
    monkeypatch.setenv("MAIN_SECRET", "x")
    assert credentials.client_secret(main) == "x"


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
    (tmp_path / "certs" / "ca.pem").write_bytes(self_signed_certificate("a private CA")[1])
    config = tmp_path / "integrations.yaml"
    config.write_text(GOOD.replace("client_secret_env: MAIN_SECRET",
                                   "client_secret_env: MAIN_SECRET\n      ca_bundle: certs/ca.pem"))
    assert load_integrations(config).get("main").source.ca_bundle == tmp_path / "certs" / "ca.pem"


def test_rule_values_of_the_right_type_are_accepted():
    text = GOOD.replace("    schedule:", """    exclusions:
      rules:
        - {name: a, contact_field: hire_date, equals: 2024-03-01}
        - {name: b, contact_field: hire_date, in: ['2024-03-02']}
        - {name: c, field: accountEnabled, equals: false}
        - {name: d, field: country, in: ['SE', 'NO']}
    schedule:""")
    rules = parse_integrations(text).get("main").exclusions.rules
    assert [r.equals if r.equals is not None else r.one_of for r in rules] == [
        date(2024, 3, 1), ["2024-03-02"], False, ["SE", "NO"]]


def _with_csv(tmp_path, content: bytes, select: str = "csv") -> str:
    (tmp_path / "lists.csv").write_bytes(content)
    config = tmp_path / "integrations.yaml"
    config.write_text(GOOD.replace("    schedule:", f"    distribution_lists:\n      select: {select}\n"
                                                     "      csv: lists.csv\n    schedule:"))
    return str(config)


def test_bulk_selector_file_tolerates_bom_blank_lines_spaces_and_quoted_commas(tmp_path):
    config = _with_csv(tmp_path, b'\xef\xbb\xbfAll Employees\r\n\r\n  Sales Germany  \n"Sales, Austria"\n\n')
    selection = load_integrations(config).get("main").distribution_lists
    assert selection.names == ["All Employees", "Sales Germany", "Sales, Austria"]
    assert selection.csv == tmp_path / "lists.csv"


@pytest.mark.parametrize("content, problem", [
    (b"Display Name\nAll Employees\n", "line 1 looks like a header row ('Display Name'); the file takes display "
                                       "names only, with no header (a group really named so: set "
                                       "csv_header_check: false)"),
    (b'Sales\n"Ops\nIT\n', "line 3: an unclosed quote runs to the end of the file"),
    (b'Sales\n"Ops\nTeam"\nIT\n', "line 3: a name spans several lines (an unclosed quote?)"),
    (b"Sales\n" + b"x" * 300 + b"\n", "line 2: a name of 300 characters; Entra display names have at most 256"),
    (b"Sales\n" + b"x" * 200_000 + b"\n", "line 2: field larger than field limit (131072)"),
    (b"\n\xef\xbb\xbf\ngroup_name\nSales\n", None),
    (b"Sales,Marketing\n", "line 1: 2 columns; one display name per line (quote names that contain commas)"),
    (b"\n \n", "has no display names"),
    (b"Sales\nM\xe4rketing\n", "line 2: not UTF-8 text (save it as UTF-8)"),
])
def test_bulk_selector_file_problems_are_one_line(tmp_path, content, problem):
    config = _with_csv(tmp_path, content)
    with pytest.raises(ConfigError) as info:
        load_integrations(config)
    message = str(info.value)
    if problem is None:  # a BOM in the middle of the file is not a BOM: the header word is still found
        assert "looks like a header row" in message
        return
    assert message == (f"{config}: integration 'main', field 'distribution_lists': bulk selector file "
                       f"'{tmp_path / 'lists.csv'}' {problem}")


def test_bulk_selector_file_must_exist(tmp_path):
    config = tmp_path / "integrations.yaml"
    config.write_text(GOOD.replace("    schedule:", "    distribution_lists:\n      select: csv\n"
                                                     "      csv: missing.csv\n    schedule:"))
    with pytest.raises(ConfigError) as info:
        load_integrations(config)
    assert str(info.value) == (f"{config}: integration 'main', field 'distribution_lists': bulk selector file "
                               f"'{tmp_path / 'missing.csv'}' does not exist")


def test_a_group_really_named_like_a_header_can_be_selected(tmp_path):
    (tmp_path / "lists.csv").write_bytes(b"Name\nSales\n")
    config = tmp_path / "integrations.yaml"
    config.write_text(GOOD.replace("    schedule:", "    distribution_lists:\n      select: csv\n      csv: lists.csv\n"
                                                     "      csv_header_check: false\n    schedule:"))
    assert load_integrations(config).get("main").distribution_lists.names == ["Name", "Sales"]


def test_sync_settings_defaults_and_errors():
    cfg = parse_integrations(GOOD)
    main = cfg.get("main")
    assert (main.source.read, main.source.full_sync_every_days) == ("delta", 7.0)
    assert (cfg.runs.step_retries, cfg.runs.step_retry_delay_seconds) == (2, 60.0)
    assert error_of(GOOD + "runs:\n  step_retries: -1\n") == (
        "cfg.yaml: field 'runs.step_retries': Input should be greater than or equal to 0")
    assert error_of(GOOD.replace("client_secret_env: MAIN_SECRET", "client_secret_env: MAIN_SECRET\n      read: poll")) \
        == "cfg.yaml: integration 'main', field 'source.read': Input should be 'delta' or 'list'"
