"""The protocol edge's server: accepts connections (``listener.ClientConnection``), owns the
request tasks in one ``TaskGroup``, and drains on shutdown: it stops accepting, closes idle
keep-alive connections, gives busy ones ``grace_s`` to finish their response, then cuts the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from gateway.core.netpolicy import IPNetwork
from gateway.core.planner import PlannerConfig
from gateway.edge.listener import ClientConnection
from gateway.edge.pool import UpstreamPool
from gateway.edge.proto_edge import ProtocolEdge
from gateway.edge.server import EdgeConfig
from gateway.edge.ws_hub import WebSocketHub, WsLimits
from gateway.ops import log
from gateway.ops.settings import Settings
from gateway.store.lookup import RouteLookup


class EdgeListener:
    """The server: accepts connections, owns the request tasks, drains on shutdown."""

    def __init__(
        self,
        edge: ProtocolEdge,
        *,
        header_timeout_s: float,
        keepalive_s: float,
        grace_s: float,
        scheme: str = "http",
    ) -> None:
        self.edge = edge
        self.grace_s = grace_s
        self.header_timeout_s = header_timeout_s
        self.keepalive_s = keepalive_s
        self.scheme = scheme
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self._server: asyncio.Server | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._drained = asyncio.Event()
        self._date_second = -1
        self._date = ""

    async def __aenter__(self) -> EdgeListener:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drain()
        self.edge.pool.close()
        self.edge.ws_pool.close()
        assert self._tasks is not None
        await self._tasks.__aexit__(None, None, None)

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen; ``reuse_port`` lets sibling worker processes bind the same port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ClientConnection(self.edge, self),
            host,
            port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=1024,
        )
        return int(self._server.sockets[0].getsockname()[1])

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        assert self._tasks is not None
        return self._tasks.create_task(coro)

    def stop_accepting(self) -> None:
        """Drain begins: no new connections, idle keep-alive ones close now, busy ones after
        their response."""
        self.draining = True
        if self._server is not None:
            self._server.close()
            self._server = None
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


def build_protocol_edge(
    settings: Settings,
    config: EdgeConfig,
    lookup: RouteLookup,
    allowed: Sequence[IPNetwork],
    observe: Callable[[log.AccessRecord], None],
    hub: WebSocketHub,
    ws_limits: WsLimits,
) -> EdgeListener:
    """The protocol edge (``GATEWAY_EDGE_IMPL=protocol``), ready to be entered and started."""
    pool = UpstreamPool(
        allowed=allowed,
        max_connections=settings.upstream_max_connections,
        max_per_target=settings.upstream_max_connections_per_target,
        connect_timeout_s=settings.upstream_connect_timeout_s,
    )
    # WebSockets hold their upstream connection for their whole life: a pool of their own, as
    # the aiohttp edge has, so they never take the per-sandbox slots of HTTP requests.
    ws_pool = UpstreamPool(
        allowed=allowed,
        max_connections=settings.upstream_max_connections,
        max_per_target=settings.upstream_max_connections,
        connect_timeout_s=settings.upstream_connect_timeout_s,
    )
    planner = PlannerConfig(
        preview_domain=config.preview_domain,
        trusted_proxies=config.trusted_proxies,
        admission=config.admission,
        max_body_bytes=config.timeouts.max_body_bytes,
        public_scheme=config.public_scheme,
    )
    return EdgeListener(
        ProtocolEdge(config, planner, lookup, pool, (ws_pool, ws_limits, hub), observe),
        header_timeout_s=settings.header_read_timeout_s,
        keepalive_s=settings.keepalive_timeout_s,
        grace_s=settings.shutdown_grace_s,
        scheme=settings.public_scheme,
    )
