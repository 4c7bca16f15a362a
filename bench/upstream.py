"""The app behind every target: ``python -m bench.upstream --port P``.

Direct, nginx and the gateway all reach this same process, so the differences between targets
are the proxies' alone. It runs on uvloop like the gateway, with access logs off.

* ``GET /small``: a 13-byte body, for request rate and latency.
* ``GET /download?bytes=N``: N bytes with Content-Length, written 256 KiB at a time from one
  preallocated block and drained after each write, so the app never holds more than one block.
* ``POST /upload``: reads the body as it arrives, counts it, answers ``{"bytes": N}``.
* ``GET /sse?n=N&interval_ms=MS``: N server-sent events, each stamped with the
  ``time.monotonic_ns()`` taken just before its write. CLOCK_MONOTONIC is system-wide on Linux,
  so the client on the same host can subtract it from its own clock.
* ``GET /ws``: WebSocket echo (text and binary).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import uvloop
from aiohttp import WSMsgType, web

BLOCK = os.urandom(256 * 1024)
SMALL = b"hello, bench\n"
MAX_DOWNLOAD = 8 << 30  # bounds a typo in the query string


async def small(request: web.Request) -> web.Response:
    return web.Response(body=SMALL, content_type="text/plain")


async def download(request: web.Request) -> web.StreamResponse:
    size = min(int(request.query.get("bytes", "1048576")), MAX_DOWNLOAD)
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    response.content_length = size
    await response.prepare(request)
    view = memoryview(BLOCK)
    left = size
    while left:
        piece = view[: min(len(BLOCK), left)]
        await response.write(piece)  # awaits drain: a slow reader slows us, no buffering
        left -= len(piece)
    await response.write_eof()
    return response


async def upload(request: web.Request) -> web.Response:
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
    return web.json_response({"bytes": size})


async def sse(request: web.Request) -> web.StreamResponse:
    count = min(int(request.query.get("n", "200")), 10_000)
    interval = float(request.query.get("interval_ms", "20")) / 1000
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    for i in range(count):
        await response.write(f"id: {i}\ndata: {time.monotonic_ns()}\n\n".encode())
        await asyncio.sleep(interval)
    await response.write_eof()
    return response


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=None)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def build_app() -> web.Application:
    # client_max_size only bounds request.post()/read(); /upload streams, so it does not apply.
    app = web.Application()
    app.router.add_get("/small", small)
    app.router.add_get("/download", download)
    app.router.add_post("/upload", upload)
    app.router.add_get("/sse", sse)
    app.router.add_get("/ws", ws_echo)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.install()
    web.run_app(
        build_app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
