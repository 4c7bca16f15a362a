"""The registry of open WebSocket tunnels: re-admission, drain and the gauges.

It outlives any one relay: the aiohttp relay (``ws_relay``) and the raw tunnel (``ws_tunnel``)
both register here. The hub knows a tunnel only as something it can close; who relays the
bytes, and how, is theirs.

* A preview's tunnels are admitted again when its route changes (an invalidation) and when one
  of its tokens runs out, and closed with 1008 when they would no longer be let in; other
  previews' tunnels are untouched. The decision is the app's callback (``Readmit``), so the
  edge does not carry admission or token code.
* Drain (``close_all``) closes every tunnel, 1001 at shutdown, and refuses new ones.
* No task per tunnel: ``attach`` works from callbacks, and re-admission runs in the hub's one
  worker (``run``), woken by invalidations and by ``loop.call_at`` timers at token expiries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from gateway.core.errors import ShuttingDown
from gateway.core.readmission import next_token_expiry
from gateway.core.records import Route
from gateway.core.ws_close import GOING_AWAY, POLICY_VIOLATION
from gateway.ops import log
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


@dataclass(frozen=True, slots=True)
class TunnelEnd:
    """How a tunnel ended: who closed it (client, upstream or gateway), with which code and
    reason, and what passed (bytes each way as read from each side)."""

    closed_by: str
    code: int
    reason: str
    messages: int
    bytes_up: int
    bytes_down: int

    def note(self, record: log.AccessRecord) -> None:
        record.extra.update(
            close_code=self.code,
            close_reason=self.reason or None,
            closed_by=self.closed_by,
            messages=self.messages,
            ws_bytes_up=self.bytes_up,
            ws_bytes_down=self.bytes_down,
        )


class Tunnel(Protocol):
    """What the hub needs of an open WebSocket."""

    def close(self, code: int, reason: str, *, timeout_s: float | None = None) -> None:
        """Start closing both sides with ``code``; a peer that does not answer within
        ``timeout_s`` (the tunnel's own bound when None) is dropped. The first call wins."""

    def buffered_bytes(self) -> int:
        """Bytes written towards the client that its socket has not taken yet."""


class RawTunnel(Tunnel, Protocol):
    """A tunnel that owns both connections (``ws_tunnel.WsTunnel``)."""

    @property
    def done(self) -> asyncio.Future[TunnelEnd]: ...

    def start(self) -> None: ...

    def abort(self) -> None: ...


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
    __slots__ = (
        "again",
        "checked_to",
        "checking",
        "credentials",
        "host",
        "route",
        "timer",
        "tunnel",
    )

    def __init__(self, tunnel: Tunnel, host: str, route: Route, credentials: object) -> None:
        self.tunnel = tunnel
        self.host = host
        """The host the client asked for, not the route's key: a wildcard route is found
        through the request host, as the edge found it."""
        self.route = route
        self.credentials = credentials
        self.checked_to = time.time()
        """Wall-clock time up to which token expiries have triggered a re-admission."""
        self.timer: asyncio.TimerHandle | None = None
        self.checking = self.again = False


class WebSocketHub:
    def __init__(self, readmit: Readmit | None = None, *, close_timeout_s: float = 5.0) -> None:
        self._readmit = readmit
        self._close_timeout_s = close_timeout_s
        self._live: dict[str, set[_Entry]] = {}
        self._all: dict[Tunnel, _Entry] = {}
        self._due: set[_Entry] = set()
        self._wakeup = asyncio.Event()
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

    # ── registration ────────────────────────────────────────────────────────────────────────
    @contextlib.contextmanager
    def registered(
        self, tunnel: Tunnel, route: Route, host: str, credentials: object = None
    ) -> Iterator[None]:
        """Holds ``tunnel`` in the registry (so drain and re-admission reach it) until exit."""
        entry = self._register(tunnel, route, host, credentials)
        try:
            yield
        finally:
            self._forget(entry)

    def _register(self, tunnel: Tunnel, route: Route, host: str, credentials: object) -> _Entry:
        entry = _Entry(tunnel, host or route.hostname, route, credentials)
        self._all[tunnel] = entry
        self._live.setdefault(route.hostname, set()).add(entry)
        self._arm_expiry(entry)
        return entry

    def _forget(self, e: _Entry) -> None:
        if e.timer is not None:
            e.timer.cancel()
        self._all.pop(e.tunnel, None)
        self._due.discard(e)
        self._emptied.set()
        peers = self._live.get(e.route.hostname)
        if peers is not None:
            peers.discard(e)
            if not peers:
                del self._live[e.route.hostname]

    def attach(
        self,
        tunnel: RawTunnel,
        route: Route,
        host: str,
        record: log.AccessRecord,
        credentials: object = None,
    ) -> None:
        """Register ``tunnel`` (so drain and re-admission reach it) and start it; when it ends
        it is forgotten and its end noted in ``record``. No task: the listener may call this
        from a protocol callback. ``credentials``: what the upgrade was admitted with."""
        record.status = record.status or 101
        entry = self._register(tunnel, route, host, credentials)
        tunnel.done.add_done_callback(functools.partial(self._ended, entry, record))
        tunnel.start()
        if self._draining:
            tunnel.close(GOING_AWAY, "gateway shutting down", timeout_s=self._close_timeout_s)

    def _ended(self, e: _Entry, record: log.AccessRecord, done: asyncio.Future[TunnelEnd]) -> None:
        self._forget(e)
        if not done.cancelled():
            done.result().note(record)

    # ── re-admission ────────────────────────────────────────────────────────────────────────
    async def run(self) -> None:
        """Re-admit tunnels whose route changed or whose token ran out, until cancelled (the
        app runs this in its TaskGroup). One task per check in flight, none while all is
        quiet: an idle tunnel costs no task."""
        async with asyncio.TaskGroup() as tasks:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                due, self._due = self._due, set()
                for e in due:
                    if e.checking:
                        e.again = True  # changed again during its check: check once more after
                    elif self._all.get(e.tunnel) is e:
                        e.checking = True
                        tasks.create_task(self._recheck(e))

    def _rouse(self, e: _Entry) -> None:
        self._due.add(e)
        self._wakeup.set()

    def _expired(self, e: _Entry) -> None:
        e.timer = None
        e.checked_to = time.time()
        self._rouse(e)

    async def _recheck(self, e: _Entry) -> None:
        try:
            while True:
                e.again = False
                why = await self._why_closed(e)
                if why is not None:
                    e.tunnel.close(POLICY_VIOLATION, why)
                    return
                if not e.again or self._all.get(e.tunnel) is not e:
                    break
            self._arm_expiry(e)
        finally:
            e.checking = False

    def _arm_expiry(self, e: _Entry) -> None:
        # A token of this preview runs out: admit the tunnel again then, so one that came in
        # on that token closes (1008) instead of outliving it.
        if e.timer is not None:
            e.timer.cancel()
        expiry = next_token_expiry(e.route, e.checked_to)
        if expiry is None:
            e.timer = None
            return
        loop = asyncio.get_running_loop()
        e.timer = loop.call_at(loop.time() + expiry - time.time(), self._expired, e)

    async def _why_closed(self, e: _Entry) -> str | None:
        if self._readmit is None:
            return None
        try:
            outcome = await self._readmit(e.host, e.route, e.credentials)
        except Exception:
            logger.exception("re-admitting a WebSocket failed")
            return None  # the callback handles outages and refusals; a bug here cuts nothing
        if isinstance(outcome, str):
            return outcome
        e.route = outcome  # its token list is the one later expiries are read from
        return None

    def on_invalidation(self, hostname: str) -> None:
        # A flush after a resubscribe says nothing about any one route; re-check them all.
        # Re-checks of unrelated tunnels find their routes unchanged and leave them alone.
        targets = self._all.values() if hostname == FLUSH_ALL else self._live.get(hostname, ())
        for e in list(targets):
            self._rouse(e)

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
