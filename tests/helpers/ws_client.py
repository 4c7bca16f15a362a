"""Small helpers shared by the WebSocket relay tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from tests.helpers.gateway import Gateway

WAIT_S = 10.0
"""Upper bound for any one event a test waits for: generous, so a slow machine never flakes,
and finite, so a missing event fails instead of hanging."""


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


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = WAIT_S) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` (an upper bound, not a measure)."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)
