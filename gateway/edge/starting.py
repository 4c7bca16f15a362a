"""Meeting a sandbox that is asleep or still starting (issue 14): wake it, hold the request or
show the waiting page, and answer the page's readiness poll.

- A sandbox in **standby** gets one wake call (``wake.Waker``); its requests are held until the
  port accepts a connection or ``wakeTimeoutS`` passes (then 503 ``sandbox_starting``).
- A **running** sandbox whose port refuses: a retryable request (idempotent, no body) is held
  for ``GATEWAY_UPSTREAM_STARTUP_WAIT_S`` (then 502 ``upstream_refused``, as without holding).
- A browser navigation gets the waiting page at once instead of being held.
"""

from __future__ import annotations

import asyncio
import json

from gateway.core.errors import SandboxStarting, UpstreamRefused
from gateway.core.planner import Inspected
from gateway.core.records import Route
from gateway.core.startup import READY_PATH, Wait, how_to_wait
from gateway.edge.holds import StartupHolds
from gateway.edge.pool import UpstreamConnection, UpstreamPool
from gateway.edge.upstream_conn import Target
from gateway.edge.wake import Waker
from gateway.ops import log

READY_POLL_S = 10.0
"""How long one readiness poll of the waiting page is held (a long poll, not a busy one)."""


class Starting:
    def __init__(self, holds: StartupHolds, waker: Waker, startup_wait_s: float) -> None:
        self.holds = holds
        self.waker = waker
        self._startup_wait_s = startup_wait_s

    @staticmethod
    def is_ready_poll(inspected: Inspected) -> bool:
        # On every request of a running preview: the cheap test first.
        head = inspected.head
        target = head.target
        return (
            target.startswith(READY_PATH)
            and head.method == "GET"
            and (target.partition("?")[0] == READY_PATH)
        )

    async def ready_answer(self, route: Route, target: Target) -> tuple[int, bytes]:
        """The waiting page's poll: held until the port answers or ``READY_POLL_S``."""
        if route.standby:
            await self.waker.wake(route)
        ready = await self.holds.wait(target, READY_POLL_S)
        return (200 if ready else 503), json.dumps({"ready": ready}).encode()

    async def before_dial(
        self, inspected: Inspected, route: Route, target: Target, record: log.AccessRecord
    ) -> None:
        """Standby: wake the sandbox, then show the page or hold the request."""
        if not route.standby:
            return
        await self.waker.wake(route)
        if _wait(inspected, retryable=True, standby=True) is Wait.PAGE:
            raise self._page(route)
        limit_s = float(route.lifecycle.wake_timeout_s)
        if not await self._hold(target, limit_s, record, "standby"):
            raise SandboxStarting(
                f"The sandbox did not start within {route.lifecycle.wake_timeout_s} s; "
                "try again shortly.",
                port=route.port,
                preview=route.preview,
            )

    async def acquire(
        self,
        pool: UpstreamPool,
        inspected: Inspected,
        route: Route,
        target: Target,
        *,
        retryable: bool,
        record: log.AccessRecord,
        fresh: bool = False,
    ) -> UpstreamConnection:
        """A connection, holding a retryable request while the port refuses (startup wait)."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            try:
                return await pool.acquire(*target, fresh=fresh)
            except UpstreamRefused:
                if not self._startup_wait_s:
                    raise
                wait = _wait(inspected, retryable=retryable, standby=False)
                if wait is Wait.NONE:
                    raise
                if wait is Wait.PAGE:
                    raise self._page(route) from None
                if deadline is None:
                    deadline = loop.time() + self._startup_wait_s
                left = deadline - loop.time()
                if left <= 0 or not await self._hold(target, left, record, "startup"):
                    raise

    async def _hold(
        self, target: Target, limit_s: float, record: log.AccessRecord, reason: str
    ) -> bool:
        loop = asyncio.get_running_loop()
        started = loop.time()
        ready = await self.holds.wait(target, limit_s)
        held_ms = round((loop.time() - started) * 1000, 2)
        before = record.extra.get("held_ms", 0.0)
        record.extra["held_ms"] = round(held_ms + (before if isinstance(before, float) else 0), 2)
        record.extra["held_for"] = reason
        if not ready:
            record.extra["gave_up"] = True
        return ready

    @staticmethod
    def _page(route: Route) -> SandboxStarting:
        return SandboxStarting(
            f"Starting {route.preview}… The app must listen on 0.0.0.0:{route.port} "
            "(all interfaces), not only on localhost. This page reloads itself when it answers.",
            port=route.port,
            preview=route.preview,
            waiting=True,
        )


def _wait(inspected: Inspected, *, retryable: bool, standby: bool) -> Wait:
    head = inspected.head
    return how_to_wait(
        method=head.method, retryable=retryable, headers=head.headers, standby=standby
    )
