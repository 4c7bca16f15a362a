"""The edge's abuse limits over real loopback sockets (issue 12, "Limits"): the keep-alive idle
limit, connection caps per replica and per client IP, requests and WebSockets per preview and
per client IP, the per-preview request rate, the memory budget, the upload progress deadline
and the per-target upstream queue. Each refusal is checked for its status, its error code, its
``Retry-After`` and for what did not reach the sandbox."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.helpers.edge_client import assert_gateway_error, get
from tests.helpers.gateway import Gateway, host_of, run_gateway
from tests.helpers.polling import WAIT_S, eventually
from tests.helpers.probes import Probe, probe_upstream
from tests.helpers.raw_http import connect, read_response, read_until_closed, request_bytes
from tests.helpers.ws_client import connect as ws_connect
from tests.helpers.ws_client import receive
from tests.helpers.ws_upstreams import WsUpstream
from tests.integration.test_metrics import scrape


async def test_idle_keep_alive_connection_is_closed_after_the_limit(probe: Probe) -> None:
    async with run_gateway(keepalive_timeout_s=0.3, header_read_timeout_s=5) as gw:
        host = await gw.public_preview(probe.port)
        async with connect(gw.edge_port) as (reader, writer):
            writer.write(request_bytes(host, "/one", close=False))
            await writer.drain()
            response = await read_response(reader)
            assert response.status == 200 and response.header("Connection") != "close"
            loop = asyncio.get_running_loop()
            idle_from = loop.time()
            assert await read_until_closed(reader) == b"", "closed without a word"
            assert loop.time() - idle_from < 0.3 + 2.0, "closed near the limit, not much later"


@pytest.mark.parametrize(
    ("setting", "headers"),
    [
        ({"max_header_fields": 10}, [(f"X-F{i}", "v") for i in range(11)]),
        ({"max_header_line_bytes": 1024}, [("X-Long", "v" * 1100)]),
        ({"max_header_bytes": 4096}, [(f"X-B{i}", "v" * 900) for i in range(5)]),
    ],
    ids=["fields", "line", "total"],
)
async def test_header_limits_are_settings(
    probe: Probe, setting: dict[str, int], headers: list[tuple[str, str]]
) -> None:
    async with run_gateway(**setting) as gw:
        host = await gw.public_preview(probe.port)
        fits = headers[: len(headers) // 2] if len(headers) > 1 else [("X-Long", "v" * 900)]
        for extra, status in ((fits, 200), (headers, 431)):
            async with connect(gw.edge_port) as (reader, writer):
                writer.write(request_bytes(host, "/", headers=extra, close=True))
                await writer.drain()
                response = await read_response(reader)
            assert response.status == status
        assert_gateway_error(response, "headers_too_large")
        assert probe.requests == 1, "only the head that fits went upstream"


async def _open_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


@contextlib.asynccontextmanager
async def held_connections(
    port: int, host: str, n: int
) -> AsyncIterator[list[asyncio.StreamWriter]]:
    """``n`` client connections, each proved accepted by one answered request and kept open."""
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(n):
            reader, writer = await _open_connection(port)
            writers.append(writer)
            writer.write(request_bytes(host, "/", close=False))
            await writer.drain()
            assert (await read_response(reader)).status == 200
        yield writers
    finally:
        for writer in writers:
            writer.close()


async def _refused_at_accept(port: int, host: str) -> tuple[int, str | None, str | None]:
    """A fresh connection's answer: status, error code, Retry-After; it must close after."""
    async with connect(port) as (reader, writer):
        writer.write(request_bytes(host, "/", close=False))
        await writer.drain()
        response = await read_response(reader)
        assert response.header("Connection") == "close"
        assert await read_until_closed(reader) == b""
        return (
            response.status,
            response.header("X-Blaxel-Error-Code"),
            response.header("Retry-After"),
        )


async def test_connections_per_client_ip_are_capped_with_429(probe: Probe) -> None:
    async with run_gateway(max_connections_per_client_ip=2) as gw:
        host = await gw.public_preview(probe.port)
        async with held_connections(gw.edge_port, host, 2):
            seen = probe.requests
            status, code, retry = await _refused_at_accept(gw.edge_port, host)
            assert (status, code, retry) == (429, "too_many_connections", "1")
            assert probe.requests == seen, "a refused connection sends nothing upstream"
            # In no access log line (there was no request), so counted for /metrics.
            metrics = await scrape(gw)
            refused = ("gateway_limit_refusals_total", (("code", "too_many_connections"),))
            assert metrics[refused] == 1
        # Closed connections give their slots back.
        await eventually(lambda: _served(gw.edge_port, host))


async def _served(port: int, host: str) -> bool:
    async with connect(port) as (reader, writer):
        writer.write(request_bytes(host, "/", close=True))
        await writer.drain()
        return (await read_response(reader)).status == 200


