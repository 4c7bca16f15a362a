"""Redis faults the edge must ride out (issue 12, "Faults"; threat model K01, K02): hung in
each of its ways (``DEBUG SLEEP``, ``CLIENT PAUSE``; SIGSTOP is ``test_route_lookup``'s), no
request waits on it past ``GATEWAY_REDIS_TIMEOUT_S``, and established WebSockets stay open; a
WebSocket whose token runs out while Redis is down is closed at the expiry all the same.

Bounds are the deadline plus a generous slack for a shared machine: the slack is what may
never grow to the redis-py default's seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.helpers.edge_client import get
from tests.helpers.gateway import Gateway, host_of, run_gateway
from tests.helpers.redis_server import RedisServer
from tests.helpers.ws_client import connect as ws_connect
from tests.helpers.ws_client import receive
from tests.helpers.ws_upstreams import WsUpstream

REDIS_TIMEOUT_S = 0.2
SLACK_S = 0.8


@contextlib.asynccontextmanager
async def redis_gateway(server: RedisServer, prefix: str) -> AsyncIterator[Gateway]:
    # cache_ttl_s=0: every request asks Redis, so every request meets the fault.
    async with run_gateway(
        redis_url=server.url,
        redis_prefix=prefix,
        redis_timeout_s=REDIS_TIMEOUT_S,
        cache_ttl_s=0,
        private_stale_grace_s=0,
    ) as gw:
        yield gw


async def until_hung(url: str) -> None:
    """Return once Redis no longer answers a PING within 100 ms (the hang is in effect)."""
    async with asyncio.timeout(5):
        while True:
            probe = aioredis.Redis.from_url(url, socket_timeout=0.1)
            try:
                await probe.ping()
            except (TimeoutError, aioredis.TimeoutError):
                return
            finally:
                await probe.aclose()
            await asyncio.sleep(0.01)


async def _debug_sleep(client: aioredis.Redis) -> None:
    await client.execute_command("DEBUG", "SLEEP", "2")


async def _client_pause(client: aioredis.Redis) -> None:
    await client.execute_command("CLIENT", "PAUSE", "2000", "ALL")


@pytest.mark.parametrize("hang", [_debug_sleep, _client_pause], ids=["debug-sleep", "client-pause"])
async def test_a_hung_redis_holds_no_request_past_its_timeout(
    redis_server: RedisServer,
    redis_prefix: str,
    wsup: WsUpstream,
    hang: Callable[[aioredis.Redis], Awaitable[None]],
) -> None:
    async with redis_gateway(redis_server, redis_prefix) as gw:
        host = await gw.public_preview(wsup.port)
        assert (await get(gw, host))[0].status == 404  # the WebSocket app's own 404: routed
        operator = aioredis.Redis.from_url(redis_server.url)
        loop = asyncio.get_running_loop()
        try:
            async with ws_connect(gw, host) as ws:
                hanging = loop.create_task(hang(operator))
                await until_hung(redis_server.url)
                for _ in range(3):
                    started = loop.time()
                    cached = (await get(gw, host))[0]
                    unknown = (await get(gw, "nobody.local.preview.localhost"))[0]
                    assert loop.time() - started < 2 * (REDIS_TIMEOUT_S + SLACK_S)
                    assert "X-Blaxel-Error-Code" not in cached.headers, "served from cache"
                    assert unknown.status == 503, "unknown hosts cannot be told from missing"
                await ws.send_str("through the hang")
                assert (await receive(ws)).data == "through the hang"
                await hanging
                await ws.send_str("after it")
                assert (await receive(ws)).data == "after it"
        finally:
            await operator.aclose()


async def test_a_websocket_closes_at_token_expiry_during_a_redis_outage(
    redis_server: RedisServer, redis_prefix: str, wsup: WsUpstream
) -> None:
    """Redis is stopped while two WebSockets are open: the public one stays open, the one whose
    token runs out is closed with 1008 at the expiry (plus the verifier's 5 s leeway)."""
    async with redis_gateway(redis_server, redis_prefix) as gw:
        await gw.sandbox()
        public = host_of(await gw.preview(wsup.port, name="open"))
        private = host_of(await gw.preview(wsup.port, name="web", public=False))
        soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
        status, short = await gw.call(
            "POST",
            "/sandboxes/sb/previews/web/tokens",
            json={"metadata": {"name": "short"}, "spec": {"expiresAt": soon}},
        )
        assert status == 200
        token = {"X-Blaxel-Preview-Token": short["spec"]["token"]}
        async with (
            ws_connect(gw, private, headers=token) as expiring,
            ws_connect(gw, public) as lasting,
        ):
            with redis_server.stopped():
                async with asyncio.timeout(20):
                    closed = await expiring.receive()
                assert closed.type is aiohttp.WSMsgType.CLOSE
                assert (closed.data, closed.extra) == (1008, "token expired")
                await lasting.send_str("still here")
                assert (await receive(lasting)).data == "still here"
            # Redis is back, empty: the token is not let in again, on any path.
            await lasting.send_str("and after")
            assert (await receive(lasting)).data == "and after"
        response, _ = await get(gw, private, **token)
        assert response.status in (401, 404, 503)
