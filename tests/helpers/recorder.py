"""A raw TCP upstream that records exactly what the gateway sent it, byte for byte, for the
request-smuggling probes: the test compares the requests the upstream parsed (strictly, with
httptools) against the requests the client meant, so a smuggled request or a re-framed body
shows up as a difference rather than as a timing.

Each request gets ``200`` with the request's path as its body, so the client side can tell
which upstream request answered it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httptools


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Recorder:
    port: int = 0
    raw: bytearray = field(default_factory=bytearray)
    """Every byte received, on any connection, in arrival order."""
    requests: list[Seen] = field(default_factory=list)
    """Requests parsed from what arrived, in order."""
    parse_errors: int = 0
    """Connections whose bytes were not valid HTTP/1.1 (the gateway forwarded garbage)."""

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


class _Parse:
    """httptools callbacks: collects one request at a time into ``recorder.requests``."""

    def __init__(self, recorder: Recorder, writer: asyncio.StreamWriter) -> None:
        self.recorder = recorder
        self.writer = writer
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        path = self.url.decode("latin-1")
        method = self.parser.get_method().decode("latin-1")
        self.recorder.requests.append(Seen(method, path, self.headers, bytes(self.body)))
        reply = path.encode("latin-1")
        self.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(reply), reply))


@contextlib.asynccontextmanager
async def recording_upstream() -> AsyncIterator[Recorder]:
    recorder = Recorder()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parse = _Parse(recorder, writer)
        try:
            while data := await reader.read(65536):
                recorder.raw += data
                try:
                    parse.parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    pass
                except httptools.HttpParserError:
                    recorder.parse_errors += 1
                    return
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    recorder.port = int(server.sockets[0].getsockname()[1])
    try:
        yield recorder
    finally:
        server.close()
        await server.wait_closed()
