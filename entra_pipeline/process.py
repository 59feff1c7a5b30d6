"""This process's memory, as the benchmark and run metadata report it."""

from __future__ import annotations

import resource
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
