"""One request's relay: upstream head out, body bytes both ways.

The request task awaits the route, admission and a pooled connection; from then on the bytes
move in protocol callbacks (no coroutine per chunk), and the task waits for one future. Bodies
are relayed as framed: ``Content-Length`` by count, chunked through ``ChunkedScanner``,
close-delimited until EOF. Each side's write buffer pauses the other side's reading.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from gateway.core.errors import (
    BadRequest,
    GatewayError,
    PayloadTooLarge,
    RequestTimedOut,
    UpstreamBadResponse,
)
from gateway.core.http_framing import (
    MAX_HEAD_BYTES,
    BodyKind,
    ChunkedScanner,
    FramingError,
    ResponseHead,
    find_head_end,
    parse_response_head,
)
from gateway.core.limits import upload_too_slow
from gateway.core.planner import ResponseEdits, shape_response
from gateway.edge import upstream_errors
from gateway.edge.config import RelayLimits
from gateway.edge.dechunk import Dechunker
from gateway.edge.pages import status_phrase
from gateway.edge.pool import UpstreamConnection


class Client(Protocol):
    """What the exchange needs of the client connection (``connection.ClientConnection``)."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    version: tuple[int, int]
    keep_alive: bool

    def pause_for_upstream(self, paused: bool) -> None: ...
    def date_header(self) -> str: ...


