"""The memory budget's reading (``gateway.ops.memory``), from a real statm-format file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.core.limits import Pressure
from gateway.ops.memory import STATM, MemoryWatch

PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize(
    ("resident_mib", "level"),
    [(50, Pressure.NONE), (90, Pressure.WEBSOCKETS), (96, Pressure.REQUESTS)],
)
def test_levels_follow_the_resident_set(tmp_path: Path, resident_mib: int, level: Pressure) -> None:
    statm = tmp_path / "statm"
    pages = resident_mib * 1024 * 1024 // PAGE
    statm.write_text(f"{pages * 3} {pages} 100 10 0 {pages} 0\n")
    watch = MemoryWatch(100, statm=statm)
    watch.sample()
    assert watch.rss_bytes == pages * PAGE
    assert watch.pressure() is level


def test_an_unreadable_statm_enforces_nothing(tmp_path: Path) -> None:
    watch = MemoryWatch(1, statm=tmp_path / "missing")
    watch.sample()
    assert watch.pressure() is Pressure.NONE


def test_this_process_is_read_from_proc() -> None:
    watch = MemoryWatch(1)
    watch.sample()
    if STATM.exists():
        assert watch.rss_bytes > 1024 * 1024
        assert watch.pressure() is Pressure.REQUESTS, "a python process is over 1 MiB"
