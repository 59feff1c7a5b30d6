"""The integrations file as the Dagster code location reads it: a broken integration is set apart
with the very line the strict loader gives for it, and the others load."""

from __future__ import annotations

import pytest

from entra_pipeline.config import (BrokenIntegration, ConfigError, load_for_dagster, parse_for_dagster,
                                   parse_integrations)
from entra_pipeline.config.isolation import WHOLE_FILE

ENTRA = """\
  - key: {key}
    title: {title}
    source:
      tenant_id: contoso.onmicrosoft.com
      client_id: 11111111-2222-3333-4444-555555555555
      client_secret_env: MAIN_SECRET
"""
WORKDAY = """\
  - key: hr
    title: Workday
    source:
      type: workday
      host: https://wd2-impl-services1.workday.com
      tenant: contoso
      report_owner: lmcneil
      report_name: Contacts_Sync
      username: ISU_Contacts
      password_env: WD_PASSWORD
"""
BROKEN = ENTRA.format(key="sales", title="Sales") + "    schedule:\n      cron: every day\n"
TEXT = "integrations:\n" + ENTRA.format(key="main", title="Main tenant") + BROKEN + WORKDAY


def strict_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_integrations(text, "cfg.yaml")
    return str(info.value)


def test_one_bad_field_leaves_the_others_loaded():
    loaded = parse_for_dagster(TEXT, "cfg.yaml")
    assert loaded.file == "cfg.yaml"
    assert [(i.key, i.kind) for i in loaded.integrations] == [("main", "entra"), ("hr", "workday")]
    line = ("cfg.yaml: integration 'sales', field 'schedule.cron': invalid cron expression 'every day' "
            "(expected five fields, e.g. '0 6 * * *')")
    assert strict_error(TEXT) == line
    assert loaded.broken == [BrokenIntegration(key="sales", title="Sales", line=line)]
    assert loaded.get("hr").source.report_name == "Contacts_Sync"
    with pytest.raises(ConfigError) as info:
        loaded.get("sales")
    assert str(info.value) == line


def test_each_broken_integration_gets_its_own_lines():
    text = TEXT + ENTRA.format(key="ops", title="Ops") + "    mapping:\n      unique_id: shoe_size\n"
    loaded = parse_for_dagster(text, "cfg.yaml")
    assert loaded.keys == ["main", "hr"]
    assert [b.key for b in loaded.broken] == ["sales", "ops"]
    # Together they are the strict loader's lines, in its order.
    assert "\n".join(b.line for b in loaded.broken) == strict_error(text)


def test_an_unreadable_key_gets_its_place_as_key():
    text = TEXT + "  - key: [not, a, key]\n    title: 5\n" + "  - just text\n"
    loaded = parse_for_dagster(text, "cfg.yaml")
    assert loaded.keys == ["main", "hr"]
    assert [(b.key, b.title) for b in loaded.broken] == [
        ("sales", "Sales"), ("integrations[3]", "integrations[3]"), ("integrations[4]", "integrations[4]")]
    assert loaded.broken[2].line == "cfg.yaml: integrations[4]: Input should be a valid dictionary or instance of Integration"
    assert "\n".join(b.line for b in loaded.broken) == strict_error(text)


def test_an_invalid_date_format_is_one_integrations_problem():
    text = TEXT + ENTRA.format(key="ops", title="Ops") + (
        "    mapping:\n      custom_fields: {hired: {type: Date, format: '%Q'}}\n"
        "      fields: {extensionAttribute1: hired}\n")
    loaded = parse_for_dagster(text, "cfg.yaml")
    assert loaded.keys == ["main", "hr"]
    assert loaded.broken[1].key == "ops"
    assert loaded.broken[1].line.startswith(
        "cfg.yaml: integration 'ops', field 'mapping.custom_fields.hired': format '%Q' is not a valid date format (")
    assert strict_error(text.replace(BROKEN, "")) == loaded.broken[1].line


def test_a_yaml_error_breaks_everything():
    text = TEXT + "  - key: [unclosed\n"
    loaded = parse_for_dagster(text, "cfg.yaml")
    assert loaded.integrations == []
    assert loaded.broken == [BrokenIntegration(key=WHOLE_FILE, title="the integrations file", line=strict_error(text))]
    assert loaded.broken[0].line.startswith("cfg.yaml: line ")


@pytest.mark.parametrize("extra, line", [
    ("runs:\n  step_retries: -1\n", "cfg.yaml: field 'runs.step_retries': Input should be greater than or equal to 0"),
    ("owner: me\n", "cfg.yaml: field 'owner': unknown field"),
])
def test_a_top_level_problem_breaks_every_integration(extra, line):
    loaded = parse_for_dagster(TEXT + extra, "cfg.yaml")
    assert loaded.integrations == []
    assert [b.key for b in loaded.broken] == ["main", "sales", "hr"]
    # An integration with a problem of its own keeps its line, as the strict loader reports it too.
    sales = strict_error(TEXT)
    assert [b.line for b in loaded.broken] == [line, sales, line]
    assert strict_error(TEXT + extra) == f"{sales}\n{line}"
    assert strict_error(TEXT.replace(BROKEN, "") + extra) == line


