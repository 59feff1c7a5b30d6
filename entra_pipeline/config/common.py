"""What every part of the integrations file shares: the strict model base, the error, how a value
from the file is shown in an error line, and the checks of URLs, host names and file paths."""

from __future__ import annotations

import ipaddress
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

import idna
from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo

from entra_pipeline.errors import PipelineError
from entra_pipeline.files import (MAX_PEM_FILE_BYTES, MAX_TEXT_FILE_BYTES, FileProblem, check_regular_file,
                                  read_file_limited)

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "data" / "integrations.yaml"
CONFIG_PATH_ENV = "ENTRA_PIPELINE_CONFIG"

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
ENV_NAME_MAX = 128
MAX_PATH_CHARS = 1024
MAX_URL_CHARS = 512
# Error messages show at most this many characters of a value from the file.
SHOWN_CHARS = 80
SHOWN_PATH_CHARS = 240


class ConfigError(PipelineError, ValueError):
    """The integrations file is invalid; the message is one line per problem."""


class StrictModel(BaseModel):
    """A section of the integrations file: unknown fields are mistakes, and values keep their YAML type."""

    # strict: YAML reads yes/no/on/off as true/false, and "5" is text; neither is taken as a number.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def shown(value: Any) -> str:
    """``value`` as an error message shows it: its repr, cut to about SHOWN_CHARS characters."""
    if isinstance(value, Path):
        value = str(value)
    text = repr(value)
    if len(text) <= SHOWN_CHARS:
        return text
    size = f" ({len(value):,} characters)" if isinstance(value, str) else ""
    return f"{text[:SHOWN_CHARS - 1]}…{size}"


def shown_path(path: Path | str) -> str:
    """A file's path as an error message shows it: whole unless absurdly long, then its start and
    its end (the file's name)."""
    text = str(path)
    if len(text) > SHOWN_PATH_CHARS:
        text = f"{text[:SHOWN_CHARS]}…{text[-SHOWN_CHARS:]}"
    return repr(text)


class DemoTenant(StrictModel):
    """Start the built-in Graph emulator with a generated directory instead of a real tenant."""

    users: int = Field(2000, ge=1, le=1_000_000)
    groups: int = Field(150, ge=1, le=100_000)
    seed: int = Field(7, ge=0, le=2**31 - 1)


def _script(char: str) -> str:
    """The writing system of a letter as Unicode names it (LATIN, CYRILLIC, GREEK, CJK...)."""
    return unicodedata.name(char, "UNKNOWN").split()[0]


def _mixed_scripts(label: str) -> tuple[str, str] | None:
    """(a letter of another script, the label's first script) when the label's letters come from
    more than one writing system, the way look-alike host names are made; None otherwise."""
    scripts: dict[str, str] = {}
    for char in label:
        if char.isalpha():
            scripts.setdefault(_script(char), char)
    # Letters that look alike across scripts are Latin, Cyrillic and Greek; Japanese names, say,
    # mix Han and kana legitimately.
    if len(scripts) < 2 or not scripts.keys() & {"LATIN", "CYRILLIC", "GREEK"}:
        return None
    first = "LATIN" if "LATIN" in scripts else next(iter(scripts))
    odd = next(char for script, char in scripts.items() if script != first)
    return odd, first


def _character(char: str) -> str:
    return f"{char!r} (U+{ord(char):04X} {unicodedata.name(char, 'unnamed character')})"


