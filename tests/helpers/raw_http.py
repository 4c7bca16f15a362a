"""HTTP/1.1 written and read as bytes, for the tests where an HTTP client would normalise exactly
what the test means to check: framing, duplicate headers, absolute-form targets, odd paths,
pipelining, truncated bodies.

Every read is bounded (``READ_BOUND_S``) so a gateway that hangs fails the test instead of
hanging it; the bound is a safety net, never the thing asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

READ_BOUND_S = 10.0


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool = True
    """False when the connection closed before the body's framing said it was over."""
    trailer: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


def request_bytes(
    host: str | None,
    path: str = "/",
    *,
    method: str = "GET",
    version: str = "HTTP/1.1",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    close: bool = True,
) -> bytes:
    lines = [f"{method} {path} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> RawResponse:
    """One response from ``reader``; ``head`` for a response to HEAD (never a body)."""
    async with asyncio.timeout(READ_BOUND_S):
        status_line = (await reader.readuntil(b"\r\n")).decode("latin-1").rstrip("\r\n")
        _, status, *reason = status_line.split(" ", 2)
        headers: list[tuple[str, str]] = []
        while True:
            line = (await reader.readuntil(b"\r\n")).decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        response = RawResponse(int(status), reason[0] if reason else "", headers, b"")
        code = response.status
        if head or code in (204, 304) or 100 <= code < 200:
            return response
        if "chunked" in (response.header("Transfer-Encoding") or "").lower():
            await _read_chunked(reader, response)
        elif (length := response.header("Content-Length")) is not None:
            response.body = await _read_exactly(reader, int(length), response)
        else:
            response.body = await reader.read()  # until the connection closes
        return response


async def _read_exactly(reader: asyncio.StreamReader, n: int, response: RawResponse) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        response.complete = False
        return exc.partial


async def _read_chunked(reader: asyncio.StreamReader, response: RawResponse) -> None:
    body = bytearray()
    try:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                    name, _, value = line.decode("latin-1").partition(":")
                    response.trailer.append((name.strip(), value.strip()))
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    except (asyncio.IncompleteReadError, ValueError):
        response.complete = False
    response.body = bytes(body)


async def exchange(port: int, data: bytes, *, head: bool = False) -> RawResponse:
    """Send ``data`` on a fresh connection and read one response."""
    async with connect(port) as (reader, writer):
        writer.write(data)
        await writer.drain()
        return await read_response(reader, head=head)


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything until the peer closes; raises TimeoutError if it never does."""
    chunks = []
    async with asyncio.timeout(READ_BOUND_S):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def chunked(*pieces: bytes) -> bytes:
    """A chunked body of ``pieces``, with the terminating zero-size chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
