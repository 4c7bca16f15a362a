"""Small helpers shared by the WebSocket relay tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.helpers.gateway import Gateway
from tests.helpers.polling import WAIT_S


def connect(
    gw: Gateway, host: str, path: str = "/echo", **kwargs: Any
) -> aiohttp.client._WSRequestContextManager:
    headers = {"Host": host, **kwargs.pop("headers", {})}
    return gw.session.ws_connect(gw.edge(path), headers=headers, **kwargs)


async def receive(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    async with asyncio.timeout(WAIT_S):
        return await ws.receive()


async def receive_close(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    """Skip data messages until the close arrives; the message carries code and reason."""
    async with asyncio.timeout(WAIT_S):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return msg


async def hello(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The first message of ``/echo?hello=1``: what the upstream received."""
    msg = await receive(ws)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    data["header_map"] = {k.lower(): v for k, v in data["headers"]}
    return data
