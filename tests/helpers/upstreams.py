"""Real upstream apps for the tests, served on 127.0.0.1.

The echo app reflects what it received (method, raw path, raw query, headers in order, body size
and digest) so a test can prove what crossed the gateway and what did not.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from aiohttp import WSMsgType, web

ECHO_WS_CLOSE_PREFIX = "close:"


async def echo(request: web.Request) -> web.StreamResponse:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return web.json_response(
        {
            "method": request.method,
            "raw_path": request.raw_path,
            "path": request.rel_url.raw_path,
            "query": request.rel_url.raw_query_string,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_bytes": size,
            "body_sha256": digest.hexdigest(),
            "chunked": "chunked" in request.headers.get("Transfer-Encoding", ""),
            "remote": request.remote,
        },
        headers={"X-Upstream": "echo"},
    )


async def big(request: web.Request) -> web.StreamResponse:
    """``/big?n=BYTES[&cl=1]``: a body of n bytes, chunked unless cl=1."""
    n = int(request.query.get("n", "1048576"))
    response = web.StreamResponse()
    if request.query.get("cl") == "1":
        response.content_length = n
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    block = b"x" * 65536
    sent = 0
    while sent < n:
        piece = block[: min(len(block), n - sent)]
        await response.write(piece)
        sent += len(piece)
    await response.write_eof()
    return response


async def sse(request: web.Request) -> web.StreamResponse:
    """``/sse?n=5&gap=0.2``: n events, one every gap seconds, each flushed at once."""
    n = int(request.query.get("n", "5"))
    gap = float(request.query.get("gap", "0.2"))
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    for i in range(n):
        await response.write(
            f"id: {i}\ndata: {json.dumps({'i': i, 't': loop.time()})}\n\n".encode()
        )
        await asyncio.sleep(gap)
    await response.write_eof()
    return response


async def slow_headers(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(float(request.query.get("s", "30")))
    return web.Response(text="late")


async def stall_body(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b"y" * 100)
    await asyncio.sleep(float(request.query.get("s", "30")))
    return response


async def abort_mid_body(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b"z" * 100)
    assert request.transport is not None
    request.transport.abort()
    return response


async def redirect(request: web.Request) -> web.StreamResponse:
    return web.Response(
        status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}
    )


async def set_cookie(request: web.Request) -> web.StreamResponse:
    response = web.Response(text="cookies")
    for value in request.query.getall("c", []):
        response.headers.add("Set-Cookie", value)
    return response


async def with_headers(request: web.Request) -> web.StreamResponse:
    """``/headers?h=Name:Value``: respond with exactly these headers added."""
    response = web.Response(text="ok")
    for pair in request.query.getall("h", []):
        name, _, value = pair.partition(":")
        response.headers.add(name, value)
    return response


async def status(request: web.Request) -> web.StreamResponse:
    code = int(request.match_info["code"])
    if code in (204, 304):
        return web.Response(status=code)
    return web.Response(status=code, text=f"status {code}")


def ws_hello(request: web.Request, ws: web.WebSocketResponse) -> dict[str, Any]:
    """What a WebSocket upstream saw of the upgrade: query, chosen subprotocol, headers."""
    return {
        "query": request.rel_url.raw_query_string,
        "protocol": ws.ws_protocol,
        "headers": [[k, v] for k, v in request.headers.items()],
    }


async def ws_echo(request: web.Request) -> web.StreamResponse:
    """Echo text and binary. ``close:<code>:<reason>`` makes it close with that code.
    Reports the query and subprotocol it saw in a first text message when ``?hello=1``."""
    ws = web.WebSocketResponse(protocols=("vite-hmr", "chat"), max_msg_size=64 * 1024 * 1024)
    await ws.prepare(request)
    if request.query.get("hello") == "1":
        await ws.send_str(json.dumps(ws_hello(request, ws)))
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            if msg.data.startswith(ECHO_WS_CLOSE_PREFIX):
                _, code, reason = msg.data.split(":", 2)
                await ws.close(code=int(code), message=reason.encode())
                break
            await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def ws_refuse(request: web.Request) -> web.StreamResponse:
    return web.Response(status=int(request.query.get("status", "403")), text="no")


def echo_app() -> web.Application:
    app = web.Application(client_max_size=2**40)
    app.router.add_route("*", "/big", big)
    app.router.add_get("/sse", sse)
    app.router.add_get("/slow-headers", slow_headers)
    app.router.add_get("/stall-body", stall_body)
    app.router.add_get("/abort", abort_mid_body)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/set-cookie", set_cookie)
    app.router.add_get("/headers", with_headers)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/ws", ws_echo)
    app.router.add_get("/ws-refuse", ws_refuse)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
