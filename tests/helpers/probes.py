"""Upstreams that let a test observe the gateway without timing anything.

* ``probe_upstream()``: the echo app's endpoints plus a request counter and endpoints that wait
  for a signal from the test (server-sent events, uploads, held requests), so "the client saw
  event 1 before the app sent event 2" is proved by ordering, not by a clock.
* ``counting_listener()``: a bare TCP listener that counts accepted connections, for proving
  that the gateway never dialled an address.

Everything listens on loopback and is closed when its context exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.helpers import upstreams

GZIP_PAYLOAD = gzip.compress(b"compressed body " * 1000, mtime=0)


@dataclass
class Probe:
    port: int = 0
    requests: int = 0
    """Requests that reached the app (any path)."""
    paths: list[str] = field(default_factory=list)
    sse_first_sent: asyncio.Event = field(default_factory=asyncio.Event)
    sse_continue: asyncio.Event = field(default_factory=asyncio.Event)
    upload_first_seen: asyncio.Event = field(default_factory=asyncio.Event)
    held: int = 0
    """Requests currently waiting in ``/hold``."""
    release: asyncio.Event = field(default_factory=asyncio.Event)


def _probe_app(probe: Probe) -> web.Application:
    @web.middleware
    async def count(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        probe.requests += 1
        probe.paths.append(request.raw_path)
        return await handler(request)

    async def sse_gated(request: web.Request) -> web.StreamResponse:
        """Event 1, then wait for the test to say it saw it, then event 2."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"id: 1\ndata: one\n\n")
        probe.sse_first_sent.set()
        await probe.sse_continue.wait()
        await response.write(b"id: 2\ndata: two\n\n")
        await response.write_eof()
        return response

    async def upload_gated(request: web.Request) -> web.StreamResponse:
        """Signal once the first ``first`` bytes arrived; then read the rest."""
        first = int(request.query["first"])
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
            if size >= first:
                probe.upload_first_seen.set()
        return web.json_response({"body_bytes": size, "body_sha256": digest.hexdigest()})

    async def gzipped(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=GZIP_PAYLOAD,
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
        )

    async def redirect_to(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": request.query["u"]})

    async def hold(request: web.Request) -> web.StreamResponse:
        probe.held += 1
        try:
            await probe.release.wait()
        finally:
            probe.held -= 1
        return web.Response(text="released")

    app = web.Application(client_max_size=2**40, middlewares=[count])
    app.router.add_get("/sse-gated", sse_gated)
    app.router.add_post("/upload-gated", upload_gated)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/redirect-to", redirect_to)
    app.router.add_get("/hold", hold)
    # The shared echo app's endpoints, so one probe serves every edge test.
    app.router.add_route("*", "/big", upstreams.big)
    app.router.add_get("/slow-headers", upstreams.slow_headers)
    app.router.add_get("/stall-body", upstreams.stall_body)
    app.router.add_get("/abort", upstreams.abort_mid_body)
    app.router.add_get("/redirect", upstreams.redirect)
    app.router.add_get("/set-cookie", upstreams.set_cookie)
    app.router.add_get("/headers", upstreams.with_headers)
    app.router.add_route("*", "/status/{code}", upstreams.status)
    # [\s\S]: a decoded path may hold CR or LF (from %0d%0a), which ``.`` does not match.
    app.router.add_route("*", r"/{tail:[\s\S]*}", upstreams.echo)
    return app


@contextlib.asynccontextmanager
async def probe_upstream(host: str = "127.0.0.1") -> AsyncIterator[Probe]:
    probe = Probe()
    # shutdown_timeout: held or sleeping handlers must not delay the test's teardown.
    # auto_decompress=False: the echo reports the body bytes exactly as they arrived.
    runner = web.AppRunner(
        _probe_app(probe), access_log=None, shutdown_timeout=0.5, auto_decompress=False
    )
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    probe.port = int(runner.addresses[0][1])
    try:
        yield probe
    finally:
        probe.release.set()
        probe.sse_continue.set()
        await runner.cleanup()


@dataclass
class Listener:
    host: str
    port: int = 0
    accepted: int = 0


@contextlib.asynccontextmanager
async def counting_listener(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Listener]:
    """Accepts, counts and closes connections on ``host:port`` (0: a free port)."""
    listener = Listener(host)

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listener.accepted += 1
        writer.close()

    server = await asyncio.start_server(on_connect, host, port)
    listener.port = int(server.sockets[0].getsockname()[1])
    try:
        yield listener
    finally:
        server.close()
        await server.wait_closed()
