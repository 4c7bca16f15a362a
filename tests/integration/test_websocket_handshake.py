"""The WebSocket upgrade through the gateway: the upstream answers first, and the client gets
what the upstream chose (subprotocol, extensions) or the upstream's refusal as plain HTTP
(threat model W07; proxy-anchors L11)."""

from __future__ import annotations

import pytest

from tests.helpers.gateway import Gateway, run_gateway
from tests.helpers.ports import unused_port
from tests.helpers.ws_client import connect, hello, receive
from tests.helpers.ws_raw import RawWebSocket
from tests.helpers.ws_upstreams import WsUpstream, silent_server


async def test_query_origin_cookies_and_subprotocol_reach_the_app(
    gateway: Gateway, wsup: WsUpstream
) -> None:
    host = await gateway.public_preview(wsup.port)
    origin = f"http://{host}:{gateway.edge_port}"
    async with connect(
        gateway,
        host,
        "/echo?hello=1&token=vite-abc&id=next-1",
        protocols=("vite-hmr",),
        headers={
            "Origin": origin,
            "Cookie": "theme=dark; bl_preview_token=not-for-the-app; sid=42",
            "X-Blaxel-Preview-Token": "not-for-the-app-either",
        },
    ) as ws:
        assert ws.protocol == "vite-hmr"
        seen = await hello(ws)
    # Vite's ?token= and Next's ?id= are the dev server's own; they must arrive untouched.
    assert seen["query"] == "hello=1&token=vite-abc&id=next-1"
    assert seen["protocol"] == "vite-hmr"
    headers = seen["header_map"]
    assert headers["origin"] == origin
    assert headers["host"] == host
    assert headers["sec-websocket-protocol"] == "vite-hmr"
    # The app's cookies pass; the gateway's credentials never do.
    assert headers["cookie"] == "theme=dark; sid=42"
    assert "x-blaxel-preview-token" not in headers
    assert "not-for-the-app" not in str(seen["headers"])


async def test_the_upstreams_choice_among_several_subprotocols_is_echoed(
    gateway: Gateway, wsup: WsUpstream
) -> None:
    host = await gateway.public_preview(wsup.port)
    async with connect(
        gateway, host, "/echo?hello=1", protocols=("unknown", "chat", "vite-hmr")
    ) as ws:
        seen = await hello(ws)
        # The app got the whole offer, in order, and picked; the client got that pick.
        assert [p.strip() for p in seen["header_map"]["sec-websocket-protocol"].split(",")] == [
            "unknown",
            "chat",
            "vite-hmr",
        ]
        assert seen["protocol"] == "chat"
        assert ws.protocol == "chat"
    async with connect(gateway, host, "/echo?hello=1") as ws:
        seen = await hello(ws)
        assert ws.protocol is None and seen["protocol"] is None
        assert "sec-websocket-protocol" not in seen["header_map"]


async def test_no_subprotocol_header_when_the_upstream_picks_none(
    gateway: Gateway, wsup: WsUpstream
) -> None:
    host = await gateway.public_preview(wsup.port)
    raw = await RawWebSocket.connect(
        gateway.edge_port, host, "/echo", headers=[("Sec-WebSocket-Protocol", "graphql-ws")]
    )
    try:
        assert raw.status == 101
        # Never a blank or invented header: the app chose nothing, so nothing is answered.
        assert "sec-websocket-protocol" not in raw.headers
    finally:
        await raw.aclose()


async def test_permessage_deflate_only_when_the_upstream_accepted_it(
    gateway: Gateway, wsup: WsUpstream
) -> None:
    host = await gateway.public_preview(wsup.port)
    async with connect(gateway, host, "/echo?hello=1", compress=15) as ws:
        seen = await hello(ws)
        assert "permessage-deflate" in seen["extensions"]
        assert ws.compress  # negotiated on the client's hop too
        await ws.send_str("x" * 10_000)
        msg = await receive(ws)
        assert msg.data == "x" * 10_000
    async with connect(gateway, host, "/echo?hello=1&deflate=0", compress=15) as ws:
        seen = await hello(ws)
        assert "permessage-deflate" in seen["extensions"]  # offered upstream...
        assert not ws.compress  # ...refused there, so not granted to the client either
    async with connect(gateway, host, "/echo?hello=1") as ws:
        seen = await hello(ws)
        assert seen["extensions"] is None  # the client offered none: none is offered upstream


@pytest.mark.parametrize("status", [401, 403, 404, 426, 500, 503])
async def test_an_upstream_refusal_reaches_the_client_as_that_status(
    gateway: Gateway, upstream: int, status: int
) -> None:
    host = await gateway.public_preview(upstream)
    raw = await RawWebSocket.connect(gateway.edge_port, host, f"/ws-refuse?status={status}")
    try:
        # The app's answer, as plain HTTP: never a 101 followed by a close.
        assert raw.status == status
        assert raw.headers["x-blaxel-source"] == "app"
        assert "sec-websocket-accept" not in raw.headers
    finally:
        await raw.aclose()


async def test_an_upstream_that_answers_with_a_page_is_a_gateway_502(
    gateway: Gateway, upstream: int
) -> None:
    host = await gateway.public_preview(upstream)
    # The echo app answers any other path with 200 JSON: an upgrade it did not perform.
    raw = await RawWebSocket.connect(gateway.edge_port, host, "/not-a-socket")
    try:
        assert raw.status == 502
        assert raw.headers["x-blaxel-source"] == "gateway"
        assert raw.headers["x-blaxel-error-code"] == "upstream_bad_response"
    finally:
        await raw.aclose()


async def test_an_upstream_redirect_is_passed_back_not_followed(
    gateway: Gateway, upstream: int
) -> None:
    host = await gateway.public_preview(upstream)
    raw = await RawWebSocket.connect(gateway.edge_port, host, "/redirect")
    try:
        assert raw.status == 302
        assert raw.headers["location"] == "http://169.254.169.254/latest/meta-data/"
    finally:
        await raw.aclose()


async def test_a_closed_port_is_502_before_any_upgrade(gateway: Gateway) -> None:
    host = await gateway.public_preview(unused_port())
    raw = await RawWebSocket.connect(gateway.edge_port, host, "/ws")
    try:
        assert raw.status == 502
        assert raw.headers["x-blaxel-error-code"] == "upstream_refused"
    finally:
        await raw.aclose()


async def test_an_upstream_that_never_answers_the_handshake_is_504() -> None:
    async with silent_server() as port, run_gateway(upstream_response_timeout_s=0.3) as gw:
        host = await gw.public_preview(port)
        raw = await RawWebSocket.connect(gw.edge_port, host, "/ws")
        try:
            assert raw.status == 504
            assert raw.headers["x-blaxel-error-code"] == "upstream_timeout"
        finally:
            await raw.aclose()
