"""Raw upstream connections for the protocol edge: per sandbox port, LIFO keep-alive, the
global and per-target limits, the connect deadline and the allow-list check after DNS.

A stop-gap for H1b's ``gateway/edge/pool.py`` (not merged when this was written), with just
what the exchange needs; the exchange moves to that pool once it lands.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import Sequence
from typing import Protocol

from gateway.core.errors import UpstreamRefused, UpstreamTimedOut, UpstreamUnreachable
from gateway.core.netpolicy import IPNetwork, address_allowed, is_ip_literal
from gateway.edge.upstream import TargetNotAllowed

Key = tuple[str, int]


class Owner(Protocol):
    """What a connection reports to while it serves one exchange."""

    def upstream_data(self, data: bytes) -> None: ...
    def upstream_lost(self, exc: BaseException | None) -> None: ...
    def upstream_pause_writing(self) -> None: ...
    def upstream_resume_writing(self) -> None: ...


class Connection(asyncio.Protocol):
    __slots__ = ("closed", "counted", "idle_since", "key", "owner", "reused", "transport")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.owner: Owner | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.counted = True
        """Holds a slot in the pool's limits until it is forgotten."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.owner is not None:
            self.owner.upstream_data(data)
        elif self.transport is not None:
            # An idle connection that speaks is in an unknown state: never reuse it.
            self.closed = True
            self.transport.abort()

    def eof_received(self) -> bool | None:
        return False  # close our side too; the owner hears it through connection_lost

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_resume_writing()

    def abort(self) -> None:
        self.closed = True
        self.owner = None
        if self.transport is not None:
            self.transport.abort()


class RawPool:
    def __init__(
        self,
        allowed: Sequence[IPNetwork],
        *,
        max_connections: int,
        max_per_target: int,
        connect_timeout_s: float,
        keepalive_s: float = 30.0,
    ) -> None:
        self._allowed = allowed
        self._max = max_connections
        self._max_per_target = max_per_target
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._idle: dict[Key, list[Connection]] = {}
        self._open: collections.Counter[Key] = collections.Counter()
        self._total = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self, host: str, port: int) -> Connection:
        key = (host, port)
        loop = asyncio.get_running_loop()
        while True:
            conn = self._take_idle(key, loop.time())
            if conn is not None:
                return conn
            if self._total >= self._max:
                self._evict_one()
            if self._total < self._max and self._open[key] < self._max_per_target:
                break
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self._total += 1
        self._open[key] += 1
        try:
            return await self._dial(key)
        except BaseException:
            self._release_slot(key)
            raise

    def _take_idle(self, key: Key, now: float) -> Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()  # LIFO: the warmest connection, the least likely to be stale
            if not conn.closed and now - conn.idle_since < self._keepalive_s:
                conn.reused = True
                return conn
            self._forget(conn)
        return None

    def _evict_one(self) -> None:
        """At the global limit, an idle connection to another target gives up its slot."""
        for conns in self._idle.values():
            if conns:
                self._forget(conns.pop(0))
                return

    async def _dial(self, key: Key) -> Connection:
        loop = asyncio.get_running_loop()
        host, port = key
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                address = await self._resolve(loop, host, port)
                _, conn = await loop.create_connection(lambda: Connection(key), address, port)
        except TimeoutError as exc:
            raise UpstreamTimedOut("The sandbox did not accept the connection in time.") from exc
        except ConnectionRefusedError as exc:
            # No address in the text, not even as advice: error pages never show one.
            raise UpstreamRefused(
                f"Nothing is listening on port {port} of the sandbox. The app must listen on "
                f"0.0.0.0:{port} (all interfaces), not only on localhost."
            ) from exc
        except OSError as exc:
            raise UpstreamUnreachable("The sandbox could not be reached.") from exc
        return conn

    async def _resolve(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> str:
        """The first allowed address of ``host``: the allow-list is checked after DNS too, so a
        name that resolves to loopback or the metadata service is never dialled."""
        if is_ip_literal(host):
            candidates = [host]
        else:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            candidates = [str(info[4][0]) for info in infos]
        for address in candidates:
            if address_allowed(address, self._allowed):
                return address
        raise TargetNotAllowed("This preview's sandbox address is not allowed.")

    def release(self, conn: Connection) -> None:
        """Back to the pool, idle: only a connection whose last response ended cleanly."""
        conn.owner = None
        if conn.closed:
            self._forget(conn)
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(conn.key, []).append(conn)
        self._wake()

    def discard(self, conn: Connection) -> None:
        if not conn.closed:
            conn.abort()
        self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.close()
        if conn.counted:
            conn.counted = False
            self._release_slot(conn.key)

    def _release_slot(self, key: Key) -> None:
        self._total -= 1
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]
        self._wake()

    def _wake(self) -> None:
        """Every waiter looks again: the freed slot or idle connection may be for any target."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._idle.clear()
