"""The edge over real loopback sockets: ambiguous or malformed framing is refused before
anything is forwarded (request smuggling, threat model S), bodiless responses carry no body,
and an upgrade the gateway does not relay ends the connection. See
``tests/helpers/edge_client.py`` for how these tests observe the gateway."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tests.helpers.edge_client import NO_LEAK, assert_gateway_error, echoed
from tests.helpers.gateway import Gateway
from tests.helpers.probes import Probe
from tests.helpers.raw_http import (
    chunked,
    connect,
    exchange,
    read_response,
    read_until_closed,
    request_bytes,
)

# ── framing refused before anything is forwarded (S) ────────────────────────────────────────
FRAMING: list[tuple[str, str, list[tuple[str, str]], bytes, str, int]] = [
    (
        "te-and-cl",
        "HTTP/1.1",
        [("Transfer-Encoding", "chunked"), ("Content-Length", "4")],
        chunked(b"abcd"),
        "POST",
        400,
    ),
    (
        "te-on-http10",
        "HTTP/1.0",
        [("Transfer-Encoding", "chunked")],
        chunked(b"abcd"),
        "POST",
        400,
    ),
    ("underscore-te", "HTTP/1.1", [("Transfer_Encoding", "chunked")], b"", "GET", 400),
    ("underscore-cl", "HTTP/1.1", [("Content_Length", "5")], b"", "GET", 400),
    ("underscore-custom", "HTTP/1.1", [("X_Forwarded_For", "1.2.3.4")], b"", "GET", 400),
    ("te-xchunked", "HTTP/1.1", [("Transfer-Encoding", "xchunked")], b"", "POST", 400),
    ("cl-plus", "HTTP/1.1", [("Content-Length", "+2")], b"ab", "POST", 400),
    (
        "cl-twice",
        "HTTP/1.1",
        [("Content-Length", "2"), ("Content-Length", "3")],
        b"abc",
        "POST",
        400,
    ),
    ("obs-fold", "HTTP/1.1", [("X-A", "a\r\n b")], b"", "GET", 400),
    ("nul-in-value", "HTTP/1.1", [("X-A", "a\x00b")], b"", "GET", 400),
    ("space-before-colon", "HTTP/1.1", [("X-A ", "1")], b"", "GET", 400),
    ("trace", "HTTP/1.1", [("Cookie", "session=secret-cookie")], b"", "TRACE", 405),
    ("track", "HTTP/1.1", [], b"", "TRACK", 400),
    ("connect", "HTTP/1.1", [], b"", "CONNECT", 405),
    ("lowercase-method", "HTTP/1.1", [], b"", "get", 400),
    ("long-header-line", "HTTP/1.1", [("X-Big", "a" * 9000)], b"", "GET", 400),
    ("too-many-headers", "HTTP/1.1", [(f"X-H{i}", "v") for i in range(200)], b"", "GET", 400),
]


@pytest.mark.parametrize(
    ("version", "headers", "body", "method", "status"),
    [f[1:] for f in FRAMING],
    ids=[f[0] for f in FRAMING],
)
async def test_ambiguous_framing_is_refused_before_forwarding(
    gateway: Gateway,
    site: str,
    probe: Probe,
    version: str,
    headers: list[tuple[str, str]],
    body: bytes,
    method: str,
    status: int,
) -> None:
    async with connect(gateway.edge_port) as (reader, writer):
        writer.write(
            request_bytes(
                site, "/", method=method, version=version, headers=headers, body=body, close=False
            )
        )
        # The probe's follow-up must not be parsed out of the refused request's body.
        writer.write(request_bytes(site, "/follow-up", close=True))
        await writer.drain()
        response = await read_response(reader)
        allowed = {400, 431} if status == 400 else {status}
        assert response.status in allowed
        assert not any(marker in response.body for marker in NO_LEAK)
        assert b"secret-cookie" not in response.body
        # Refused framing closes the connection: nothing after it is read as a request.
        assert await read_until_closed(reader) == b""
    assert probe.requests == 0


async def test_long_request_line_is_refused(gateway: Gateway, site: str, probe: Probe) -> None:
    response = await exchange(gateway.edge_port, request_bytes(site, "/" + "a" * 9000))
    assert response.status in (400, 414, 431)
    assert probe.requests == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /\x00secret HTTP/1.1\r\nHost: h\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03secret-bytes\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: b\x00secret\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz;secret\r\n",
    ],
    ids=["nul-in-target", "control-in-method", "tls-hello", "bad-version", "nul-header", "chunk"],
)
async def test_malformed_requests_get_a_generic_400(
    gateway: Gateway, site: str, probe: Probe, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    raw = raw.replace(b"Host: h", f"Host: {site}".encode())
    caplog.set_level(logging.DEBUG)
    response = await exchange(gateway.edge_port, raw)
    # Routine on the internet: at most a line each, never a traceback (threat model D11).
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert response.status == 400
    assert json.loads(response.body) == {
        "error": "The request could not be parsed.",
        "code": "bad_request",
        "status": 400,
    }
    assert b"secret" not in response.body
    assert not any(marker in response.body for marker in NO_LEAK)
    assert_gateway_error(response, "bad_request")
    assert probe.requests == 0


# ── bodiless responses ──────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("HEAD", "/", 200), ("GET", "/status/204", 204), ("GET", "/status/304", 304)],
    ids=["head", "204", "304"],
)
async def test_bodiless_responses_carry_no_body(
    gateway: Gateway, site: str, method: str, path: str, status: int
) -> None:
    """Pipelined behind a second request: a stray body byte would corrupt the second response."""
    async with connect(gateway.edge_port) as (reader, writer):
        writer.write(request_bytes(site, path, method=method, close=False))
        writer.write(request_bytes(site, "/after"))
        await writer.drain()
        first = await read_response(reader, head=True)
        assert first.status == status
        assert "chunked" not in (first.header("Transfer-Encoding") or "")
        second = await read_response(reader)
        assert second.status == 200 and echoed(second.body)["raw_path"] == "/after"
        assert await read_until_closed(reader) == b""


async def test_an_unrelayed_upgrade_ends_the_connection_after_its_response(
    gateway: Gateway, upstream: int
) -> None:
    host = await gateway.public_preview(upstream)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.edge_port)
    try:
        writer.write(
            f"GET /a HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            f"GET /b HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        )
        await writer.drain()
        async with asyncio.timeout(10):
            data = await reader.read()  # returns at EOF: the gateway closed the connection
        assert data.startswith(b"HTTP/1.1 200")
        assert b"Connection: close" in data
    finally:
        writer.close()
