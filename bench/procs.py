"""Child processes and what we read about them from /proc.

Every process the benchmark starts goes through ``Child``, whose ``stop`` sends SIGTERM to that
one pid, waits, then SIGKILLs it: nothing is ever killed by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"


def free_port() -> int:
    """A port that was free a moment ago. The race with other engineers' processes is small and
    a clash shows up as a start-up failure, not as wrong numbers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child before exec: if the runner itself is SIGKILLed, the kernel sends the
    child SIGTERM, so no gateway or upstream outlives a crashed run. Children are spawned from
    the main thread only, because the signal fires when the spawning thread exits."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def child_setup(cpus: set[int] | None) -> Callable[[], None]:
    """The pre-exec hook of a child: tied to our life, and pinned to ``cpus`` when given. The
    affinity is set before exec, so every thread and process the child later makes (nginx's
    worker, py-spy's sampler) inherits it."""

    def setup() -> None:
        die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


class Child:
    def __init__(
        self,
        name: str,
        argv: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path = REPO,
        cpus: set[int] | None = None,
    ):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=child_setup(cpus),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def wait_http_ok(url: str, child: Child, timeout_s: float = 20.0) -> None:
    """Poll ``url`` until it answers 200; fail early if the child died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited during start-up:\n{child.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} not ready after {timeout_s}s:\n{child.tail()}")


def wait_tcp(port: int, child: Child, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited during start-up:\n{child.tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} not listening on {port} after {timeout_s}s")


# ── /proc readings ──────────────────────────────────────────────────────────────────────────
def status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS since start) of ``pid``, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far. Unlike req/s, CPU spent per request barely
    moves when other engineers load the shared cores, so it is the steadier efficiency figure."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def system_busy_s() -> float:
    """CPU time all cores spent outside idle and iowait since boot, from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


@dataclass
class CpuLedger:
    """How much of the machine other people's processes took while we measured.

    Ours = this process + every child we have waited for (wrk runs, stopped gateways, with
    their own children) + the children still running (the app, nginx). Whatever else the
    cores did was someone else's work competing with the benchmark.
    """

    live_pids: list[int] = field(default_factory=list)

    def _ours(self) -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        for pid in self.live_pids:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def snapshot(self) -> tuple[float, float, float]:
        return time.monotonic(), system_busy_s(), self._ours()

    @staticmethod
    def share(
        before: tuple[float, float, float], after: tuple[float, float, float]
    ) -> dict[str, float]:
        wall = after[0] - before[0]
        capacity = wall * len(os.sched_getaffinity(0)) or 1.0
        ours = after[2] - before[2]
        others = max(0.0, (after[1] - before[1]) - ours)
        return {
            "wall_s": round(wall, 1),
            "ours_pct": round(100 * ours / capacity, 1),
            "others_pct": round(100 * others / capacity, 1),
        }


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def children_of(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


@dataclass
class RssSampler:
    """Samples VmRSS of one pid every ``interval_s`` in the event loop while a transfer runs in
    a thread. 50 ms is short enough to catch a buffer that fills and drains within a second."""

    pid: int
    interval_s: float = 0.05
    samples: list[int] = field(default_factory=list)
    baseline_kib: int = 0
    hwm_before_kib: int = 0
    hwm_after_kib: int = 0
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RssSampler:
        first = status_kib(self.pid)
        self.baseline_kib, self.hwm_before_kib = first["VmRSS"], first["VmHWM"]
        self.samples.append(self.baseline_kib)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        last = status_kib(self.pid)
        self.samples.append(last["VmRSS"])
        self.hwm_after_kib = last["VmHWM"]

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            with contextlib.suppress(OSError):
                self.samples.append(status_kib(self.pid)["VmRSS"])

    def summary(self) -> dict[str, float]:
        peak = max(self.samples)
        return {
            "rss_baseline_mib": round(self.baseline_kib / 1024, 1),
            "rss_peak_mib": round(peak / 1024, 1),
            "rss_growth_mib": round((peak - self.baseline_kib) / 1024, 1),
            "hwm_before_mib": round(self.hwm_before_kib / 1024, 1),
            "hwm_after_mib": round(self.hwm_after_kib / 1024, 1),
            "samples": len(self.samples),
        }
