"""The edge server: accepts connections (``connection.ClientConnection``), owns the
request tasks in one ``TaskGroup``, and drains on shutdown: it stops accepting, closes idle
keep-alive connections, gives busy ones ``grace_s`` to finish their response, then cuts the rest.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from gateway.core.planner import RequestHead
from gateway.edge.config import HeadLimits
from gateway.edge.connection import HEAD_LIMITS, ClientConnection
from gateway.edge.handler import EdgeHandler


class RequestHandler(Protocol):
    """What a listener hands each parsed request to: the edge, or the https redirect."""

    def start(self, client: ClientConnection, head: RequestHead) -> None:
        """Take the request on; what has to wait goes on in ``client.spawn``."""


class EdgeServer:
    """The server: accepts connections, owns the request tasks, drains on shutdown."""

    def __init__(
        self,
        edge: EdgeHandler,
        *,
        header_timeout_s: float,
        keepalive_s: float,
        grace_s: float,
        head_limits: HeadLimits = HEAD_LIMITS,
    ) -> None:
        self.edge = edge
        self.head_limits = head_limits
        self.grace_s = grace_s
        self.header_timeout_s = header_timeout_s
        self.keepalive_s = keepalive_s
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self._servers: list[asyncio.Server] = []
        self.pools = [edge.pool, edge.ws_pool]
        """Closed at the end of the drain (the ACME responder adds its own)."""
        self._tasks: asyncio.TaskGroup | None = None
        self._drained = asyncio.Event()
        self._date_second = -1
        self._date = ""

    async def __aenter__(self) -> EdgeServer:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drain()
        for pool in self.pools:
            pool.close()
        assert self._tasks is not None
        await self._tasks.__aexit__(None, None, None)

    async def start(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        handler: RequestHandler | None = None,
        reuse_port: bool = False,
    ) -> int:
        """Listen on ``host:port`` (HTTPS with ``tls``); requests go to ``handler``, by default
        the edge. Called once per listener; all of them drain together. ``reuse_port`` lets
        sibling worker processes bind the same port."""
        loop = asyncio.get_running_loop()
        target = handler or self.edge
        scheme = "https" if tls is not None else "http"
        server = await loop.create_server(
            lambda: ClientConnection(target, self, scheme),
            host,
            port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=1024,
            ssl=tls,
            # A client that stalls its handshake is a slowloris like one that stalls its head.
            ssl_handshake_timeout=self.header_timeout_s if tls is not None else None,
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        assert self._tasks is not None
        return self._tasks.create_task(coro)

    def stop_accepting(self) -> None:
        """Drain begins: no new connections, idle keep-alive ones close now, busy ones after
        their response."""
        self.draining = True
        for server in self._servers:
            server.close()
        self._servers.clear()
        for conn in list(self.connections):
            conn.drain()
        self.check_drained()

    async def drain(self) -> None:
        """Wait ``grace_s`` for busy connections, then cut whatever is left."""
        self.stop_accepting()
        if self.connections:
            try:
                async with asyncio.timeout(self.grace_s):
                    await self._drained.wait()
            except TimeoutError:
                pass
        for conn in list(self.connections):
            conn.transport.abort()

    def check_drained(self) -> None:
        if self.draining and not self.connections:
            self._drained.set()

    def date_header(self) -> str:
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            stamp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(second))
            self._date = f"Date: {stamp}\r\n"
        return self._date
