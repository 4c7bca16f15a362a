"""WebSocket relay: upstream handshake first, then two pumps and a supervisor in one TaskGroup.

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
* A preview's sockets are closed with 1008 when its route disappears or stops admitting them;
  other previews' sockets are untouched. Shutdown sends 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from gateway.core import admission
from gateway.core.errors import GatewayError, TokenRejected, UpstreamBadResponse
from gateway.core.records import Route, utcnow
from gateway.core.tokens import LEEWAY_S
from gateway.edge.upstream import RedirectRefused, translate_errors
from gateway.ops import log
from gateway.store.base import FLUSH_ALL

logger = logging.getLogger("gateway.websocket")

RouteCheck = Callable[[str], Awaitable[Route | None]]
AnyWebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse

NORMAL = 1000
GOING_AWAY = 1001
READMIT = "re-admit: a token ran out"
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
# aiohttp reports a close frame without a status as code 0; RFC 6455 calls that 1005.
_NO_STATUS = 1005
_ABNORMAL = 1006

# RFC 6455 §7.4.1: these "MUST NOT be set as a status code in a Close control frame".
_RESERVED_CODES = {1005: 1000, 1006: 1011, 1015: 1011}
DRAIN_TIMEOUT_S = 2.0
"""Default bound of ``close_all``: well inside the default shutdown grace (10 s)."""
# A close frame's payload is at most 125 bytes, two of which are the code.
_MAX_REASON_BYTES = 123


class _UpgradeRefused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ShuttingDown(GatewayError):
    status = 503
    code = "shutting_down"
    title = "The gateway is restarting"


def wire_close_code(code: int | None) -> int:
    """The code to put in a close frame for a side that ended with ``code``."""
    if code is None or code == 0:
        return NORMAL
    if code in _RESERVED_CODES:
        return _RESERVED_CODES[code]
    if code < 1000 or 1016 <= code < 3000 or code >= 5000 or code == 1004:
        return INTERNAL_ERROR
    return code


def wire_reason(reason: str) -> bytes:
    """``reason`` cut to what fits a close frame, never in the middle of a UTF-8 sequence
    (a split sequence is invalid UTF-8, which the peer must treat as a protocol error)."""
    raw = reason.encode("utf-8", errors="replace")
    if len(raw) <= _MAX_REASON_BYTES:
        return raw
    return raw[:_MAX_REASON_BYTES].decode("utf-8", errors="ignore").encode()


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
    close_timeout_s: float = 5.0
    """How long a side gets to answer our close frame before its connection is dropped."""


@dataclass(eq=False)
class _Session:
    route: Route
    host: str
    request: web.BaseRequest
    client: web.WebSocketResponse
    upstream: aiohttp.ClientWebSocketResponse
    client_transport: asyncio.BaseTransport | None
    last_data: float
    started: float
    recheck: asyncio.Event = field(default_factory=asyncio.Event)
    ending: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    close_reason: str = ""
    closed_by: str = ""
    messages: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    expiries_checked_to: float = 0.0
    """Wall-clock time up to which token expiries have triggered a re-admission."""

    def end(self, code: int, reason: str, by: str) -> None:
        # The first reason to end wins: later ones are consequences of our own closing.
        if not self.ending.is_set():
            self.close_code, self.close_reason, self.closed_by = code, reason, by
            self.ending.set()


class WebSocketHub:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        limits: WsLimits,
        route_check: RouteCheck | None = None,
        admission_policy: admission.AdmissionPolicy | None = None,
    ) -> None:
        self._http = session
        self._limits = limits
        self._route_check = route_check
        self._admission = admission_policy
        self._close_timeout_s = limits.close_timeout_s
        self._live: dict[str, weakref.WeakSet[_Session]] = {}
        self._all: weakref.WeakSet[_Session] = weakref.WeakSet()
        self._emptied = asyncio.Event()
        self._draining = False

    @property
    def admission_policy(self) -> admission.AdmissionPolicy | None:
        return self._admission

    @property
    def open_count(self) -> int:
        return len(self._all)

    def buffered_bytes(self) -> int:
        """Bytes written towards clients that their sockets have not taken yet (a gauge; the
        backpressure test checks that it stays around one message, however fast the app
        sends)."""
        total = 0
        for s in list(self._all):
            transport = s.client_transport
            if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
                total += transport.get_write_buffer_size()
        return total

    async def relay(
        self,
        request: web.BaseRequest,
        route: Route,
        url: URL,
        headers: CIMultiDict[str],
        record: log.AccessRecord,
    ) -> web.StreamResponse:
        if self._draining:
            raise ShuttingDown("The gateway is restarting; reconnect in a moment.", retry_after_s=1)
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
            await self._close_quietly(upstream, INTERNAL_ERROR, "client handshake failed")
            raise
        record.status = 101  # the tunnel is open; a later cancellation is just its end
        loop = asyncio.get_running_loop()
        session = _Session(
            route,
            record.host or route.hostname,
            request,
            client,
            upstream,
            request.transport,
            last_data=loop.time(),
            started=loop.time(),
        )
        self._all.add(session)
        self._live.setdefault(route.hostname, weakref.WeakSet()).add(session)
        try:
            await self._run(session)
        finally:
            try:
                # Reached with both sides closed, except when this handler was cancelled:
                # aiohttp cancels it when the client's connection is lost (a reset, a vanished
                # peer). The upstream must still get its close then, or its connection leaks.
                if not (upstream.closed and client.closed):
                    session.end(_ABNORMAL, "client connection lost", "client")
                    await self._close_both(session)
            finally:
                # Even if cancelled again while closing: close_all waits on this bookkeeping.
                self._forget(session)
                record.extra.update(
                    close_code=session.close_code,
                    close_reason=session.close_reason or None,
                    closed_by=session.closed_by,
                    messages=session.messages,
                    ws_bytes_up=session.bytes_up,
                    ws_bytes_down=session.bytes_down,
                )
        return client

    def _forget(self, s: _Session) -> None:
        self._all.discard(s)
        self._emptied.set()
        peers = self._live.get(s.route.hostname)
        if peers is not None:
            peers.discard(s)
            if not peers:
                del self._live[s.route.hostname]

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
        except _UpgradeRefused as refused:
            status = refused.status
            record.extra["upstream_refused"] = status
            if not 300 <= status < 600:
                # A 200 page (a dev server without WebSocket support on this path) or a 101
                # with a bad accept key: no tunnel, and not the app's status to pass on.
                raise UpstreamBadResponse(
                    "The app did not accept the WebSocket upgrade on this path."
                ) from refused
            # The app refused the upgrade: the client sees that status, and no tunnel.
            return web.Response(status=status, headers={"X-Blaxel-Source": "app"})
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
            raise _UpgradeRefused(exc.status) from exc

    async def _run(self, s: _Session) -> None:
        async with asyncio.TaskGroup() as tasks:
            workers = [
                tasks.create_task(self._pump(s, s.client, s.upstream, "client")),
                tasks.create_task(self._pump(s, s.upstream, s.client, "upstream")),
                tasks.create_task(self._supervise(s)),
            ]
            await s.ending.wait()
            # Stop the pumps before closing: aiohttp cuts the connection at once when close()
            # interrupts a pending receive(), where an idle pump would cut the close
            # handshake short (browsers then report wasClean=false). Nothing more is relayed.
            for task in workers:
                task.cancel()
        await self._close_both(s)

    async def _close_both(self, s: _Session) -> None:
        code = wire_close_code(s.close_code)
        reason = s.close_reason
        # The side that sent a close gets its own code back (RFC 6455 §5.5.1 echo).
        await asyncio.gather(
            self._close_quietly(s.client, code, reason),
            self._close_quietly(s.upstream, code, reason),
        )

    async def _close_quietly(self, ws: AnyWebSocket, code: int, reason: str) -> None:
        """Close one side, bounded: a peer that never answers our close frame (or never reads,
        so the frame cannot even be written) is dropped when the bound passes."""
        if ws.closed:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._close_timeout_s):
                await ws.close(code=code, message=wire_reason(reason))
        # On timeout aiohttp has already aborted the transport (close() cancelled).

    async def _pump(self, s: _Session, source: AnyWebSocket, sink: AnyWebSocket, side: str) -> None:
        loop = asyncio.get_running_loop()
        upward = side == "client"
        try:
            while True:
                msg = await source.receive()
                if msg.type is WSMsgType.TEXT:
                    s.last_data = loop.time()
                    s.messages += 1
                    await sink.send_str(msg.data)
                    self._count(s, upward, len(msg.data))
                elif msg.type is WSMsgType.BINARY:
                    s.last_data = loop.time()
                    s.messages += 1
                    await sink.send_bytes(msg.data)
                    self._count(s, upward, len(msg.data))
                elif msg.type is WSMsgType.PING:
                    # autoping is off so the peer's keepalive is seen here: answer it and count
                    # it as activity.
                    s.last_data = loop.time()
                    await source.pong(msg.data)
                elif msg.type is WSMsgType.PONG:
                    continue  # the answer to our heartbeat (aiohttp noted it): not activity
                elif msg.type is WSMsgType.CLOSE:
                    code = int(msg.data)
                    s.end(_NO_STATUS if code == 0 else code, msg.extra or "", side)
                    return
                elif msg.type is WSMsgType.ERROR:
                    # aiohttp has already closed this side: 1009 (too big), 1002/1007 (protocol),
                    # or 1006 when our ping went unanswered.
                    s.end(*_failure(msg.data, source.close_code, side), side)
                    return
                else:  # CLOSING/CLOSED: the peer vanished, or we are closing this side ourselves
                    s.end(*_failure(source.exception(), source.close_code, side), side)
                    return
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            # Writing to the other side failed: that side is gone.
            s.end(_ABNORMAL, "", "upstream" if upward else "client")
        except Exception:
            logger.exception("WebSocket relay failed")
            s.end(INTERNAL_ERROR, "", "gateway")

    @staticmethod
    def _count(s: _Session, upward: bool, size: int) -> None:
        if upward:
            s.bytes_up += size
        else:
            s.bytes_down += size

    async def _supervise(self, s: _Session) -> None:
        """Idle timeout, lifetime cap and route re-checks for one socket."""
        limits = self._limits
        loop = asyncio.get_running_loop()
        s.expiries_checked_to = time.time()
        # Up to 10 % early, so the sockets a deploy or a burst opened together do not all hit
        # the cap, and reconnect, at the same moment (threat model W05). Never later than the cap.
        lifetime = limits.max_lifetime_s * random.uniform(0.9, 1.0)  # noqa: S311 - not a secret
        while not s.ending.is_set():
            deadlines = []
            if limits.idle_timeout_s:
                deadlines.append((s.last_data + limits.idle_timeout_s, "idle timeout"))
            if limits.max_lifetime_s:
                deadlines.append((s.started + lifetime, "maximum lifetime reached"))
            expiry = self._next_token_expiry(s)
            if expiry is not None:
                # A token of this preview runs out: admit the socket again then, so one that
                # came in on that token closes (1008) instead of outliving it.
                deadlines.append((loop.time() + expiry - time.time(), READMIT))
            wake, reason = min(deadlines) if deadlines else (loop.time() + 3600, "")
            if reason == READMIT and loop.time() >= wake:
                s.expiries_checked_to = time.time()
                s.recheck.set()
            elif reason and loop.time() >= wake:
                s.end(GOING_AWAY, reason, "gateway")
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake - loop.time())):
                    await s.recheck.wait()
            if s.recheck.is_set():
                s.recheck.clear()
                why = await self._why_unrouted(s)
                if why:
                    s.end(POLICY_VIOLATION, why, "gateway")
                    return

    @staticmethod
    def _next_token_expiry(s: _Session) -> float | None:
        """The next wall-clock moment (past the verifier's leeway) at which one of the route's
        tokens expires, after those already handled; None for public previews."""
        if s.route.public:
            return None
        upcoming = [
            exp + LEEWAY_S
            for exp in s.route.tokens.values()
            if exp + LEEWAY_S > s.expiries_checked_to
        ]
        return min(upcoming) if upcoming else None

    async def _why_unrouted(self, s: _Session) -> str | None:
        """Why this socket may no longer stay open after its route changed, or None."""
        if self._route_check is None:
            return None
        try:
            # The host the client asked for, not the route's key: a wildcard route is found
            # through the request host, as the edge found it.
            current = await self._route_check(s.host)
        except Exception:
            return None  # the store is down: keep serving, as HTTP does within the grace period
        if current is None:
            return "preview deleted"
        if (
            current.hostname,
            current.target_host,
            current.port,
            current.workspace,
            current.sandbox,
            current.preview,
            current.preview_uid,
        ) != (
            s.route.hostname,
            s.route.target_host,
            s.route.port,
            s.route.workspace,
            s.route.sandbox,
            s.route.preview,
            s.route.preview_uid,
        ):
            # The preview now leads elsewhere: this tunnel goes to the old target.
            return "preview changed"
        refusal = self._refusal(s, current)
        if refusal is None:
            s.route = current  # its token list is the one later expiries are read from
        return refusal

    def _refusal(self, s: _Session, current: Route) -> str | None:
        """Would the upgrade that opened this socket be let in now? Creating another token
        re-checks every socket of the preview; only a revoked one, or the preview turning
        private, closes some."""
        policy = self._admission
        if policy is None:
            # Tokens cannot be checked here: a socket admitted as public fails closed when its
            # preview turns private; one admitted by token lives on.
            return None if current.public or not s.route.public else "access revoked"
        request = s.request
        inbound = admission.Inbound(
            method=request.method,
            headers=request.headers,
            raw_path=request.rel_url.raw_path,
            raw_query=request.rel_url.raw_query_string,
            host_header=request.headers.get("Host", "").lower().rstrip("."),
            scheme="https" if request.secure else "http",
            websocket=True,
        )
        try:
            admission.decide(inbound, current, policy, utcnow())
        except TokenRejected as exc:
            return "token expired" if exc.reason == "token_expired" else "access revoked"
        except GatewayError:
            return "access revoked"
        except Exception:
            # A new upgrade would get a 500 here, so this socket is not let in either.
            logger.exception("re-admitting a WebSocket failed")
            return "access revoked"
        return None

    def on_invalidation(self, hostname: str) -> None:
        # A flush after a resubscribe says nothing about any one route; re-check them all.
        # Re-checks of unrelated sockets find their routes unchanged and leave them alone.
        targets = self._all if hostname == FLUSH_ALL else self._live.get(hostname, ())
        for s in list(targets):
            s.recheck.set()

    async def close_all(self, code: int, reason: str, *, timeout_s: float | None = None) -> None:
        """Close every open socket with ``code`` and refuse new ones; return when they are gone,
        or after ``timeout_s`` with stragglers' connections dropped.

        The default bound is short: at shutdown a peer that does not answer its close within
        it is cut, so that the process exits within its grace period."""
        self._draining = True
        bound = (
            min(DRAIN_TIMEOUT_S, self._limits.close_timeout_s) if timeout_s is None else timeout_s
        )
        # Peers get the whole bound to answer, but no single close may outlast it.
        self._close_timeout_s = min(self._close_timeout_s, max(bound, 0.0))
        for s in list(self._all):
            s.end(code, reason, "gateway")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound):
                while self._all:
                    await self._emptied.wait()
                    self._emptied.clear()
        if self._all:
            logger.warning("%d WebSockets did not close in time", len(self._all))


def _failure(exc: object, code: int | None, side: str) -> tuple[int, str]:
    """Close code and reason for a side that ended without a close frame."""
    if isinstance(exc, aiohttp.WebSocketError):
        if exc.code == MESSAGE_TOO_BIG:
            return MESSAGE_TOO_BIG, "message too big"
        return exc.code, "protocol error"
    if isinstance(exc, TimeoutError):
        # aiohttp's heartbeat: our ping went unanswered.
        return _ABNORMAL, f"{side} did not answer ping"
    if code == MESSAGE_TOO_BIG:
        return MESSAGE_TOO_BIG, "message too big"
    return _ABNORMAL if code in (None, NORMAL) else code, ""
