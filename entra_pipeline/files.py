"""Files the configuration names, read with limits: a regular file of sane size, checked before
it is opened and again through its descriptor (a FIFO would block the read forever, /dev/zero
never ends, a directory or a huge file is a mistake). No Dagster, no configuration models."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from entra_pipeline.errors import PipelineError

#: The integrations file, the bulk selector CSV, the token cache.
MAX_TEXT_FILE_BYTES = 16 * 1024 * 1024
#: Certificates, private keys and CA bundles.
MAX_PEM_FILE_BYTES = 1024 * 1024

_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


class FileProblem(PipelineError):
    """Why a named file cannot be used: the end of a sentence that starts with the file's name."""


def _regular_file_problem(mode: int, size: int, limit: int) -> str | None:
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
        return f"is {kind}, not a regular file"
    if size > limit:
        return f"is {size / 1024 / 1024:,.1f} MB; at most {limit // 1024 // 1024} MB is read"
    return None


def check_regular_file(path: Path, limit: int) -> None:
    """Raise FileProblem unless ``path`` is a regular file of at most ``limit`` bytes (stat only)."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise FileProblem("does not exist") from None
    except OSError as exc:
        raise FileProblem(f"cannot be read ({exc.strerror})") from None
    problem = _regular_file_problem(info.st_mode, info.st_size, limit)
    if problem:
        raise FileProblem(problem)


def read_file_limited(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes; FileProblem otherwise.

    Checked before reading: a FIFO would block the read forever, /dev/zero never ends, and a
    directory or a huge file is a mistake. The file is opened without blocking and checked again
    through its descriptor, so it cannot be swapped for another kind between check and read."""
    check_regular_file(path, limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileProblem(f"cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        problem = _regular_file_problem(info.st_mode, info.st_size, limit)
        if problem:
            raise FileProblem(problem)
        data = file.read(limit + 1)
    if len(data) > limit:  # it grew since the check
        raise FileProblem(f"is larger than {limit // 1024 // 1024} MB")
    return data