class Relay:
    """The bytes of one forwarded request, from the upstream head being written to the end of
    the response. ``done`` resolves when it ends; ``error`` is set when it ended in a failure
    that can still be answered with a page (nothing was sent to the client yet)."""

    def __init__(
        self,
        client: Client,
        conn: UpstreamConnection,
        *,
        method: str,
        body: int,
        chunked: bool,
        limits: RelayLimits,
        edits: ResponseEdits,
        close_after: bool,
        upgrade: bool = False,
    ) -> None:
        self.loop = client.loop  # not get_running_loop(): a getpid() syscall on Python 3.11
        self.client = client
        self.conn = conn
        self.method = method
        self.limits = limits
        self.edits = edits
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.error: GatewayError | None = None
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = False
        """The response head went to the client: failures from now on can only cut it."""
        self.reusable = False
        self.upgrade = upgrade
        self.tunneled = False
        """The connections became a WebSocket tunnel's; it outlives this relay."""
        self.switched: tuple[ResponseHead, bytes] | None = None
        """A WebSocket handshake the upstream accepted: its 101 head and the bytes after it."""
        self.aborted = False
        self.close_client = close_after
        # request body
        self.body_left = body
        self.body_scanner = ChunkedScanner() if chunked else None
        self.body_done = not chunked and not body
        self.body_seen = False
        # response
        self._head = bytearray()
        self._resp: ResponseHead | None = None
        self._left = 0
        self._scanner: ChunkedScanner | None = None
        self._dechunk: Dechunker | None = None
        now = self.loop.time()
        self.sent_at = now
        self.head_at = 0.0
        """When the response head arrived (for the access log's upstream_ms)."""
        self._last_in = now
        self._last_out = now
        self._window_at = now
        """Start of the current upload-progress window; ``_window_bytes`` came in since."""
        self._window_bytes = 0
        self._upstream_full = False
        """The upstream stopped reading: its write buffer is over the high-water mark."""
        self._timer: asyncio.TimerHandle | None = None

    # ── request body: client → upstream ─────────────────────────────────────────────────────
    def take_body(self, data: bytes | bytearray) -> int:
        """Send the body bytes at the start of ``data`` upstream; returns how many were body."""
        if self.body_done or self.done.done():
            return 0
        self.body_seen = True
        self._last_in = self._last_out = self.loop.time()
        scanner = self.body_scanner
        if scanner is None:
            n = min(len(data), self.body_left)
            self.body_left -= n
            self.body_done = not self.body_left
        else:
            try:
                end = scanner.feed(data)
            except FramingError:
                self._fail(BadRequest("The request could not be parsed."))
                return len(data)
            n = len(data) if end < 0 else end
            self.body_done = end >= 0
        self.bytes_in += n
        self._window_bytes += n
        if self.limits.max_body_bytes and self.bytes_in > self.limits.max_body_bytes:
            limit = self.limits.max_body_bytes
            self._fail(PayloadTooLarge(f"The request body is larger than {limit} bytes."))
            return n
        self.conn.write(data if n == len(data) else data[:n])
        return n

    # ── response: upstream → client ─────────────────────────────────────────────────────────
    def upstream_data(self, data: bytes) -> None:
        self._last_out = self.loop.time()
        if self._resp is None:
            self._head += data
            self._read_head()
            return
        self._relay_body(data, 0)

    def _read_head(self) -> None:
        while True:
            end = find_head_end(self._head)
            if end < 0:
                if len(self._head) > MAX_HEAD_BYTES:
                    self._fail(upstream_errors.bad_response())
                return
            try:
                resp = parse_response_head(self._head, request_method=self.method)
            except FramingError:
                self._fail(upstream_errors.bad_response())
                return
            rest = bytes(self._head[end:])
            if 100 <= resp.status < 200 and resp.status != 101:
                # Interim answers (100, 103) are the app's business with its own client; the
                # gateway sent its own 100 Continue already.
                self._head = bytearray(rest)
                continue
            if resp.status == 101:
                if self.upgrade:
                    self.switched = (resp, rest)
                    self._end()
                    return
                self._fail(UpstreamBadResponse("The app switched protocols on a plain request."))
                return
            if self.upgrade and resp.status < 300:
                # A page (a dev server without WebSocket support on this path): no tunnel, and
                # not the app's status to pass on.
                self._fail(upstream_errors.not_upgraded())
                return
            self._start_response(resp, rest)
            return

    def _start_response(self, resp: ResponseHead, rest: bytes) -> None:
        self._resp = resp
        self.status = resp.status
        kind = resp.body
        client_11 = self.client.version >= (1, 1)
        chunked = kind is BodyKind.CHUNKED
        headers = shape_response(
            resp.status, resp.headers, self.edits, chunked=chunked and client_11
        )
        if self.upgrade:
            # The app refused the upgrade: its answer, marked as the app's.
            headers = [(k, v) for k, v in headers if k.lower() != "x-blaxel-source"]
            headers.append(("X-Blaxel-Source", "app"))
        framing = ""
        if chunked:
            self._scanner = ChunkedScanner()
            if not client_11:
                # An HTTP/1.0 client cannot read chunks: the payload alone, ended by closing.
                self._dechunk = Dechunker()
                self.close_client = True
        elif kind is BodyKind.LENGTH:
            self._left = resp.content_length
        elif kind is BodyKind.CLOSE:
            self.close_client = True  # close-delimited: so is the client's copy
        if not self.body_done:
            self.close_client = True
        if not self.client.keep_alive:
            self.close_client = True
        if self.close_client:
            framing += "Connection: close\r\n"
        elif not client_11:
            framing += "Connection: keep-alive\r\n"
        lines = [f"HTTP/1.1 {resp.status} {status_phrase(resp.status)}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        if not any(k.lower() == "date" for k, _ in headers):
            lines.append(self.client.date_header())
        lines.append(framing)
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1", "replace")
        self.started = True
        self.head_at = self.loop.time()
        self.arm()  # from now on the upstream idle deadline
        if kind is BodyKind.NONE:
            self.client.transport.write(head)
            self._complete(clean=not rest)
            return
        self._relay_body(rest, 0, head)

    def _relay_body(self, data: bytes, start: int, head: bytes = b"") -> None:
        out = self.client.transport
        scanner = self._scanner
        n = len(data)
        if scanner is not None:
            piece = data[start:] if start else data
            payload = b""
            try:
                end = scanner.feed(piece)
                if self._dechunk is not None:
                    payload = self._dechunk.payload(piece if end < 0 else piece[:end])
            except FramingError:
                self._cut()
                return
            stop = len(piece) if end < 0 else end
            self.bytes_out += stop
            if self._dechunk is not None:
                out.write(head + payload)
            elif stop == len(piece):
                out.write(head + piece if head else piece)
            else:
                out.write(head + piece[:stop])
            if end >= 0:
                self._complete(clean=stop == len(piece))
            return
        if self._resp is not None and self._resp.body is BodyKind.LENGTH:
            take = min(self._left, n - start)
            self._left -= take
            self.bytes_out += take
            piece = data[start : start + take] if take != n - start or start else data
            out.write(head + piece if head else piece)
            if not self._left:
                self._complete(clean=start + take == n)
            return
        self.bytes_out += n - start
        out.write(head + data[start:] if head else data[start:] if start else data)

    def upstream_lost(self, exc: BaseException | None) -> None:
        if self.done.done():
            return
        resp = self._resp
        if resp is not None and resp.body is BodyKind.CLOSE and exc is None:
            self._complete(clean=False)  # EOF is the end
            return
        if self.started:
            self._cut()
            return
        self._fail(upstream_errors.closed_without_answer())

    def upstream_eof(self) -> None:
        """Nothing to do yet: ``upstream_lost`` follows at once and decides."""

    # ── flow control ────────────────────────────────────────────────────────────────────────
    def upstream_pause_writing(self) -> None:
        self._upstream_full = True
        self.client.pause_for_upstream(True)

    def upstream_resume_writing(self) -> None:
        self._upstream_full = False
        self.client.pause_for_upstream(False)

    def client_pause_writing(self) -> None:
        self.conn.pause_reading()

    def client_resume_writing(self) -> None:
        if not self.conn.is_closing:
            self.conn.resume_reading()

    def client_lost(self) -> None:
        if not self.done.done():
            self.reusable = False
            self.conn.close()
            self.done.set_result(None)

    # ── deadlines ───────────────────────────────────────────────────────────────────────────
    def arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(self._next_deadline(), self._check)

    def _next_deadline(self) -> float:
        if self._resp is None:
            deadline = self._last_out + self.limits.response_s
            if not self.body_done:
                deadline = min(deadline, self._last_in + self.limits.body_idle_s)
                if self.limits.min_upload_rate:
                    deadline = min(deadline, self._window_at + self.limits.upload_window_s)
            return deadline
        if self.limits.upstream_idle_s:
            return self._last_out + self.limits.upstream_idle_s
        return self.loop.time() + 3600.0

    def _check(self) -> None:
        self._timer = None
        if self.done.done():
            return
        now = self.loop.time()
        if self._resp is None:
            if not self.body_done and now >= self._last_in + self.limits.body_idle_s - 0.001:
                self._fail(self._stalled("The request body stopped arriving."))
                return
            if not self.body_done and self._upload_too_slow(now):
                self._fail(self._stalled("The request body is arriving too slowly."))
                return
            if now >= self._last_out + self.limits.response_s - 0.001:
                self._fail(upstream_errors.response_timeout())
                return
        elif (
            self.limits.upstream_idle_s
            and now >= self._last_out + self.limits.upstream_idle_s - 0.001
        ):
            self._cut()
            return
        self.arm()

    def _upload_too_slow(self, now: float) -> bool:
        """At the end of each window: did the body bring its minimum? Then a new window."""
        limits = self.limits
        if not limits.min_upload_rate or now < self._window_at + limits.upload_window_s - 0.001:
            return False
        window_s, received = now - self._window_at, self._window_bytes
        self._window_at, self._window_bytes = now, 0
        return upload_too_slow(received, window_s, limits.min_upload_rate)

    def _stalled(self, message: str) -> GatewayError:
        """A body that stopped: the client's doing (408), or the app's when it stopped reading
        and the gateway stopped reading the client to wait for it (504)."""
        if self._upstream_full:
            return upstream_errors.stopped_reading()
        return RequestTimedOut(message)

    # ── endings ─────────────────────────────────────────────────────────────────────────────
    def _complete(self, *, clean: bool) -> None:
        """The response ended where its framing says. The connection goes back to the pool only
        if nothing followed it and the request body was all sent."""
        self.reusable = clean and self.body_done and self._resp is not None
        self.reusable = self.reusable and self._resp is not None and self._resp.keep_alive
        self._end()
        if not self.body_done:
            self.close_client = True

    def _fail(self, error: GatewayError) -> None:
        if self.started:
            self._cut()
            return
        self.error = error
        self.close_client = self.close_client or not self.body_done
        self._end()

    def _cut(self) -> None:
        """Headers are out: cutting the connection is the only way to say the body is short."""
        self.error = None
        self.aborted = True
        self.close_client = True
        self.client.transport.abort()
        self._end()

    def _end(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.reusable and self.switched is None:
            self.conn.close()
        if not self.done.done():
            self.done.set_result(None)
