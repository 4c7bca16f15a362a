"""The edge's client connections: one ``asyncio.Protocol`` per client connection, heads parsed
strictly by httptools (llhttp), bodies relayed raw by the exchange.

The listener finds the end of each head itself and gives httptools only the head, so the body
that follows stays raw bytes (relayed as framed) and a pipelined request stays in the buffer
until the one before it is answered: responses go out in order without a queue. Limits that
llhttp lacks are checked on the raw bytes first: by default 64 KiB of head, 128 fields, 8 KiB a
line (431; ``GATEWAY_MAX_HEADER_*``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

import httptools

from gateway.core.errors import BadRequest, GatewayError
from gateway.core.planner import BodyFraming, RequestHead
from gateway.edge.config import HeadLimits
from gateway.edge.discard import DISCARD_MAX, Discard
from gateway.edge.guard import shed
from gateway.edge.pages import render_bytes
from gateway.ops import log

if TYPE_CHECKING:
    from gateway.edge.exchange import Relay
    from gateway.edge.server import EdgeServer, RequestHandler

HEAD_LIMITS = HeadLimits()
_BUFFER_HIGH = 0x10000
"""Unconsumed client bytes (a pipelined head, a body not yet wanted) above which reading stops."""


class HeadersTooLarge(GatewayError):
    status = 431
    code = "headers_too_large"
    title = "Request header fields too large"


class _Head:
    """httptools callbacks for one request head."""

    __slots__ = ("headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))


def parse_head(
    raw: bytes, peer: str, scheme: str = "http", limits: HeadLimits = HEAD_LIMITS
) -> tuple[RequestHead, bool]:
    """The head (with its final CRLFCRLF) as a ``RequestHead``, and whether the connection may
    stay open after it. Raises ``BadRequest`` or ``HeadersTooLarge``."""
    lines = raw.count(b"\r\n") - 2
    if lines > limits.max_header_fields:
        raise HeadersTooLarge(f"More than {limits.max_header_fields} header fields.")
    longest = limits.max_header_line_bytes
    if max(len(line) for line in raw.split(b"\r\n")) > longest:
        raise HeadersTooLarge(f"A request line or header field is over {longest} bytes.")
    cb = _Head()
    parser = httptools.HttpRequestParser(cb)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        pass  # the upgrade itself is decided by the planner and the upstream
    except httptools.HttpParserError as exc:
        raise BadRequest("The request could not be parsed.") from exc
    http_version = parser.get_http_version()
    if http_version not in ("1.0", "1.1"):
        # llhttp reads "GET /a\r\n" as HTTP/0.9 and the next line as a header (threat model S16).
        raise BadRequest("The request could not be parsed.")
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in cb.headers]
    version = (1, 1) if http_version == "1.1" else (1, 0)
    # Not parser.should_keep_alive(): llhttp resets its flags once a bodiless message is complete.
    tokens = {
        t.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for t in value.split(",")
    }
    keep_alive = "keep-alive" in tokens if version < (1, 1) else "close" not in tokens
    head = RequestHead(
        method=parser.get_method().decode("ascii"),
        target=cb.url.decode("latin-1"),
        version=version,
        headers=headers,
        peer=peer,
        scheme=scheme,
    )
    return head, keep_alive


class ClientConnection(asyncio.Protocol):
    def __init__(self, edge: RequestHandler, server: EdgeServer, scheme: str = "http") -> None:
        self._edge = edge
        self._server = server
        self._scheme = scheme
        """'https' on the TLS listener: X-Forwarded-Proto and the token cookie follow it."""
        # Kept: asyncio.get_running_loop() costs a getpid() syscall on Python 3.11.
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer = ""
        self.version = (1, 1)
        self.keep_alive = True
        self._buf = bytearray()
        self._relay: Relay | None = None
        self._busy = False
        """A request is being handled: its head was parsed and its response is not done."""
        self._closing = False
        self._reading_paused = False
        self._upstream_paused = False
        self._idle_since = self.loop.time()
        self._head_started: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    # ── asyncio callbacks ───────────────────────────────────────────────────────────────────
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, though it is one in all
        # but name: an isinstance assert would refuse every connection under uvloop.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else ""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Tunnels left ``connections`` when they took the socket over; they count all the same.
        open_now = len(self._server.connections) + self._server.edge.hub.open_count
        refusal = self._server.edge.guard.admit_connection(self.peer, open_now)
        if refusal is not None:
            # Shed before any parsing, routing or task: the cheapest answer there is.
            self._shed = self._closing = True
            self._timer = shed(self.transport, refusal, self.date_header())
            return
        self._server.connections.add(self)
        self._arm(self._idle_since + self._server.keepalive_s)

    def data_received(self, data: bytes) -> None:
        if self._shed:
            return  # answered at accept; read and dropped until the client closes
        relay = self._relay
        if relay is not None and not relay.body_done and not self._buf:
            n = relay.take_body(data)
            if n == len(data):
                return
            data = data[n:]
        self._buf += data
        self._pump()

    def eof_received(self) -> bool | None:
        # Half-closed after sending its request: the response still goes out, then the close.
        self._eof = True
        return self._busy

    _eof = False
    _shed = False

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._shed:
            return
        self._server.edge.guard.connection_closed(self.peer)
        self._server.connections.discard(self)
        self._server.check_drained()
        if self._relay is not None:
            self._relay.client_lost()
        elif self._task is not None and not self._task.done():
            self._task.cancel()  # still routing or dialling: nobody is left to answer

    def pause_writing(self) -> None:
        if self._relay is not None:
            self._relay.client_pause_writing()

    def resume_writing(self) -> None:
        if self._relay is not None:
            self._relay.client_resume_writing()

    # ── the exchange's side ─────────────────────────────────────────────────────────────────
    def attach(self, relay: Relay, *, expect_continue: bool) -> None:
        self._relay = relay
        if not relay.body_done:
            if expect_continue and not self._buf:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._pump()

    def respond(self, data: bytes, *, close: bool) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)
        if close:
            self.keep_alive = False

    def finished(self, relay: Relay | None) -> None:
        """The response is complete (or the connection cut): next request, or close."""
        if self._tunnel:
            # The tunnel owned the transport and has closed it; nothing more comes here.
            self._closing = True
            self._server.connections.discard(self)
            self._server.check_drained()
            return
        self._relay = None
        self._busy = False
        self._task = None
        if relay is not None and relay.close_client:
            self.keep_alive = False
        if relay is None and self._body_unread():
            # Answered without reading the body (an error page, a preflight): skip a small one
            # so the connection can serve the next request; otherwise close.
            if self._body_left > DISCARD_MAX:
                self.keep_alive = False
            else:
                self._relay = Discard(self._body_left, self._body_chunked)  # type: ignore[assignment]
        self._upstream_paused = False
        if not self.keep_alive or self._server.draining or self._eof:
            self._close()
            return
        self._idle_since = self.loop.time()
        self._pump()

    def hand_over(self) -> bytes:
        """The connection becomes a WebSocket tunnel's: its callbacks go there from now on.
        Returns what the client sent past the handshake."""
        self._tunnel = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        data, self._buf = bytes(self._buf), bytearray()
        return data

    _tunnel = False

    def pause_for_upstream(self, paused: bool) -> None:
        self._upstream_paused = paused
        self._flow()

    def date_header(self) -> str:
        return self._server.date_header()

    # ── parsing ─────────────────────────────────────────────────────────────────────────────
    def _pump(self) -> None:
        if self._closing:
            return
        relay = self._relay
        if relay is not None:
            if not relay.body_done and self._buf:
                n = relay.take_body(self._buf)
                del self._buf[:n]
            if isinstance(relay, Discard):
                if relay.failed:
                    self._close()
                    return
                if relay.body_done:
                    self._relay = None
                    relay = None
        if relay is None and not self._busy and self._buf:
            self._next_head()
        self._flow()

    def _next_head(self) -> None:
        buf = self._buf
        while buf[:2] == b"\r\n":
            del buf[:2]  # empty lines between pipelined requests (RFC 9112 §2.2)
        if not buf:
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if self._head_started is None:
                self._head_started = self.loop.time()
                self._arm(self._head_started + self._server.header_timeout_s)
            last = len(buf) - (buf.rfind(b"\n") + 1)
            limits = self._server.head_limits
            if len(buf) > limits.max_header_bytes or last > limits.max_header_line_bytes:
                self._refuse(HeadersTooLarge("The request headers are too large."))
            return
        if end + 4 > self._server.head_limits.max_header_bytes:
            self._refuse(HeadersTooLarge("The request headers are too large."))
            return
        raw = bytes(buf[: end + 4])
        del buf[: end + 4]
        self._head_started = None
        try:
            head, keep_alive = parse_head(raw, self.peer, self._scheme, self._server.head_limits)
        except GatewayError as exc:
            self._refuse(exc)
            return
        self.version, self.keep_alive = head.version, keep_alive
        self._busy = True
        self._body_left = 0
        self._body_chunked = False
        self._edge.start(self, head)

    def spawn(self, step: Coroutine[Any, Any, None]) -> None:
        """Run a step of this connection's request that has to wait; cancelled if the client
        goes away before it is done."""
        self._task = self._server.spawn(step)

    def body_framing(self, framing: BodyFraming, length: int) -> None:
        """The request's body, as the planner read it: skipped if the answer does not need it."""
        self._body_left = length
        self._body_chunked = framing is BodyFraming.CHUNKED

    @property
    def buffered(self) -> bytearray:
        return self._buf

    def _body_unread(self) -> bool:
        return bool(self._body_left or self._body_chunked)

    _body_left = 0
    _body_chunked = False

    def _refuse(self, exc: GatewayError) -> None:
        log.edge.debug("malformed request from %s: %s", self.peer, type(exc).__name__)
        extra = self.date_header() + "Connection: close\r\n"
        self.transport.write(render_bytes(exc, "", extra=extra))
        self._close()

    def _flow(self) -> None:
        pause = self._upstream_paused or len(self._buf) > _BUFFER_HIGH
        if pause != self._reading_paused and not self._closing:
            self._reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _close(self) -> None:
        self._closing = True
        self.transport.close()

    # ── deadlines ───────────────────────────────────────────────────────────────────────────
    def _arm(self, when: float) -> None:
        timer = self._timer
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timer = self.loop.call_at(when, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._closing:
            return
        now = self.loop.time()
        server = self._server
        if self._busy:
            self._arm(now + server.header_timeout_s)
            return
        if self._head_started is not None:
            if now >= self._head_started + server.header_timeout_s - 0.001:
                log.edge.info("closing a connection that did not finish its headers in time")
                self.transport.abort()
                return
            self._arm(self._head_started + server.header_timeout_s)
            return
        if now >= self._idle_since + server.keepalive_s - 0.001:
            self._close()
            return
        self._arm(self._idle_since + server.keepalive_s)

    def drain(self) -> None:
        if not self._busy:
            self._close()
        # Busy: the response in flight says Connection: close, and the connection ends with it.
        self.keep_alive = False
