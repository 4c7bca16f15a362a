"""The edge over real loopback sockets: Host routing, streaming in both directions, framing and
header policy, upstream failures, deadlines and limits, target allow-listing (threat model H, S,
P, R, D, U).

Where framing or the exact bytes matter the test speaks raw HTTP (``tests.helpers.raw_http``);
otherwise it uses aiohttp's client. "The upstream saw nothing" is a request counter on the probe
app; "never dialled" is a TCP listener that counts accepts. No assertion is about time: waits are
bounded only so that a hang fails instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import ipaddress
import json
import logging
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.core.netpolicy import address_allowed
from gateway.core.records import Sandbox
from tests.conftest import Gateway, host_of, run_gateway, unused_port
from tests.helpers.probes import (
    GZIP_PAYLOAD,
    Probe,
    counting_listener,
    probe_upstream,
    wait_for,
)
from tests.helpers.raw_http import (
    RawResponse,
    connect,
    exchange,
    read_response,
    read_until_closed,
    request_bytes,
)

MIB = 1024 * 1024
BIG = 24 * MIB


def echoed(body: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body)
    data["header_map"] = {}
    for name, value in data["headers"]:
        data["header_map"].setdefault(name.lower(), []).append(value)
    return data


def one(seen: dict[str, Any], name: str) -> str:
    values: list[str] = seen["header_map"].get(name.lower(), [])
    assert len(values) == 1, f"{name}: {values}"
    return values[0]


async def get(
    gw: Gateway, host: str, path: str = "/", **headers: str
) -> tuple[aiohttp.ClientResponse, bytes]:
    async with asyncio.timeout(20):
        async with gw.session.get(
            gw.edge(path), headers={"Host": host, **headers}, allow_redirects=False
        ) as response:
            return response, await response.read()


def assert_gateway_error(response: RawResponse | aiohttp.ClientResponse, code: str) -> None:
    """A page the gateway wrote: its code and source headers, and no stack in ``Server``."""
    if isinstance(response, RawResponse):
        values = [response.header(n) for n in ("X-Blaxel-Error-Code", "X-Blaxel-Source", "Server")]
    else:
        values = [
            response.headers.get(n) for n in ("X-Blaxel-Error-Code", "X-Blaxel-Source", "Server")
        ]
    error_code, source, server = values
    assert error_code == code
    assert source == "gateway"
    assert server is None or "aiohttp" not in server.lower(), "the gateway announces its stack"


NO_LEAK = (b"Traceback", b"aiohttp", b"Python/", b'File "')


@pytest.fixture
async def probe() -> AsyncIterator[Probe]:
    async with probe_upstream() as p:
        yield p


@pytest.fixture
async def site(gateway: Gateway, probe: Probe) -> str:
    """A public preview of the probe app on the default gateway; its hostname."""
    return await gateway.public_preview(probe.port)


# ── Host routing (H) ────────────────────────────────────────────────────────────────────────
async def test_unknown_host_is_404(gateway: Gateway, site: str, probe: Probe) -> None:
    response, body = await get(gateway, "nobody.local.preview.localhost")
    assert response.status == 404
    assert_gateway_error(response, "preview_not_found")
    assert json.loads(body)["code"] == "preview_not_found"
    response, body = await get(gateway, "nobody.local.preview.localhost", Accept="text/html")
    assert response.status == 404 and response.content_type == "text/html"
    assert b"<!doctype html>" in body
    assert probe.requests == 0


@pytest.mark.parametrize(
    "spelling",
    ["upper", "trailing-dot", "port", "upper-dot-port"],
)
async def test_host_variants_reach_the_same_preview(
    gateway: Gateway, site: str, probe: Probe, spelling: str
) -> None:
    host = {
        "upper": site.upper(),
        "trailing-dot": f"{site}.",
        "port": f"{site}:{gateway.edge_port}",
        "upper-dot-port": f"{site.upper()}.:8443",
    }[spelling]
    response, body = await get(gateway, host)
    assert response.status == 200
    assert one(echoed(body), "Host") == host, "Host is forwarded exactly as sent"
    assert probe.requests == 1


@pytest.mark.parametrize(
    "host",
    [
        "a b.local.preview.localhost",
        "x@{site}",
        "{site}/x",
        "{site}\\x",
        "{site}:+80",
        "{site}:8_0",
        "{site}:0",
        "{site}:99999",
        "127.0.0.1",
        "127.0.0.1:{port}",
        "[::1]:{port}",
        "{long_label}.local.preview.localhost",
        "",
    ],
    ids=[
        "space",
        "userinfo",
        "slash",
        "backslash",
        "port-plus",
        "port-underscore",
        "port-zero",
        "port-too-big",
        "ip",
        "ip-port",
        "ipv6",
        "long-label",
        "empty",
    ],
)
async def test_invalid_host_is_400_and_never_looked_up(
    gateway: Gateway, site: str, probe: Probe, host: str
) -> None:
    assert gateway.running is not None
    lookups = dict(gateway.running.lookup.stats)
    value = host.format(site=site, port=gateway.edge_port, long_label="a" * 64)
    response = await exchange(gateway.edge_port, request_bytes(value))
    assert response.status == 400
    assert_gateway_error(response, "invalid_host")
    # Every lookup counts as a hit, a miss (a store read) or a failure: none of them moved.
    assert gateway.running.lookup.stats == lookups
    assert probe.requests == 0


async def test_non_ascii_host_is_400(gateway: Gateway, site: str, probe: Probe) -> None:
    data = request_bytes(None, headers=[("X-A", "1")]).replace(
        b"X-A: 1", "Host: b\u00fccher.preview.localhost".encode()
    )
    response = await exchange(gateway.edge_port, data)
    assert response.status == 400
    assert probe.requests == 0


async def test_two_host_headers_are_400(gateway: Gateway, site: str, probe: Probe) -> None:
    for second in (site, "other.local.preview.localhost"):
        response = await exchange(
            gateway.edge_port, request_bytes(site, headers=[("Host", second)])
        )
        assert response.status == 400
    assert probe.requests == 0


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
async def test_missing_host_is_400(gateway: Gateway, site: str, probe: Probe, version: str) -> None:
    response = await exchange(gateway.edge_port, request_bytes(None, version=version))
    assert response.status == 400
    assert probe.requests == 0


async def test_absolute_form_never_routes_by_its_authority(gateway: Gateway, probe: Probe) -> None:
    """``GET http://Q/ HTTP/1.1`` + ``Host: P``: aiohttp's request.host would say Q. The gateway
    answers 400 and neither preview's app sees the request."""
    await gateway.sandbox()
    async with probe_upstream() as other:
        p_host = host_of(await gateway.preview(probe.port, name="p"))
        q_host = host_of(await gateway.preview(other.port, name="q"))
        for target, host in (
            (f"http://{q_host}/x", p_host),
            (f"http://{p_host}/x", q_host),
            ("http://evil.example/x", p_host),
            (f"http://{q_host}:{gateway.edge_port}/x", f"{p_host}:{gateway.edge_port}"),
        ):
            response = await exchange(gateway.edge_port, request_bytes(host, target))
            assert response.status == 400, target
        assert probe.requests == 0 and other.requests == 0

        # The same authority as Host is just another spelling of the request.
        response = await exchange(gateway.edge_port, request_bytes(p_host, f"http://{p_host}/x"))
        assert response.status == 200
        assert echoed(response.body)["raw_path"] == "/x"
        assert (probe.requests, other.requests) == (1, 0)


