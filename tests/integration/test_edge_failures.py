"""The edge over real loopback sockets: upstream failures, deadlines and limits (threat
model U, D). See ``tests/helpers/edge_client.py`` for how these tests observe the gateway."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.helpers.edge_client import NO_LEAK, assert_gateway_error, get
from tests.helpers.gateway import Gateway, host_of, run_gateway
from tests.helpers.polling import eventually
from tests.helpers.ports import unused_port
from tests.helpers.probes import Probe, probe_upstream
from tests.helpers.raw_http import (
    chunked,
    connect,
    exchange,
    read_response,
    read_until_closed,
    request_bytes,
)


# ── upstream failures (U) ───────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("accept", ["application/json", "text/html"])
async def test_nothing_listening_is_502_with_advice(gateway: Gateway, accept: str) -> None:
    port = unused_port()
    await gateway.sandbox(host="127.0.0.1")
    host = host_of(await gateway.preview(port))
    response, body = await get(gateway, host, Accept=accept)
    assert response.status == 502
    assert_gateway_error(response, "upstream_refused")
    text = body.decode()
    assert f"0.0.0.0:{port}" in text
    assert "127.0.0." not in text, "no internal address in the page"
    assert not any(marker in body for marker in NO_LEAK)
    if accept == "text/html":
        assert response.content_type == "text/html"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    else:
        assert response.content_type == "application/json"
        assert json.loads(body)["code"] == "upstream_refused"


async def test_slow_app_is_504(probe: Probe) -> None:
    async with run_gateway(upstream_response_timeout_s=0.3) as gw:
        host = await gw.public_preview(probe.port)
        response, body = await get(gw, host, "/slow-headers?s=2")
        assert response.status == 504
        assert_gateway_error(response, "upstream_timeout")
        assert json.loads(body)["code"] == "upstream_timeout"
        # The pool is fine afterwards.
        assert (await get(gw, host))[0].status == 200


async def test_upstream_abort_mid_body_is_visible_as_truncation(
    gateway: Gateway, site: str
) -> None:
    async with connect(gateway.edge_port) as (reader, writer):
        writer.write(request_bytes(site, "/abort", close=False))
        await writer.drain()
        response = await read_response(reader)
        assert response.status == 200 and response.header("Content-Length") == "1000"
        assert not response.complete and len(response.body) < 1000
    with pytest.raises(aiohttp.ClientPayloadError):
        await get(gateway, site, "/abort")


async def test_upstream_body_stall_is_cut_after_the_idle_timeout(probe: Probe) -> None:
    async with run_gateway(upstream_idle_timeout_s=0.3) as gw:
        host = await gw.public_preview(probe.port)
        async with connect(gw.edge_port) as (reader, writer):
            writer.write(request_bytes(host, "/stall-body?s=5", close=False))
            await writer.drain()
            response = await read_response(reader)
        assert response.status == 200 and not response.complete
        assert len(response.body) == 100


# ── deadlines and limits (D) ────────────────────────────────────────────────────────────────
async def test_slowloris_is_disconnected(probe: Probe) -> None:
    async with run_gateway(header_read_timeout_s=0.5) as gw:
        host = await gw.public_preview(probe.port)
        async with connect(gw.edge_port) as (reader, writer):
            writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nX-Slow: a".encode())
            await writer.drain()
            assert await read_until_closed(reader) == b""
        # On a keep-alive connection the deadline applies to every request's head.
        async with connect(gw.edge_port) as (reader, writer):
            writer.write(request_bytes(host, "/first", close=False))
            await writer.drain()
            assert (await read_response(reader)).status == 200
            writer.write(f"GET /second HTTP/1.1\r\nHost: {host}\r\n".encode())
            await writer.drain()
            assert await read_until_closed(reader) == b""
        # A partial head pipelined in the same packet as a complete request: the parser keeps
        # it out of sight, and it still gets no more than the header deadline.
        async with connect(gw.edge_port) as (reader, writer):
            writer.write(
                request_bytes(host, "/third", close=False)
                + f"GET /fourth HTTP/1.1\r\nHost: {host}\r\n".encode()
            )
            await writer.drain()
            assert (await read_response(reader)).status == 200
            assert await read_until_closed(reader) == b""
        assert probe.paths == ["/first", "/third"]


async def test_idle_keep_alive_is_not_mistaken_for_slowloris(probe: Probe) -> None:
    """The header deadline runs from the first byte of a head; an idle keep-alive connection
    has sent none, so it outlives several deadlines and serves its next request."""
    async with run_gateway(header_read_timeout_s=0.2) as gw:
        host = await gw.public_preview(probe.port)
        async with connect(gw.edge_port) as (reader, writer):
            for path in ("/one", "/two"):
                writer.write(request_bytes(host, path, close=False))
                await writer.drain()
                assert (await read_response(reader)).status == 200
                await asyncio.sleep(0.8)  # four header deadlines of idleness
            writer.write(request_bytes(host, "/three", close=True))
            await writer.drain()
            assert (await read_response(reader)).status == 200
        assert probe.paths == ["/one", "/two", "/three"]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_stalled_request_body_is_408(probe: Probe, framing: str) -> None:
    async with run_gateway(body_idle_timeout_s=0.3) as gw:
        host = await gw.public_preview(probe.port)
        if framing == "content-length":
            headers, body = [("Content-Length", "100")], b"x" * 10
        else:
            headers, body = [("Transfer-Encoding", "chunked")], b"a\r\n0123456789\r\n"
        async with connect(gw.edge_port) as (reader, writer):
            writer.write(
                request_bytes(host, "/", method="POST", headers=headers, body=body, close=False)
            )
            await writer.drain()
            response = await read_response(reader)
        assert response.status == 408
        assert_gateway_error(response, "request_timeout")
        assert response.header("Connection") == "close"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body_over_the_limit_is_413(probe: Probe, framing: str) -> None:
    async with run_gateway(max_body_bytes=64 * 1024) as gw:
        host = await gw.public_preview(probe.port)
        payload = b"z" * (256 * 1024)
        if framing == "content-length":
            headers, body = [("Content-Length", str(len(payload)))], payload
        else:
            headers, body = (
                [("Transfer-Encoding", "chunked")],
                chunked(*(payload[i : i + 8192] for i in range(0, len(payload), 8192))),
            )
        response = await exchange(
            gw.edge_port, request_bytes(host, "/", method="POST", headers=headers, body=body)
        )
        assert response.status == 413
        assert_gateway_error(response, "payload_too_large")
        # At the limit is fine.
        async with gw.session.post(
            gw.edge("/"), data=b"z" * (64 * 1024), headers={"Host": host}
        ) as ok:
            assert ok.status == 200
            assert (await ok.json())["body_bytes"] == 64 * 1024
    if framing == "content-length":
        assert probe.requests == 1, "a declared oversize body is refused before forwarding"


async def test_a_slow_sandbox_does_not_block_another(probe: Probe) -> None:
    """Two connections per sandbox port: two held requests to A fill A's pool (a third waits in
    it), and B is served meanwhile."""
    async with (
        probe_upstream() as other,
        run_gateway(upstream_max_connections_per_target=2) as gw,
    ):
        await gw.sandbox()
        a = host_of(await gw.preview(probe.port, name="a"))
        b = host_of(await gw.preview(other.port, name="b"))
        held = [asyncio.get_running_loop().create_task(get(gw, a, "/hold")) for _ in range(3)]
        try:
            await eventually(lambda: probe.held == 2)
            response, _ = await get(gw, b, "/fast")
            assert response.status == 200
            assert other.paths == ["/fast"]
            assert probe.held == 2, "the third request to A waits for A's pool, not at A"
        finally:
            probe.release.set()
        results = await asyncio.gather(*held)
        assert [r.status for r, _ in results] == [200, 200, 200]
