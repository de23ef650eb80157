"""Helpers shared by the benchmarks."""

from __future__ import annotations


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the process's own peak RSS since exec (ru_maxrss would include the parent's)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
