"""Which process wrote the emulator's ``state.json``: its pid plus its start time and command line,
so ``stop`` signals a recorded pid only while it is still that emulator (pids are recycled).

The identity recorded here is what ``entra_pipeline.demo_tenant`` reads back: a dict
``{"start_time": clock ticks after boot, "cmdline": [args]}``. The emulator keeps its own copy
of these few lines because it imports nothing from the pipeline it stands in for.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat; None when the process is gone (a zombie counts as gone)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2**31:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ")": split after the last.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_identity(pid: int) -> dict | None:
    """Process ``pid``'s start time and command line; None when it is not running or there is no
    /proc to ask (then nothing can be verified, and a recorded pid is never signalled)."""
    start = _start_ticks(pid)
    if start is None:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return {"start_time": start, "cmdline": [arg.decode("utf-8", "replace") for arg in cmdline.split(b"\0")[:-1]]}


def is_recorded_process(pid: int, identity: object) -> bool:
    """True while ``pid`` is still the process whose identity was recorded."""
    return isinstance(identity, dict) and identity.get("start_time") is not None \
        and process_identity(pid) == identity


def signal_recorded_process(pid: int, identity: object, signum: int = signal.SIGTERM) -> bool:
    """Send ``signum`` to ``pid`` only while it is still the recorded process; checked again through
    a pidfd where there is one, so the pid cannot be reused between the check and the signal."""
    if not is_recorded_process(pid, identity):
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):
        pidfd = None  # no pidfd (not Linux, or an old kernel): check, then signal by pid
    try:
        if not is_recorded_process(pid, identity):
            return False
        if pidfd is None:
            os.kill(pid, signum)
        else:
            signal.pidfd_send_signal(pidfd, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)
