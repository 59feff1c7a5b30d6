"""This process's memory, as the benchmark and run metadata report it; and which process a pid
names, so that a recorded pid is signalled only while it is still the process recorded."""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    VmHWM is the high-water mark of the process's own memory. ru_maxrss would also count what a
    parent held when it started this process: Linux keeps the fork-time RSS across exec, so a
    child of a large benchmark process seems as large as its parent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # no /proc (macOS: bytes differ)


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (field 22 of /proc/PID/stat): with
    the pid, what tells a process apart from a later one given the same pid. None when no such
    process runs (a zombie counts as gone) or there is no /proc to ask."""
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
    start = process_start_ticks(pid)
    if start is None:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return {"start_time": start, "cmdline": [arg.decode("utf-8", "replace") for arg in cmdline.split(b"\0")[:-1]]}


def is_recorded_process(pid: int, identity: object) -> bool:
    """True while ``pid`` is still the process whose ``process_identity`` was recorded."""
    return isinstance(identity, dict) and identity.get("start_time") is not None \
        and process_identity(pid) == identity


def signal_recorded_process(pid: int, identity: object, signum: int = signal.SIGTERM) -> bool:
    """Send ``signum`` to ``pid`` only if it is still the recorded process; False when it is not
    (gone, recycled by another program, or not ours to signal). On Linux the check and the signal
    go through one pidfd, so the pid cannot be reused between them."""
    if not is_recorded_process(pid, identity):
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):
        pidfd = None  # no pidfd (not Linux, or an old kernel): check, then signal by pid
    try:
        # Checked again with the pidfd open: a match now means the pidfd names the process checked.
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
