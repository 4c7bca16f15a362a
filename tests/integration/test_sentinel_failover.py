"""A Sentinel failover under traffic (issue 13): one primary, one replica and three sentinels,
all real processes on loopback, and two gateways that know only the sentinels.

Gateway A serves the traffic with a 100 ms cache and no stale grace, so every lookup soon goes
to Redis and a Redis outage shows as 503 instead of being hidden by the cache. Gateway B caches
for ten minutes, so only an invalidation (or the flush after its resubscription) can change
its answer after the failover.

The failover is ``SENTINEL FAILOVER``: graceful, the old primary keeps answering reads as a
replica, so the edge may see no error at all; the test proves the bound and that writes and
invalidations move to the new primary. (Killing the primary instead is not covered yet.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.gateway import Gateway, run_gateway
from tests.helpers.polling import eventually
from tests.helpers.probes import probe_upstream
from tests.helpers.redis_topologies import (
    DATA_PASSWORD,
    MASTER,
    SENTINEL_PASSWORD,
    SentinelSet,
    running,
)
from tests.helpers.ws_client import connect, receive
from tests.helpers.ws_upstreams import WsUpstream

PROMOTION_TO_HEALTHY_S = 5.0
"""5xx must stop within this long of the promotion."""


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    """A set of its own: this test fails its primary over."""
    with running(SentinelSet()) as made:
        yield made


class Traffic:
    """Requests to one host, back to back on a few connections; every answer timestamped."""

    def __init__(self, gw: Gateway, host: str) -> None:
        self._gw, self._host = gw, host
        self.answers: list[tuple[float, int]] = []

    async def run(self, stop: asyncio.Event) -> None:
        async def one_client() -> None:
            while not stop.is_set():
                try:
                    async with self._gw.session.get(
                        self._gw.edge("/"), headers={"Host": self._host}
                    ) as response:
                        await response.read()
                        self.answers.append((time.monotonic(), response.status))
                except TimeoutError:
                    self.answers.append((time.monotonic(), 599))

        await asyncio.gather(*(one_client() for _ in range(4)))


async def status_of(gw: Gateway, host: str) -> int:
    async with gw.session.get(gw.edge("/"), headers={"Host": host}) as response:
        await response.read()
        return response.status


async def promoted(sentinels: SentinelSet, old_port: int) -> float:
    """When the sentinels name a new primary (polled, off the event loop)."""
    async with asyncio.timeout(30):
        while await asyncio.to_thread(sentinels.primary_port) == old_port:
            await asyncio.sleep(0.02)
    return time.monotonic()


async def test_failover_under_traffic(
    sentinels: SentinelSet, redis_prefix: str, wsup: WsUpstream
) -> None:
    shared: dict[str, Any] = {
        "redis_sentinels": sentinels.addresses,
        "redis_master": MASTER,
        "redis_password": DATA_PASSWORD,
        "redis_sentinel_password": SENTINEL_PASSWORD,
        "redis_prefix": redis_prefix,
    }
    async with (
        probe_upstream() as first,
        probe_upstream() as second,
        run_gateway(**shared, cache_ttl_s=0.1, cache_stale_grace_s=0) as a,
        run_gateway(**shared, cache_ttl_s=600, cache_negative_ttl_s=600) as b,
    ):
        await a.sandbox()
        await a.preview(first.port, name="web", prefixUrl="web")
        await a.preview(wsup.port, name="ws", prefixUrl="ws")
        web_host, ws_host = "web-default.preview.localhost", "ws-default.preview.localhost"

        async def b_serves() -> bool:
            return await status_of(b, web_host) == 200

        await eventually(b_serves)

        async with contextlib.AsyncExitStack() as stack:
            sockets = [await stack.enter_async_context(connect(a, ws_host)) for _ in range(3)]
            for i, ws in enumerate(sockets):
                await ws.send_str(f"before-{i}")
                assert (await receive(ws)).data == f"before-{i}"

            traffic = Traffic(a, web_host)
            stop = asyncio.Event()
            runner = asyncio.get_running_loop().create_task(traffic.run(stop))
            try:
                await eventually(lambda: len(traffic.answers) >= 20)
                old_port = sentinels.primary_port()
                started = time.monotonic()
                await asyncio.to_thread(sentinels.failover)
                promotion = await promoted(sentinels, old_port)

                # Writes through the API succeed again after the promotion.
                async def write_succeeds() -> bool:
                    status, _ = await a.replace_preview(second.port, prefixUrl="web")
                    return status == 200

                await eventually(write_succeeds, timeout=PROMOTION_TO_HEALTHY_S)

                # Gateway B, whose cache would keep the old port for ten minutes, follows:
                # its subscription came back on the new primary.
                async def b_follows() -> bool:
                    return await status_of(b, web_host) == 200 and second.requests > 0

                await eventually(b_follows)
                # Traffic goes on past the 5 s bound, so that 5xx after it would be seen.
                deadline = promotion + PROMOTION_TO_HEALTHY_S
                await eventually(
                    lambda: sum(t > deadline + 1.0 for t, _ in traffic.answers) >= 20,
                    timeout=PROMOTION_TO_HEALTHY_S + 10,
                )
            finally:
                stop.set()
                await runner

            late_errors = [
                (t - promotion, s) for t, s in traffic.answers if t > deadline and s >= 500
            ]
            assert late_errors == [], "5xx more than 5 s after the promotion"
            assert any(t > started and s == 200 for t, s in traffic.answers)
            # B moved its subscription to the new primary (the demoted one, still up, would
            # have carried messages only while it replicates).
            assert b.running is not None
            await eventually(lambda: b.running.store.errors["subscriber"] >= 1)

            # Every established WebSocket survived the failover.
            for i, ws in enumerate(sockets):
                await ws.send_str(f"after-{i}")
                assert (await receive(ws)).data == f"after-{i}"
            assert wsup.closes.empty()
