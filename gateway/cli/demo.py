"""The quick-start sandbox: a small app on loopback, registered as a public preview."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from gateway.app import Running
from gateway.core import hostnames
from gateway.core.records import Preview, Sandbox

DEMO_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>preview-gateway demo</title></head>
<body style="font:16px system-ui,sans-serif;max-width:40rem;margin:3rem auto">
<h1>It works.</h1>
<p>This page comes from a demo sandbox on port {port}, through the preview gateway.</p>
<p>Server time over a WebSocket: <code id="clock">connecting…</code></p>
<script>
const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const ws = new WebSocket(scheme + location.host + "/ws");
ws.onmessage = (event) => {{ document.getElementById("clock").textContent = event.data; }};
</script></body></html>
"""


def demo_app() -> web.Application:
    async def index(request: web.Request) -> web.Response:
        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        return web.Response(text=DEMO_PAGE.format(port=port), content_type="text/html")

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path_qs,
                "bytes": len(body),
                "headers": dict(request.headers),
            }
        )

    async def clock(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        while not ws.closed:
            await ws.send_str(json.dumps({"uptime_s": round(loop.time(), 1)}))
            await asyncio.sleep(1)
        return ws

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/ws", clock)
    app.router.add_route("*", "/echo", echo)
    return app


async def start_demo(
    running: Running, *, region: str, domain: str, public_scheme: str, public_port: int
) -> tuple[web.AppRunner, str]:
    """Serve the demo app on a free loopback port and register it as preview `web` of sandbox
    `demo` in workspace `default`."""
    runner = web.AppRunner(demo_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    store = running.store
    await store.put_sandbox(
        Sandbox(workspace="default", name="demo", target_host="127.0.0.1"), create=False
    )
    existing = await store.get_preview("default", "demo", "web")
    hostname = (
        existing.hostname
        if existing
        else hostnames.random_hostname(hostnames.random_preview_id(), region, domain)
    )
    preview = Preview(
        workspace="default", sandbox="demo", name="web", port=port, public=True, hostname=hostname
    )
    await store.put_preview(preview, create=False, force=True)
    return runner, hostnames.public_url(hostname, public_scheme, public_port)
