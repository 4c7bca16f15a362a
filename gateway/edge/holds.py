"""Requests held until a sandbox port accepts connections (issue 14).

A held request costs a future, not a task, and nobody polls for it: one probe loop per target
(host, port) dials with backoff and resolves every waiter of that target at the first accepted
connection. A waiter's limit is a timer on the loop. The probe loops and the wake calls run in
the ``TaskGroup`` of ``run`` (the app runs it with the other background work).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from gateway.core.errors import (
    GatewayError,
    UpstreamRefused,
    UpstreamTimedOut,
    UpstreamUnreachable,
)
from gateway.edge.pool import UpstreamPool
from gateway.edge.upstream_conn import Target
from gateway.ops import log

_NOT_YET = (UpstreamRefused, UpstreamTimedOut, UpstreamUnreachable)
"""Dial failures that a sandbox still starting (or still resuming) answers with."""


class _Entry:
    __slots__ = ("probing", "waiters")

    def __init__(self) -> None:
        self.waiters: set[asyncio.Future[bool]] = set()
        self.probing = False


class StartupHolds:
    def __init__(
        self,
        probe: Callable[[Target], Awaitable[bool]],
        *,
        first_delay_s: float = 0.05,
        max_delay_s: float = 1.0,
    ) -> None:
        self._probe = probe
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._targets: dict[Target, _Entry] = {}
        self._spawn: list[Coroutine[Any, Any, None]] = []
        self._wakeup = asyncio.Event()
        self.held = 0
        """Requests waiting now (a gauge)."""

    @classmethod
    def on_pool(cls, pool: UpstreamPool) -> StartupHolds:
        """Probes are real dials through the pool (allowed_targets and all); the connection a
        probe opens is parked there, so the first waiter gets it warm."""

        async def probe(target: Target) -> bool:
            try:
                conn = await pool.acquire(*target, fresh=True)
            except _NOT_YET:
                return False
            except GatewayError:
                return True  # not a startup matter: the request meets the error itself
            pool.release(conn, reusable=True)
            return True

        return cls(probe)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in this component's TaskGroup (the wake calls)."""
        self._spawn.append(work)
        self._wakeup.set()

    async def wait(self, target: Target, limit_s: float) -> bool:
        """True once ``target`` accepts a connection; False after ``limit_s``."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        entry = self._targets.get(target)
        if entry is None:
            entry = self._targets[target] = _Entry()
        entry.waiters.add(waiter)
        timer = loop.call_later(limit_s, _settle, waiter, False)
        if not entry.probing:
            entry.probing = True
            self.spawn(self._probe_loop(target, entry))
        self.held += 1
        try:
            return await waiter
        finally:
            self.held -= 1
            timer.cancel()
            entry.waiters.discard(waiter)

    async def _probe_loop(self, target: Target, entry: _Entry) -> None:
        delay = self._first_delay_s
        try:
            while entry.waiters:
                if await self._probe_safely(target):
                    for waiter in list(entry.waiters):
                        _settle(waiter, True)
                    entry.waiters.clear()
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_delay_s)
        finally:
            entry.probing = False
            if not entry.waiters and self._targets.get(target) is entry:
                del self._targets[target]

    async def _probe_safely(self, target: Target) -> bool:
        try:
            return await self._probe(target)
        except Exception:
            # Raised into run's TaskGroup, it would stop the edge: the waiters go on instead
            # and meet whatever the dial gives them.
            log.edge.exception("unexpected error while probing a starting sandbox")
            return True

    async def run(self) -> None:
        """Probe loops and wake calls, until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                work, self._spawn = self._spawn, []
                for coro in work:
                    tasks.create_task(coro)


def _settle(waiter: asyncio.Future[bool], ready: bool) -> None:
    if not waiter.done():
        waiter.set_result(ready)