async def test_forwarded_host_headers_never_route(
    gateway: Gateway, site: str, probe: Probe
) -> None:
    response, _ = await get(
        gateway,
        "nobody.local.preview.localhost",
        **{"X-Forwarded-Host": site, "Forwarded": f"host={site}", "X-Original-URL": "/"},
    )
    assert response.status == 404
    assert probe.requests == 0


async def test_responses_the_gateway_writes_do_not_announce_its_stack(
    gateway: Gateway, probe: Probe
) -> None:
    """Preflight answers, the token-exchange redirect and error pages come from the gateway, not
    the app: none may carry aiohttp's ``Server: Python/3.x aiohttp/3.y``."""
    await gateway.sandbox()
    host = host_of(await gateway.preview(probe.port, public=False))
    expires = "2999-01-01T00:00:00Z"
    status, body = await gateway.call(
        "POST",
        "/sandboxes/sb/previews/web/tokens",
        json={"metadata": {"name": ""}, "spec": {"expiresAt": expires}},
    )
    assert status == 200, body
    token = body["spec"]["token"]
    preflight = await exchange(
        gateway.edge_port,
        request_bytes(
            host,
            method="OPTIONS",
            headers=[("Origin", "https://app.example"), ("Access-Control-Request-Method", "PUT")],
        ),
    )
    redirect = await exchange(
        gateway.edge_port,
        request_bytes(
            host, f"/p?bl_preview_token={token}", headers=[("Sec-Fetch-Mode", "navigate")]
        ),
    )
    unauthorized = await exchange(gateway.edge_port, request_bytes(host))
    parse_error = await exchange(gateway.edge_port, b"BAD\x01 / HTTP/1.1\r\n\r\n")
    assert (preflight.status, redirect.status, unauthorized.status, parse_error.status) == (
        204,
        303,
        401,
        400,
    )
    for response in (preflight, redirect, unauthorized, parse_error):
        server = response.header("Server") or ""
        assert "aiohttp" not in server.lower() and "python" not in server.lower(), response
    assert probe.requests == 0


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


