"""The quick-start sandbox: a small app on loopback, registered as a public preview."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from gateway.app import Running
from gateway.control.models import PreviewIn, SandboxIn
from gateway.core import hostnames
from gateway.core.errors import NotFound

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


DEMO_WORKSPACE, DEMO_SANDBOX, DEMO_PREVIEW = "default", "demo", "web"


async def start_demo(
    running: Running, *, public_scheme: str, public_port: int
) -> tuple[web.AppRunner, str]:
    """Serve the demo app on a free loopback port and register it, through the control
    service (so by the API's rules), as public preview `web` of sandbox `demo` in workspace
    `default`. A restart against a shared store re-points the same preview and hostname."""
    runner = web.AppRunner(demo_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    service = running.service
    sandbox_body = SandboxIn.model_validate(
        {"metadata": {"name": DEMO_SANDBOX}, "spec": {"target": {"host": "127.0.0.1"}}}
    )
    try:
        existing = await service.sandbox(DEMO_WORKSPACE, DEMO_SANDBOX)
        sandbox = await service.replace_sandbox(existing, sandbox_body)
    except NotFound:
        sandbox = await service.create_sandbox(DEMO_WORKSPACE, sandbox_body, if_not_exists=True)
    preview_body = PreviewIn.model_validate(
        {"metadata": {"name": DEMO_PREVIEW}, "spec": {"port": port, "public": True}}
    )
    try:
        preview = await service.replace_preview(sandbox, DEMO_PREVIEW, preview_body, force=True)
    except NotFound:
        preview = await service.create_preview(sandbox, preview_body, force=True)
    return runner, hostnames.public_url(preview.hostname, public_scheme, public_port)
