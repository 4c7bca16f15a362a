"""What the Redis shapes add to the contract suite (``test_routing_table.py``): a lost
subscriber flushes the cache on every shape; the Cluster's key layout keeps each workspace in
one hash slot; hostname claims decide which workspace's route is served; whole gateways share
a table on the Cluster; custom domains work on one Redis and Sentinel and are refused (501) on
the Cluster. (The Sentinel failover is ``test_sentinel_failover.py``.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as ClusterClient

from gateway.core.errors import DomainsUnsupported
from gateway.core.records import Domain, Keys, Preview, Sandbox, utcnow
from gateway.store.base import FLUSH_ALL, PutResult
from gateway.store.lookup import RouteLookup
from gateway.store.redis import RedisStore
from gateway.store.redis_hosts import CLAIM_TTL_MS
from tests.helpers.api import assert_error
from tests.helpers.gateway import host_of, run_gateway
from tests.helpers.polling import eventually
from tests.helpers.probes import Probe, probe_upstream
from tests.helpers.redis_stores import SHAPES, raw_client, raw_nodes, redis_store
from tests.helpers.redis_topologies import RedisCluster

WS = "ws1"
OTHER_WS = "ws2"
SANDBOX = Sandbox(workspace=WS, name="sb", target_host="10.0.0.7")


def host(label: str) -> str:
    return f"{label}.eu.preview.test"


def preview(hostname: str, name: str = "web", port: int = 3000) -> Preview:
    return Preview(workspace=WS, sandbox="sb", name=name, port=port, public=True, hostname=hostname)


@contextlib.asynccontextmanager
async def opened(
    request: pytest.FixtureRequest, shape: str, prefix: str
) -> AsyncIterator[tuple[RedisStore, aioredis.Redis | ClusterClient, list[aioredis.Redis]]]:
    """The store under test, a raw client of the same data, and every writable node."""
    store = redis_store(request, shape, prefix)
    raw, nodes = raw_client(request, shape), raw_nodes(request, shape)
    try:
        yield store, raw, nodes
    finally:
        await store.close()
        await raw.aclose()
        for node in nodes:
            await node.aclose()


@pytest.mark.parametrize("shape", SHAPES)
async def test_subscriber_loss_flushes_the_cache(
    request: pytest.FixtureRequest, shape: str, redis_prefix: str
) -> None:
    """``CLIENT KILL TYPE pubsub`` on every node: whatever was published meanwhile is lost, so
    the resubscribed replica drops its whole cache. A route changed without a message is
    served fresh at once, though its cache TTL (10 minutes) is far from over."""
    async with opened(request, shape, redis_prefix) as (store, raw, nodes):
        keys = Keys(redis_prefix, tagged=shape == "cluster")
        routes = RouteLookup(
            store,
            timeout_s=5.0,
            ttl_s=600,
            negative_ttl_s=600,
            stale_grace_s=600,
            max_entries=100,
        )
        flushes: list[str] = []
        routes.add_listener(lambda h: flushes.append(h) if h == FLUSH_ALL else None)
        follower = asyncio.get_running_loop().create_task(routes.follow_invalidations())
        try:
            await eventually(lambda: len(flushes) == 1)
            await store.put_sandbox(SANDBOX, create=True)
            assert await store.put_preview(preview(host("a")), create=True, force=False) is (
                PutResult.OK
            )
            cached = await routes.find(host("a"))
            assert cached is not None and cached.port == 3000
            # The route changes with no message on the channel, as if the message were lost.
            changed = cached.model_copy(update={"port": 4000})
            await raw.set(keys.route(host("a"), WS), changed.model_dump_json())
            again = await routes.find(host("a"))
            assert again is not None and again.port == 3000, "served from the cache"

            for node in nodes:
                assert await node.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 0
            await eventually(lambda: len(flushes) >= 2)
            fresh = await routes.find(host("a"))
            assert fresh is not None and fresh.port == 4000
            assert store.errors["subscriber"] >= 1
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower


async def test_cluster_keys_of_a_workspace_share_one_slot(
    request: pytest.FixtureRequest, redis_prefix: str
) -> None:
    async with opened(request, "cluster", redis_prefix) as (store, raw, nodes):
        assert isinstance(raw, ClusterClient)
        k = Keys(redis_prefix, tagged=True)
        expiring = SANDBOX.model_copy(update={"expires_at": utcnow() + timedelta(1)})
        await store.put_sandbox(expiring, create=True)
        await store.put_preview(preview(host("a")), create=True, force=False)

        async def stored() -> set[str]:
            found: set[str] = set()
            for node in nodes:
                found |= {key.decode() async for key in node.scan_iter(match=f"{redis_prefix}*")}
            return found

        workspace_keys = {
            k.sandbox(WS, "sb"),
            k.sandboxes(WS),
            k.preview(WS, "sb", "web"),
            k.previews(WS, "sb"),
            k.route(host("a"), WS),
            k.expiries(WS),
        }
        assert await stored() == workspace_keys | {k.expiring(), k.host_owner(host("a"))}
        assert len({raw.keyslot(key) for key in [*workspace_keys, k.channel(WS)]}) == 1
        assert raw.keyslot(k.host_owner(host("a"))) == raw.keyslot(host("a"))
        assert await raw.pttl(k.host_owner(host("a"))) == -1, "a hostname in use: settled"

        await store.delete_sandbox(WS, "sb")
        assert await stored() == {k.expiring(), k.host_owner(host("a"))}
        ttl = await raw.pttl(k.host_owner(host("a")))
        assert 0 < ttl <= CLAIM_TTL_MS, "a claim without a route is left to expire"


async def test_cluster_claims_decide_which_route_is_served(
    request: pytest.FixtureRequest, redis_prefix: str
) -> None:
    async with opened(request, "cluster", redis_prefix) as (store, raw, _):
        k = Keys(redis_prefix, tagged=True)
        await store.put_sandbox(SANDBOX, create=True)

        # A settled claim whose workspace has no route there (its writer died between its
        # delete and its settle) is taken over.
        await raw.set(k.host_owner(host("left")), OTHER_WS)
        assert await store.put_preview(preview(host("left")), create=True, force=False) is (
            PutResult.OK
        )
        assert await raw.get(k.host_owner(host("left"))) == WS.encode()
        route = await store.get_route(host("left"))
        assert route is not None and route.workspace == WS

        # A pending claim is another writer mid-write: the hostname is taken.
        await raw.set(k.host_owner(host("busy")), OTHER_WS, px=CLAIM_TTL_MS)
        busy = preview(host("busy"), name="other")
        assert await store.put_preview(busy, create=True, force=False) is PutResult.HOST_TAKEN
        assert await store.get_preview(WS, "sb", "other") is None

        # Reads follow the claim: a route whose claim another workspace holds is not served.
        await raw.set(k.host_owner(host("left")), OTHER_WS)
        assert await raw.get(k.route(host("left"), WS)) is not None
        assert await store.get_route(host("left")) is None


async def test_gateways_on_a_cluster_share_the_table(
    request: pytest.FixtureRequest, redis_prefix: str
) -> None:
    """Two gateways on the Cluster, one configured by setting, one by URL scheme: a preview
    made through A is served by B, and a change through A reaches B's ten-minute cache."""
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    node = f"127.0.0.1:{cluster.ports[1]}"
    long_cache = {"cache_ttl_s": 600, "cache_negative_ttl_s": 600, "redis_prefix": redis_prefix}
    async with (
        probe_upstream() as first,
        probe_upstream() as second,
        run_gateway(redis_url=f"redis://{node}", redis_cluster=True, **long_cache) as a,
        run_gateway(redis_url=f"redis+cluster://{node}", **long_cache) as b,
    ):
        assert a.running is not None and b.running is not None
        await a.sandbox()
        hostname = host_of(await a.preview(first.port, prefixUrl="web"))

        async def b_serves(probe: Probe) -> bool:
            async with b.session.get(b.edge("/"), headers={"Host": hostname}) as response:
                await response.read()
            return response.status == 200 and probe.requests > 0

        await eventually(lambda: b_serves(first))
        status, _ = await a.replace_preview(second.port, prefixUrl="web")
        assert status == 200
        await eventually(lambda: b_serves(second))


