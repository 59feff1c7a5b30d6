"""Hostile or mistaken configuration input: files that are not regular files or are huge, values of
the wrong type, look-alike hosts, endless ids and YAML that expands without end. Each ends in one
line naming the file, the integration and the field, quickly, showing only the start of a value."""

from __future__ import annotations

import os
import textwrap
import threading
from pathlib import Path

import pytest

from entra_pipeline.config import ConfigError, load_integrations, parse_integrations

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
"""
WHERE = "integration 'main', field"


def with_source(line: str) -> str:
    return GOOD.replace("      client_secret_env: MAIN_SECRET\n", f"      client_secret_env: MAIN_SECRET\n{line}\n")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_integrations(textwrap.dedent(text), "cfg.yaml")
    return str(info.value)


def finishes(call, seconds: float = 20.0):
    """call()'s result or exception, failing the test when it does not return in time (a hang)."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def load_error(config: Path) -> str:
    with pytest.raises(ConfigError) as info:
        finishes(lambda: load_integrations(config))
    return str(info.value)


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    yield path
    try:  # a reader left waiting by a failed run of a test: a writer that comes and goes releases it
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader waiting


def sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as file:
        file.truncate(size)
    return path


# --- files -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, problem", [
    ("fifo", "is a FIFO, not a regular file"),
    ("/dev/zero", "is a character device, not a regular file"),
    ("directory", "is a directory, not a file"),
    ("huge", "is 17.0 MB; at most 16 MB is read"),
])
def test_a_bulk_selector_file_that_is_not_a_sane_file_is_refused_without_reading(tmp_path, fifo, kind, problem):
    target = {"fifo": fifo, "/dev/zero": Path("/dev/zero"), "directory": tmp_path,
              "huge": sparse(tmp_path / "huge.csv", 17 * 1024 * 1024)}[kind]
    config = tmp_path / "integrations.yaml"
    config.write_text(GOOD.replace("    schedule:", f"    distribution_lists:\n      select: csv\n      csv: {target}\n"
                                                     "    schedule:"))
    assert load_error(config) == (f"{config}: integration 'main', field 'distribution_lists': bulk selector file "
                                  f"'{target}' {problem}")


@pytest.mark.parametrize("kind, problem", [
    ("fifo", "is a FIFO, not a regular file"),
    ("/dev/zero", "is a character device, not a regular file"),
    ("directory", "is a directory, not a file"),
    ("huge", "is 17.0 MB; at most 16 MB is read"),
])
def test_an_integrations_file_that_is_not_a_sane_file_is_refused_without_reading(tmp_path, fifo, kind, problem):
    target = {"fifo": fifo, "/dev/zero": Path("/dev/zero"), "directory": tmp_path,
              "huge": sparse(tmp_path / "huge.yaml", 17 * 1024 * 1024)}[kind]
    assert load_error(target) == f"{target}: the integrations file {problem}"


@pytest.mark.parametrize("field", ["certificate_path", "private_key_path", "ca_bundle"])
@pytest.mark.parametrize("kind, problem", [
    ("fifo", "is a FIFO, not a regular file"),
    ("directory", "is a directory, not a file"),
    ("huge", "is 1.5 MB; at most 1 MB is read"),
])
def test_pem_files_must_be_regular_files_of_at_most_a_megabyte(tmp_path, fifo, field, kind, problem):
    target = {"fifo": fifo, "directory": tmp_path, "huge": sparse(tmp_path / "big.pem", 3 * 512 * 1024)}[kind]
    if field == "ca_bundle":
        extra = f"      ca_bundle: {target}"
    else:  # a certificate sign-in with the key in its own file
        extra = (f"      auth: certificate\n      {field}: {target}"
                 + ("\n      certificate_thumbprint: " + "ab" * 20 if field == "private_key_path" else ""))
    config = tmp_path / "integrations.yaml"
    config.write_text(with_source(extra).replace("      client_secret_env: MAIN_SECRET\n",
                                                 "" if field != "ca_bundle" else "      client_secret_env: MAIN_SECRET\n"))
    what = "CA bundle file" if field == "ca_bundle" else "file"
    assert load_error(config) == f"{config}: {WHERE} 'source.{field}': {what} '{target}' {problem}"


