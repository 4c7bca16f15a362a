"""The registry of open WebSocket tunnels: re-admission, drain and the gauges.

It outlives any one relay: the aiohttp relay (``ws_relay``) and the raw tunnel (``ws_tunnel``)
both register here. The hub knows a tunnel only as something it can close; who relays the
bytes, and how, is theirs.

* A preview's tunnels are admitted again when its route changes (an invalidation) and when one
  of its tokens runs out, and closed with 1008 when they would no longer be let in; other
  previews' tunnels are untouched. The decision is the app's callback (``Readmit``), so the
  edge does not carry admission or token code.
* Drain (``close_all``) closes every tunnel, 1001 at shutdown, and refuses new ones.
* No task per tunnel: re-admission runs in the coroutine that awaits the tunnel's end, woken by
  a future that an invalidation or a ``loop.call_at`` timer resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.errors import ShuttingDown
from gateway.core.readmission import next_token_expiry
from gateway.core.records import Route
from gateway.core.ws_close import POLICY_VIOLATION
from gateway.store.base import FLUSH_ALL

logger = logging.getLogger("gateway.websocket")

DRAIN_TIMEOUT_S = 2.0
"""Default bound of ``close_all``: well inside the default shutdown grace (10 s)."""


@dataclass(frozen=True, slots=True)
class WsLimits:
    idle_timeout_s: float
    max_lifetime_s: float
    ping_interval_s: float
    max_message_bytes: int
    handshake_timeout_s: float
    close_timeout_s: float = 5.0
    """How long a side gets to answer our close frame before its connection is dropped."""


class Tunnel(Protocol):
    """What the hub needs of an open WebSocket."""

    def close(self, code: int, reason: str, *, timeout_s: float | None = None) -> None:
        """Start closing both sides with ``code``; a peer that does not answer within
        ``timeout_s`` (the tunnel's own bound when None) is dropped. The first call wins."""

    def buffered_bytes(self) -> int:
        """Bytes written towards the client that its socket has not taken yet."""


class Readmit(Protocol):
    """The app's re-admission: looks the route up again and asks whether the upgrade would be
    let in now."""

    @property
    def policy(self) -> object | None:
        """The admission policy the check runs under (None: tokens cannot be checked)."""

    async def __call__(self, host: str, admitted: Route, credentials: object) -> str | Route:
        """Why the tunnel must close, or the route it stays on. ``credentials`` is what the
        edge admitted the upgrade with, passed through untouched. Must not raise for a store
        outage: a tunnel outlives one, as cached HTTP routes do."""


class _Entry:
    __slots__ = ("checked_to", "credentials", "host", "route", "timer", "tunnel", "wake")

    def __init__(self, tunnel: Tunnel, host: str, route: Route, credentials: object) -> None:
        self.tunnel = tunnel
        self.host = host
        """The host the client asked for, not the route's key: a wildcard route is found
        through the request host, as the edge found it."""
        self.route = route
        self.credentials = credentials
        self.checked_to = time.time()
        """Wall-clock time up to which token expiries have triggered a re-admission."""
        self.wake: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    def rouse(self) -> None:
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    def expired(self) -> None:
        self.checked_to = time.time()
        self.rouse()


class WebSocketHub:
    def __init__(self, readmit: Readmit | None = None, *, close_timeout_s: float = 5.0) -> None:
        self._readmit = readmit
        self._close_timeout_s = close_timeout_s
        self._live: dict[str, set[_Entry]] = {}
        self._all: dict[Tunnel, _Entry] = {}
        self._emptied = asyncio.Event()
        self._draining = False

    @property
    def admission_policy(self) -> object | None:
        return None if self._readmit is None else self._readmit.policy

    @property
    def open_count(self) -> int:
        return len(self._all)

    @property
    def draining(self) -> bool:
        return self._draining

    def refuse_if_draining(self) -> None:
        if self._draining:
            raise ShuttingDown("The gateway is restarting; reconnect in a moment.", retry_after_s=1)

    def buffered_bytes(self) -> int:
        """Bytes written towards clients that their sockets have not taken yet (a gauge; the
        backpressure test checks that it stays around one message, however fast the app
        sends)."""
        return sum(t.buffered_bytes() for t in list(self._all))

    @contextlib.contextmanager
    def registered(
        self, tunnel: Tunnel, route: Route, host: str, credentials: object = None
    ) -> Iterator[None]:
        """Holds ``tunnel`` in the registry (so drain and re-admission reach it) until exit."""
        entry = _Entry(tunnel, host or route.hostname, route, credentials)
        self._all[tunnel] = entry
        self._live.setdefault(route.hostname, set()).add(entry)
        try:
            yield
        finally:
            self._forget(entry)

    def _forget(self, e: _Entry) -> None:
        if e.timer is not None:
            e.timer.cancel()
        self._all.pop(e.tunnel, None)
        self._emptied.set()
        peers = self._live.get(e.route.hostname)
        if peers is not None:
            peers.discard(e)
            if not peers:
                del self._live[e.route.hostname]

    async def readmit_until(self, tunnel: Tunnel, ended: asyncio.Future[Any]) -> None:
        """Re-admit a registered ``tunnel`` on every invalidation and token expiry until
        ``ended`` resolves (it is never cancelled from here); close it with 1008 when it would
        no longer be let in."""
        entry = self._all[tunnel]
        loop = asyncio.get_running_loop()
        while not ended.done():
            entry.wake = loop.create_future()
            self._arm_expiry(entry, loop)
            await asyncio.wait((ended, entry.wake), return_when=asyncio.FIRST_COMPLETED)
            if entry.timer is not None:
                entry.timer.cancel()
            if ended.done():
                return
            why = await self._why_closed(entry)
            if why is not None:
                tunnel.close(POLICY_VIOLATION, why)
                await asyncio.wait((ended,))
                return

    def _arm_expiry(self, e: _Entry, loop: asyncio.AbstractEventLoop) -> None:
        # A token of this preview runs out: admit the tunnel again then, so one that came in
        # on that token closes (1008) instead of outliving it.
        expiry = next_token_expiry(e.route, e.checked_to)
        e.timer = (
            None if expiry is None else loop.call_at(loop.time() + expiry - time.time(), e.expired)
        )

    async def _why_closed(self, e: _Entry) -> str | None:
        if self._readmit is None:
            return None
        outcome = await self._readmit(e.host, e.route, e.credentials)
        if isinstance(outcome, str):
            return outcome
        e.route = outcome  # its token list is the one later expiries are read from
        return None

    def on_invalidation(self, hostname: str) -> None:
        # A flush after a resubscribe says nothing about any one route; re-check them all.
        # Re-checks of unrelated tunnels find their routes unchanged and leave them alone.
        targets = self._all.values() if hostname == FLUSH_ALL else self._live.get(hostname, ())
        for e in list(targets):
            e.rouse()

    def close_bound_s(self) -> float:
        """How long a closing tunnel waits for its peers now (shorter once draining)."""
        return self._close_timeout_s

    async def close_all(self, code: int, reason: str, *, timeout_s: float | None = None) -> None:
        """Close every open tunnel with ``code`` and refuse new ones; return when they are gone,
        or after ``timeout_s`` with stragglers' connections dropped.

        The default bound is short: at shutdown a peer that does not answer its close within
        it is cut, so that the process exits within its grace period."""
        self._draining = True
        bound = min(DRAIN_TIMEOUT_S, self._close_timeout_s) if timeout_s is None else timeout_s
        # Peers get the whole bound to answer, but no single close may outlast it.
        self._close_timeout_s = min(self._close_timeout_s, max(bound, 0.0))
        for tunnel in list(self._all):
            tunnel.close(code, reason, timeout_s=self._close_timeout_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound):
                while self._all:
                    await self._emptied.wait()
                    self._emptied.clear()
        if self._all:
            logger.warning("%d WebSockets did not close in time", len(self._all))
