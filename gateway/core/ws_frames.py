"""An incremental RFC 6455 frame scanner for a relay that moves raw bytes (the frames the
gateway writes itself are built by ``ws_wire``).

The scanner is fed the bytes one peer sent, in whatever pieces they arrived, and says which of
them may go on to the other peer as they are. It reads frame headers only: data payloads are
never unmasked, copied or decoded (compressed ones included: the peers chose the extension).
Control frames are small (at most 125 bytes of payload), so they are gathered whole and
unmasked: the relay must see a pong's payload to tell the answers to its own pings, and a close
frame's code and reason.

One exception, on the client's side only (``validate_text``): an uncompressed text message is
checked to be UTF-8 before it reaches the sandbox, as an endpoint would (1007), so each of its
frames is held whole, unmasked into a copy and decoded incrementally; the frame's original bytes
then pass on unchanged. The message cap (1009) bounds what is held.

``scan`` stops wherever the caller has something to do: at a control frame, a failure, the end of
the bytes, or (when asked) at the next frame boundary, where the gateway may insert a frame of
its own without splitting one of the peer's.
"""

from __future__ import annotations

import codecs
import struct

from gateway.core.ws_close import (
    MESSAGE_TOO_BIG,
    NO_STATUS,
    PROTOCOL_ERROR,
    valid_received_code,
)
from gateway.core.ws_wire import OP_BINARY, OP_CLOSE, OP_CONT, OP_PONG, OP_TEXT, unmask

INVALID_PAYLOAD = 1007

# What ``scan`` returns first, saying what the bytes up to its second value were.
FORWARD = 0
"""``prefix`` and then ``data[pos:end]`` are whole or partial data frames: pass them on."""
CONTROL = 1
"""``data[pos:end]`` (after any held bytes) completed a control frame: see ``control``."""
NEED_MORE = 2
"""Everything up to ``end`` was taken in to complete a header: nothing to pass on yet."""
FAILED = 3
"""The peer broke the protocol at ``pos``: ``failure`` holds the close code and reason."""

_MAX_CONTROL = 125
_MAX_HEAD = 14  # 2 + 8 (64-bit length) + 4 (mask key)
_MAX_HELD = _MAX_HEAD + _MAX_CONTROL
_STOP = -1
_HOLD = -2  # a text frame to check is incomplete: hold it until it is whole
# A message's first frame, without FIN: text or binary, RSV1 too when deflate was negotiated.
_PLAIN_STARTS = frozenset((OP_TEXT, OP_BINARY))
_COMPRESSED_STARTS = frozenset((OP_TEXT, OP_BINARY, 0x40 | OP_TEXT, 0x40 | OP_BINARY))


class Control:
    """A whole control frame as it arrived (``raw``), and its unmasked payload."""

    __slots__ = ("opcode", "payload", "raw")

    def __init__(self, opcode: int, payload: bytes, raw: bytes) -> None:
        self.opcode = opcode
        self.payload = payload
        self.raw = raw

    @property
    def close_code(self) -> int:
        """The status of a close frame; 1005 when it carries none."""
        return struct.unpack_from("!H", self.payload)[0] if len(self.payload) >= 2 else NO_STATUS

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode("utf-8", errors="replace")


def _parse_head(buf: bytes, off: int) -> tuple[int, int, int, bytes] | None:
    """(first byte, payload length, header length, mask key) of the header at ``off``; None
    when ``buf`` ends before the header does."""
    avail = len(buf) - off
    if avail < 2:
        return None
    b0, b1 = buf[off], buf[off + 1]
    n = b1 & 0x7F
    size = 2
    if n == 126:
        size = 4
        if avail < size:
            return None
        n = struct.unpack_from("!H", buf, off + 2)[0]
    elif n == 127:
        size = 10
        if avail < size:
            return None
        n = struct.unpack_from("!Q", buf, off + 2)[0]
    if b1 & 0x80:
        if avail < size + 4:
            return None
        return b0, n, size + 4, bytes(buf[off + size : off + size + 4])
    return b0, n, size, b""