def test_a_token_cache_that_is_a_fifo_is_refused(tmp_path, fifo):
    config = tmp_path / "integrations.yaml"
    config.write_text(GOOD.replace("      client_secret_env: MAIN_SECRET\n",
                                   f"      auth: delegated\n      token_cache_path: {fifo}\n"))
    assert load_error(config) == (f"{config}: {WHERE} 'source.token_cache_path': file '{fifo}' is a FIFO, "
                                  "not a regular file")
    # Not there yet is fine: the login command creates it.
    config.write_text(GOOD.replace("      client_secret_env: MAIN_SECRET\n",
                                   f"      auth: delegated\n      token_cache_path: {tmp_path / 'new.json'}\n"))
    assert load_integrations(config).get("main").source.token_cache_path == tmp_path / "new.json"


def test_a_ca_bundle_must_hold_pem_certificates(tmp_path):
    config = tmp_path / "sub" / "dir" / "integrations.yaml"
    config.parent.mkdir(parents=True)
    passwd = os.path.relpath("/etc/passwd", config.parent)  # ../../../etc/passwd and the like
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    for bundle, shown in ((passwd, config.parent / passwd), (garbage, garbage)):
        config.write_text(with_source(f"      ca_bundle: {bundle}"))
        assert load_error(config) == (
            f"{config}: {WHERE} 'source.ca_bundle': CA bundle file '{shown}' holds no PEM certificate "
            "(-----BEGIN CERTIFICATE-----); it must be the CA certificates to trust, in PEM")
    # Two CAs in one bundle, with a comment line before them, as bundles are often made.
    good = tmp_path / "corporate-ca.pem"
    good.write_bytes(b"# corporate roots\n" + self_signed_certificate("root 1")[1] + self_signed_certificate("root 2")[1])
    config.write_text(with_source(f"      ca_bundle: {good}"))
    assert load_integrations(config).get("main").source.ca_bundle == good


# --- types -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (with_source("      max_retries: yes"),
     f"{WHERE} 'source.max_retries': expected a whole number, got true (YAML reads yes, no, on and off as true "
     "and false)"),
    (with_source("      page_size: '500'"),
     f"{WHERE} 'source.page_size': expected a whole number, got the text '500' (write it without quotes)"),
    (with_source("      timeout_seconds: on"),
     f"{WHERE} 'source.timeout_seconds': expected a number, got true (YAML reads yes, no, on and off as true and "
     "false)"),
    (with_source("      timeout_seconds: .nan"), f"{WHERE} 'source.timeout_seconds': Input should be a finite number"),
    (with_source("      max_retries: 3.0"), f"{WHERE} 'source.max_retries': expected a whole number, got the number 3.0"),
    (GOOD.replace('cron: "30 5 * * 1-5"', 'cron: "30 5 * * 1-5"\n      enabled: 1'),
     f"{WHERE} 'schedule.enabled': expected true or false, got the number 1"),
    (GOOD.replace('cron: "30 5 * * 1-5"', 'cron: "30 5 * * 1-5"\n      enabled: "false"'),
     f"{WHERE} 'schedule.enabled': expected true or false, got the text 'false' (write it without quotes)"),
    (GOOD + "    exclusions:\n      guests: 0\n",
     f"{WHERE} 'exclusions.guests': expected true or false, got the number 0"),
    (GOOD + "    deletion_guard:\n      max_removed: '10'\n",
     f"{WHERE} 'deletion_guard.max_removed': expected a whole number, got the text '10' (write it without quotes)"),
    (GOOD + "runs:\n  step_retries: yes\n",
     "field 'runs.step_retries': expected a whole number, got true (YAML reads yes, no, on and off as true and "
     "false)"),
])
def test_numbers_and_true_false_are_strict(text, expected):
    assert error_of(text) == f"cfg.yaml: {expected}"


