"""Route changes and open sockets: changing one preview never cuts another's sockets; deleting a
preview (or taking away the access a socket was admitted with) closes that preview's sockets
with 1008 (proxy-anchors L9; threat model W11). With the embedded store and with Redis."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.helpers.gateway import Gateway, host_of
from tests.helpers.polling import eventually
from tests.helpers.ws_client import connect, receive, receive_close
from tests.helpers.ws_upstreams import WsUpstream, ws_upstream


async def assert_alive(ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
    await ws.send_str(text)
    msg = await receive(ws)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, text)


def spec(port: int, **extra: Any) -> dict[str, Any]:
    return {"port": port, "public": True, **extra}


async def put_preview(gw: Gateway, name: str, **spec_: Any) -> None:
    status, body = await gw.call(
        "PUT", f"/sandboxes/sb/previews/{name}", json={"metadata": {"name": name}, "spec": spec_}
    )
    assert status == 200, body


async def test_deleting_a_preview_closes_only_its_own_sockets(
    gw: Gateway, wsup: WsUpstream
) -> None:
    await gw.sandbox()
    web = host_of(await gw.preview(wsup.port, name="web"))
    api = host_of(await gw.preview(wsup.port, name="api"))
    async with connect(gw, web) as ws_web, connect(gw, web) as ws_web2, connect(gw, api) as ws_api:
        await assert_alive(ws_web, "web")
        await assert_alive(ws_api, "api")

        # Creating a preview and changing another (same target, new header) cuts nothing.
        await gw.preview(wsup.port, name="docs")
        await put_preview(gw, "api", **spec(wsup.port, responseHeaders={"X-Version": "2"}))
        # A flush of every cached route (what a Redis resubscribe does) re-checks every
        # socket, and every one of them is still routed.
        assert gw.running is not None
        gw.running.lookup.invalidate("*")

        status, body = await gw.call("DELETE", "/sandboxes/sb/previews/web")
        assert status == 200, body
        for ws in (ws_web, ws_web2):
            msg = await receive_close(ws)
            assert (msg.data, msg.extra) == (1008, "preview deleted")
        # Invalidations arrive in order, so everything before the delete has been applied by
        # now: the other preview's socket survived all of it.
        await assert_alive(ws_api, "api still here")
        await assert_alive(ws_api, "and still relaying")

    web_closes = [await wsup.next_close() for _ in range(2)]
    assert {(c.code, c.reason) for c in web_closes} == {(1008, "preview deleted")}


async def test_pointing_a_preview_at_another_port_closes_its_sockets(
    gw: Gateway, wsup: WsUpstream
) -> None:
    async with ws_upstream() as other:
        await gw.sandbox()
        web = host_of(await gw.preview(wsup.port, name="web"))
        api = host_of(await gw.preview(wsup.port, name="api"))
        async with connect(gw, web) as ws_web, connect(gw, api) as ws_api:
            await put_preview(gw, "web", **spec(other.port))
            # The tunnel leads to the old port; the preview now means another app.
            msg = await receive_close(ws_web)
            assert (msg.data, msg.extra) == (1008, "preview changed")
            await assert_alive(ws_api, "api")
        # New sockets reach the new port.
        async with connect(gw, web) as ws:
            await assert_alive(ws, "new target")
        assert other.connections == 1


async def test_turning_a_preview_private_closes_its_public_sockets(
    gw: Gateway, wsup: WsUpstream
) -> None:
    await gw.sandbox()
    web = host_of(await gw.preview(wsup.port, name="web"))
    api = host_of(await gw.preview(wsup.port, name="api"))
    async with connect(gw, web) as ws_web, connect(gw, api) as ws_api:
        await put_preview(gw, "web", port=wsup.port, public=False)
        # Admitted without a token as a public preview: no longer allowed in.
        msg = await receive_close(ws_web)
        assert (msg.data, msg.extra) == (1008, "access revoked")
        await assert_alive(ws_api, "api")


async def test_revoking_the_token_of_an_open_socket_closes_it(
    gw: Gateway, wsup: WsUpstream
) -> None:
    await gw.sandbox()
    web = host_of(await gw.preview(wsup.port, name="web", public=False))
    first, second = await gw.mint("web"), await gw.mint("web")
    by_first = {"X-Blaxel-Preview-Token": first["spec"]["token"]}
    by_second = {"X-Blaxel-Preview-Token": second["spec"]["token"]}
    async with (
        connect(gw, web, headers=by_first) as ws_first,
        connect(gw, web, headers=by_second) as ws_second,
    ):
        await gw.mint("web")  # another token: the route changes, both sockets stay
        await assert_alive(ws_first, "first")

        hub = gw.running.hub if gw.running else None
        assert hub is not None and hub.admission_policy is not None

        status, body = await gw.call(
            "DELETE", f"/sandboxes/sb/previews/web/tokens/{first['metadata']['name']}"
        )
        assert status == 200, body
        msg = await receive_close(ws_first)
        assert (msg.data, msg.extra) == (1008, "access revoked")
        await assert_alive(ws_second, "second token still valid")


async def test_a_store_outage_during_a_recheck_keeps_sockets_open(
    redis_gateway: Gateway, wsup: WsUpstream, redis_server: Any
) -> None:
    """A re-check that cannot reach Redis must not cut sockets (HTTP keeps serving cached
    routes through an outage too)."""
    gw = redis_gateway
    host = await gw.public_preview(wsup.port)
    async with connect(gw, host) as ws:
        assert gw.running is not None
        lookup = gw.running.lookup

        def failed_lookups() -> int:
            # What gateway_store_errors{operation="route_lookup"} counts.
            return lookup.stats["stale"] + lookup.stats["error"]

        failed_before = failed_lookups()
        with redis_server.paused():
            lookup.invalidate(host)  # drops the cache entry: the re-check must read
            # The re-check's read has hit the store timeout: that is what must not cut the socket.
            await eventually(lambda: failed_lookups() > failed_before)
            await assert_alive(ws, "through the outage")
        await assert_alive(ws, "after the outage")
