"""How busy the machine's cores are, and how many threads a CPU-bound job should take (no torch import)."""

from __future__ import annotations

import os
import time


def usable_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def busy_cores(interval: float = 0.5) -> float:
    """Cores' worth of CPU time the whole machine used over ``interval`` seconds (Linux ``/proc/stat``;
    elsewhere the 1-minute load average)."""

    def snapshot() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        return sum(values), values[3] + (values[4] if len(values) > 4 else 0)  # total, idle + iowait

    try:
        total0, idle0 = snapshot()
        time.sleep(interval)
        total1, idle1 = snapshot()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return (os.cpu_count() or 1) * (1.0 - (idle1 - idle0) / max(total1 - total0, 1))


def steady_busy_cores(samples: int = 3, interval: float = 0.5) -> float:
    """The median of ``samples`` :func:`busy_cores` readings: a process that keeps a core busy shows in every
    reading, a blip (a shell command, an editor saving) in one at most."""
    readings = sorted(busy_cores(interval) for _ in range(max(1, samples)))
    return readings[len(readings) // 2]


def free_cores(busy: float | None = None) -> int:
    """The usable cores that other processes leave free, at least 1 (``busy``: measured when None)."""
    cores = usable_cores()
    busy = steady_busy_cores() if busy is None else busy
    return max(1, min(cores, int(round(cores - busy))))