async def test_trusted_proxies_are_exempt_from_the_per_ip_cap(probe: Probe) -> None:
    async with run_gateway(max_connections_per_client_ip=1, trusted_proxies="127.0.0.1/32") as gw:
        host = await gw.public_preview(probe.port)
        async with held_connections(gw.edge_port, host, 3):
            pass


async def test_the_global_connection_cap_sheds_with_503(probe: Probe) -> None:
    async with run_gateway(max_connections=2, trusted_proxies="127.0.0.1/32") as gw:
        host = await gw.public_preview(probe.port)
        async with held_connections(gw.edge_port, host, 2):
            status, code, _ = await _refused_at_accept(gw.edge_port, host)
            assert (status, code) == (503, "overloaded")
        await eventually(lambda: _served(gw.edge_port, host))


async def test_requests_in_flight_per_preview_are_capped(probe: Probe) -> None:
    async with probe_upstream() as other, run_gateway(max_connections_per_preview=2) as gw:
        await gw.sandbox()
        busy = host_of(await gw.preview(probe.port, name="busy"))
        calm = host_of(await gw.preview(other.port, name="calm"))
        held = [asyncio.get_running_loop().create_task(get(gw, busy, "/hold")) for _ in range(2)]
        try:
            await eventually(lambda: probe.held == 2)
            response, _ = await get(gw, busy, "/third")
            assert response.status == 429
            assert_gateway_error(response, "too_many_connections")
            assert response.headers["Retry-After"] == "1"
            assert "/third" not in probe.paths
            assert (await get(gw, calm))[0].status == 200, "another preview has its own cap"
        finally:
            probe.release.set()
        assert [r.status for r, _ in await asyncio.gather(*held)] == [200, 200]
        assert (await get(gw, busy))[0].status == 200, "finished requests free their slots"


async def test_per_preview_request_rate_is_a_token_bucket(probe: Probe) -> None:
    async with (
        probe_upstream() as other,
        run_gateway(preview_rate_limit=0.5, preview_rate_burst=3) as gw,
    ):
        await gw.sandbox()
        hot = host_of(await gw.preview(probe.port, name="hot"))
        cold = host_of(await gw.preview(other.port, name="cold"))
        private = host_of(await gw.preview(probe.port, name="private", public=False))
        statuses = [(await get(gw, hot))[0].status for _ in range(3)]
        assert statuses == [200, 200, 200], "the burst"
        response, _ = await get(gw, hot)
        assert response.status == 429
        assert_gateway_error(response, "rate_limited")
        assert 1 <= int(response.headers["Retry-After"]) <= 2
        assert probe.requests == 3
        assert (await get(gw, cold))[0].status == 200, "another preview has its own bucket"
        # Requests refused before admission do not spend a private preview's bucket: its owner
        # still gets the burst after strangers knocked.
        for _ in range(10):
            assert (await get(gw, private))[0].status == 401
        token = (await gw.mint("private"))["spec"]["token"]
        for _ in range(3):
            response, _ = await get(gw, private, **{"X-Blaxel-Preview-Token": token})
            assert response.status == 200


async def test_websockets_per_preview_are_capped(wsup: WsUpstream) -> None:
    async with run_gateway(max_websockets_per_preview=1) as gw:
        host = await gw.public_preview(wsup.port)
        async with ws_connect(gw, host) as first:
            await first.send_str("one")
            assert (await receive(first)).data == "one"
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                async with ws_connect(gw, host):
                    pass
            assert refused.value.status == 429
            assert refused.value.headers is not None
            assert refused.value.headers["X-Blaxel-Error-Code"] == "too_many_connections"
            assert refused.value.headers["Retry-After"] == "1"
            # Plain requests to the preview are not WebSockets and pass (to the app's own 404).
            plain, _ = await get(gw, host)
            assert plain.status == 404 and "X-Blaxel-Error-Code" not in plain.headers
        # The closed tunnel gives its slot back.
        async with ws_once_free(gw, host) as again:
            await again.send_str("two")
            assert (await receive(again)).data == "two"


