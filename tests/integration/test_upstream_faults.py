"""Upstream faults through a fault-injecting proxy (``tests/helpers/faults.py``), issue 12
"Faults" and threat model U01-U05: each failure gets its status at its own deadline, and a
response cut after its head is always visible to the client as a truncation.

Garbage and oversized response heads (502) and a scripted reset are covered byte for byte in
``test_edge_connection.py``; here the faults come from a real app behind a misbehaving path.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.helpers.edge_client import assert_gateway_error, get
from tests.helpers.faults import black_hole_listener, fault_proxy
from tests.helpers.gateway import Gateway, run_gateway
from tests.helpers.ports import unused_port
from tests.helpers.probes import Probe
from tests.helpers.raw_http import connect, read_response, read_until_closed, request_bytes


async def test_refused_is_502_at_once() -> None:
    async with run_gateway(upstream_connect_timeout_s=5) as gw:
        host = await gw.public_preview(unused_port())
        elapsed = await failing_get(gw, host, 502, "upstream_refused")
        assert elapsed < 1.0, "a refusal is not waited out like a timeout"


async def failing_get(gw: Gateway, host: str, status: int, code: str) -> float:
    """GET that must fail with this status and code; returns how long the answer took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    response, _ = await get(gw, host)
    elapsed = loop.time() - started
    assert response.status == status
    assert_gateway_error(response, code)
    return elapsed


async def test_a_black_holed_connect_is_504_at_the_connect_deadline() -> None:
    with black_hole_listener() as port:
        async with run_gateway(upstream_connect_timeout_s=0.5) as gw:
            host = await gw.public_preview(port)
            elapsed = await failing_get(gw, host, 504, "upstream_timeout")
        assert 0.5 - 0.05 <= elapsed < 0.5 + 2.0


async def test_no_response_head_is_504_at_the_response_deadline(probe: Probe) -> None:
    async with (
        fault_proxy(probe.port, black_hole=True) as proxy,
        run_gateway(upstream_response_timeout_s=0.4) as gw,
    ):
        host = await gw.public_preview(proxy.port)
        elapsed = await failing_get(gw, host, 504, "upstream_timeout")
        assert 0.4 - 0.05 <= elapsed < 0.4 + 2.0
        assert proxy.accepted == 1
    assert probe.requests == 0


@pytest.mark.parametrize("cl", ["1", "0"], ids=["length", "chunked"])
async def test_a_reset_mid_stream_is_a_truncation(probe: Probe, cl: str) -> None:
    """The app's 1 MiB body is cut by a reset after 300 kB: the client gets the head and part
    of the body, then the connection ends; never a complete short response."""
    async with (
        fault_proxy(probe.port, reset_after=300_000) as proxy,
        run_gateway() as gw,
    ):
        host = await gw.public_preview(proxy.port)
        async with connect(gw.edge_port) as (reader, writer):
            writer.write(request_bytes(host, f"/big?n=1048576&cl={cl}", close=False))
            await writer.drain()
            response = await read_response(reader)
            assert response.status == 200
            assert not response.complete
            assert 0 < len(response.body) < 1048576
            assert await read_until_closed(reader) == b""


async def test_latency_and_a_slow_drip_are_served_whole(probe: Probe) -> None:
    """Slow is not broken: 100 ms a piece and a body in 4 KiB drips, each pause well under the
    upstream idle timeout, arrive complete."""
    async with (
        fault_proxy(probe.port, latency_s=0.1, drip=(4096, 0.005)) as proxy,
        run_gateway(upstream_idle_timeout_s=1.0, upstream_response_timeout_s=2.0) as gw,
    ):
        host = await gw.public_preview(proxy.port)
        response, body = await get(gw, host, "/big?n=200000&cl=1")
        assert response.status == 200
        assert body == b"x" * 200_000


async def test_an_app_that_stops_reading_an_upload_meets_the_progress_deadline(
    probe: Probe,
) -> None:
    """The app accepts the connection and never reads: the gateway's buffers to it fill, the
    gateway stops reading the client, the upload makes no progress, and after the progress
    window the client gets 504 (the app's fault, not the client's) and the connection closes."""
    size = 64 * 1024 * 1024
    async with (
        fault_proxy(probe.port, stop_reading=True) as proxy,
        run_gateway(min_upload_rate=100_000, min_upload_rate_window_s=0.5) as gw,
    ):
        host = await gw.public_preview(proxy.port)
        async with connect(gw.edge_port) as (reader, writer):
            head = request_bytes(
                host, "/", method="POST", headers=[("Content-Length", str(size))], close=False
            )
            writer.write(head)

            async def upload() -> None:
                block = b"u" * 65536
                with contextlib.suppress(ConnectionError):
                    for _ in range(size // len(block)):
                        writer.write(block)
                        await writer.drain()

            uploading = asyncio.get_running_loop().create_task(upload())
            try:
                response = await read_response(reader)
            finally:
                uploading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await uploading
        assert response.status == 504
        assert_gateway_error(response, "upstream_timeout")
        assert response.header("Connection") == "close"


async def test_a_failure_part_way_through_an_upload_closes_the_connection(probe: Probe) -> None:
    """Half a body went upstream, then the app timed out: the 504 says Connection: close and
    the connection ends, so the other half is never read as the next request."""
    async with (
        fault_proxy(probe.port, black_hole=True) as proxy,
        run_gateway(upstream_response_timeout_s=0.3) as gw,
    ):
        host = await gw.public_preview(proxy.port)
        async with connect(gw.edge_port) as (reader, writer):
            head = request_bytes(
                host, "/", method="POST", headers=[("Content-Length", "1000")], close=False
            )
            writer.write(head + b"a" * 500)
            await writer.drain()
            response = await read_response(reader)
            assert response.status == 504
            assert response.header("Connection") == "close"
            with contextlib.suppress(ConnectionError):
                writer.write(b"b" * 500 + request_bytes(host, "/smuggled", close=True))
                await writer.drain()
            assert await read_until_closed(reader) == b""
    assert "/smuggled" not in probe.paths
