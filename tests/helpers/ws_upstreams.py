"""WebSocket upstreams that record what reached them, for the relay tests.

``WsUpstream`` serves, on 127.0.0.1:

* ``/echo``: echoes text and binary. Commands (text): ``close:<code>:<reason>`` closes with that
  code; ``big:<n>`` sends an n-byte binary message; ``drop`` cuts the TCP connection without a
  close frame. ``?hello=1`` first sends the query, subprotocol and headers it received.
  ``?deflate=0`` refuses permessage-deflate.
* ``/flood?total=N&size=S``: sends N bytes in S-byte binary messages as fast as the gateway takes
  them; ``sent`` counts what its writes have handed on.
* ``/pinger?count=N``: pings with payloads ``p0``..``pN-1``, each after the previous pong, and
  then sends ``pongs:<payloads received>`` (webpack-dev-server pings every second and drops a
  socket whose pong went missing).
* ``/ticker?n=N&gap=S``: sends N texts, one every S seconds, then stays open.

Every socket's end is recorded in ``closes`` with the code and reason the upstream received
(``code`` None: the connection ended without a close frame).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from tests.helpers.upstreams import ws_hello


@dataclass(frozen=True)
class Closed:
    path: str
    code: int | None
    reason: str


class WsUpstream:
    def __init__(self) -> None:
        self.closes: asyncio.Queue[Closed] = asyncio.Queue()
        self.sockets: set[web.WebSocketResponse] = set()
        self.connections = 0
        self.sent = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/echo", self._echo)
        app.router.add_get("/flood", self._flood)
        app.router.add_get("/pinger", self._pinger)
        app.router.add_get("/ticker", self._ticker)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()

    async def next_close(self, timeout: float = 10.0) -> Closed:
        async with asyncio.timeout(timeout):
            return await self.closes.get()

    @property
    def open(self) -> int:
        return len(self.sockets)

    # ── handlers ────────────────────────────────────────────────────────────────────────────
    async def _accept(self, request: web.Request, **kwargs: object) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            protocols=("vite-hmr", "chat"),
            autoclose=False,
            max_msg_size=64 * 1024 * 1024,
            **kwargs,  # type: ignore[arg-type]
        )
        await ws.prepare(request)
        self.connections += 1
        self.sockets.add(ws)
        return ws

    async def _until_closed(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        """Read (echoing nothing) until the gateway ends the socket; record how it ended."""
        await self._serve(request, ws, echo=False)

    async def _serve(self, request: web.Request, ws: web.WebSocketResponse, *, echo: bool) -> None:
        code: int | None = None
        reason = ""
        try:
            while True:
                msg = await ws.receive()
                if msg.type is WSMsgType.CLOSE:
                    code, reason = int(msg.data), msg.extra or ""
                    await ws.close(code=code)
                    break
                if msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                    break
                if not echo:
                    continue
                if msg.type is WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
                    continue
                text: str = msg.data
                if text.startswith("close:"):
                    _, number, why = text.split(":", 2)
                    await ws.close(code=int(number), message=why.encode())
                    code, reason = None, "closed by upstream"
                    break
                if text.startswith("big:"):
                    await ws.send_bytes(b"b" * int(text[4:]))
                elif text == "drop":
                    assert request.transport is not None
                    request.transport.abort()
                    code, reason = None, "dropped by upstream"
                    break
                else:
                    await ws.send_str(text)
        finally:
            self.sockets.discard(ws)
            self.closes.put_nowait(Closed(request.path, code, reason))

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        deflate = request.query.get("deflate") != "0"
        ws = await self._accept(request, compress=deflate)
        if request.query.get("hello") == "1":
            extensions = request.headers.get("Sec-WebSocket-Extensions")
            await ws.send_str(json.dumps({**ws_hello(request, ws), "extensions": extensions}))
        await self._serve(request, ws, echo=True)
        return ws

    async def _flood(self, request: web.Request) -> web.StreamResponse:
        total = int(request.query["total"])
        size = int(request.query.get("size", "65536"))
        ws = await self._accept(request, compress=False)

        async def pour() -> None:
            block = b"f" * size
            with contextlib.suppress(ConnectionError):  # the gateway closed the socket
                while self.sent < total:
                    await ws.send_bytes(block)
                    self.sent += size

        async with asyncio.TaskGroup() as tasks:
            pouring = tasks.create_task(pour())
            await self._until_closed(request, ws)
            pouring.cancel()
        return ws

    async def _pinger(self, request: web.Request) -> web.StreamResponse:
        count = int(request.query.get("count", "5"))
        ws = await self._accept(request, autoping=False)
        received: list[str] = []
        for i in range(count):
            payload = f"p{i}".encode()
            await ws.ping(payload)
            try:
                async with asyncio.timeout(5.0):
                    msg = await ws.receive()
                    while msg.type is WSMsgType.PING:  # the gateway's own heartbeat
                        await ws.pong(msg.data)
                        msg = await ws.receive()
            except TimeoutError:
                await ws.close(code=4000, message=b"pong lost")
                self.sockets.discard(ws)
                self.closes.put_nowait(Closed(request.path, None, "pong lost"))
                return ws
            if msg.type is not WSMsgType.PONG:
                break
            received.append(msg.data.decode())
        await ws.send_str("pongs:" + ",".join(received))
        await self._until_closed(request, ws)
        return ws

    async def _ticker(self, request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("n", "5"))
        gap = float(request.query.get("gap", "0.1"))
        ws = await self._accept(request)

        async def tick() -> None:
            with contextlib.suppress(ConnectionError):  # the gateway closed the socket
                for i in range(n):
                    await ws.send_str(f"tick {i}")
                    await asyncio.sleep(gap)

        async with asyncio.TaskGroup() as tasks:
            ticking = tasks.create_task(tick())
            await self._until_closed(request, ws)
            ticking.cancel()
        return ws


@contextlib.asynccontextmanager
async def ws_upstream() -> AsyncIterator[WsUpstream]:
    upstream = WsUpstream()
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.stop()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts TCP connections and never answers: a sandbox app that hangs on the handshake."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()