@pytest.mark.parametrize("shape", SHAPES)
async def test_custom_domains_on_each_shape(
    request: pytest.FixtureRequest, shape: str, redis_prefix: str
) -> None:
    """One Redis and Sentinel store a domain and route a preview's custom hostname. A Cluster
    refuses both writes (a domain's transaction spans names and workspaces) and leaves nothing
    behind, while its ordinary previews go on working."""
    domain = Domain(name="acme.test", workspace=WS, txt_value="v", status="verified")
    custom = preview(host("c")).model_copy(
        update={"custom_domain": "app.acme.test", "domain": "acme.test"}
    )
    async with opened(request, shape, redis_prefix) as (store, _, _nodes):
        await store.put_sandbox(SANDBOX, create=True)
        if shape == "cluster":
            with pytest.raises(DomainsUnsupported):
                await store.put_domain(domain, create=True)
            with pytest.raises(DomainsUnsupported):
                await store.put_preview(custom, create=True, force=False)
            assert await store.list_domains(WS) == [] and await store.list_domains(None) == []
            assert await store.get_domain("acme.test") is None
            await store.sync_domain("acme.test")
            assert await store.get_preview(WS, "sb", "web") is None
            assert await store.get_route(host("c")) is None
            assert await store.put_preview(preview(host("c")), create=True, force=False) is (
                PutResult.OK
            )
            assert await store.get_route(host("c")) is not None
            return
        assert await store.put_domain(domain, create=True) is PutResult.OK
        assert [d.name for d in await store.list_domains(WS)] == ["acme.test"]
        assert await store.put_preview(custom, create=True, force=False) is PutResult.OK
        entry = await store.get_custom_host("app.acme.test")
        assert entry is not None and (entry.workspace, entry.preview) == (WS, "web")
        route = await store.get_route("app.acme.test")
        assert route is not None and route.preview == "web"
        await store.delete_preview(WS, "sb", "web")
        assert await store.get_route("app.acme.test") is None
        assert await store.get_custom_host("app.acme.test") is None


async def test_cluster_gateway_answers_domain_writes_501(
    request: pytest.FixtureRequest, redis_prefix: str
) -> None:
    """Through the control API: registering a domain, or a preview with ``customDomain``, on a
    Cluster is a documented 501 error that names the reason; listing works and finds nothing,
    and a preview without a custom domain is created as usual."""
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    url = f"redis+cluster://127.0.0.1:{cluster.ports[0]}"
    async with run_gateway(redis_url=url, redis_prefix=redis_prefix) as gw:
        body = {"metadata": {"name": "acme.test"}, "spec": {}}
        status, answer = await gw.call("POST", "/customdomains", json=body)
        assert_error(status, answer, 501, "Cluster")
        status, answer = await gw.call("GET", "/customdomains")
        assert status == 200 and answer == [], answer
        await gw.sandbox()
        spec = {"port": 3000, "public": True, "customDomain": "app.acme.test"}
        status, answer = await gw.call(
            "POST", "/sandboxes/sb/previews", json={"metadata": {"name": "web"}, "spec": spec}
        )
        assert_error(status, answer, 501, "Cluster")
        assert (await gw.preview(3000, name="plain"))["metadata"]["name"] == "plain"
