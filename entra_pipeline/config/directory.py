"""The merged contact directory's settings (``contacts_directory`` in the integrations file): which
integration each contact field comes from when a person is in several, and what an exclusion in one
integration means for the others."""

from __future__ import annotations

from pydantic import Field, field_validator

from entra_pipeline.config.common import StrictModel, shown


class Precedence(StrictModel):
    """Integration keys, first wins. ``default`` orders every field not listed in ``fields``; an
    integration a list leaves out comes after those it names, in the file's order."""

    default: list[str] = Field(default_factory=list, max_length=1000)
    fields: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("default")
    @classmethod
    def _once(cls, value: list[str]) -> list[str]:
        _listed_once(value)
        return value

    @field_validator("fields")
    @classmethod
    def _each_once(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, order in value.items():
            try:
                _listed_once(order)
            except ValueError as exc:
                raise ValueError(f"field {shown(name)}: {exc}") from None
        return value


def _listed_once(order: list[str]) -> None:
    seen: set[str] = set()
    for key in order:
        if key in seen:
            raise ValueError(f"integration {shown(key)} is listed twice")
        seen.add(key)


class ContactsDirectory(StrictModel):
    """``all_contacts``: one contact per Unique Contact ID across every integration.

    ``excluded_anywhere`` (default true): a person whom any integration's exclusion rules leave out
    is not in the merged directory, even if another integration keeps them. Missing someone is
    recoverable; a message to someone who should not get it (on leave, left, a contractor the HR
    system excludes) is not. Set it to false to keep a person whom any integration keeps."""

    precedence: Precedence = Field(default_factory=Precedence)
    excluded_anywhere: bool = True

    def problems(self, named: set[str], fields: set[str] | None) -> list[str]:
        """Lines for integration keys the file does not name (``named``: its keys, broken
        integrations' included) and fields no integration has (``fields``; None: not judged)."""
        lines = []
        orders = [("contacts_directory.precedence.default", self.precedence.default)] + [
            (f"contacts_directory.precedence.fields.{name}", order) for name, order in self.precedence.fields.items()]
        for where, order in orders:
            lines += [f"{where}: no integration {shown(key)} in the integrations file" for key in order
                      if key not in named]
        lines += [f"contacts_directory.precedence.fields: {shown(name)} is no contact field (built-in or custom)"
                  for name in self.precedence.fields if fields is not None and name not in fields]
        return lines

    def order(self, field: str, keys: list[str]) -> list[str]:
        """The integrations ``field``'s value is taken from, first wins (``keys``: the file's order)."""
        first = self.precedence.fields.get(field, [])
        default = [k for k in self.precedence.default if k not in first]
        listed = first + default
        return [k for k in listed if k in keys] + [k for k in keys if k not in listed]
