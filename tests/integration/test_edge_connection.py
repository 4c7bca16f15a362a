"""The edge on raw sockets: the limits it adds (431, chunk
sizes), keep-alive and pipelining, HTTP/1.0, Expect, and the raw relay of upstream framing
(close-delimited, chunked byte for byte, untrusted heads, resets mid-stream, drain).

A scripted upstream (``raw_upstream``) writes exactly the bytes a test gives it, so framing the
aiohttp test apps would never produce can be sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvloop

from tests.helpers.gateway import Gateway, run_gateway
from tests.helpers.polling import eventually
from tests.helpers.probes import Probe, probe_upstream
from tests.helpers.raw_http import (
    connect,
    exchange,
    read_response,
    read_until_closed,
    request_bytes,
)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]


@contextlib.asynccontextmanager
async def raw_upstream(script: Script) -> AsyncIterator[tuple[int, list[bytes]]]:
    """An upstream that reads each request head and runs ``script``; yields its port and the
    heads it received."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            await script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], heads
    finally:
        server.close()
        await server.wait_closed()


def answer(data: bytes, *, then_reset: bool = False) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if then_reset:
            writer.transport.abort()

    return script


async def through(gw: Gateway, reply: bytes, **request: Any) -> bytes:
    """Everything the client reads, up to the close, for one GET answered by ``reply``."""
    async with raw_upstream(answer(reply)) as (port, _):
        host = await gw.public_preview(port)
        async with connect(gw.edge_port) as (reader, writer):
            writer.write(request_bytes(host, **request))
            await writer.drain()
            return await read_until_closed(reader)


# ── limits the old edge lacked ──────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "extra",
    [
        [(f"X-F{i}", "v") for i in range(130)],  # more than 128 fields
        [("X-Long", "a" * 9000)],  # a line over 8 KiB
        [(f"X-Big{i}", "b" * 7000) for i in range(10)],  # over 64 KiB in all
    ],
    ids=["fields", "line", "total"],
)
async def test_oversized_heads_get_431_and_nothing_goes_upstream(
    gateway: Gateway, site: str, probe: Probe, extra: list[tuple[str, str]]
) -> None:
    async with connect(gateway.edge_port) as (reader, writer):
        writer.write(request_bytes(site, headers=extra, close=False))
        await writer.drain()
        response = await read_response(reader)
        assert response.status == 431
        assert response.header("X-Blaxel-Error-Code") == "headers_too_large"
        assert await read_until_closed(reader) == b""
    assert probe.requests == 0


async def test_a_chunk_size_over_16_hex_digits_is_400_before_dialling(
    gateway: Gateway, site: str, probe: Probe
) -> None:
    raw = request_bytes(
        site, method="POST", headers=[("Transfer-Encoding", "chunked")], body=b"0" * 16 + b"5\r\n"
    )
    response = await exchange(gateway.edge_port, raw + b"hello\r\n0\r\n\r\n")
    assert response.status == 400
    assert probe.requests == 0


async def test_sixteen_hex_digits_are_still_a_chunk_size(
    gateway: Gateway, site: str, probe: Probe
) -> None:
    body = b"000000000000000" + b"5\r\nhello\r\n0\r\n\r\n"
    raw = request_bytes(site, method="POST", headers=[("Transfer-Encoding", "chunked")])
    response = await exchange(gateway.edge_port, raw + body)
    assert response.status == 200
    assert b'"body_bytes": 5' in response.body


# ── keep-alive, pipelining, HTTP/1.0, Expect ────────────────────────────────────────────────
async def test_pipelined_requests_are_answered_in_order(
    gateway: Gateway, site: str, probe: Probe
) -> None:
    paths = [f"/p{i}" for i in range(5)]
    packet = b"".join(request_bytes(site, p, close=p == paths[-1]) for p in paths)
    async with connect(gateway.edge_port) as (reader, writer):
        writer.write(packet)
        await writer.drain()
        for path in paths:
            response = await read_response(reader)
            assert response.status == 200
            assert f'"raw_path": "{path}"'.encode() in response.body
        assert await read_until_closed(reader) == b""
    assert probe.paths == paths


