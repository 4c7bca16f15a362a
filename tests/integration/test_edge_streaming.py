"""The edge over real loopback sockets: bodies stream in both directions, and what passes
through is never followed, decompressed or normalised. See
``tests/helpers/edge_client.py`` for how these tests observe the gateway."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
from collections.abc import AsyncIterator

import pytest

from tests.helpers.edge_client import BIG, MIB, echoed, get, one
from tests.helpers.gateway import Gateway, run_gateway
from tests.helpers.probes import GZIP_PAYLOAD, Probe, counting_listener
from tests.helpers.raw_http import connect, exchange, read_response, request_bytes


# ── streaming ───────────────────────────────────────────────────────────────────────────────
async def test_content_length_upload_streams_end_to_end(gateway: Gateway, site: str) -> None:
    payload = bytes(range(256)) * (BIG // 256)
    async with gateway.session.post(
        gateway.edge("/upload"), data=io.BytesIO(payload), headers={"Host": site}
    ) as response:
        assert response.status == 200
        seen = echoed(await response.read())
    assert seen["body_bytes"] == len(payload)
    assert seen["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert one(seen, "Content-Length") == str(len(payload)) and not seen["chunked"]


async def test_chunked_upload_streams_end_to_end(gateway: Gateway, site: str) -> None:
    digest = hashlib.sha256()
    block = bytes(range(256)) * 256

    async def body() -> AsyncIterator[bytes]:
        for i in range(BIG // len(block)):
            piece = block[i % 256 :] + block[: i % 256]
            digest.update(piece)
            yield piece

    async with gateway.session.post(
        gateway.edge("/upload"), data=body(), headers={"Host": site}
    ) as response:
        assert response.status == 200
        seen = echoed(await response.read())
    assert seen["body_bytes"] == BIG
    assert seen["body_sha256"] == digest.hexdigest()
    assert seen["chunked"] and "content-length" not in seen["header_map"]


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_download_streams_end_to_end(gateway: Gateway, site: str, framing: str) -> None:
    query = f"n={BIG}" + ("&cl=1" if framing == "content-length" else "")
    digest, size = hashlib.sha256(), 0
    async with gateway.session.get(
        gateway.edge(f"/big?{query}"), headers={"Host": site}
    ) as response:
        assert response.status == 200
        if framing == "content-length":
            assert response.headers["Content-Length"] == str(BIG)
        else:
            assert "Content-Length" not in response.headers
            assert response.headers["Transfer-Encoding"] == "chunked"
        async for chunk in response.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
    assert size == BIG
    assert digest.hexdigest() == hashlib.sha256(b"x" * BIG).hexdigest()


async def test_server_sent_events_arrive_one_by_one(
    gateway: Gateway, site: str, probe: Probe
) -> None:
    """The app sends event 2 only after the test has seen event 1 through the gateway, so a
    gateway that buffered the response would never deliver event 1 and this would time out."""
    async with gateway.session.get(gateway.edge("/sse-gated"), headers={"Host": site}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        async with asyncio.timeout(10):
            first = await response.content.readuntil(b"\n\n")
        assert first == b"id: 1\ndata: one\n\n"
        assert probe.sse_first_sent.is_set() and not probe.sse_continue.is_set()
        probe.sse_continue.set()
        async with asyncio.timeout(10):
            assert await response.content.readuntil(b"\n\n") == b"id: 2\ndata: two\n\n"
            assert await response.content.read() == b""


async def test_upload_reaches_the_app_before_it_ends(
    gateway: Gateway, site: str, probe: Probe
) -> None:
    """The client sends the second half only once the app has received the first half: an
    upload buffered by the gateway would never finish."""
    first, second = b"a" * 65536, b"b" * 65536

    async def body() -> AsyncIterator[bytes]:
        yield first
        async with asyncio.timeout(10):
            await probe.upload_first_seen.wait()
        yield second

    async with gateway.session.post(
        gateway.edge(f"/upload-gated?first={len(first)}"), data=body(), headers={"Host": site}
    ) as response:
        assert response.status == 200
        result = await response.json()
    assert result["body_bytes"] == len(first + second)
    assert result["body_sha256"] == hashlib.sha256(first + second).hexdigest()


async def test_expect_100_continue(gateway: Gateway, site: str) -> None:
    async with connect(gateway.edge_port) as (reader, writer):
        writer.write(
            request_bytes(
                site,
                "/upload",
                method="POST",
                headers=[("Expect", "100-continue"), ("Content-Length", "5")],
            )
        )
        await writer.drain()
        interim = await read_response(reader)
        assert interim.status == 100
        writer.write(b"hello")
        await writer.drain()
        response = await read_response(reader)
    assert response.status == 200
    seen = echoed(response.body)
    assert seen["body_bytes"] == 5 and "expect" not in seen["header_map"]


# ── never follow, never decompress, never normalise ─────────────────────────────────────────
async def test_redirects_are_relayed_never_followed(gateway: Gateway, site: str) -> None:
    async with counting_listener() as listener:
        location = f"http://127.0.0.1:{listener.port}/internal"
        response, _ = await get(gateway, site, f"/redirect-to?u={location}")
        assert response.status == 302
        assert response.headers["Location"] == location
        metadata, _ = await get(gateway, site, "/redirect")
        assert metadata.status == 302
        assert metadata.headers["Location"] == "http://169.254.169.254/latest/meta-data/"
    assert listener.accepted == 0


async def test_compressed_bodies_pass_byte_identical(
    gateway: Gateway, site: str, probe: Probe
) -> None:
    response, body = await get(gateway, site, "/gzip", **{"Accept-Encoding": "gzip"})
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert body == GZIP_PAYLOAD
    before = probe.requests
    async with gateway.session.post(
        gateway.edge("/upload"),
        data=GZIP_PAYLOAD,
        headers={"Host": site, "Content-Encoding": "gzip", "Content-Type": "text/plain"},
    ) as upload:
        seen = echoed(await upload.read())
    # Inflated at the gateway, the body would outgrow the Content-Length sent upstream and the
    # rest would reach the app as a second request.
    assert seen["body_bytes"] == len(GZIP_PAYLOAD)
    assert seen["body_sha256"] == hashlib.sha256(GZIP_PAYLOAD).hexdigest()
    assert one(seen, "Content-Encoding") == "gzip"
    assert one(seen, "Content-Length") == str(len(GZIP_PAYLOAD))
    assert probe.requests == before + 1


async def test_compressed_upload_is_never_inflated(probe: Probe) -> None:
    """A small gzip body that inflates to 16 MiB passes a 64 KiB limit untouched: the gateway
    neither inflates it (zip bomb) nor counts its inflated size."""
    bomb = gzip.compress(bytes(16 * MIB), mtime=0)
    assert len(bomb) < 64 * 1024
    async with run_gateway(max_body_bytes=64 * 1024) as gw:
        host = await gw.public_preview(probe.port)
        async with gw.session.post(
            gw.edge("/upload"),
            data=bomb,
            headers={"Host": host, "Content-Encoding": "gzip"},
        ) as response:
            assert response.status == 200
            seen = echoed(await response.read())
    assert seen["body_sha256"] == hashlib.sha256(bomb).hexdigest()
    assert probe.requests == 1


@pytest.mark.parametrize(
    "target",
    [
        "//evil/x",
        "//127.0.0.1:1/x",
        "/%2e%2e/x",
        "/..%2f..%2fetc/passwd",
        "/a/../b/./c",
        "/a%0d%0aX:%20y",
        "/%00",
        "/a;b=c",
        "/@evil/x",
        "/q?a=1&b=%20&c=%2F&&d",
        "/q?a=b?c",
    ],
    ids=[
        "double-slash",
        "double-slash-authority",
        "encoded-dots",
        "encoded-slash-traversal",
        "dot-segments",
        "encoded-crlf",
        "encoded-nul",
        "matrix-param",
        "at-sign",
        "query",
        "question-mark-in-query",
    ],
)
async def test_paths_reach_the_app_byte_identical(
    gateway: Gateway, site: str, probe: Probe, target: str
) -> None:
    response = await exchange(gateway.edge_port, request_bytes(site, target))
    assert response.status == 200
    assert echoed(response.body)["raw_path"] == target
    assert probe.paths == [target], "the request went to the sandbox and nowhere else"