# ── headers through the edge (P) ────────────────────────────────────────────────────────────
async def test_preview_headers_are_added_and_the_app_wins(gateway: Gateway, probe: Probe) -> None:
    await gateway.sandbox()
    body = await gateway.preview(
        probe.port,
        requestHeaders={"X-Env": "preview", "X-Tenant": "t1"},
        responseHeaders={
            "X-Upstream": "preview",
            "X-Frame-Options": "DENY",
            "Access-Control-Allow-Origin": "https://preview.example",
        },
    )
    host = host_of(body)
    response, raw = await get(gateway, host, **{"X-Env": "client"})
    seen = echoed(raw)
    assert seen["header_map"]["x-env"] == ["preview"]
    assert one(seen, "X-Tenant") == "t1"
    assert response.headers.getall("X-Upstream") == ["echo"], "the app's own header wins"
    assert response.headers.getall("X-Frame-Options") == ["DENY"]
    assert response.headers.getall("Access-Control-Allow-Origin") == ["https://preview.example"]
    assert response.headers["Access-Control-Allow-Credentials"] == "true", "CORS default"

    response, _ = await get(
        gateway, host, "/headers?h=Access-Control-Allow-Origin:https://app.example"
    )
    assert response.headers.getall("Access-Control-Allow-Origin") == ["https://app.example"]


async def test_forwarding_headers_replace_what_the_client_claims(
    gateway: Gateway, site: str
) -> None:
    response = await exchange(
        gateway.edge_port,
        request_bytes(
            site,
            headers=[
                ("x-forwarded-for", "1.2.3.4"),
                ("X-Forwarded-Proto", "https"),
                ("x-forwarded-host", "evil.example"),
                ("Forwarded", "for=1.2.3.4;host=evil.example"),
                ("x-real-ip", "1.2.3.4"),
                ("X-Forwarded-Port", "1"),
                ("Connection", "X-Forwarded-For, x-forwarded-proto, Host"),
            ],
        ),
    )
    seen = echoed(response.body)
    assert one(seen, "X-Forwarded-For") == "127.0.0.1"
    assert one(seen, "X-Forwarded-Proto") == "http"
    assert one(seen, "X-Forwarded-Host") == site
    assert one(seen, "Forwarded") == f'for=127.0.0.1;host="{site}";proto=http'
    assert one(seen, "Host") == site
    assert "x-real-ip" not in seen["header_map"] and "x-forwarded-port" not in seen["header_map"]
    assert "1.2.3.4" not in json.dumps(seen["headers"])


async def test_trusted_proxy_forwarding_is_appended_to(probe: Probe) -> None:
    async with run_gateway(trusted_proxies="127.0.0.0/8") as gw:
        host = await gw.public_preview(probe.port)
        _, body = await get(
            gw,
            host,
            **{
                "X-Forwarded-For": "198.51.100.7",
                "X-Forwarded-Proto": "https",
                "X-Request-Id": "lb-request-1",
            },
        )
    seen = echoed(body)
    assert one(seen, "X-Forwarded-For") == "198.51.100.7, 127.0.0.1"
    assert one(seen, "X-Forwarded-Proto") == "https"
    assert one(seen, "X-Request-Id") == "lb-request-1"


async def test_hop_by_hop_and_credentials_never_reach_the_app(gateway: Gateway, site: str) -> None:
    """Sent in lower case, as fetch/undici and Go send them."""
    response = await exchange(
        gateway.edge_port,
        request_bytes(
            site,
            "/x?a=1&bl_preview_token=tok-123&b=2",
            headers=[
                ("connection", "keep-alive, x-secret"),
                ("keep-alive", "timeout=5"),
                ("x-secret", "1"),
                ("te", "trailers"),
                ("upgrade", "h2c"),
                ("proxy-authorization", "Basic eDp5"),
                ("x-blaxel-preview-token", "tok-123"),
                ("x-blaxel-authorization", "Bearer key-123"),
                ("cookie", "a=1; bl_preview_token=tok-123; b=2"),
                ("authorization", "Bearer app-token"),
            ],
            close=False,
        ),
    )
    assert response.status == 200
    seen = echoed(response.body)
    for name in (
        "keep-alive",
        "x-secret",
        "te",
        "upgrade",
        "proxy-authorization",
        "x-blaxel-preview-token",
        "x-blaxel-authorization",
    ):
        assert name not in seen["header_map"], name
    assert one(seen, "Cookie") == "a=1; b=2"
    assert one(seen, "Authorization") == "Bearer app-token"
    assert seen["query"] == "a=1&b=2"
    assert "123" not in json.dumps(seen["headers"])


