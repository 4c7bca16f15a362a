"""The aiohttp edge's WebSocket relay: upstream handshake first, then two pumps and a supervisor
in one TaskGroup.

* The upstream handshake completes before the client is answered, so the client gets the
  upstream's status on refusal (never a 101 followed by a close) and the upstream's chosen
  subprotocol and extensions on success (Vite's ``vite-hmr``; permessage-deflate only when the
  app accepted it).
* Data frames are relayed as messages, text as text and binary as binary (fragments are
  reassembled by aiohttp's reader). ``send_*`` awaits the writer's drain and aiohttp stops
  reading a socket whose queue is full, so a slow reader slows the writer through TCP and memory
  per socket stays bounded by about one message.
* The gateway pings each peer itself (aiohttp heartbeat) and answers peers' pings with their
  payload. Its own pings, and the pongs they get, never count as activity; a peer's own pings do
  (webpack-dev-server keeps its socket alive with a ping a second, and cutting it on a quiet
  page would be visible to the user). Otherwise the idle clock moves on data frames only.
* Close codes pass through; 1005/1006/1015 cannot be sent on the wire and are mapped.
* When either side ends, for whatever reason (close, reset, ping timeout, our own limits, the
  client's connection being cancelled by aiohttp), both sides are closed, within a bound.
* Each tunnel is registered with the hub (``ws_hub``), which closes it with 1008 when its route
  disappears or stops admitting it, and with 1001 at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from typing import cast

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from gateway.core.errors import ShuttingDown, UpgradeRefused, UpstreamBadResponse
from gateway.core.records import Route
from gateway.core.ws_close import (
    ABNORMAL,
    GOING_AWAY,
    INTERNAL_ERROR,
    MESSAGE_TOO_BIG,
    NO_STATUS,
    NORMAL,
    wire_close_code,
    wire_reason,
)
from gateway.edge.upstream import RedirectRefused, translate_errors
from gateway.edge.ws_hub import TunnelEnd, WebSocketHub, WsLimits
from gateway.ops import log

__all__ = [
    "ShuttingDown",
    "WebSocketHub",
    "WsLimits",
    "WsRelay",
    "offered_protocols",
    "wire_close_code",
    "wire_reason",
]

logger = logging.getLogger("gateway.websocket")

AnyWebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


def offered_protocols(header: str | None) -> list[str]:
    if not header:
        return []
    return [p.strip() for p in header.split(",") if p.strip()]


@dataclass(eq=False)
class _Tunnel:
    client: web.WebSocketResponse
    upstream: aiohttp.ClientWebSocketResponse
    client_transport: asyncio.BaseTransport | None
    last_data: float
    started: float
    close_timeout_s: float
    ended: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    close_code: int | None = None
    close_reason: str = ""
    closed_by: str = ""
    messages: int = 0
    bytes_up: int = 0
    bytes_down: int = 0

    def end(self, code: int, reason: str, by: str) -> None:
        # The first reason to end wins: later ones are consequences of our own closing.
        if not self.ended.done():
            self.close_code, self.close_reason, self.closed_by = code, reason, by
            self.ended.set_result(None)

    def close(self, code: int, reason: str, *, timeout_s: float | None = None) -> None:
        if timeout_s is not None:
            self.close_timeout_s = min(self.close_timeout_s, timeout_s)
        self.end(code, reason, "gateway")

    def buffered_bytes(self) -> int:
        # Not isinstance(asyncio.WriteTransport): uvloop's transports are only alike.
        transport = cast(asyncio.WriteTransport | None, self.client_transport)
        if transport is None or transport.is_closing():
            return 0
        return transport.get_write_buffer_size()


class WsRelay:
    """The aiohttp edge's WebSocket relay; its tunnels are registered with ``hub``."""

    def __init__(self, session: aiohttp.ClientSession, limits: WsLimits, hub: WebSocketHub) -> None:
        self._http = session
        self._limits = limits
        self._hub = hub

    async def relay(
        self,
        request: web.BaseRequest,
        route: Route,
        url: URL,
        headers: CIMultiDict[str],
        record: log.AccessRecord,
        credentials: object = None,
    ) -> web.StreamResponse:
        """``credentials`` is what the upgrade was admitted with, for the hub's re-admission."""
        self._hub.refuse_if_draining()
        upstream_or_refusal = await self._connect(request, route, url, headers, record)
        if isinstance(upstream_or_refusal, web.Response):
            return upstream_or_refusal
        upstream = upstream_or_refusal
        limits = self._limits
        client = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (),
            autoclose=False,
            autoping=False,
            heartbeat=limits.ping_interval_s,
            max_msg_size=limits.max_message_bytes,
            timeout=limits.close_timeout_s,
            # Offer deflate to the client only if the app took it upstream: the client's answer
            # then mirrors the app's (there is one extension, so its choice is that bit).
            compress=bool(upstream.compress),
        )
        try:
            await client.prepare(request)
        except BaseException:
            await self._close_quietly(
                upstream, INTERNAL_ERROR, "client handshake failed", self._hub.close_bound_s()
            )
            raise
        record.status = 101  # the tunnel is open; a later cancellation is just its end
        now = asyncio.get_running_loop().time()
        tunnel = _Tunnel(client, upstream, request.transport, now, now, self._hub.close_bound_s())
        with self._hub.registered(tunnel, route, record.host or route.hostname, credentials):
            try:
                await self._run(tunnel)
            finally:
                # Reached with both sides closed, except when this handler was cancelled:
                # aiohttp cancels it when the client's connection is lost (a reset, a vanished
                # peer). The upstream must still get its close then, or its connection leaks.
                if not (upstream.closed and client.closed):
                    tunnel.end(ABNORMAL, "client connection lost", "client")
                    await self._close_both(tunnel)
                # Even if cancelled again while closing: close_all waits on the registry.
                TunnelEnd(
                    closed_by=tunnel.closed_by,
                    code=tunnel.close_code or 0,
                    reason=tunnel.close_reason,
                    messages=tunnel.messages,
                    bytes_up=tunnel.bytes_up,
                    bytes_down=tunnel.bytes_down,
                ).note(record)
        return client

    async def _connect(
        self,
        request: web.BaseRequest,
        route: Route,
        url: URL,
        headers: CIMultiDict[str],
        record: log.AccessRecord,
    ) -> aiohttp.ClientWebSocketResponse | web.Response:
        limits = self._limits
        protocols = offered_protocols(request.headers.get("Sec-WebSocket-Protocol"))
        wants_deflate = "permessage-deflate" in request.headers.get("Sec-WebSocket-Extensions", "")
        try:
            with translate_errors(route.port):
                # The session has no total timeout (streams are long); the handshake does. It
                # also bounds a wait for a free slot in the per-sandbox connection pool.
                async with asyncio.timeout(limits.handshake_timeout_s):
                    return await self._dial(url, headers, protocols, wants_deflate)
        except UpgradeRefused as refused:
            record.extra["upstream_refused"] = refused.upstream_status
            if not refused.passed_on:
                # A 200 page (a dev server without WebSocket support on this path) or a 101
                # with a bad accept key: no tunnel, and not the app's status to pass on.
                raise UpstreamBadResponse(
                    "The app did not accept the WebSocket upgrade on this path."
                ) from refused
            # The app refused the upgrade: the client sees that status, and no tunnel.
            return web.Response(status=refused.upstream_status, headers={"X-Blaxel-Source": "app"})
        except RedirectRefused as exc:
            record.extra["upstream_refused"] = exc.status
            reply: dict[str, str] = {"X-Blaxel-Source": "app"}
            if exc.location:
                reply["Location"] = exc.location
            return web.Response(status=exc.status, headers=reply)

    async def _dial(
        self, url: URL, headers: CIMultiDict[str], protocols: list[str], deflate: bool
    ) -> aiohttp.ClientWebSocketResponse:
        limits = self._limits
        try:
            return await self._http.ws_connect(
                url,
                headers=headers,
                protocols=protocols,
                autoclose=False,
                autoping=False,
                heartbeat=limits.ping_interval_s,
                max_msg_size=limits.max_message_bytes,
                compress=15 if deflate else 0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=limits.close_timeout_s),
            )
        except aiohttp.WSServerHandshakeError as exc:
            # Not a ClientError any more, so translate_errors lets it through as a refusal
            # instead of turning the app's 403 into a 502.
            raise UpgradeRefused(exc.status) from exc

    async def _run(self, t: _Tunnel) -> None:
        async with asyncio.TaskGroup() as tasks:
            workers = [
                tasks.create_task(self._pump(t, t.client, t.upstream, "client")),
                tasks.create_task(self._pump(t, t.upstream, t.client, "upstream")),
                tasks.create_task(self._supervise(t)),
            ]
            await asyncio.wait((t.ended,))
            # Stop the pumps before closing: aiohttp cuts the connection at once when close()
            # interrupts a pending receive(), where an idle pump would cut the close
            # handshake short (browsers then report wasClean=false). Nothing more is relayed.
            for task in workers:
                task.cancel()
        await self._close_both(t)

    async def _close_both(self, t: _Tunnel) -> None:
        code = wire_close_code(t.close_code)
        reason = t.close_reason
        # The side that sent a close gets its own code back (RFC 6455 §5.5.1 echo).
        await asyncio.gather(
            self._close_quietly(t.client, code, reason, t.close_timeout_s),
            self._close_quietly(t.upstream, code, reason, t.close_timeout_s),
        )

    async def _close_quietly(
        self, ws: AnyWebSocket, code: int, reason: str, timeout_s: float
    ) -> None:
        """Close one side, bounded: a peer that never answers our close frame (or never reads,
        so the frame cannot even be written) is dropped when the bound passes."""
        if ws.closed:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout_s):
                await ws.close(code=code, message=wire_reason(reason))
        # On timeout aiohttp has already aborted the transport (close() cancelled).

    async def _pump(self, t: _Tunnel, source: AnyWebSocket, sink: AnyWebSocket, side: str) -> None:
        loop = asyncio.get_running_loop()
        upward = side == "client"
        try:
            while True:
                msg = await source.receive()
                if msg.type is WSMsgType.TEXT:
                    t.last_data = loop.time()
                    t.messages += 1
                    await sink.send_str(msg.data)
                    self._count(t, upward, len(msg.data))
                elif msg.type is WSMsgType.BINARY:
                    t.last_data = loop.time()
                    t.messages += 1
                    await sink.send_bytes(msg.data)
                    self._count(t, upward, len(msg.data))
                elif msg.type is WSMsgType.PING:
                    # autoping is off so the peer's keepalive is seen here: answer it and count
                    # it as activity.
                    t.last_data = loop.time()
                    await source.pong(msg.data)
                elif msg.type is WSMsgType.PONG:
                    continue  # the answer to our heartbeat (aiohttp noted it): not activity
                elif msg.type is WSMsgType.CLOSE:
                    code = int(msg.data)
                    t.end(NO_STATUS if code == 0 else code, msg.extra or "", side)
                    return
                elif msg.type is WSMsgType.ERROR:
                    # aiohttp has already closed this side: 1009 (too big), 1002/1007 (protocol),
                    # or 1006 when our ping went unanswered.
                    t.end(*_failure(msg.data, source.close_code, side), side)
                    return
                else:  # CLOSING/CLOSED: the peer vanished, or we are closing this side ourselves
                    t.end(*_failure(source.exception(), source.close_code, side), side)
                    return
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            # Writing to the other side failed: that side is gone.
            t.end(ABNORMAL, "", "upstream" if upward else "client")
        except Exception:
            logger.exception("WebSocket relay failed")
            t.end(INTERNAL_ERROR, "", "gateway")

    @staticmethod
    def _count(t: _Tunnel, upward: bool, size: int) -> None:
        if upward:
            t.bytes_up += size
        else:
            t.bytes_down += size

    async def _supervise(self, t: _Tunnel) -> None:
        """Idle timeout and lifetime cap for one socket (the hub re-admits it)."""
        limits = self._limits
        loop = asyncio.get_running_loop()
        # Up to 10 % early, so the sockets a deploy or a burst opened together do not all hit
        # the cap, and reconnect, at the same moment (threat model W05). Never later than the cap.
        lifetime = limits.max_lifetime_s * random.uniform(0.9, 1.0)  # noqa: S311 - not a secret
        while not t.ended.done():
            deadlines = []
            if limits.idle_timeout_s:
                deadlines.append((t.last_data + limits.idle_timeout_s, "idle timeout"))
            if limits.max_lifetime_s:
                deadlines.append((t.started + lifetime, "maximum lifetime reached"))
            if not deadlines:
                return
            wake, reason = min(deadlines)
            if loop.time() >= wake:
                t.end(GOING_AWAY, reason, "gateway")
                return
            await asyncio.sleep(wake - loop.time())


def _failure(exc: object, code: int | None, side: str) -> tuple[int, str]:
    """Close code and reason for a side that ended without a close frame."""
    if isinstance(exc, aiohttp.WebSocketError):
        if exc.code == MESSAGE_TOO_BIG:
            return MESSAGE_TOO_BIG, "message too big"
        return exc.code, "protocol error"
    if isinstance(exc, TimeoutError):
        # aiohttp's heartbeat: our ping went unanswered.
        return ABNORMAL, f"{side} did not answer ping"
    if code == MESSAGE_TOO_BIG:
        return MESSAGE_TOO_BIG, "message too big"
    return ABNORMAL if code in (None, NORMAL) else code, ""
