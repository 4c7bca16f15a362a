"""A WebSocket client written against the wire, for what aiohttp's client will not do: send
fragmented messages, ignore pings, omit a close status, read nothing, or vanish with a TCP reset.

Gateways must be reached as 127.0.0.1 with the preview's ``Host`` header set by hand (Python's
resolver does not map ``*.localhost``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        """The status in a close frame; None when it carries none (RFC 6455's 1005)."""
        assert self.opcode == OP_CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode()


def encode_frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True
) -> bytes:
    head = bytearray([(0x80 if fin else 0) | opcode])
    flag = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(flag | n)
    elif n < 1 << 16:
        head.append(flag | 126)
        head += struct.pack("!H", n)
    else:
        head.append(flag | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    # XOR through int arithmetic: fast enough for the multi-MiB messages the tests send.
    repeated = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return bytes(head) + key + masked


def close_payload(code: int | None, reason: str = "") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason.encode()


class RawWebSocket:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        headers: dict[str, str],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.status = status
        self.headers = headers
        self.pings_seen: list[bytes] = []

    @classmethod
    async def connect(
        cls,
        port: int,
        host: str,
        path: str = "/ws",
        *,
        headers: Iterable[tuple[str, str]] = (),
        rcvbuf: int | None = None,
    ) -> RawWebSocket:
        """Open a TCP connection and send the upgrade; ``status`` says how it was answered."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                # Set before connect so the window is small from the start (and autotuning off).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        try:
            return await cls._handshake(reader, writer, host, path, headers)
        except BaseException:
            writer.transport.abort()
            raise

    @classmethod
    async def _handshake(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        path: str,
        headers: Iterable[tuple[str, str]],
    ) -> RawWebSocket:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in headers),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        parsed = {}
        for line in header_lines:
            if ":" in line:
                name, _, value = line.partition(":")
                parsed[name.strip().lower()] = value.strip()
        return cls(reader, writer, status, parsed)

    # ── sending ─────────────────────────────────────────────────────────────────────────────
    async def send_frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True) -> None:
        self.writer.write(encode_frame(opcode, payload, fin=fin))
        await self.writer.drain()

    async def send_text(self, text: str) -> None:
        await self.send_frame(OP_TEXT, text.encode())

    async def send_binary(self, data: bytes) -> None:
        await self.send_frame(OP_BINARY, data)

    async def send_close(self, code: int | None, reason: str = "") -> None:
        await self.send_frame(OP_CLOSE, close_payload(code, reason))

    # ── receiving ───────────────────────────────────────────────────────────────────────────
    async def recv_frame(self) -> Frame:
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        assert not b1 & 0x80, "a server must not mask its frames"
        payload = await self.reader.readexactly(n) if n else b""
        return Frame(bool(b0 & 0x80), b0 & 0x0F, payload)

    async def recv_message(self, *, answer_pings: bool = True) -> Frame:
        """The next whole data message (fragments joined), or the close frame. Pings are
        recorded, and answered unless told otherwise; pongs are skipped."""
        parts: list[bytes] = []
        opcode = None
        while True:
            frame = await self.recv_frame()
            if frame.opcode == OP_PING:
                self.pings_seen.append(frame.payload)
                if answer_pings:
                    await self.send_frame(OP_PONG, frame.payload)
                continue
            if frame.opcode == OP_PONG:
                continue
            if frame.opcode == OP_CLOSE:
                return frame
            if opcode is None:
                opcode = frame.opcode
            parts.append(frame.payload)
            if frame.fin:
                return Frame(True, opcode, b"".join(parts))

    async def recv_close(self, *, answer_pings: bool = True, reply: bool = True) -> Frame:
        """Skip data until the close frame arrives; answer it with the same code, as browsers
        do, unless told otherwise."""
        while True:
            frame = await self.recv_message(answer_pings=answer_pings)
            if frame.opcode == OP_CLOSE:
                if reply:
                    with contextlib.suppress(ConnectionError):
                        await self.send_frame(OP_CLOSE, frame.payload[:2])
                return frame

    async def at_eof(self) -> bool:
        """Reads until the connection ends; True once the peer closed or reset it."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        return True

    # ── ending ──────────────────────────────────────────────────────────────────────────────
    def reset(self) -> None:
        """Vanish with a TCP RST (SO_LINGER 0), as a crashed or unplugged client does."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