@contextlib.asynccontextmanager
async def ws_once_free(gw: Gateway, host: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A WebSocket opened as soon as the gateway frees a slot: it answers 429 until then."""
    async with asyncio.timeout(WAIT_S):
        while True:
            try:
                ws = await ws_connect(gw, host)
                break
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 429
                await asyncio.sleep(0.02)
    try:
        yield ws
    finally:
        await ws.close()


async def test_websockets_per_client_ip_are_capped(wsup: WsUpstream) -> None:
    async with run_gateway(max_websockets_per_client_ip=1) as gw:
        await gw.sandbox()
        a = host_of(await gw.preview(wsup.port, name="a"))
        b = host_of(await gw.preview(wsup.port, name="b"))
        async with ws_connect(gw, a):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                async with ws_connect(gw, b):
                    pass
            assert refused.value.status == 429


async def test_a_tunnel_gives_back_its_client_connection_slot(wsup: WsUpstream) -> None:
    """A WebSocket's client connection leaves the listener for the tunnel; its per-IP slot is
    held while the tunnel is open and freed when it ends."""
    async with run_gateway(max_connections_per_client_ip=1) as gw:
        host = await gw.public_preview(wsup.port)
        for _ in range(3):
            async with ws_once_free(gw, host) as ws:  # the last tunnel's slot came back
                await ws.send_str("x")
                assert (await receive(ws)).data == "x"
                status, code, _ = await _refused_at_accept(gw.edge_port, host)
                assert (status, code) == (429, "too_many_connections")


async def test_memory_budget_refuses_new_work_with_503(probe: Probe, wsup: WsUpstream) -> None:
    """A budget of 1 MiB is exceeded from the start: both levels refuse at once."""
    async with run_gateway(memory_limit_mib=1) as gw:
        await gw.sandbox()
        host = host_of(await gw.preview(probe.port, name="web"))
        ws_host = host_of(await gw.preview(wsup.port, name="ws"))

        async def refused() -> bool:
            return (await get(gw, host))[0].status == 503

        await eventually(refused)
        response, _ = await get(gw, host)
        assert_gateway_error(response, "overloaded")
        assert probe.requests == 0
        with pytest.raises(aiohttp.WSServerHandshakeError) as ws_refused:
            async with ws_connect(gw, ws_host):
                pass
        assert ws_refused.value.status == 503


# ── upload progress deadline ────────────────────────────────────────────────────────────────
async def test_a_dripping_upload_is_closed_by_the_progress_deadline(probe: Probe) -> None:
    """A byte every 50 ms keeps the body idle timeout (60 s) happy forever; the progress rule
    (1000 B/s over 0.3 s) does not."""
    async with run_gateway(min_upload_rate=1000, min_upload_rate_window_s=0.3) as gw:
        host = await gw.public_preview(probe.port)
        async with connect(gw.edge_port) as (reader, writer):
            head = request_bytes(
                host, "/upload", method="POST", headers=[("Content-Length", "100000")], close=False
            )
            writer.write(head)
            await writer.drain()

            async def drip() -> None:
                with contextlib.suppress(ConnectionError):
                    while True:
                        writer.write(b"x")
                        await writer.drain()
                        await asyncio.sleep(0.05)

            dripping = asyncio.get_running_loop().create_task(drip())
            try:
                response = await read_response(reader)
            finally:
                dripping.cancel()
        assert response.status == 408
        assert_gateway_error(response, "request_timeout")
        assert response.header("Connection") == "close"


async def test_a_steady_upload_passes_the_progress_deadline(probe: Probe) -> None:
    async with run_gateway(min_upload_rate=1000, min_upload_rate_window_s=0.2) as gw:
        host = await gw.public_preview(probe.port)

        async def body() -> AsyncIterator[bytes]:
            for _ in range(8):  # 8 pieces of 1 KiB over ~0.8 s: about 10 kB/s, above the minimum
                yield b"y" * 1024
                await asyncio.sleep(0.1)

        async with gw.session.post(gw.edge("/"), data=body(), headers={"Host": host}) as ok:
            assert ok.status == 200
            assert (await ok.json())["body_bytes"] == 8 * 1024


# ── per-target upstream queue ───────────────────────────────────────────────────────────────
async def test_a_full_upstream_queue_is_503_upstream_busy(probe: Probe) -> None:
    async with (
        probe_upstream() as other,
        run_gateway(
            upstream_max_connections_per_target=1,
            upstream_queue_per_target=1,
            upstream_queue_timeout_s=WAIT_S,
        ) as gw,
    ):
        await gw.sandbox()
        slow = host_of(await gw.preview(probe.port, name="slow"))
        fast = host_of(await gw.preview(other.port, name="fast"))
        loop = asyncio.get_running_loop()
        held = loop.create_task(get(gw, slow, "/hold"))
        await eventually(lambda: probe.held == 1)
        queued = loop.create_task(get(gw, slow, "/queued"))
        pool = gw.running.pool if gw.running else None
        assert pool is not None
        await eventually(lambda: pool.queued(("127.0.0.1", probe.port)) == 1)
        response, _ = await get(gw, slow, "/over")
        assert response.status == 503
        assert_gateway_error(response, "upstream_busy")
        assert (await get(gw, fast))[0].status == 200, "another sandbox is not held up"
        probe.release.set()
        assert (await held)[0].status == 200
        assert (await queued)[0].status == 200
        assert "/over" not in probe.paths


async def test_a_queued_request_gives_up_at_the_queue_deadline(probe: Probe) -> None:
    async with run_gateway(
        upstream_max_connections_per_target=1, upstream_queue_timeout_s=0.3
    ) as gw:
        host = await gw.public_preview(probe.port)
        held = asyncio.get_running_loop().create_task(get(gw, host, "/hold"))
        try:
            await eventually(lambda: probe.held == 1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            response, _ = await get(gw, host, "/waits")
            assert response.status == 503
            assert_gateway_error(response, "upstream_busy")
            assert loop.time() - started >= 0.3 - 0.05
        finally:
            probe.release.set()
        assert (await held)[0].status == 200
        assert "/waits" not in probe.paths
