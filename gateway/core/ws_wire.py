"""The WebSocket wire format's basics: opcodes, masking, and the few frames the gateway
writes itself (pings toward both peers, closes). Pure: no I/O."""

from __future__ import annotations

import secrets
import struct

from gateway.core.ws_close import wire_reason

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def unmask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key (its own inverse). One big-integer XOR: a text message of
    megabytes is checked byte by byte otherwise, in Python."""
    n = len(payload)
    if n < 16:
        return bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little"
    )


def _head(b0: int, n: int, mask: bool) -> bytes:
    flag = 0x80 if mask else 0
    if n < 126:
        return bytes((b0, flag | n))
    if n < 1 << 16:
        return bytes((b0, flag | 126)) + struct.pack("!H", n)
    return bytes((b0, flag | 127)) + struct.pack("!Q", n)


def build_frame(
    opcode: int, payload: bytes = b"", *, mask: bool, key: bytes | None = None
) -> bytes:
    """One final frame; masked (with a random key unless given) toward an upstream, whose
    client the gateway is."""
    head = _head(0x80 | opcode, len(payload), mask)
    if not mask:
        return head + payload
    key = secrets.token_bytes(4) if key is None else key
    return head + key + unmask(payload, key)


def ping_frame(payload: bytes, *, mask: bool, key: bytes | None = None) -> bytes:
    return build_frame(OP_PING, payload, mask=mask, key=key)


def pong_frame(payload: bytes, *, mask: bool, key: bytes | None = None) -> bytes:
    return build_frame(OP_PONG, payload, mask=mask, key=key)


def close_frame(code: int, reason: str = "", *, mask: bool, key: bytes | None = None) -> bytes:
    """A close frame with ``code`` (one allowed on the wire) and ``reason`` cut to fit."""
    return build_frame(OP_CLOSE, struct.pack("!H", code) + wire_reason(reason), mask=mask, key=key)
