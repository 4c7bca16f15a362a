"""The upstream app of the private-preview browser tests, served on 127.0.0.1 from a thread of
its own (the browser tests are synchronous).

``/`` is a page that loads ``/app.js``; the script writes into the DOM, waits for ``/logo.png``
(a real 3x2 PNG) and renders the JSON of ``fetch('/api/data')``, then sets ``window.__appDone``.
The page names an inline icon, so Chromium's own ``/favicon.ico`` request (sent whenever it
likes) never reaches the app. Every request the app receives is recorded (method, path, raw
query, headers in order) so a test can prove what reached it through the gateway and what did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import struct
import threading
import zlib
from typing import Any

from aiohttp import web

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>private app</title>
<link rel="icon" href="data:,">
</head>
<body>
<h1>private app</h1>
<p id="script">the script did not run</p>
<img id="logo" src="/logo.png" alt="logo" width="30" height="20">
<pre id="data">no data yet</pre>
<script src="/app.js"></script>
</body></html>
"""

SCRIPT = """
document.getElementById("script").textContent = "app.js ran";
const logo = document.getElementById("logo");
const image = logo.complete
  ? Promise.resolve()
  : new Promise((resolve) => {
      logo.addEventListener("load", resolve);
      logo.addEventListener("error", resolve);
    });
const data = fetch("/api/data", { headers: { Accept: "application/json" } })
  .then(async (r) => {
    if (!r.ok) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
    return r.json();
  })
  .then((body) => {
    document.getElementById("data").textContent = JSON.stringify(body);
  })
  .catch((err) => {
    document.getElementById("data").textContent = `fetch failed: ${err}`;
  });
Promise.all([image, data]).then(() => {
  window.__appDone = true;
});
"""


def png(width: int, height: int, rgb: tuple[int, int, int] = (0x2A, 0x7A, 0xE2)) -> bytes:
    """A real, decodable PNG (8-bit RGB, one colour)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width  # filter type 0, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


LOGO_SIZE = (3, 2)
LOGO = png(*LOGO_SIZE)
NO_STORE = {"Cache-Control": "no-store"}


class PrivateApp:
    """The app on a free 127.0.0.1 port, in a background thread; ``stop()`` ends both."""

    def __init__(self, port: int = 0) -> None:
        self.nonce = secrets.token_hex(8)
        """Served by /api/data: the rendered JSON can only have come from this app."""
        self.port = port
        """0: a free one, chosen at start."""
        self._records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="private-app", daemon=True)

    @property
    def data(self) -> dict[str, str]:
        return {"message": "hello from the private app", "nonce": self.nonce}

    # ── what the app received ───────────────────────────────────────────────────────────────
    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._records]

    def paths(self) -> list[str]:
        return [r["path"] for r in self.records()]

    # ── the server ──────────────────────────────────────────────────────────────────────────
    def _build(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            with self._lock:
                self._records.append(
                    {
                        "method": request.method,
                        "path": request.rel_url.raw_path,
                        "query": request.rel_url.raw_query_string,
                        "headers": [[k, v] for k, v in request.headers.items()],
                    }
                )
            response: web.StreamResponse = await handler(request)
            return response

        async def page(_: web.Request) -> web.Response:
            return web.Response(text=PAGE, content_type="text/html", headers=NO_STORE)

        async def script(_: web.Request) -> web.Response:
            return web.Response(text=SCRIPT, content_type="text/javascript", headers=NO_STORE)

        async def logo(_: web.Request) -> web.Response:
            return web.Response(body=LOGO, content_type="image/png", headers=NO_STORE)

        async def api_data(_: web.Request) -> web.Response:
            return web.json_response(self.data, headers=NO_STORE)

        app = web.Application(middlewares=[record])
        app.router.add_get("/", page)
        app.router.add_get("/app.js", script)
        app.router.add_get("/logo.png", logo)
        app.router.add_get("/api/data", api_data)
        return app

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
        finally:
            self._started.set()
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self._build(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", self.port)
            await site.start()
            self.port = int(runner.addresses[0][1])
            self._started.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    def start(self) -> int:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the private app did not start in 10 s")
        if self._error is not None or not self.port:
            raise RuntimeError(f"the private app failed to start: {self._error!r}")
        return self.port

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended and closed
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("the private app did not stop in 10 s")