def test_the_valid_types_still_load():
    cfg = parse_integrations(with_source("      max_retries: 3\n      timeout_seconds: 30\n      page_size: 500")
                             .replace('cron: "30 5 * * 1-5"', 'cron: "30 5 * * 1-5"\n      enabled: no'))
    source = cfg.get("main").source
    assert (source.max_retries, source.timeout_seconds, source.page_size) == (3, 30.0, 500)
    assert cfg.get("main").schedule.enabled is False


@pytest.mark.parametrize("line, expected", [
    ("      demo_tenant: {seed: -1}", "'source.demo_tenant.seed': Input should be greater than or equal to 0"),
    ("      demo_tenant: {seed: 99999999999}",
     "'source.demo_tenant.seed': Input should be less than or equal to 2147483647"),
])
def test_numbers_have_bounds(line, expected):
    assert error_of(with_source(line)) == f"cfg.yaml: {WHERE} {expected}"


def test_deletion_guard_has_an_upper_bound():
    assert error_of(GOOD + "    deletion_guard:\n      max_removed: 1000000000000\n") == (
        f"cfg.yaml: {WHERE} 'deletion_guard.max_removed': Input should be less than or equal to 100000000")


# --- hosts -------------------------------------------------------------------------------------

CYRILLIC_O = "\u043e"


@pytest.mark.parametrize("line, expected", [
    (f"      graph_base_url: https://graph.micr{CYRILLIC_O}soft.com",
     f"'source.graph_base_url': host 'graph.micr{CYRILLIC_O}soft.com' has the non-ASCII character "
     f"'{CYRILLIC_O}' (U+043E CYRILLIC SMALL LETTER O) among Latin letters (a look-alike of another host?); "
     "host names must be ASCII"),
    (f"      authority_host: https://login.micr{CYRILLIC_O}softonline.com:443/",
     f"'source.authority_host': host 'login.micr{CYRILLIC_O}softonline.com' has the non-ASCII character "
     f"'{CYRILLIC_O}' (U+043E CYRILLIC SMALL LETTER O) among Latin letters (a look-alike of another host?); "
     "host names must be ASCII"),
    ("      authority_host: https://xn--micrsoft-qbh.com",
     "'source.authority_host': host 'xn--micrsoft-qbh.com': 'xn--micrsoft-qbh' stands for "
     f"'micr{CYRILLIC_O}soft', whose character '{CYRILLIC_O}' (U+043E CYRILLIC SMALL LETTER O) mixes writing "
     "systems (a look-alike of another host?); host names must not mix scripts"),
    ("      graph_base_url: https://graph.bücher.example",
     "'source.graph_base_url': host 'graph.bücher.example' has the non-ASCII character 'ü' (U+00FC LATIN SMALL "
     "LETTER U WITH DIAERESIS); give the name in its ASCII (punycode) form, 'graph.xn--bcher-kva.example'"),
    ("      graph_base_url: https://graph..example",
     "'source.graph_base_url': host 'graph..example' is not a valid host name (letters, digits, - and . in "
     "labels of at most 63 characters)"),
    ("      graph_base_url: https://graph.example:99999",
     "'source.graph_base_url': bad port in 'https://graph.example:99999' (1 to 65535)"),
])
def test_hosts_are_ascii_and_never_look_alikes(line, expected):
    assert error_of(with_source(line)) == f"cfg.yaml: {WHERE} {expected}"


def test_a_workday_host_with_a_look_alike_letter_is_refused():
    text = """\
integrations:
  - key: hr
    title: Workday
    source:
      type: workday
      host: https://wd2-impl-services1.w\u043erkday.com
      tenant: contoso
      report_owner: lmcneil
      report_name: Contacts_Sync
      username: ISU_Contacts
      password_env: WD_PASSWORD
"""
    assert error_of(text) == (
        f"cfg.yaml: integration 'hr', field 'source.host': host 'wd2-impl-services1.w{CYRILLIC_O}rkday.com' has "
        f"the non-ASCII character '{CYRILLIC_O}' (U+043E CYRILLIC SMALL LETTER O) among Latin letters (a "
        "look-alike of another host?); host names must be ASCII")