def _check_host(host: str) -> None:
    """An ASCII host name, IPv4 address or [IPv6] literal. An internationalised name is given in
    its punycode form (xn--...), and none may mix writing systems: a Cyrillic 'о' in 'micrоsoft'
    looks like the real host and is another."""
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1] if host.endswith("]") else "!")
        except ValueError:
            raise ValueError(f"host {shown(host)} is not a valid [IPv6] address") from None
        return
    if not host.isascii():
        char = next(c for c in host if not c.isascii())
        mixed = next((m for m in map(_mixed_scripts, host.split(".")) if m), None)
        if mixed:
            raise ValueError(f"host {shown(host)} has the non-ASCII character {_character(mixed[0])} among "
                             f"{mixed[1].title()} letters (a look-alike of another host?); host names must be ASCII")
        try:
            ascii_host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError:
            raise ValueError(f"host {shown(host)} has the non-ASCII character {_character(char)} and is not a "
                             "valid internationalised name; host names must be ASCII") from None
        raise ValueError(f"host {shown(host)} has the non-ASCII character {_character(char)}; give the name "
                         f"in its ASCII (punycode) form, {ascii_host!r}")
    labels = host.split(".")
    label_shape = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    if len(host) > 253 or not all(re.fullmatch(label_shape, label) for label in labels):
        raise ValueError(f"host {shown(host)} is not a valid host name (letters, digits, - and . in labels of at "
                         "most 63 characters)")
    for label in labels:
        if label.lower().startswith("xn--"):
            try:
                decoded = idna.decode(label)
            except idna.IDNAError:
                raise ValueError(f"host {shown(host)}: {label!r} is not valid punycode") from None
            mixed = _mixed_scripts(decoded)
            if mixed:
                raise ValueError(f"host {shown(host)}: {label!r} stands for {decoded!r}, whose character "
                                 f"{_character(mixed[0])} mixes writing systems (a look-alike of another "
                                 "host?); host names must not mix scripts")


def https_url(value: str | None) -> str | None:
    """A service's base URL: https, a sound ASCII host, no query or user name; without a trailing /."""
    if value is None:
        return None
    if len(value) > MAX_URL_CHARS:
        raise ValueError(f"a URL of {len(value):,} characters; at most {MAX_URL_CHARS}")
    # No user info either: "https://login.microsoftonline.com@evil.example" is a host of evil.example.
    match = re.fullmatch(r"https://([^/\s?#@]+)(/[^\s?#@]*)?", value)
    if not match:
        raise ValueError(f"must be an https:// URL without query or user name, got {shown(value)}")
    authority, path = match.groups()
    host, port = authority, None
    port_match = re.fullmatch(r"(.*?):([0-9]*)", authority)
    if port_match and not authority.endswith("]"):
        host, port = port_match.groups()
    _check_host(host)
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port in {shown(value)} (1 to 65535)")
    if path and not (path.isascii() and path.isprintable()):
        raise ValueError(f"the path of {shown(value)} is not printable ASCII (percent-encode it)")
    return value.rstrip("/")


def plain_path(value: Path | str) -> Path:
    """A path as the file gives it: of sane length and without control characters."""
    text = str(value)
    if len(text) > MAX_PATH_CHARS:
        raise ValueError(f"a path of {len(text):,} characters; at most {MAX_PATH_CHARS}")
    if not text.isprintable():
        raise ValueError(f"path {shown(text)} has a control character")
    return Path(value)


def relative_to_file(value: Path | str | None, info: ValidationInfo) -> Path | None:
    """``value`` with a relative path taken relative to the integrations file."""
    # Relative to the integrations file, not to wherever Dagster runs.
    base = (info.context or {}).get("base_dir")
    if value is None:
        return None
    path = plain_path(value)
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path


def checked_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """A path field, relative to the integrations file: an existing regular file of sane size,
    except the token cache, which the login command creates. A CA bundle must hold PEM
    certificates: a wrong file would otherwise surface only as a TLS error on the first sync."""
    value = relative_to_file(value, info)
    if value is None:
        return None
    what = "CA bundle file" if info.field_name == "ca_bundle" else "file"
    try:
        if info.field_name == "token_cache_path":
            if os.path.lexists(value):
                check_regular_file(value, MAX_TEXT_FILE_BYTES)
        elif info.field_name == "ca_bundle":
            _check_pem_certificates(read_file_limited(value, MAX_PEM_FILE_BYTES))
        else:
            check_regular_file(value, MAX_PEM_FILE_BYTES)
    except FileProblem as exc:
        if info.field_name == "token_cache_path" and str(exc).startswith("is a directory"):
            raise ValueError(f"{shown_path(value)} is a directory; name the token cache file") from None
        raise ValueError(f"{what} {shown_path(value)} {exc}") from None
    return value


def _check_pem_certificates(data: bytes) -> None:
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise FileProblem("holds no PEM certificate (-----BEGIN CERTIFICATE-----); it must be the CA "
                           "certificates to trust, in PEM") from None
