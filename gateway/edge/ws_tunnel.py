"""A WebSocket relayed as raw bytes after the 101: both transports, two protocol objects, one
timer, no task.

* Bytes go on as they arrive. Each direction's frame headers are read as they pass
  (``core.ws_frames``); data payloads are never unmasked or copied, so compressed frames pass
  untouched (RSV1 is allowed when the upstream accepted permessage-deflate).
* The gateway pings each peer every ``ping_interval_s``, between frames (a ping toward the
  upstream is masked), and consumes the pongs that answer it. A peer that answers nothing and
  sends nothing for an interval is dead: 1006 for it, 1011 for the other side. Peers' own pings
  and pongs pass through and count as activity; otherwise only data frames do (the idle limit).
* Close codes pass through, with those that may not go on the wire mapped; the side that closed
  gets its own code back. A message over ``max_message_bytes`` (across fragments) is refused
  with 1009 before its frame passes (compressed messages count as sent: the gateway does not
  inflate them); a protocol violation gets 1002 (or 1007).
* Once closing, a data frame already half passed is finished, so the close frame never splits
  it; nothing after it goes on. A peer that does not answer the close within the bound is cut.
* Backpressure: a side whose write buffer is over its high-water mark pauses reading from the
  other side until it drains.
* Memory per idle tunnel: the two protocol objects, two scanners and one timer handle, all with
  ``__slots__``; no buffer is kept when empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets

from gateway.core.ws_close import (
    ABNORMAL,
    GOING_AWAY,
    wire_close_code,
)
from gateway.core.ws_frames import (
    CONTROL,
    FAILED,
    FORWARD,
    NEED_MORE,
    Control,
    FrameScanner,
)
from gateway.core.ws_wire import (
    OP_CLOSE,
    OP_PING,
    close_frame,
    ping_frame,
)
from gateway.edge.ws_hub import TunnelEnd, WsLimits

__all__ = ["WsTunnel"]


class _Side(asyncio.Protocol):
    """One peer of the tunnel: its transport, the scanner of what it sends, and what the
    gateway still has to write to it."""

    __slots__ = (
        "broken",
        "close_written",
        "got_close",
        "heard",
        "lost",
        "mask_out",
        "name",
        "paused",
        "peer",
        "pending",
        "ping_out",
        "received",
        "scanner",
        "transport",
        "tunnel",
    )

    def __init__(
        self, tunnel: WsTunnel, name: str, transport: asyncio.Transport, scanner: FrameScanner
    ) -> None:
        self.tunnel = tunnel
        self.name = name
        self.transport = transport
        self.scanner = scanner
        self.mask_out = name == "upstream"  # the gateway is the upstream's client
        self.peer: _Side = self
        self.pending = b""
        """The gateway's own frames for this side, waiting for a frame boundary in its stream."""
        self.ping_out: bytes | None = None
        self.heard = False
        self.paused = False
        self.got_close = self.close_written = self.lost = self.broken = False
        self.received = 0

    # ── asyncio callbacks ───────────────────────────────────────────────────────────────────
    def data_received(self, data: bytes) -> None:
        self.tunnel.relay(self, data)

    def eof_received(self) -> bool:
        return False  # a half-closed peer is done: close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.lost(self)

    def pause_writing(self) -> None:
        # This side is not taking our writes: stop reading what the other side sends it. Not
        # while closing: then the other side's answer to our close must be read.
        if not self.tunnel.closing:
            self.peer.set_reading(paused=True)

    def resume_writing(self) -> None:
        self.peer.set_reading(paused=False)

    # ── writing ─────────────────────────────────────────────────────────────────────────────
    def set_reading(self, *, paused: bool) -> None:
        self.paused = paused
        if not self.lost:
            with contextlib.suppress(RuntimeError):
                (self.transport.pause_reading if paused else self.transport.resume_reading)()

    def at_boundary(self) -> bool:
        """Whether a frame of the gateway's own may be written to this side now."""
        return self.peer.scanner.at_boundary or self.peer.broken

    def send_own(self, frame: bytes) -> None:
        self.pending += frame
        if self.at_boundary():
            self.flush()

    def flush(self) -> None:
        frames, self.pending = self.pending, b""
        if self.lost:
            return
        self.transport.write(frames)
        if self.tunnel.closing and not self.close_written:
            self.close_written = True
            if self.got_close or self.broken:
                self.transport.close()  # the close handshake is complete on this side


