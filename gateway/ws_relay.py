"""WebSocket relay: upstream handshake first, then two pumps and a supervisor in one TaskGroup.

* The upstream handshake completes before the client is answered, so the client gets the
  upstream's status on refusal (never a 101 followed by a close) and the upstream's chosen
  subprotocol on success (Vite's ``vite-hmr``).
* Data frames are relayed as messages, text as text and binary as binary; ``send_*`` awaits the
  writer's drain, so a slow reader slows the other side and memory per socket stays bounded.
* The gateway pings each peer itself (aiohttp heartbeat) and answers peers' pings; its own
  pings never count as activity. The idle clock only moves on data frames.
* Close codes pass through; 1005/1006/1015 cannot be sent on the wire and are mapped.
* A preview's sockets are closed with 1008 when its route disappears; shutdown sends 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from gateway import log
from gateway.routes import Route
from gateway.upstream import RedirectRefused, translate_errors

logger = logging.getLogger("gateway.websocket")

RouteCheck = Callable[[str], Awaitable[Route | None]]

# RFC 6455 §7.4.1: these "MUST NOT be set as a status code in a Close control frame".
_RESERVED_CODES = {1005: 1000, 1006: 1011, 1015: 1011}
GOING_AWAY = 1001
POLICY_VIOLATION = 1008


def wire_close_code(code: int | None) -> int:
    if code is None:
        return 1000
    if code in _RESERVED_CODES:
        return _RESERVED_CODES[code]
    if code < 1000 or 1016 <= code < 3000 or code >= 5000 or code == 1004:
        return 1011
    return code


def offered_protocols(header: str | None) -> list[str]:
    if not header:
        return []
    return [p.strip() for p in header.split(",") if p.strip()]


@dataclass(frozen=True, slots=True)
class WsLimits:
    idle_timeout_s: float
    max_lifetime_s: float
    ping_interval_s: float
    max_message_bytes: int
    connect_timeout_s: float
    handshake_timeout_s: float


@dataclass(eq=False)
class _Session:
    route: Route
    client: web.WebSocketResponse
    upstream: aiohttp.ClientWebSocketResponse
    last_data: float
    started: float
    recheck: asyncio.Event = field(default_factory=asyncio.Event)
    ending: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    close_reason: str = ""
    closed_by: str = ""
    messages: int = 0

    def end(self, code: int, reason: str, by: str) -> None:
        if not self.ending.is_set():
            self.close_code, self.close_reason, self.closed_by = code, reason, by
            self.ending.set()


class WebSocketHub:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        limits: WsLimits,
        route_check: RouteCheck | None = None,
    ) -> None:
        self._http = session
        self._limits = limits
        self._route_check = route_check
        self._live: dict[str, weakref.WeakSet[_Session]] = {}
        self._all: weakref.WeakSet[_Session] = weakref.WeakSet()
        self._emptied = asyncio.Event()

    def set_route_check(self, check: RouteCheck) -> None:
        self._route_check = check

    @property
    def open_count(self) -> int:
        return len(self._all)

    async def relay(
        self,
        request: web.BaseRequest,
        route: Route,
        url: URL,
        headers: CIMultiDict[str],
        record: log.AccessRecord,
    ) -> web.StreamResponse:
        limits = self._limits
        protocols = offered_protocols(request.headers.get("Sec-WebSocket-Protocol"))
        wants_deflate = "permessage-deflate" in request.headers.get("Sec-WebSocket-Extensions", "")
        try:
            with translate_errors(route.port):
                upstream = await self._http.ws_connect(
                    url,
                    headers=headers,
                    protocols=protocols,
                    autoclose=False,
                    autoping=True,
                    heartbeat=limits.ping_interval_s,
                    max_msg_size=limits.max_message_bytes,
                    compress=15 if wants_deflate else 0,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                )
        except aiohttp.WSServerHandshakeError as exc:
            # The app refused the upgrade: the client sees that status, and no tunnel.
            record.extra["upstream_refused"] = exc.status
            status = exc.status if 300 <= exc.status < 600 else 502
            return web.Response(status=status, headers={"X-Blaxel-Source": "app"})
        except RedirectRefused as exc:
            record.extra["upstream_refused"] = exc.status
            reply: dict[str, str] = {"X-Blaxel-Source": "app"}
            if exc.location:
                reply["Location"] = exc.location
            return web.Response(status=exc.status, headers=reply)
        client = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (),
            autoclose=False,
            autoping=True,
            heartbeat=limits.ping_interval_s,
            max_msg_size=limits.max_message_bytes,
            compress=bool(upstream.compress),
        )
        try:
            await client.prepare(request)
        except BaseException:
            await upstream.close(code=1001)
            raise
        loop = asyncio.get_running_loop()
        session = _Session(route, client, upstream, last_data=loop.time(), started=loop.time())
        self._all.add(session)
        self._live.setdefault(route.hostname, weakref.WeakSet()).add(session)
        try:
            await self._run(session)
        finally:
            self._all.discard(session)
            self._emptied.set()
            peers = self._live.get(route.hostname)
            if peers is not None:
                peers.discard(session)
                if not peers:
                    del self._live[route.hostname]
            record.extra.update(
                close_code=session.close_code,
                closed_by=session.closed_by,
                messages=session.messages,
            )
        return client

    async def _run(self, s: _Session) -> None:
        async with asyncio.TaskGroup() as tasks:
            pumps = [
                tasks.create_task(self._pump(s, s.client, s.upstream, "client")),
                tasks.create_task(self._pump(s, s.upstream, s.client, "upstream")),
                tasks.create_task(self._supervise(s)),
            ]
            await s.ending.wait()
            code = wire_close_code(s.close_code)
            reason = s.close_reason.encode()[:120]
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await asyncio.gather(
                        s.client.close(code=code, message=reason),
                        s.upstream.close(code=code, message=reason),
                        return_exceptions=True,
                    )
            for task in pumps:
                task.cancel()

    async def _pump(
        self,
        s: _Session,
        source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        side: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                msg = await source.receive()
                if msg.type is WSMsgType.TEXT:
                    s.last_data = loop.time()
                    s.messages += 1
                    await sink.send_str(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    s.last_data = loop.time()
                    s.messages += 1
                    await sink.send_bytes(msg.data)
                elif msg.type is WSMsgType.CLOSE:
                    s.end(int(msg.data), msg.extra or "", side)
                    return
                elif msg.type is WSMsgType.ERROR:
                    # aiohttp already closed this side (1009 too big, 1002 protocol error...).
                    s.end(source.close_code or 1011, "", side)
                    return
                else:  # CLOSING/CLOSED: the peer vanished or we are closing it
                    s.end(source.close_code or 1006, "", side)
                    return
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            s.end(1006, "", side)

    async def _supervise(self, s: _Session) -> None:
        """Idle timeout, lifetime cap and route re-checks for one socket."""
        limits = self._limits
        loop = asyncio.get_running_loop()
        while not s.ending.is_set():
            deadlines = []
            if limits.idle_timeout_s:
                deadlines.append((s.last_data + limits.idle_timeout_s, "idle timeout"))
            if limits.max_lifetime_s:
                deadlines.append((s.started + limits.max_lifetime_s, "maximum lifetime reached"))
            wake, reason = min(deadlines) if deadlines else (loop.time() + 3600, "")
            if reason and loop.time() >= wake:
                s.end(GOING_AWAY, reason, "gateway")
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake - loop.time())):
                    await s.recheck.wait()
            if s.recheck.is_set():
                s.recheck.clear()
                if not await self._still_routed(s):
                    s.end(POLICY_VIOLATION, "preview removed", "gateway")
                    return

    async def _still_routed(self, s: _Session) -> bool:
        if self._route_check is None:
            return True
        try:
            current = await self._route_check(s.route.hostname)
        except Exception:
            return True  # the store is down: keep serving, as HTTP does within the grace period
        return current is not None and (
            current.target_host,
            current.port,
            current.preview,
            current.sandbox,
        ) == (
            s.route.target_host,
            s.route.port,
            s.route.preview,
            s.route.sandbox,
        )

    def on_invalidation(self, hostname: str) -> None:
        # A flush after a resubscribe says nothing about any one route; re-check them all.
        targets = self._all if hostname == "*" else self._live.get(hostname, ())
        for s in list(targets):
            s.recheck.set()

    async def close_all(self, code: int, reason: str) -> None:
        sessions = list(self._all)
        for s in sessions:
            s.end(code, reason, "gateway")
        # Each relay closes its own sockets; wait until they are gone, bounded.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(6.0):
                while self._all:
                    await self._emptied.wait()
                    self._emptied.clear()