async def test_expect_100_continue_gets_its_interim_answer(gateway: Gateway, site: str) -> None:
    head = request_bytes(
        site,
        method="PUT",
        headers=[("Content-Length", "5"), ("Expect", "100-continue")],
    )
    async with connect(gateway.edge_port) as (reader, writer):
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(5):
            interim = await reader.readuntil(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        await writer.drain()
        response = await read_response(reader)
    assert response.status == 200 and b'"body_bytes": 5' in response.body


async def test_http_10_closes_unless_it_asks_for_keep_alive(gateway: Gateway, site: str) -> None:
    async with connect(gateway.edge_port) as (reader, writer):
        writer.write(request_bytes(site, "/one", version="HTTP/1.0", close=False))
        await writer.drain()
        assert (await read_response(reader)).status == 200
        assert await read_until_closed(reader) == b""
    keep = [("Connection", "keep-alive")]
    async with connect(gateway.edge_port) as (reader, writer):
        for path in ("/a", "/b"):
            writer.write(request_bytes(site, path, version="HTTP/1.0", headers=keep, close=False))
            await writer.drain()
            response = await read_response(reader)
            assert response.status == 200 and response.header("Connection") == "keep-alive"


async def test_a_half_closed_client_gets_its_answer_then_the_close(
    gateway: Gateway, site: str
) -> None:
    async with connect(gateway.edge_port) as (reader, writer):
        writer.write(request_bytes(site, "/last", close=False))
        writer.write_eof()
        response = await read_response(reader)
        assert response.status == 200 and b'"raw_path": "/last"' in response.body
        assert await read_until_closed(reader) == b""


async def test_a_body_the_answer_did_not_need_is_skipped_on_a_kept_alive_connection(
    gateway: Gateway, site: str
) -> None:
    """A 404 for a POST with a body: the body is read past, and the next request is served."""
    unknown = "nobody." + site.split(".", 1)[1]
    async with connect(gateway.edge_port) as (reader, writer):
        writer.write(
            request_bytes(unknown, method="POST", headers=[("Content-Length", "4")], close=False)
            + b"GET "  # a body that looks like a request line
            + request_bytes(site, "/next")
        )
        await writer.drain()
        assert (await read_response(reader)).status == 404
        second = await read_response(reader)
        assert second.status == 200 and b'"raw_path": "/next"' in second.body


# ── the upstream's framing, relayed raw ─────────────────────────────────────────────────────
async def test_a_chunked_response_is_relayed_byte_for_byte(gateway: Gateway) -> None:
    body = b"5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw = await through(gateway, head + body, close=True)
    assert raw.endswith(b"\r\n\r\n" + body)
    assert b"Transfer-Encoding: chunked\r\n" in raw


async def test_a_chunked_response_reaches_an_http_10_client_unframed(gateway: Gateway) -> None:
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw = await through(gateway, head + body, version="HTTP/1.0", close=False)
    head_out, _, payload = raw.partition(b"\r\n\r\n")
    assert payload == b"hello world"
    assert b"chunked" not in head_out.lower()


async def test_a_close_delimited_response_is_relayed_until_eof(gateway: Gateway) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
    raw = await through(gateway, head + b"all of it" * 1000, close=False)
    head_out, _, payload = raw.partition(b"\r\n\r\n")
    assert payload == b"all of it" * 1000
    assert b"Connection: close" in head_out


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["length", "chunked"],
)
async def test_a_reset_mid_body_is_a_visible_truncation(gateway: Gateway, reply: bytes) -> None:
    async with raw_upstream(answer(reply, then_reset=True)) as (port, _):
        host = await gateway.public_preview(port)
        async with connect(gateway.edge_port) as (reader, writer):
            writer.write(request_bytes(host, close=False))
            await writer.drain()
            response = await read_response(reader)
            assert response.status == 200 and not response.complete
            assert await read_until_closed(reader) == b""