class WsTunnel:
    __slots__ = (
        "_by",
        "_close_by",
        "_code",
        "_early",
        "_lifetime_at",
        "_limits",
        "_loop",
        "_next_ping",
        "_reason",
        "_timer",
        "client",
        "closing",
        "done",
        "last_data",
        "messages",
        "upstream",
    )

    def __init__(
        self,
        client_transport: asyncio.Transport,
        upstream_transport: asyncio.Transport,
        limits: WsLimits,
        client_buffered: bytes = b"",
        upstream_buffered: bytes = b"",
        compressed: bool = False,
    ) -> None:
        self._limits = limits
        self._loop = asyncio.get_running_loop()
        most = limits.max_message_bytes
        self.client = _Side(
            self,
            "client",
            client_transport,
            FrameScanner(
                masked=True, max_message_bytes=most, compressed=compressed, validate_text=True
            ),
        )
        self.upstream = _Side(
            self,
            "upstream",
            upstream_transport,
            FrameScanner(masked=False, max_message_bytes=most, compressed=compressed),
        )
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self._early: tuple[bytes, bytes] | None = (client_buffered, upstream_buffered)
        """What the listener read past the handshake from each side, relayed at ``start``."""
        self.done: asyncio.Future[TunnelEnd] = self._loop.create_future()
        self.closing = False
        self._code, self._reason, self._by = 0, "", ""
        self._close_by = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.messages = 0
        now = self._loop.time()
        self.last_data = now
        self._next_ping = now + limits.ping_interval_s
        # Up to 10 % early, so the sockets a deploy or a burst opened together do not all hit
        # the cap, and reconnect, at the same moment (threat model W05). Never later than the cap.
        jitter = random.uniform(0.9, 1.0)  # noqa: S311 - not a secret
        self._lifetime_at = now + limits.max_lifetime_s * jitter if limits.max_lifetime_s else 0.0

    def start(self) -> None:
        """Take both transports over and relay what they had already read past the handshake."""
        early, self._early = self._early or (b"", b""), None
        for side in (self.client, self.upstream):
            side.transport.set_protocol(side)
            if side.transport.is_closing():
                self.lost(side)
        for side, data in zip((self.client, self.upstream), early, strict=True):
            if data and not side.lost:
                self.relay(side, data)
        for side in (self.client, self.upstream):
            if not side.lost:
                side.set_reading(paused=False)
        self._schedule()

    def close(self, code: int, reason: str, *, timeout_s: float | None = None) -> None:
        """Close both sides with ``code``; peers that do not answer in time are cut."""
        bound = self._limits.close_timeout_s if timeout_s is None else timeout_s
        if self.closing:
            self._close_by = min(self._close_by, self._loop.time() + bound)
            self._schedule()
            return
        self._begin_close(code, reason, "gateway", bound)

    def abort(self) -> None:
        for side in (self.client, self.upstream):
            if not side.lost:
                side.transport.abort()

    def buffered_bytes(self) -> int:
        transport = self.client.transport
        return 0 if self.client.lost else transport.get_write_buffer_size()

    # ── relaying ────────────────────────────────────────────────────────────────────────────
    def relay(self, src: _Side, data: bytes) -> None:
        """Pass on what ``src`` sent, a run of whole or partial data frames at a time."""
        src.heard = True
        src.received += len(data)
        if src.broken:
            return
        dst, scanner = src.peer, src.scanner
        pos, n = 0, len(data)
        while pos < n:
            if dst.pending and scanner.at_boundary:
                dst.flush()
            kind, end = scanner.scan(data, pos, stop_at_boundary=bool(dst.pending))
            if kind == FORWARD:
                if scanner.data_frames:
                    self.last_data = self._loop.time()
                    self.messages += scanner.messages
                if not dst.close_written and not dst.lost:
                    if scanner.prefix:
                        dst.transport.write(scanner.prefix)
                    dst.transport.write(data if pos == 0 and end == n else data[pos:end])
            elif kind == CONTROL:
                assert scanner.control is not None
                self._control(src, scanner.control)
            elif kind == FAILED:
                assert scanner.failure is not None
                src.broken = True
                self._begin_close(*scanner.failure, src.name, self._limits.close_timeout_s)
                return
            elif kind == NEED_MORE:
                break
            pos = end
        if dst.pending and scanner.at_boundary:
            dst.flush()

    def _control(self, src: _Side, control: Control) -> None:
        if control.opcode == OP_CLOSE:
            src.got_close = True
            if not self.closing:
                self._begin_close(
                    control.close_code, control.close_reason, src.name, self._limits.close_timeout_s
                )
            elif src.close_written:
                src.transport.close()  # it answered our close
            return
        if control.opcode != OP_PING and src.ping_out == control.payload:
            src.ping_out = None  # the answer to our own ping: not the other side's business
            return
        self.last_data = self._loop.time()  # the peers' own keepalives count as activity
        dst = src.peer
        if not dst.close_written and not dst.lost:
            dst.transport.write(control.raw)

    # ── ending ──────────────────────────────────────────────────────────────────────────────
    def _begin_close(self, code: int, reason: str, by: str, bound: float) -> None:
        if self.closing:
            return
        self.closing = True
        # The first reason to end wins: later ones are consequences of our own closing.
        self._code, self._reason, self._by = code, reason, by
        self._close_by = self._loop.time() + bound
        wire = wire_close_code(code)
        for side in (self.client, self.upstream):
            if not side.lost:
                side.send_own(close_frame(wire, reason, mask=side.mask_out))
        for side in (self.client, self.upstream):
            # What is read from now on is dropped (past a frame in passage), so reading can
            # resume: a side paused for backpressure must still be heard answering the close.
            if side.paused:
                side.set_reading(paused=False)
        self._schedule()

    def lost(self, side: _Side) -> None:
        if side.lost:
            return
        side.lost = True
        side.pending = b""
        if not self.closing:
            self._begin_close(ABNORMAL, "", side.name, self._limits.close_timeout_s)
        if self.client.lost and self.upstream.lost:
            self._finish()

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.done.done():
            self.done.set_result(
                TunnelEnd(
                    closed_by=self._by,
                    code=self._code,
                    reason=self._reason,
                    messages=self.messages,
                    bytes_up=self.client.received,
                    bytes_down=self.upstream.received,
                )
            )

    # ── the one timer: pings, dead peers, idle, lifetime, the close bound ───────────────────
    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.done.done():
            self._timer = None
            return
        limits = self._limits
        if self.closing:
            wake = self._close_by
        else:
            wake = self._next_ping
            if limits.idle_timeout_s:
                wake = min(wake, self.last_data + limits.idle_timeout_s)
            if self._lifetime_at:
                wake = min(wake, self._lifetime_at)
        self._timer = self._loop.call_at(wake, self._tick)

    def _tick(self) -> None:
        self._timer = None
        now = self._loop.time()
        limits = self._limits
        if self.closing:
            if now >= self._close_by:
                self.abort()  # a peer that did not answer our close in time
                return
        elif self._lifetime_at and now >= self._lifetime_at:
            self._begin_close(
                GOING_AWAY, "maximum lifetime reached", "gateway", limits.close_timeout_s
            )
        elif limits.idle_timeout_s and now >= self.last_data + limits.idle_timeout_s:
            self._begin_close(GOING_AWAY, "idle timeout", "gateway", limits.close_timeout_s)
        elif now >= self._next_ping:
            self._next_ping = now + limits.ping_interval_s
            for side in (self.client, self.upstream):
                self._keepalive(side)
        self._schedule()

    def _keepalive(self, side: _Side) -> None:
        if self.closing or side.lost:
            return
        if side.ping_out is not None:
            # Unanswered. A side that sent something meanwhile, or whose bytes we are not
            # reading (the other side is slow), is alive, and so is one our ping has not even
            # reached (it waits behind a long frame); one that sent nothing is dead.
            if not side.heard and not side.paused and not side.pending:
                self._begin_close(
                    ABNORMAL,
                    f"{side.name} did not answer ping",
                    side.name,
                    self._limits.close_timeout_s,
                )
        else:
            side.ping_out = secrets.token_bytes(8)
            side.send_own(ping_frame(side.ping_out, mask=side.mask_out))
        side.heard = False
