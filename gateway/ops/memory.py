"""The memory budget's reading: the process's resident set, from ``/proc/self/statm`` once a
second (one small read; no psutil, no per-request syscall). The edge asks ``pressure`` on every
new request and WebSocket, which is an attribute read.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from gateway.core.limits import Pressure, memory_pressure
from gateway.ops import log

STATM = Path("/proc/self/statm")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class MemoryWatch:
    def __init__(self, limit_mib: int, *, statm: Path = STATM, interval_s: float = 1.0) -> None:
        self.limit_bytes = limit_mib * 1024 * 1024
        self.rss_bytes = 0
        self.level = Pressure.NONE
        self._statm = statm
        self._interval_s = interval_s

    def pressure(self) -> Pressure:
        return self.level

    def sample(self) -> None:
        """Read the resident set size now and set ``level`` from it. A missing ``/proc`` (not
        Linux) leaves the budget unenforced rather than refusing everything."""
        try:
            fields = self._statm.read_text().split()
            self.rss_bytes = int(fields[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            self.level = Pressure.NONE
            return
        level = memory_pressure(self.rss_bytes, self.limit_bytes)
        if level is not self.level:
            log.edge.warning(
                "memory budget: resident set %d MiB of %d MiB, level %s",
                self.rss_bytes >> 20,
                self.limit_bytes >> 20,
                level.name.lower(),
            )
        self.level = level

    async def run(self) -> None:
        if not self.limit_bytes:
            return
        while True:
            self.sample()
            await asyncio.sleep(self._interval_s)
