"""The integrations file as the Dagster code location reads it: one broken integration must not
take the others down. Each integration that validates is loaded; each that does not is reported
with the very lines ``make sync`` and ``check-config`` print for it (which still refuse the
whole file). A problem of the file as a whole (unreadable YAML, a top-level field, two
integrations with one key) leaves every integration broken with that problem's line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from entra_pipeline.config.common import ConfigError, shown
from entra_pipeline.config.loader import (config_path, date_format_lines, error_line, error_lines,
                                          read_integrations_text, read_yaml)
from entra_pipeline.config.directory import ContactsDirectory
from entra_pipeline.config.models import EntraIntegration, IntegrationsFile, RunSettings, WorkdayIntegration

#: The key of the one broken entry for a file whose integrations cannot be told apart at all.
WHOLE_FILE = "integrations[*]"


@dataclass(frozen=True)
class BrokenIntegration:
    """An integration of the file that cannot run. ``key`` is its key as the file gives it, or
    ``integrations[N]`` (its place) when it has no readable key; ``line`` is what the strict
    loader prints for it (one line per problem)."""

    key: str
    title: str
    line: str


@dataclass(frozen=True)
class LoadedIntegrations:
    """The integrations that can run, and those that cannot with why."""

    file: str
    integrations: list[EntraIntegration | WorkdayIntegration]
    broken: list[BrokenIntegration]
    runs: RunSettings = field(default_factory=RunSettings)
    directory: ContactsDirectory = field(default_factory=ContactsDirectory)

    @property
    def keys(self) -> list[str]:
        return [i.key for i in self.integrations]

    @property
    def unreadable(self) -> int:
        """Integrations whose key cannot be read (the whole file, when it cannot be read at all)."""
        return sum(1 for b in self.broken if b.key == WHOLE_FILE or b.key.startswith("integrations["))

    @property
    def named_keys(self) -> frozenset[str]:
        """Every key the file names, its broken integrations' included: their warehouse rows are not orphans."""
        return frozenset(self.keys) | {b.key for b in self.broken if b.key != WHOLE_FILE
                                       and not b.key.startswith("integrations[")}

    @property
    def merged_keys(self) -> list[str]:
        """The integrations the merged directory takes in: those that can run, in the file's order,
        then the broken ones it names (their people stay until they are fixed or deleted)."""
        return self.keys + sorted(self.named_keys - set(self.keys))

    def get(self, key: str) -> EntraIntegration | WorkdayIntegration:
        """The integration ``key``; ConfigError with its lines when it is broken."""
        for integration in self.integrations:
            if integration.key == key:
                return integration
        for broken in self.broken:
            if broken.key == key:
                raise ConfigError(broken.line)
        for broken in self.broken:  # the file cannot be read, or some key cannot: say that, not "no such key"
            if broken.key == WHOLE_FILE or broken.key.startswith("integrations["):
                raise ConfigError(broken.line)
        raise ConfigError(f"no integration with key {shown(key)} in the integrations file")


def _items(raw: Any) -> list:
    items = raw.get("integrations") if isinstance(raw, dict) else None
    return items if isinstance(items, list) else []


def _broken(items: list, index: int, line: str) -> BrokenIntegration:
    item = items[index]
    key = item.get("key") if isinstance(item, dict) else None
    key = key if isinstance(key, str) and key else f"integrations[{index}]"
    title = item.get("title") if isinstance(item, dict) else None
    return BrokenIntegration(key=key, title=title if isinstance(title, str) and title else key, line=line)


def _all_broken(file: str, items: list, line: str, own: dict[int, list[str]] | None = None) -> LoadedIntegrations:
    """Every integration broken by a problem of the file (``line``); one with problems of its own
    (``own``, by index) keeps those, as the strict loader reports them. One entry per key."""
    own = own or {}
    by_key: dict[str, BrokenIntegration] = {}
    for i in range(len(items)):
        broken = _broken(items, i, "\n".join(own[i]) if i in own else line)
        by_key.setdefault(broken.key, broken)
    return LoadedIntegrations(file, [], list(by_key.values())
                              or [BrokenIntegration(WHOLE_FILE, "the integrations file", line)])


def _duplicate_key_line(items: list, raw: dict, source: str) -> str | None:
    # Checked over every integration, broken or not: two of one key are one problem of the file.
    seen: set[str] = set()
    for item in items:
        key = item.get("key") if isinstance(item, dict) else None
        if isinstance(key, str) and key in seen:
            return error_line(source, raw, ("integrations",), f"duplicate integration key {shown(key)}")
        if isinstance(key, str):
            seen.add(key)
    return None


def parse_for_dagster(text: str, path: Path | str) -> LoadedIntegrations:
    """The integrations file's text (from ``path``) with each broken integration set apart."""
    source = str(path)
    context = {"base_dir": Path(path).resolve().parent}
    try:
        raw = read_yaml(text, source)
    except ConfigError as exc:
        return _all_broken(source, [], str(exc))
    items = _items(raw)
    by_index: dict[int, list[str]] = {}
    file_lines: list[str] = []
    try:
        whole: IntegrationsFile | None = IntegrationsFile.model_validate(raw, context=context)
    except ValidationError as exc:
        whole = None
        for loc, line in error_lines(exc, raw, source):
            if len(loc) >= 2 and loc[0] == "integrations" and isinstance(loc[1], int):
                by_index.setdefault(loc[1], []).append(line)
            else:
                file_lines.append(line)
    duplicate = _duplicate_key_line(items, raw, source)
    if file_lines or duplicate:
        return _all_broken(source, items, "\n".join(file_lines) or duplicate, by_index)
    good = [i for i in range(len(items)) if i not in by_index]
    if not good:
        return LoadedIntegrations(source, [], [_broken(items, i, "\n".join(by_index[i])) for i in sorted(by_index)])
    if whole is None:
        try:  # the checks across integrations (token caches, custom field types), among those that validate
            named = [item.get("key") for item in items if isinstance(item, dict) and isinstance(item.get("key"), str)]
            whole = IntegrationsFile.model_validate({**raw, "integrations": [items[i] for i in good]},
                                                    context={**context, "named_keys": named})
        except ValidationError as exc:
            return _all_broken(source, items, "\n".join(line for _, line in error_lines(exc, raw, source)), by_index)
    loaded: list[EntraIntegration | WorkdayIntegration] = []
    for index, integration in zip(good, whole.integrations):
        lines = date_format_lines(integration, index, raw, source)
        if lines:
            by_index[index] = lines
        else:
            loaded.append(integration)
    broken = [_broken(items, index, "\n".join(by_index[index])) for index in sorted(by_index)]
    return LoadedIntegrations(source, loaded, broken, whole.runs, whole.contacts_directory)


def load_for_dagster(path: Path | str | None = None) -> LoadedIntegrations:
    """The integrations file (``path``, ``$ENTRA_PIPELINE_CONFIG`` or the default), read as
    ``parse_for_dagster`` does; a file that cannot be read leaves everything broken."""
    try:
        text, file = read_integrations_text(path)
    except ConfigError as exc:
        return _all_broken(str(path if path is not None else config_path()), [], str(exc))
    return parse_for_dagster(text, file)
