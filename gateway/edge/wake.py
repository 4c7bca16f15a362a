"""The wake call: a request for a sandbox in standby makes one signed ``POST wakeUrl`` across
all replicas (issue 14).

The store's short lock decides which replica calls (``take_wake_lock``, ``SET NX PX`` on Redis):
a burst of requests on many replicas is one call. Each replica also remembers for the lock's
life that it asked, so a burst costs one store round trip per replica, not one per request. The
call runs in the holds' TaskGroup; held requests wait for the port, not for the orchestrator.
"""

from __future__ import annotations

import json
import logging
import time

import aiohttp

from gateway.core.records import Route
from gateway.core.wake_signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from gateway.edge.holds import StartupHolds
from gateway.store.base import WakeLocks

log = logging.getLogger("gateway.wake")

OUTCOMES = ("called", "failed", "deduplicated", "unsigned")
"""``gateway_wakes`` by outcome: the orchestrator answered 2xx; it failed or answered
otherwise; another request or replica holds the lock; no ``GATEWAY_WAKE_SECRET`` is set."""


class Waker:
    def __init__(
        self,
        locks: WakeLocks,
        holds: StartupHolds,
        secret: bytes | None,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        self._locks = locks
        self._holds = holds
        self._secret = secret
        self._timeout_s = timeout_s
        self._asked: dict[tuple[str, str], float] = {}
        self.stats = dict.fromkeys(OUTCOMES, 0)

    async def wake(self, route: Route) -> None:
        """Make sure the sandbox is being woken; returns at once (no wait for the call)."""
        key = (route.workspace, route.sandbox)
        url = route.lifecycle.wake_url
        if url is None:
            return
        now = time.monotonic()
        if self._asked.get(key, 0.0) > now:
            self.stats["deduplicated"] += 1
            return
        ttl_s = float(route.lifecycle.wake_timeout_s)
        if len(self._asked) > 4096:
            self._asked = {k: t for k, t in self._asked.items() if t > now}
        self._asked[key] = now + ttl_s
        if not await self._locks.take_wake_lock(route.workspace, route.sandbox, ttl_s):
            self.stats["deduplicated"] += 1
            return
        if self._secret is None:
            self.stats["unsigned"] += 1
            log.error("sandbox %s is in standby but GATEWAY_WAKE_SECRET is unset", route.sandbox)
            return
        self._holds.spawn(self._call(url, route.workspace, route.sandbox, self._secret))

    async def _call(self, url: str, workspace: str, sandbox: str, secret: bytes) -> None:
        body = json.dumps({"workspace": workspace, "sandbox": sandbox}).encode()
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign(secret, stamp, body),
        }
        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(url, data=body, headers=headers, allow_redirects=False) as resp,
            ):
                ok = 200 <= resp.status < 300
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            ok, status = False, 0
            log.warning("wake call for sandbox %s failed (%s)", sandbox, type(exc).__name__)
        self.stats["called" if ok else "failed"] += 1
        if status and not ok:
            log.warning("wake call for sandbox %s answered %d", sandbox, status)
