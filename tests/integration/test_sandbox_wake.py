"""Sandboxes that are starting or asleep (issue 14), over real loopback sockets: the state API,
the startup wait for a port that is not listening yet, the waiting page and its readiness poll,
and the signed wake call deduplicated across two replicas on one Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.core.wake_signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.helpers.edge_client import assert_gateway_error, get
from tests.helpers.gateway import Gateway, host_of, run_gateway
from tests.helpers.polling import eventually
from tests.helpers.ports import unused_port
from tests.helpers.redis_server import RedisServer
from tests.helpers.upstreams import echo_app
from tests.integration.test_metrics import scrape

SECRET = "wake-secret-for-tests-0123456789"
NAVIGATE = {"Accept": "text/html,application/xhtml+xml", "Sec-Fetch-Mode": "navigate"}
READY = "/.well-known/preview-gateway/ready"


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int = 0) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def held(gw: Gateway) -> int:
    assert gw.running is not None
    return gw.running.holds.held


# ── the state API ───────────────────────────────────────────────────────────────────────────
async def test_lifecycle_and_state_round_trip(gateway: Gateway) -> None:
    lifecycle = {"wakeUrl": "http://127.0.0.1:9/wake", "wakeTimeoutS": 12}
    body = await gateway.sandbox(lifecycle=lifecycle)
    assert body["spec"]["lifecycle"] == lifecycle
    assert body["state"] == "running"
    status, body = await gateway.call("POST", "/sandboxes/sb/state", json={"status": "standby"})
    assert status == 200 and body["state"] == "standby"
    status, body = await gateway.call("GET", "/sandboxes/sb")
    assert body["state"] == "standby" and body["spec"]["lifecycle"] == lifecycle
    # A replacement of the spec is not word from the orchestrator: the state stays.
    spec = {"target": {"host": "127.0.0.1"}}
    status, body = await gateway.call(
        "PUT", "/sandboxes/sb", json={"metadata": {"name": "sb"}, "spec": spec}
    )
    assert status == 200 and body["state"] == "standby"
    assert body["spec"]["lifecycle"] == {"wakeTimeoutS": 30}


@pytest.mark.parametrize(
    ("path", "payload", "expected"),
    [
        ("/sandboxes/sb/state", {"status": "asleep"}, 400),
        ("/sandboxes/sb/state", {}, 400),
        ("/sandboxes/nope/state", {"status": "standby"}, 404),
    ],
)
async def test_state_rejects(gateway: Gateway, path: str, payload: Any, expected: int) -> None:
    await gateway.sandbox()
    status, _ = await gateway.call("POST", path, json=payload)
    assert status == expected


@pytest.mark.parametrize("url", ["ftp://x/wake", "not a url", "http:///nohost"])
async def test_wake_url_must_be_http(gateway: Gateway, url: str) -> None:
    spec = {"target": {"host": "127.0.0.1"}, "lifecycle": {"wakeUrl": url}}
    status, _ = await gateway.call(
        "POST", "/sandboxes", json={"metadata": {"name": "sb"}, "spec": spec}
    )
    assert status == 400


# ── a port that starts listening late ───────────────────────────────────────────────────────
async def test_startup_wait_holds_get_not_post() -> None:
    port = unused_port()
    async with run_gateway(upstream_startup_wait_s=20) as gw:
        host = await gw.public_preview(port)
        first = asyncio.create_task(get(gw, host, "/echo", Accept="application/json"))
        await eventually(lambda: held(gw) == 1)
        # A POST with a body is not safe to send twice: the 502 at once, while the GET waits.
        async with gw.session.post(
            gw.edge("/echo"), data=b"payload", headers={"Host": host}
        ) as response:
            assert response.status == 502
            assert_gateway_error(response, "upstream_refused")
        assert not first.done()
        await asyncio.sleep(2)  # the scenario: the dev server listens 2 s after the request
        async with serving(echo_app(), port):
            response, body = await first
            assert response.status == 200, body
            assert held(gw) == 0


async def test_past_the_startup_wait_is_502_with_the_hint() -> None:
    port = unused_port()
    async with run_gateway(upstream_startup_wait_s=0.5) as gw:
        host = await gw.public_preview(port)
        started = time.monotonic()
        response, body = await get(gw, host, Accept="application/json")
        assert time.monotonic() - started >= 0.5, "held for the startup wait"
        assert response.status == 502
        assert_gateway_error(response, "upstream_refused")
        assert f"0.0.0.0:{port}" in json.loads(body)["error"]


async def test_navigation_gets_the_waiting_page_then_ready() -> None:
    port = unused_port()
    async with run_gateway(upstream_startup_wait_s=5) as gw:
        host = await gw.public_preview(port)
        response, body = await get(gw, host, "/", **NAVIGATE)
        assert response.status == 503
        assert_gateway_error(response, "sandbox_starting")
        assert response.headers["Retry-After"]
        page = body.decode()
        assert "Starting web" in page and f"0.0.0.0:{port}" in page and READY in page
        assert "connect-src 'self'" in response.headers["Content-Security-Policy"]
        poll = asyncio.create_task(get(gw, host, READY))
        await eventually(lambda: held(gw) == 1)
        async with serving(echo_app(), port):
            response, body = await poll
            assert response.status == 200 and json.loads(body) == {"ready": True}
            response, _ = await get(gw, host, "/", **NAVIGATE)
            assert response.status == 200


async def test_websocket_upgrade_is_held_until_the_server_listens() -> None:
    """An HMR client reconnecting while the dev server restarts gets through once it listens."""
    port = unused_port()
    async with run_gateway(upstream_startup_wait_s=20) as gw:
        host = await gw.public_preview(port)

        async def hmr() -> str:
            async with gw.session.ws_connect(gw.edge("/ws"), headers={"Host": host}) as ws:
                await ws.send_str("reconnected")
                return str((await ws.receive()).data)

        client = asyncio.create_task(hmr())
        await eventually(lambda: held(gw) == 1)
        async with serving(echo_app(), port):
            async with asyncio.timeout(10):
                assert await client == "reconnected"


# ── wake on request, across replicas ───────────────────────────────────────────────────────
class Orchestrator:
    """The operator's side: checks each wake call's signature and starts the app a little
    later, as a resuming sandbox would."""

    def __init__(self, app_port: int) -> None:
        self.calls: list[dict[str, Any]] = []
        self.forged = 0
        self._app_port = app_port
        self.app_up = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()

    async def wake(self, request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get(TIMESTAMP_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not verify(SECRET.encode(), stamp, signature, body, time.time()):
            self.forged += 1
            return web.Response(status=401)
        self.calls.append(json.loads(body))
        asyncio.get_running_loop().call_later(0.5, self._start)
        return web.json_response({"ok": True})

    def _start(self) -> None:
        async def start() -> None:
            await self._stack.enter_async_context(serving(echo_app(), self._app_port))
            self.app_up.set()

        self._starting = asyncio.get_running_loop().create_task(start())

    async def close(self) -> None:
        await self._stack.aclose()


async def test_burst_across_two_replicas_is_one_signed_wake(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    app_port = unused_port()
    orchestrator = Orchestrator(app_port)
    app = web.Application()
    app.router.add_post("/wake", orchestrator.wake)
    settings = {
        "redis_url": redis_server.url,
        "redis_prefix": redis_prefix,
        "wake_secret": SECRET,
    }
    async with (
        serving(app) as wake_port,
        run_gateway(**settings) as one,
        run_gateway(**settings) as two,
    ):
        lifecycle = {"wakeUrl": f"http://127.0.0.1:{wake_port}/wake", "wakeTimeoutS": 20}
        await one.sandbox(lifecycle=lifecycle)
        host = host_of(await one.preview(app_port))
        status, _ = await one.call("POST", "/sandboxes/sb/state", json={"status": "standby"})
        assert status == 200
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as client:

            async def fetch(gw: Gateway) -> int:
                async with client.get(gw.edge("/echo"), headers={"Host": host}) as r:
                    await r.read()
                    return r.status

            burst = [asyncio.create_task(fetch(one if i % 2 else two)) for i in range(200)]
            async with asyncio.timeout(30):
                statuses = await asyncio.gather(*burst)
        try:
            assert statuses == [200] * 200
            assert orchestrator.forged == 0
            assert orchestrator.calls == [{"workspace": "default", "sandbox": "sb"}]
        finally:
            await orchestrator.close()


async def test_standby_past_the_wake_timeout_is_503_and_counted() -> None:
    calls: list[bytes] = []

    async def wake(request: web.Request) -> web.Response:
        calls.append(await request.read())
        return web.json_response({"ok": True})  # and never starts the app

    app = web.Application()
    app.router.add_post("/wake", wake)
    async with serving(app) as wake_port, run_gateway(wake_secret=SECRET) as gw:
        lifecycle = {"wakeUrl": f"http://127.0.0.1:{wake_port}/wake", "wakeTimeoutS": 1}
        await gw.sandbox(lifecycle=lifecycle)
        host = host_of(await gw.preview(unused_port()))
        await gw.call("POST", "/sandboxes/sb/state", json={"status": "standby"})
        started = time.monotonic()
        # Standby: nothing was sent yet, so even a POST with a body may wait.
        async with gw.session.post(
            gw.edge("/"), data=b"x", headers={"Host": host, "Accept": "application/json"}
        ) as response:
            body = await response.json()
        assert time.monotonic() - started >= 1.0
        assert response.status == 503
        assert_gateway_error(response, "sandbox_starting")
        assert response.headers["Retry-After"] == "2"
        assert body["code"] == "sandbox_starting"
        await eventually(lambda: len(calls) == 1)
        m = await scrape(gw)
        assert m[("gateway_wakes_total", (("outcome", "called"),))] == 1
        assert m[("gateway_hold_gave_up_total", (("reason", "standby"),))] == 1
        assert m[("gateway_hold_seconds_count", (("reason", "standby"),))] == 1
        # Running again: straight to the port (refused here), no hold, no wake.
        await gw.call("POST", "/sandboxes/sb/state", json={"status": "running"})
        await eventually(lambda: _refused_at_once(gw, host))
        assert len(calls) == 1


async def _refused_at_once(gw: Gateway, host: str) -> bool:
    response, _ = await get(gw, host, Accept="application/json")
    return response.status == 502