def test_punycode_and_addresses_are_accepted():
    cfg = parse_integrations(with_source("      graph_base_url: https://graph.xn--bcher-kva.example/v1.0\n"
                                         "      authority_host: https://[::1]:8443"))
    assert cfg.get("main").source.graph_url == "https://graph.xn--bcher-kva.example/v1.0"
    assert cfg.get("main").source.authority_url == "https://[::1]:8443"


# --- lengths -----------------------------------------------------------------------------------

LONG = "x" * 200_000


def assert_short(message: str) -> None:
    assert "\n" not in message and len(message) < 300, message[:400]
    assert "x" * 81 not in message


@pytest.mark.parametrize("text, expected", [
    (GOOD.replace("client_id: 11111111-2222-3333-4444-555555555555", f"client_id: {LONG}"),
     f"{WHERE} 'source.client_id': String should have at most 36 characters"),
    (GOOD.replace("tenant_id: contoso.onmicrosoft.com", f"tenant_id: {LONG}"),
     f"{WHERE} 'source.tenant_id': String should have at most 253 characters"),
    (GOOD.replace("client_secret_env: MAIN_SECRET", f"client_secret_env: {LONG}"),
     f"{WHERE} 'source.client_secret_env': String should have at most 128 characters"),
    (GOOD.replace("title: Main tenant", f"title: {LONG}"), f"{WHERE} 'title': String should have at most 256 characters"),
    (with_source(f"      ca_bundle: {LONG}"), f"{WHERE} 'source.ca_bundle': a path of 200,000 characters; at most 1024"),
    (with_source(f"      graph_base_url: https://{LONG}"),
     f"{WHERE} 'source.graph_base_url': a URL of 200,008 characters; at most 512"),
    # (YAML keys have at most 1024 characters.)
    (GOOD.replace("    title: Main tenant", f"    title: Main tenant\n    {'x' * 1000}: 1"),
     f"{WHERE} '{'x' * 79}…': unknown field"),
    (GOOD + f"    exclusions:\n      rules:\n        - {{name: a, contact_field: account_enabled, equals: {LONG}}}\n",
     f"integration 'main': exclusions.rules.0 ('a'): equals value '{'x' * 78}… (200,000 characters) for "
     "'account_enabled' (Boolean) is not true or false"),
])
def test_long_values_are_refused_and_shown_cut_short(text, expected):
    message = error_of(text)
    assert message == f"cfg.yaml: {expected}"
    assert_short(message)


def test_client_and_tenant_ids_have_their_shapes():
    assert error_of(GOOD.replace("client_id: 11111111-2222-3333-4444-555555555555", "client_id: my-app")) == (
        f"cfg.yaml: {WHERE} 'source.client_id': 'my-app' is not an application (client) ID: a GUID, as the app "
        "registration's overview shows it")
    assert error_of(GOOD.replace("tenant_id: contoso.onmicrosoft.com", "tenant_id: contoso")) == (
        f"cfg.yaml: {WHERE} 'source.tenant_id': 'contoso' is not a tenant: give the tenant ID (a GUID) or one of "
        "its domain names (contoso.onmicrosoft.com)")


# --- YAML that expands -------------------------------------------------------------------------

def test_deeply_nested_yaml_is_one_line():
    assert finishes(lambda: error_of(GOOD + "x: " + "[" * 100_000)) == (
        "cfg.yaml: invalid YAML: nested more than 64 levels deep")


def test_aliases_that_expand_without_end_are_refused_quickly():
    # Each level names the previous one ten times: ten levels stand for ten billion conditions.
    levels = ["anchors:", "  - &c0 {contact_field: department, equals: x}"]
    levels += [f"  - &c{i} {{all: [{', '.join([f'*c{i - 1}'] * 10)}]}}" for i in range(1, 11)]
    text = "\n".join(levels) + "\n" + GOOD + "    exclusions:\n      rules:\n        - {name: bomb, all: [*c10]}\n"
    assert finishes(lambda: error_of(text)) == (
        "cfg.yaml: more than 2,000,000 values (counting each use of a YAML alias)")
