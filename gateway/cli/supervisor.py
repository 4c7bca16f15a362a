"""``GATEWAY_WORKERS`` > 1: one supervisor process and N workers.

Each worker is ``python -m gateway`` with a hidden ``--worker-index``: a whole gateway with its
own event loop, route cache and invalidation subscription, bound to the shared ports with
``SO_REUSEPORT``, so the kernel spreads connections across them. The supervisor holds no socket
and serves nothing; it

* restarts a worker that exits on its own (after a short backoff; it gives up, and stops the
  others, when workers keep dying within seconds of starting: a bad setting, a port in use);
* forwards SIGTERM and SIGINT (drain) and SIGHUP (re-read the API keys file) to every worker,
  and exits once all have drained;
* generates the one API key all workers share when none is configured.

Workers get SIGTERM if the supervisor itself dies (``PR_SET_PDEATHSIG``), so none outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from gateway.ops.settings import Settings

log = logging.getLogger("gateway.supervisor")

QUICK_EXIT_S = 5.0
"""A worker that exits sooner than this after starting counts as failing to start."""
MAX_QUICK_EXITS = 5
"""Consecutive quick exits of one worker after which the supervisor gives up."""


class Supervisor:
    def __init__(self, settings: Settings, argv: Sequence[str]) -> None:
        self.count = settings.workers
        self._argv = list(argv)
        self._env = dict(os.environ)
        self.api_key: str | None = None
        if not settings.api_keys and settings.api_keys_file is None:
            # Each worker would otherwise generate its own, and a client's key would work on
            # one connection in N.
            self.api_key = "pgw_" + secrets.token_urlsafe(24)
            self._env["GATEWAY_API_KEYS"] = f"default:{self.api_key}"
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stop = asyncio.Event()
        self.failed = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.forward, signal.SIGHUP)
        with tempfile.TemporaryDirectory(prefix="preview-gateway-") as directory:
            async with asyncio.TaskGroup() as tasks:
                for index in range(self.count):
                    tasks.create_task(self._keep(index, Path(directory)), name=f"worker {index}")
        return 1 if self.failed else 0

    def forward(self, sig: int) -> None:
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    def pids(self) -> dict[int, int]:
        return {index: proc.pid for index, proc in self._procs.items()}

    async def _keep(self, index: int, directory: Path) -> None:
        """Run worker ``index`` until the supervisor stops, restarting it whenever it exits."""
        loop = asyncio.get_running_loop()
        quick_exits = 0
        while not self._stop.is_set():
            started = loop.time()
            proc = await self._spawn(index, directory)
            code = await self._wait_or_stop(proc)
            if self._stop.is_set():
                return
            quick_exits = quick_exits + 1 if loop.time() - started < QUICK_EXIT_S else 0
            if quick_exits >= MAX_QUICK_EXITS:
                log.error("worker %d keeps exiting (code %s); stopping", index, code)
                self.failed = True
                self._stop.set()
                return
            delay = min(0.1 * 2**quick_exits, 5.0)
            log.warning("worker %d exited (code %s); restarting in %.1f s", index, code, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()

    async def _spawn(self, index: int, directory: Path) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            *self._argv,
            "--worker-index",
            str(index),
            "--worker-dir",
            str(directory),
            env=self._env,
            preexec_fn=_die_with_parent,  # only calls prctl
        )
        self._procs[index] = proc
        log.info("worker %d started (pid %d)", index, proc.pid)
        return proc

    async def _wait_or_stop(self, proc: asyncio.subprocess.Process) -> int:
        """The worker's exit code; on stop, it is told to drain first and awaited."""
        async with asyncio.TaskGroup() as tasks:
            exited = tasks.create_task(proc.wait())
            stopping = tasks.create_task(self._stop.wait())
            await asyncio.wait([exited, stopping], return_when=asyncio.FIRST_COMPLETED)
            if self._stop.is_set() and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            stopping.cancel()
        return exited.result()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it if the supervisor dies (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)