def test_a_key_used_twice_breaks_every_integration():
    # Even when one of the two is broken: which of them runs as 'main' is not for the loader to pick.
    text = TEXT + ENTRA.format(key="main", title="Again") + "    schedule: {cron: nope}\n"
    loaded = parse_for_dagster(text, "cfg.yaml")
    duplicate = "cfg.yaml: field 'integrations': duplicate integration key 'main'"
    assert loaded.integrations == []
    # One entry per key; 'sales' keeps its own problem.
    assert [(b.key, b.line) for b in loaded.broken] == [("main", duplicate), ("sales", strict_error(TEXT)),
                                                        ("hr", duplicate)]
    assert strict_error(text.replace(BROKEN, "").replace("{cron: nope}", "{cron: '0 6 * * *'}")) == \
        "cfg.yaml: field 'integrations': duplicate integration key 'main'"


def test_load_for_dagster_reads_the_file(tmp_path):
    path = tmp_path / "integrations.yaml"
    path.write_text(TEXT)
    loaded = load_for_dagster(path)
    assert loaded.file == str(path) and loaded.keys == ["main", "hr"] and [b.key for b in loaded.broken] == ["sales"]
    assert loaded.broken[0].line.startswith(f"{path}: integration 'sales', field 'schedule.cron'")
    missing = load_for_dagster(tmp_path / "nope.yaml")
    assert missing.integrations == []
    assert missing.broken[0].line == f"{tmp_path / 'nope.yaml'}: integrations file not found (set ENTRA_PIPELINE_CONFIG)"


def test_a_clash_between_integrations_breaks_them_and_keeps_a_broken_ones_own_line():
    def custom(key: str, kind: str) -> str:
        return ENTRA.format(key=key, title=key) + (f"    mapping:\n      custom_fields: {{c1: {{type: {kind}}}}}\n"
                                                   "      fields: {extensionAttribute1: c1}\n")

    text = "integrations:\n" + custom("main", "Text") + BROKEN + custom("ops", "Number")
    loaded = parse_for_dagster(text, "cfg.yaml")
    clash = strict_error(text.replace(BROKEN, ""))
    assert "c1" in clash
    assert loaded.integrations == []
    assert [(b.key, b.line) for b in loaded.broken] == [("main", clash), ("sales", strict_error(TEXT)),
                                                        ("ops", clash)]


def test_a_run_of_an_integration_the_file_no_longer_shows_gets_the_files_own_line():
    # The code location loaded 'main'; since then the file broke. The run says why, not "no such key".
    for text in (TEXT + "  - key: [unclosed\n", TEXT.replace("key: main", "key: 5")):
        loaded = parse_for_dagster(text, "cfg.yaml")
        with pytest.raises(ConfigError) as info:
            loaded.get("main")
        assert str(info.value) in strict_error(text).splitlines() or str(info.value) == strict_error(text)
        assert "no integration with key" not in str(info.value)
    assert parse_for_dagster(TEXT.replace("key: main", "key: 5"), "cfg.yaml").unreadable == 1


def test_orphans_are_not_called_orphans_while_some_key_cannot_be_read():
    from entra_pipeline.sync.checks import orphans_result

    sure = orphans_result({"old": 12})
    assert not sure.passed and "delete-integration" in sure.description
    unsure = orphans_result({"old": 12}, unreadable=1)
    assert not unsure.passed and "delete-integration" not in unsure.description
    assert unsure.description == ("the warehouse holds integrations the file does not name: 'old' (12 contacts); "
                                  "1 integrations of the file have no readable key and may be these: fix the file first")
    assert orphans_result({}, unreadable=1).passed


DIRECTORY = """\
contacts_directory:
  precedence:
    default: [main, sales, hr]
    fields: {job_title: [hr]}
"""


def test_the_merged_directory_may_name_a_broken_integration_and_keeps_its_people():
    loaded = parse_for_dagster(TEXT + DIRECTORY, "cfg.yaml")
    assert loaded.keys == ["main", "hr"] and [b.key for b in loaded.broken] == ["sales"]
    assert loaded.merged_keys == ["main", "hr", "sales"]
    assert loaded.directory.order("job_title", loaded.merged_keys) == ["hr", "main", "sales"]
    assert loaded.directory.order("email", loaded.merged_keys) == ["main", "sales", "hr"]


def test_a_merged_directory_naming_an_unknown_integration_or_field_is_one_line():
    unknown = TEXT.replace(BROKEN, "") + DIRECTORY.replace("[main, sales, hr]", "[main, nobody]")
    line = "cfg.yaml: top level: contacts_directory.precedence.default: no integration 'nobody' in the integrations file"
    assert strict_error(unknown) == line
    # A problem of the file stops every integration, as a duplicate key does.
    loaded = parse_for_dagster(unknown, "cfg.yaml")
    assert loaded.integrations == [] and {b.line for b in loaded.broken} == {line}
    field = TEXT.replace(BROKEN, "") + DIRECTORY.replace("sales, ", "").replace("job_title", "shoe_size")
    assert strict_error(field) == ("cfg.yaml: top level: contacts_directory.precedence.fields: 'shoe_size' is no "
                                   "contact field (built-in or custom)")
    twice = TEXT.replace(BROKEN, "") + DIRECTORY.replace("[main, sales, hr]", "[main, hr, main]")
    assert "integration 'main' is listed twice" in strict_error(twice)
    assert strict_error(TEXT.replace(BROKEN, "") + "contacts_directory:\n  excluded_anywhere: sometimes\n").startswith(
        "cfg.yaml: ")