class FrameScanner:
    """Reads one direction of a WebSocket. ``masked``: frames from a client (which must be
    masked) rather than from a server (which must not be). ``compressed``: permessage-deflate
    was negotiated, so RSV1 may mark a message's first frame."""

    __slots__ = (
        "_decoder",
        "_held",
        "_hold_need",
        "_in_message",
        "_masked",
        "_max",
        "_message",
        "_remaining",
        "_rsv_allowed",
        "_starts",
        "_text",
        "control",
        "data_frames",
        "failure",
        "messages",
        "prefix",
    )

    def __init__(
        self,
        *,
        masked: bool,
        max_message_bytes: int = 0,
        compressed: bool = False,
        validate_text: bool = False,
    ):
        self._masked = masked
        self._text = validate_text
        self._decoder: codecs.IncrementalDecoder | None = None
        """Set while an uncompressed text message is being checked (``validate_text``)."""
        self._hold_need = 0
        """The whole length of the text frame being held, while one is."""
        self._max = max_message_bytes
        self._rsv_allowed = 0x40 if compressed else 0
        self._starts = _COMPRESSED_STARTS if compressed else _PLAIN_STARTS
        self._held: bytes | bytearray = b""
        self._remaining = 0
        self._message = 0
        self._in_message = False
        self.prefix = b""
        self.control: Control | None = None
        self.failure: tuple[int, str] | None = None
        self.data_frames = 0
        """Data frames whose header the last ``scan`` passed (activity, for the idle clock)."""
        self.messages = 0
        """Messages the last ``scan`` saw the final frame header of."""

    @property
    def at_boundary(self) -> bool:
        """Between two frames: a frame of the gateway's own may go out in this direction."""
        return not self._remaining and not self._held

    @property
    def in_frame(self) -> bool:
        """Part of a data frame has been passed on and the rest has not."""
        return bool(self._remaining)

    def scan(self, data: bytes, pos: int = 0, *, stop_at_boundary: bool = False) -> tuple[int, int]:
        """Read ``data`` from ``pos``; returns (what, end). Call again from ``end`` until it is
        ``len(data)``."""
        self.prefix = b""
        self.data_frames = self.messages = 0
        start, n = pos, len(data)
        if self._held:
            kind, pos = self._scan_held(data, pos)
            if kind != FORWARD or (stop_at_boundary and not self._remaining):
                return kind, pos
        while True:
            if self._remaining:
                take = min(self._remaining, n - pos)
                pos += take
                self._remaining -= take
                if self._remaining or stop_at_boundary:
                    return FORWARD, pos
            if pos < n:
                pos = self._small_frames(data, pos, n, stop_at_boundary)
                if stop_at_boundary and pos > start:
                    return FORWARD, pos
            if pos >= n:
                return (FORWARD if pos > start or self.prefix else NEED_MORE), pos
            kind, end = self._header(data, pos, first=pos == start and not self.prefix)
            if kind == _STOP:
                return FORWARD, pos  # what passed so far goes out before the next header
            if kind in (NEED_MORE, _HOLD):
                return NEED_MORE, n
            if kind != FORWARD:
                return kind, end
            pos = end
            if stop_at_boundary and not self._remaining:
                return FORWARD, pos

    def _small_frames(self, data: bytes, pos: int, n: int, one: bool) -> int:
        """The fast path: skip data frames with a header of up to 8 bytes (payload under
        64 KiB), all of it in ``data``, and nothing to object to; stop at anything else, which
        ``_header`` reads. A payload that runs past ``data`` is left in ``_remaining``."""
        mask_bit, short = (0x80, 6) if self._masked else (0, 2)
        starts, most = self._starts, self._max or 1 << 63
        in_message, message = self._in_message, self._message
        text = self._text
        frames = messages = 0
        while pos + short <= n:
            b0, b1 = data[pos], data[pos + 1]
            if text and (b0 & 0x7F == OP_TEXT or (in_message and self._decoder is not None)):
                break
            length, size = b1 & 0x7F, short
            if length > 125:
                if length == 127 or pos + short + 2 > n:
                    break
                length, size = data[pos + 2] << 8 | data[pos + 3], short + 2
            if b1 & 0x80 != mask_bit:
                break
            if in_message:
                if b0 & 0x7F or message + length > most:
                    break
                grown = message + length
            elif b0 & 0x7F not in starts or length > most:
                break
            else:
                grown = length
            pos, message = pos + size + length, grown
            frames += 1
            messages += b0 >> 7
            in_message = not b0 & 0x80
            if pos > n:
                self._remaining, pos = pos - n, n  # the rest of its payload is still to come
                break
            if one:
                break
        self._in_message, self._message = in_message, message
        self.data_frames += frames
        self.messages += messages
        return pos

    def _scan_held(self, data: bytes, pos: int) -> tuple[int, int]:
        if self._hold_need:
            return self._scan_held_text(data, pos)
        held = bytes(self._held)  # a header's few bytes (a held text frame went above)
        self._held = b""
        # A header is at most 14 bytes and a control frame 139: this holds all that is needed.
        kind, used = self._header(held + data[pos : pos + _MAX_HELD], 0, first=True)
        if kind == _HOLD:  # the header is whole now: a text frame, held to its end
            self._held = held
            return self._scan_held_text(data, pos)
        if kind == NEED_MORE:
            return NEED_MORE, len(data)
        if kind == FAILED:
            return FAILED, pos
        if kind == FORWARD:
            self.prefix = held  # the header's start was held back: it goes out first
        return kind, pos + used - len(held)

    def _scan_held_text(self, data: bytes, pos: int) -> tuple[int, int]:
        # A bytearray grows in place: a big frame arriving in many pieces is copied once.
        held = self._held if isinstance(self._held, bytearray) else bytearray(self._held)
        before = len(held)
        take = min(self._hold_need - before, len(data) - pos)
        held += data[pos : pos + take]
        if len(held) < self._hold_need:
            self._held = held
            return NEED_MORE, len(data)
        self._held, self._hold_need = b"", 0
        frame = bytes(held)
        kind, _ = self._header(frame, 0, first=True)
        if kind == FAILED:
            return FAILED, pos
        self.prefix = frame[:before]  # what came before ``data``; the caller passes on the rest
        return kind, pos + take

    def _text_frame(self, buf: bytes, off: int, size: int, length: int, key: bytes) -> int:
        """A frame of a text message being checked: NEED_MORE (held until whole), FAILED
        (not UTF-8) or FORWARD."""
        end = off + size + length
        if len(buf) < end:
            self._held, self._hold_need = bytes(buf[off:]), size + length
            return NEED_MORE
        b0 = buf[off]
        if b0 & 0x0F == OP_TEXT:
            self._decoder = codecs.getincrementaldecoder("utf-8")()
        assert self._decoder is not None
        payload = bytes(buf[off + size : end])
        try:
            self._decoder.decode(unmask(payload, key) if key else payload, final=bool(b0 & 0x80))
        except UnicodeDecodeError:
            self.failure = (INVALID_PAYLOAD, "invalid UTF-8")
            return FAILED
        if b0 & 0x80:
            self._decoder = None
        return FORWARD

    def _header(self, buf: bytes, off: int, *, first: bool) -> tuple[int, int]:
        """Read the header at ``off``: (FORWARD, just past a data frame's header), CONTROL,
        FAILED, NEED_MORE (the partial bytes held), or _STOP when that outcome must wait for
        the bytes before it to be passed on (not ``first``)."""
        head = _parse_head(buf, off)
        opcode = buf[off] & 0x0F
        if not first and (head is None or opcode & 0x08):
            return _STOP, off
        if head is None:
            self._held = bytes(buf[off:])
            return NEED_MORE, off
        b0, length, size, key = head
        why = self._violation(b0, length, bool(key))
        if why is None and opcode & 0x08:
            return self._control(buf, off, size, length, key)
        if why is None and not opcode & 0x08:
            message = length if opcode != OP_CONT else self._message + length
            if self._max and message > self._max:
                why = (MESSAGE_TOO_BIG, "message too big")
        if why is None and self._text and self._checks_text(b0):
            kind = self._text_frame(buf, off, size, length, key)
            if kind != FORWARD and not first:
                self._held, self._hold_need, self.failure = b"", 0, None
                return _STOP, off
            if kind == NEED_MORE:
                return _HOLD, off
            if kind == FAILED:
                return FAILED, off
            self._remaining = -length  # the payload is passed over below, not left to come
        if why is not None:
            if not first:
                return _STOP, off
            self.failure = why
            return FAILED, off
        self._message = length if opcode != OP_CONT else self._message + length
        self._in_message = not b0 & 0x80
        self.data_frames += 1
        self.messages += b0 >> 7
        if self._remaining < 0:  # a checked text frame: already whole in ``buf``
            self._remaining = 0
            return FORWARD, off + size + length
        self._remaining = length
        return FORWARD, off + size

    def _checks_text(self, b0: int) -> bool:
        """This frame belongs to an uncompressed text message, to be checked."""
        opcode = b0 & 0x0F
        return (opcode == OP_TEXT and not b0 & 0x40) or (
            opcode == OP_CONT and self._decoder is not None
        )

    def _control(self, buf: bytes, off: int, size: int, length: int, key: bytes) -> tuple[int, int]:
        end = off + size + length
        if len(buf) < end:
            self._held = bytes(buf[off:])
            return NEED_MORE, off
        payload = bytes(buf[off + size : end])
        self.control = Control(
            buf[off] & 0x0F, unmask(payload, key) if key else payload, bytes(buf[off:end])
        )
        return self._check_close(off, end)

    def _check_close(self, off: int, end: int) -> tuple[int, int]:
        control = self.control
        assert control is not None
        if control.opcode != OP_CLOSE:
            return CONTROL, end
        if len(control.payload) == 1:
            self.failure = (PROTOCOL_ERROR, "protocol error")
            return FAILED, off
        if len(control.payload) >= 2 and not valid_received_code(control.close_code):
            self.failure = (PROTOCOL_ERROR, "invalid close code")
            return FAILED, off
        try:
            control.payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            self.failure = (INVALID_PAYLOAD, "invalid close reason")
            return FAILED, off
        return CONTROL, end

    def _violation(self, b0: int, length: int, masked: bool) -> tuple[int, str] | None:
        opcode = b0 & 0x0F
        if masked != self._masked:
            return PROTOCOL_ERROR, "unmasked frame" if self._masked else "masked frame"
        if opcode & 0x08:
            if opcode > OP_PONG or not b0 & 0x80 or length > _MAX_CONTROL or b0 & 0x70:
                return PROTOCOL_ERROR, "bad control frame"
            return None
        if opcode > OP_BINARY:
            return PROTOCOL_ERROR, "reserved opcode"
        if (opcode == OP_CONT) != self._in_message:
            return PROTOCOL_ERROR, "bad fragmentation"
        allowed = self._rsv_allowed if opcode != OP_CONT else 0
        if b0 & 0x70 & ~allowed:
            return PROTOCOL_ERROR, "reserved bits set"
        return None
