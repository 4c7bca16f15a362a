from __future__ import annotations

import aiohttp

from tests.helpers.gateway import Gateway


async def test_public_preview_round_trip(gateway: Gateway, upstream: int) -> None:
    host = await gateway.public_preview(upstream)
    async with gateway.session.get(gateway.edge("/hello?x=1"), headers={"Host": host}) as r:
        assert r.status == 200
        body = await r.json()
    assert body["raw_path"] == "/hello?x=1"
    headers = dict(body["headers"])
    assert headers["Host"] == host
    assert headers["X-Forwarded-For"] == "127.0.0.1"


async def test_websocket_echo(gateway: Gateway, upstream: int) -> None:
    host = await gateway.public_preview(upstream)
    async with gateway.session.ws_connect(gateway.edge("/ws"), headers={"Host": host}) as ws:
        await ws.send_str("hi")
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.TEXT and msg.data == "hi"
        await ws.send_str("close:4404:gone")
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == 4404
