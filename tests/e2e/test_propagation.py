"""Three gateway processes on one real Redis: a change through any replica's API takes effect at
every other replica's edge. Route caches live 300 s here, so only the invalidation (Redis
pub/sub) can explain a replica following within the polling deadline."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from tests.helpers.gateway import Gateway, host_of
from tests.helpers.polling import eventually
from tests.helpers.process import GatewayProcess
from tests.helpers.redis_server import RedisServer

TOKEN_HEADER = "X-Blaxel-Preview-Token"


async def edge_status(gw: Gateway, host: str, token: str | None = None) -> int:
    headers = {"Host": host, **({TOKEN_HEADER: token} if token else {})}
    async with gw.session.get(gw.edge("/"), headers=headers) as r:
        await r.read()
        return r.status


async def all_serve(
    replicas: list[Gateway], host: str, want: int, token: str | None = None
) -> None:
    """Each replica's edge answers ``want`` for ``host``, polled with a deadline."""
    for gw in replicas:

        async def follows(gw: Gateway = gw) -> bool:
            return await edge_status(gw, host, token) == want

        await eventually(follows)


async def test_create_update_revoke_and_delete_reach_every_replica(
    gateway_process: Callable[..., GatewayProcess],
    redis_server: RedisServer,
    redis_prefix: str,
    upstream: int,
) -> None:
    env = {
        "GATEWAY_REDIS_URL": redis_server.url,
        "GATEWAY_REDIS_PREFIX": redis_prefix,
        "GATEWAY_CACHE_TTL_S": "300",
        "GATEWAY_ACCESS_LOG": "false",
    }
    procs = [gateway_process(env=env) for _ in range(3)]
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        a, b, c = (Gateway(p.edge_port, p.api_port, p.key, session) for p in procs)
        # Create through A: B and C serve it.
        await a.sandbox()
        host = host_of(await a.preview(upstream, public=True))
        await all_serve([a, b, c], host, 200)
        # Update through B (now private): A and C, which have it cached as public, refuse it.
        status, body = await b.call(
            "PUT",
            "/sandboxes/sb/previews/web",
            json={"metadata": {"name": "web"}, "spec": {"port": upstream, "public": False}},
        )
        assert status == 200, body
        await all_serve([a, c], host, 401)
        # A token minted through C works on A and B; revoked through A, it stops on B and C.
        minted = await c.mint()
        token = minted["spec"]["token"]
        await all_serve([a, b], host, 200, token)
        status, body = await a.call(
            "DELETE", f"/sandboxes/sb/previews/web/tokens/{minted['metadata']['name']}"
        )
        assert status == 200, body
        await all_serve([b, c], host, 401, token)
        # Delete through C: A and B stop serving it.
        status, body = await c.call("DELETE", "/sandboxes/sb/previews/web")
        assert status == 200, body
        await all_serve([a, b], host, 404)
