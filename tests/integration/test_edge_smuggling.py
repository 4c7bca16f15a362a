"""Request smuggling, the threat model's S-series, over raw sockets against an upstream that
records exactly what it received (``tests/helpers/recorder.py``). Every probe is followed by a
second request on the same connection: a refused probe closes the connection with nothing of it
(or of what followed) completed upstream; an accepted one reaches the upstream as exactly the
request the client meant, and the follow-up gets its own response. A request hidden in a body
(``/smuggled``) never reaches the upstream as a request of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.helpers.gateway import Gateway, host_of, run_gateway
from tests.helpers.raw_http import (
    RawResponse,
    connect,
    exchange,
    read_response,
    read_until_closed,
)
from tests.helpers.recorder import Recorder, recording_upstream

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: other.test\r\n\r\n"
SECOND = b"GET /second HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"


def post(*fields: bytes, body: bytes = b"", line: bytes = b"POST /first HTTP/1.1") -> bytes:
    return b"\r\n".join([line, b"Host: {host}", *fields]) + b"\r\n\r\n" + body


@dataclass(frozen=True)
class Refused:
    name: str
    raw: bytes


@dataclass(frozen=True)
class Accepted:
    name: str
    raw: bytes
    path: str
    body: bytes


def cl(value: bytes) -> bytes:
    return b"Content-Length: " + value


TE = b"Transfer-Encoding: chunked"
CHUNKED_SMUGGLE = b"0\r\n\r\n" + SMUGGLED

REFUSED = [
    Refused("S01-cl-te", post(cl(b"%d" % len(CHUNKED_SMUGGLE)), TE, body=CHUNKED_SMUGGLE)),
    Refused("S01-te-cl", post(TE, cl(b"4"), body=b"5c\r\n" + SMUGGLED + b"\r\n0\r\n\r\n")),
    Refused(
        "S02-chunked-identity", post(b"Transfer-Encoding: chunked, identity", body=b"0\r\n\r\n")
    ),
    Refused(
        "S02-identity-chunked", post(b"Transfer-Encoding: identity, chunked", body=b"0\r\n\r\n")
    ),
    Refused("S02-te-twice", post(TE, TE, body=b"0\r\n\r\n")),
    Refused("S02-space-before-colon", post(b"Transfer-Encoding : chunked", body=b"0\r\n\r\n")),
    Refused("S02-vtab", post(b"Transfer-Encoding: \x0bchunked", body=b"0\r\n\r\n")),
    Refused("S02-te-on-get-http10", post(TE, line=b"GET /first HTTP/1.0", body=b"0\r\n\r\n")),
    Refused("S03-cl-empty", post(cl(b""), body=b"")),
    Refused("S03-cl-hex", post(cl(b"0x10"), body=b"0" * 16)),
    Refused("S03-cl-underscore", post(cl(b"1_0"), body=b"0" * 10)),
    Refused("S03-cl-arabic-digit", post(cl("٣".encode()), body=b"abc")),
    Refused("S03-cl-list", post(cl(b"3, 3"), body=b"abc")),
    Refused("S03-cl-equal-twice", post(cl(b"3"), cl(b"3"), body=b"abc")),
    Refused("S03-cl-negative", post(cl(b"-1"), body=b"")),
    Refused("S04-obs-fold-te", post(b"Transfer-Encoding: identity\r\n chunked", body=b"0\r\n\r\n")),
    Refused("S05-ext-with-lf", post(TE, body=b"3;a\nb\r\nabc\r\n0\r\n\r\n")),
    Refused("S05-size-0x", post(TE, body=b"0x3\r\nabc\r\n0\r\n\r\n")),
    Refused("S05-bare-lf-chunks", post(TE, body=b"3\nabc\n0\n\n")),
    Refused("S05-size-with-space", post(TE, body=b"3 \r\nabc\r\n0\r\n\r\n")),
    Refused("S05-short-chunk", post(TE, body=b"5\r\nabc\r\n0\r\n\r\n" + SMUGGLED)),
    Refused("S06-trailer-cl", post(TE, body=b"3\r\nabc\r\n0\r\nContent-Length: 50\r\n\r\n")),
    Refused("S09-bare-lf-head", b"GET /first HTTP/1.1\nHost: {host}\n\n"),
    Refused("S09-space-before-first-field", b"GET /first HTTP/1.1\r\n Host: {host}\r\n\r\n"),
    Refused("S09-high-byte-name", post(b"X-\x80: 1")),
    Refused("S09-cr-in-value", post(b"X-A: a\rb")),
    Refused("S09-lf-in-value", post(b"X-A: a\nTransfer-Encoding: chunked", body=b"0\r\n\r\n")),
    # Optional whitespace that llhttp or the planner refuses outright, which is the safe side.
    Refused("S02-te-trailing-tab", post(b"Transfer-Encoding:\tchunked\t", body=b"0\r\n\r\n")),
    Refused("S03-cl-ows", post(cl(b" 3 "), body=b"abc")),
    Refused("S16-http09-line", b"GET /first\r\nX: y HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    Refused("S16-cr-in-method", b"GE\rT /first HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    Refused("S16-version-injection", b"GET /first HTTP/1.1\rX: y\r\nHost: {host}\r\n\r\n"),
]

ACCEPTED = [
    Accepted(
        "S10-get-body-is-a-request",
        post(cl(b"%d" % len(SMUGGLED)), body=SMUGGLED, line=b"GET /first HTTP/1.1"),
        "/first",
        SMUGGLED,
    ),
    Accepted("S05-chunk-extension", post(TE, body=b"3;n=v\r\nabc\r\n0\r\n\r\n"), "/first", b"abc"),
    Accepted(
        "S02-te-upper-case",
        post(b"Transfer-Encoding: CHUNKED", body=b"3\r\nabc\r\n0\r\n\r\n"),
        "/first",
        b"abc",
    ),
    Accepted("S03-cl-leading-zeros", post(cl(b"003"), body=b"abc"), "/first", b"abc"),
    Accepted(
        "S16-percent-crlf",
        b"GET /a%0d%0aX:%20y HTTP/1.1\r\nHost: {host}\r\n\r\n",
        "/a%0d%0aX:%20y",
        b"",
    ),
]


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """The protocol edge, the one that stays (the aiohttp edge is being removed)."""
    async with run_gateway() as gw:
        yield gw


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    async with recording_upstream() as rec:
        yield rec


@pytest.fixture
async def host(gateway: Gateway, recorder: Recorder) -> str:
    return await gateway.public_preview(recorder.port)


async def control_request(gateway: Gateway, host: str, recorder: Recorder) -> None:
    """A fresh connection's request: once it is answered, whatever the gateway forwarded for
    the probe before it has reached the recorder too (one connection pool, in order)."""
    response = await exchange(
        gateway.edge_port, SECOND.replace(b"/second", b"/control").replace(b"{host}", host.encode())
    )
    assert response.status == 200 and response.body == b"/control"


async def followed(gateway: Gateway, host: str, probe: bytes, answers: int) -> list[RawResponse]:
    """``probe`` then the follow-up on one connection; the first ``answers`` responses, and
    the connection must close after them."""
    async with connect(gateway.edge_port) as (reader, writer):
        writer.write((probe + SECOND).replace(b"{host}", host.encode()))
        await writer.drain()
        responses = [await read_response(reader) for _ in range(answers)]
        assert await read_until_closed(reader) == b""
    return responses


@pytest.mark.parametrize("probe", REFUSED, ids=[p.name for p in REFUSED])
async def test_refused_framing_reaches_the_upstream_as_nothing(
    gateway: Gateway, host: str, recorder: Recorder, probe: Refused
) -> None:
    [response] = await followed(gateway, host, probe.raw, 1)
    assert response.status in (400, 431), response
    await control_request(gateway, host, recorder)
    assert recorder.paths == ["/control"]
    assert b"/smuggled" not in recorder.raw and b"/second" not in recorder.raw
    assert recorder.parse_errors == 0


@pytest.mark.parametrize("probe", ACCEPTED, ids=[p.name for p in ACCEPTED])
async def test_accepted_framing_reaches_the_upstream_as_the_client_meant(
    gateway: Gateway, host: str, recorder: Recorder, probe: Accepted
) -> None:
    first, second = await followed(gateway, host, probe.raw, 2)
    assert (first.status, first.body) == (200, probe.path.encode())
    assert (second.status, second.body) == (200, b"/second")
    assert recorder.paths == [probe.path, "/second"]
    assert recorder.requests[0].body == probe.body.replace(b"{host}", host.encode())
    assert recorder.parse_errors == 0


async def test_h2c_upgrade_is_served_as_http11_and_ends_the_connection(
    gateway: Gateway, host: str, recorder: Recorder
) -> None:
    """S15: the upstream sees a plain request (no Upgrade), and nothing after it."""
    h2c = (
        b"GET /first HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    [first] = await followed(gateway, host, h2c, 1)
    assert (first.status, first.body) == (200, b"/first")
    await control_request(gateway, host, recorder)
    assert recorder.paths == ["/first", "/control"]
    names = {name.lower() for name, _ in recorder.requests[0].headers}
    assert "upgrade" not in names and "http2-settings" not in names


async def test_pipelined_requests_are_each_routed_by_their_own_host(
    gateway: Gateway, host: str, recorder: Recorder
) -> None:
    """S12: no first-request-only routing; responses come back in order."""
    async with recording_upstream() as other:
        await gateway.sandbox("sb2")
        other_host = host_of(await gateway.preview(other.port, sandbox="sb2"))
        hosts = [host, other_host, host, other_host, host]
        pipeline = b"".join(
            b"GET /%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (i, h.encode()) for i, h in enumerate(hosts)
        )
        async with connect(gateway.edge_port) as (reader, writer):
            writer.write(pipeline + SECOND.replace(b"{host}", other_host.encode()))
            await writer.drain()
            bodies = [(await read_response(reader)).body for _ in range(len(hosts) + 1)]
        assert bodies == [b"/0", b"/1", b"/2", b"/3", b"/4", b"/second"]
        assert recorder.paths == ["/0", "/2", "/4"]
        assert other.paths == ["/1", "/3", "/second"]
