"""Reading the integrations file: YAML (duplicate keys refused, size and depth bounded), then
validation; every problem one line naming the file, the integration and the field, and nothing
runs on an invalid file.

Secrets are never in the file: an integration names the environment variable that holds its
client secret (``source.client_secret_env``) or its private key's password
(``source.private_key_password_env``); key, certificate and token cache are files named by path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb
import yaml
from pydantic import ValidationError

from entra_pipeline.config.common import (CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, MAX_PATH_CHARS, SHOWN_CHARS,
                                          ConfigError, shown)
from entra_pipeline.config.models import IntegrationBase, IntegrationsFile
from entra_pipeline.files import MAX_TEXT_FILE_BYTES, FileProblem, read_file_limited
from entra_pipeline.transform.fields import SOURCE_KINDS

# A file is a few thousand values; aliases can make a small file stand for billions of them.
MAX_YAML_NODES = 2_000_000
MAX_YAML_DEPTH = 64
MAX_ERROR_LINE = 2000


def config_path() -> Path:
    """The integrations file: ``$ENTRA_PIPELINE_CONFIG``, or data/integrations.yaml."""
    return Path(os.environ.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate mapping keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {shown(key)}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _check_shape(raw: Any, source: str) -> None:
    """Refuse YAML nested too deeply or expanding (through aliases) to too many values."""
    stack, count = [(raw, 1)], 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_YAML_NODES:
            raise ConfigError(f"{source}: more than {MAX_YAML_NODES:,} values (counting each use of a YAML alias)")
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{source}: nested more than {MAX_YAML_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def read_yaml(text: str, source: str) -> dict:
    """The file's text as YAML: a mapping of sane size; ConfigError (one line) otherwise."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}:{where}: invalid YAML: {problem[:200]}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid YAML: nested more than {MAX_YAML_DEPTH} levels deep") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with an 'integrations' list")
    _check_shape(raw, source)
    return raw


def who(raw: Any, index: int) -> str:
    """How an error line names the integration at ``index``: by its key, or by its place."""
    key = None
    try:
        key = raw["integrations"][index].get("key")
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return f"integration {shown(key)}" if key else f"integrations[{index}]"


def _describe_location(raw: Any, loc: tuple) -> str:
    """'integration 'demo', field 'schedule.cron'' from a pydantic error location."""
    if len(loc) >= 2 and loc[0] == "integrations" and isinstance(loc[1], int):
        # pydantic names the kind of integration it validated; the file does not say it.
        rest = loc[3:] if loc[2:3] and loc[2] in SOURCE_KINDS else loc[2:]
        # A part may be a key from the file (an unknown field's name): cut it short.
        parts = [str(p) if len(str(p)) < SHOWN_CHARS else f"{str(p)[:SHOWN_CHARS - 1]}…"
                 for p in rest if not str(p).startswith("function-")]
        field = ".".join(parts)
        return f"{who(raw, loc[1])}, field {field!r}" if field else who(raw, loc[1])
    return f"field {shown('.'.join(str(p) for p in loc))}" if loc else "top level"


_TYPE_NAMES = {"int_type": "a whole number", "float_type": "a number", "bool_type": "true or false",
               "string_type": "text"}


def _type_problem(expected: str, value: Any) -> str:
    """'expected a whole number, got ...' for a value of the wrong type; strict, so say why."""
    if isinstance(value, bool):
        got = f"{str(value).lower()} (YAML reads yes, no, on and off as true and false)"
    elif isinstance(value, str):
        got = f"the text {shown(value)}" + (" (write it without quotes)" if expected != "text" else "")
    elif isinstance(value, (int, float)):
        got = f"the number {shown(value)}" + (" (quote it)" if expected == "text" else "")
    else:
        got = f"a {type(value).__name__}"
    return f"expected {expected}, got {got}"


def error_line(source: str, raw: Any, loc: tuple, msg: str) -> str:
    """One problem as its line: the file, where in it (integration and field), what is wrong."""
    line = f"{source}: {_describe_location(raw, loc)}: {msg}"
    # Every value shown is cut short already; this bounds what pydantic's own messages hold.
    return line if len(line) <= MAX_ERROR_LINE else f"{line[:MAX_ERROR_LINE - 1]}…"


def error_lines(exc: ValidationError, raw: Any, source: str) -> list[tuple[tuple, str]]:
    """(location, line) for each problem pydantic found, in its order."""
    lines = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] in _TYPE_NAMES:
            msg = _type_problem(_TYPE_NAMES[err["type"]], err.get("input"))
        lines.append((tuple(err["loc"]), error_line(source, raw, tuple(err["loc"]), msg)))
    return lines


def date_format_lines(integration: IntegrationBase, index: int, raw: Any, source: str) -> list[str]:
    """A line for each custom Date field whose ``format`` DuckDB's strptime, which the mapping
    parses dates with, does not understand. Asked of DuckDB itself, once the file is valid."""
    formats = {name: custom.format for name, custom in integration.mapping.custom_fields.items() if custom.format}
    if not formats:
        return []
    lines = []
    with duckdb.connect() as con:
        for name, fmt in formats.items():
            try:
                con.execute("SELECT try_strptime('2000-01-01', ?)", [fmt])
            except duckdb.Error as exc:
                reason = str(exc).splitlines()[0].split(": ", 1)[-1]
                loc = ("integrations", index, "mapping", "custom_fields", name)
                lines.append(error_line(source, raw, loc, f"format {shown(fmt)} is not a valid date format ({reason})"))
    return lines


def validate(raw: dict, source: str, base_dir: Path | None) -> IntegrationsFile:
    """The file validated whole; ConfigError with one line per problem."""
    try:
        integrations_file = IntegrationsFile.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError("\n".join(line for _, line in error_lines(exc, raw, source))) from None
    lines = [line for index, integration in enumerate(integrations_file.integrations)
             for line in date_format_lines(integration, index, raw, source)]
    if lines:
        raise ConfigError("\n".join(lines))
    return integrations_file


def parse_integrations(text: str, source: str = "<string>", base_dir: Path | None = None) -> IntegrationsFile:
    """Parse and validate the integrations file's text; ConfigError with one line per problem."""
    return validate(read_yaml(text, source), source, base_dir)


def read_integrations_text(path: Path | str | None = None) -> tuple[str, Path]:
    """The integrations file's text (``path``, ``$ENTRA_PIPELINE_CONFIG`` or the default) and its
    path; ConfigError (one line) when it cannot be read."""
    file = Path(path) if path is not None else config_path()
    if len(str(file)) > MAX_PATH_CHARS or not str(file).isprintable():
        raise ConfigError(f"integrations file path {shown(str(file))} is not a usable path (set {CONFIG_PATH_ENV})")
    try:
        raw = read_file_limited(file, MAX_TEXT_FILE_BYTES)
    except FileProblem as exc:
        if str(exc) == "does not exist":
            raise ConfigError(f"{file}: integrations file not found (set {CONFIG_PATH_ENV})") from None
        raise ConfigError(f"{file}: the integrations file {exc}") from None
    try:
        return raw.decode("utf-8"), file
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load_integrations(path: Path | str | None = None) -> IntegrationsFile:
    """Load and validate the integrations file (``path``, ``$ENTRA_PIPELINE_CONFIG`` or default)."""
    text, file = read_integrations_text(path)
    return parse_integrations(text, str(file), file.resolve().parent)