@pytest.mark.parametrize(
    "reply",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 70000 + b"\r\n\r\n",
    ],
    ids=["status-line", "field-name", "cl-and-te", "oversized"],
)
async def test_an_untrusted_bad_response_head_is_502(gateway: Gateway, reply: bytes) -> None:
    async with raw_upstream(answer(reply)) as (port, _):
        host = await gateway.public_preview(port)
        response = await exchange(gateway.edge_port, request_bytes(host))
    assert response.status == 502
    assert response.header("X-Blaxel-Error-Code") == "upstream_bad_response"


async def test_the_upstream_head_carries_the_forwarding_headers(gateway: Gateway) -> None:
    reply = b"HTTP/1.1 204 No Content\r\n\r\n"
    async with raw_upstream(answer(reply)) as (port, heads):
        host = await gateway.public_preview(port)
        response = await exchange(
            gateway.edge_port,
            request_bytes(host, "/x?bl_preview_token=t&keep=1", headers=[("X-Forwarded-For", "1")]),
        )
    assert response.status == 204
    head = heads[0].decode("latin-1")
    assert head.startswith("GET /x?keep=1 HTTP/1.1\r\n")
    assert "X-Forwarded-For: 127.0.0.1\r\n" in head and "X-Forwarded-For: 1\r\n" not in head
    assert "X-Request-Id: " in head and "Connection: close" not in head


async def _answer_once_then_go_stale(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer one request keep-alive; the next on this connection is read and not answered,
    as when the app closed a pooled connection just as the gateway reused it."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")


@pytest.mark.parametrize(("method", "status"), [("GET", 200), ("POST", 502)])
async def test_a_stale_pooled_connection_is_retried_once_for_idempotent_requests(
    gateway: Gateway, method: str, status: int
) -> None:
    async with raw_upstream(_answer_once_then_go_stale) as (port, heads):
        host = await gateway.public_preview(port)
        assert (await exchange(gateway.edge_port, request_bytes(host))).status == 200
        again = request_bytes(host, method=method, headers=[("Content-Length", "0")])
        response = await exchange(gateway.edge_port, again)
        assert response.status == status
    # Each connection's first head: the retry is the only reason for a second connection.
    assert len(heads) == (2 if status == 200 else 1)


# ── drain ───────────────────────────────────────────────────────────────────────────────────
async def test_drain_closes_idle_connections_and_finishes_busy_ones(probe: Probe) -> None:
    running = run_gateway()
    gw = await running.__aenter__()
    stopping: asyncio.Task[Any] | None = None
    try:
        host = await gw.public_preview(probe.port)
        async with connect(gw.edge_port) as (idle_r, idle_w), connect(gw.edge_port) as (r, w):
            idle_w.write(request_bytes(host, "/first", close=False))
            await idle_w.drain()
            assert (await read_response(idle_r)).status == 200
            w.write(request_bytes(host, "/hold", close=False))
            await w.drain()
            await eventually(lambda: probe.held == 1)
            stopping = asyncio.get_running_loop().create_task(running.__aexit__(None, None, None))
            assert await read_until_closed(idle_r) == b""  # idle: closed at once
            probe.release.set()
            response = await read_response(r)
            assert response.status == 200  # in flight: finished within the grace
            assert response.header("Connection") == "close"
            assert await read_until_closed(r) == b""
        await stopping
    finally:
        if stopping is None:
            await running.__aexit__(None, None, None)


# ── on uvloop, the loop the gateway runs on (its transports are not asyncio's classes) ──────
async def _on_uvloop() -> None:
    async with probe_upstream() as probe, run_gateway() as gw:
        host = await gw.public_preview(probe.port)
        upload = request_bytes(
            host, "/up", method="POST", headers=[("Transfer-Encoding", "chunked")], close=False
        )
        async with connect(gw.edge_port) as (reader, writer):
            writer.write(upload + b"5\r\nhello\r\n0\r\n\r\n" + request_bytes(host, "/next"))
            await writer.drain()
            first = await read_response(reader)
            assert first.status == 200 and b'"body_bytes": 5' in first.body
            assert (await read_response(reader)).status == 200
        assert (
            await exchange(gw.edge_port, request_bytes(host, headers=[("X", "a" * 9000)]))
        ).status == 431
        assert probe.paths == ["/up", "/next"]


def test_the_protocol_edge_on_uvloop() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_on_uvloop())
