"""A cheap WebSocket echo upstream: ``python -m bench.ws_echo --port P``.

An ``asyncio.Protocol`` on uvloop that answers the upgrade on any path and echoes every data
frame back unmasked, with its opcode and FIN bit kept (fragments are echoed as fragments). Pings
get pongs; a close is answered with the same close and the connection ends. It does not validate
UTF-8 or extensions: it is a benchmark peer, kept cheap so that what the comparison measures is
the proxies (aiohttp's echo handler costs more CPU per message than nginx spends relaying it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
from typing import cast

import uvloop

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD = 16384
MAX_PAYLOAD = 1 << 20  # bounds a corrupt length field
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest())  # noqa: S324 (RFC 6455)


def unmask(payload: bytes, mask: bytes) -> bytes:
    # XOR as one big integer: far cheaper in Python than a loop over the bytes.
    n = len(payload)
    if not n:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def frame(first: int, payload: bytes) -> bytes:
    """A server frame (unmasked) with first byte ``first`` (FIN, RSV, opcode)."""
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


def parse_frame(buf: bytearray) -> tuple[int, bytes, int] | None:
    """(first byte, unmasked payload, frame length) of the frame at the start of ``buf``, or
    None while it is incomplete."""
    if len(buf) < 2:
        return None
    first, second = buf[0], buf[1]
    length, at = second & 0x7F, 2
    if length == 126:
        if len(buf) < 4:
            return None
        length, at = int.from_bytes(buf[2:4], "big"), 4
    elif length == 127:
        if len(buf) < 10:
            return None
        length, at = int.from_bytes(buf[2:10], "big"), 10
    if length > MAX_PAYLOAD:
        raise ValueError(f"frame of {length} bytes")
    masked = second & 0x80
    end = at + (4 if masked else 0) + length
    if len(buf) < end:
        return None
    payload = bytes(buf[end - length : end])
    if masked:
        payload = unmask(payload, bytes(buf[at : at + 4]))
    return first, payload, end


class Echo(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded and not self._handshake():
            return
        out = []
        while (parsed := self._next()) is not None:
            first, payload = parsed
            opcode = first & 0x0F
            if opcode == OP_CLOSE:
                out.append(frame(0x80 | OP_CLOSE, payload[:2]))
                self._send(b"".join(out))
                assert self.transport is not None
                self.transport.close()
                return
            if opcode == OP_PING:
                out.append(frame(0x80 | OP_PONG, payload))
            elif opcode != OP_PONG:
                out.append(frame(first, payload))
        if out:
            self._send(b"".join(out))

    def _next(self) -> tuple[int, bytes] | None:
        try:
            parsed = parse_frame(self.buf)
        except ValueError:
            assert self.transport is not None
            self.transport.close()
            return None
        if parsed is None:
            return None
        first, payload, end = parsed
        del self.buf[:end]
        return first, payload

    def _handshake(self) -> bool:
        assert self.transport is not None
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self.transport.close()
            return False
        head, self.buf = bytes(self.buf[:end]), self.buf[end + 4 :]
        key = b""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value
        if not key:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
            return False
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
        )
        self.upgraded = True
        return True

    def _send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    # Backpressure: a peer that does not read stops us reading, so nothing queues up here.
    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