async def test_hop_by_hop_response_headers_are_not_relayed(
    gateway: Gateway, site: str, probe: Probe
) -> None:
    path = (
        "/headers?h=keep-alive:timeout%3D5&h=x-internal:1&h=connection:x-internal"
        "&h=upgrade:h2c&h=proxy-authenticate:Basic&h=x-app:1"
    )
    direct = await exchange(probe.port, request_bytes(site, path))
    assert direct.header("keep-alive") and direct.header("x-internal"), "the app sends them"
    response = await exchange(gateway.edge_port, request_bytes(site, path))
    assert response.status == 200 and response.header("X-App") == "1"
    for name in ("Keep-Alive", "X-Internal", "Upgrade", "Proxy-Authenticate"):
        assert response.header(name) is None, name


async def test_set_cookie_for_sibling_previews_becomes_host_only(
    gateway: Gateway, site: str
) -> None:
    cookies = [
        "sid=1; Domain=preview.localhost; Path=/",
        "tossed=2; Domain=.local.preview.localhost",
        "bl_preview_token=forged; Path=/",
        "plain=3; HttpOnly",
    ]
    query = "&".join(f"c={urllib.parse.quote(c, safe='')}" for c in cookies)
    response, _ = await get(gateway, site, f"/set-cookie?{query}")
    assert response.headers.getall("Set-Cookie") == [
        "sid=1; Path=/",
        "tossed=2",
        "plain=3; HttpOnly",
    ]


async def test_request_id_goes_upstream(gateway: Gateway, site: str) -> None:
    ids = set()
    for _ in range(3):
        _, body = await get(gateway, site, **{"X-Request-Id": "client-chosen"})
        request_id = one(echoed(body), "X-Request-Id")
        assert request_id != "client-chosen", "an untrusted client does not pick the id"
        assert len(request_id) == 16 and int(request_id, 16) >= 0
        ids.add(request_id)
    assert len(ids) == 3


async def test_nothing_is_invented_upstream(gateway: Gateway, site: str) -> None:
    response = await exchange(gateway.edge_port, request_bytes(site, "/plain"))
    names = set(echoed(response.body)["header_map"])
    assert "user-agent" not in names and "accept-encoding" not in names


# ── framing refused before anything is forwarded (S) ────────────────────────────────────────
def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


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
            await wait_for(lambda: probe.held == 2)
            response, _ = await get(gw, b, "/fast")
            assert response.status == 200
            assert other.paths == ["/fast"]
            assert probe.held == 2, "the third request to A waits for A's pool, not at A"
        finally:
            probe.release.set()
        results = await asyncio.gather(*held)
        assert [r.status for r, _ in results] == [200, 200, 200]


# ── targets (R) ─────────────────────────────────────────────────────────────────────────────
async def test_route_outside_allowed_targets_is_never_dialled() -> None:
    """A route whose sandbox address is outside allowed_targets (written to the store directly,
    as a hand-edited or stale record would be): 502 target_not_allowed, and not one connection
    reaches the address."""
    async with (
        counting_listener("127.0.0.2") as listener,
        run_gateway(allowed_targets="127.0.0.1/32") as gw,
    ):
        assert gw.running is not None
        sandbox = Sandbox(workspace="default", name="sb", target_host="127.0.0.2")
        await gw.running.store.put_sandbox(sandbox, create=True)
        host = host_of(await gw.preview(listener.port))
        response, body = await get(gw, host)
        assert response.status == 502
        assert_gateway_error(response, "target_not_allowed")
        assert b"127.0.0.2" not in body

        status, error = await gw.call(
            "POST",
            "/sandboxes",
            json={"metadata": {"name": "sb2"}, "spec": {"target": {"host": "127.0.0.2"}}},
        )
        assert status == 400, error
    assert listener.accepted == 0


async def test_name_resolving_outside_allowed_targets_is_never_dialled() -> None:
    async with (
        counting_listener("127.0.0.1") as listener,
        run_gateway(allowed_targets="127.0.0.2/32") as gw,
    ):
        await gw.sandbox(host="localhost")  # resolves to 127.0.0.1 and ::1, both outside
        host = host_of(await gw.preview(listener.port))
        response, _ = await get(gw, host)
        assert response.status == 502
        assert_gateway_error(response, "target_not_allowed")
    assert listener.accepted == 0


NETS = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", True),
        ("fd00::7", True),
        ("::ffff:10.1.2.3", True),
        ("11.0.0.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("::ffff:169.254.169.254", False),
        ("::ffff:127.0.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("fe80::1%eth0", False),
        ("224.0.0.1", False),
        ("2130706433", False),
        ("0177.0.0.1", False),
        ("127.1", False),
        ("localhost", False),
        ("", False),
    ],
)
def test_address_allowed(address: str, allowed: bool) -> None:
    assert address_allowed(address, NETS) is allowed


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
