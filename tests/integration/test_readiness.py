"""/readyz: a Redis outage does not pull every replica out of the load balancer at once; a
replica turns unready once its cache would have gone stale."""

from __future__ import annotations

from tests.helpers.gateway import Gateway, run_gateway
from tests.helpers.polling import eventually
from tests.helpers.redis_server import RedisServer


async def readyz(gw: Gateway) -> int:
    async with gw.session.get(f"http://127.0.0.1:{gw.api_port}/readyz") as r:
        return r.status


async def test_a_redis_outage_keeps_replicas_ready_within_the_cache_grace(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with (
        run_gateway(redis_url=redis_server.url, redis_prefix=redis_prefix) as patient,
        run_gateway(
            redis_url=redis_server.url, redis_prefix=redis_prefix, cache_stale_grace_s=0
        ) as strict,
    ):
        assert await readyz(patient) == 200
        assert await readyz(strict) == 200
        with redis_server.stopped():
            assert await readyz(patient) == 200
            assert await readyz(strict) == 503

        async def ready_again() -> bool:
            return await readyz(strict) == 200

        await eventually(ready_again)
