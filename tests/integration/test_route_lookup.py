"""Cached route lookups (threat model K01, K02, K05, K07, H14).

The first half drives ``RouteLookup`` over a store whose reads wait for the test to open a gate
(a real ``MemoryStore`` underneath, and a fake clock), so coalescing, cancellation, timeouts and
the stale windows are proved by ordering. The second half runs real gateways on a real
redis-server and stops, hangs and restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.core.errors import RoutingUnavailable
from gateway.core.hostnames import wildcard_candidates
from gateway.core.records import Keys, Preview, Route, Sandbox
from gateway.store.base import FLUSH_ALL
from gateway.store.lookup import RouteLookup
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore, connect_redis
from tests.helpers.gateway import Gateway, host_of, run_gateway
from tests.helpers.polling import eventually
from tests.helpers.probes import probe_upstream
from tests.helpers.redis_server import RedisServer

HOST = "abc.eu.preview.test"


class GatedStore(MemoryStore):
    """A ``MemoryStore`` whose route reads wait until ``gate`` is open."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.reads = 0
        self.waiting = 0

    async def get_route(self, hostname: str) -> Route | None:
        self.reads += 1
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await super().get_route(hostname)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def add_route(
    store: MemoryStore, hostname: str = HOST, *, public: bool = True, **extra: Any
) -> None:
    sandbox = Sandbox(workspace="ws", name="sb", target_host="10.0.0.7", **extra)
    await store.put_sandbox(sandbox, create=False)
    name = f"p{abs(hash(hostname)) % 10**8}"
    preview = Preview(
        workspace="ws", sandbox="sb", name=name, port=3000, public=public, hostname=hostname
    )
    await store.put_preview(preview, create=False, force=True)


def lookup(
    store: MemoryStore | RedisStore,
    *,
    clock: Clock | None = None,
    ttl_s: float = 30.0,
    timeout_s: float = 5.0,
    grace_s: float = 600.0,
    private_grace_s: float | None = 60.0,
    wall: datetime | None = None,
) -> RouteLookup:
    kwargs: dict[str, Any] = {}
    if clock is not None:
        kwargs["clock"] = clock
    if wall is not None:
        kwargs["wall_clock"] = lambda: wall
    return RouteLookup(
        store,
        timeout_s=timeout_s,
        ttl_s=ttl_s,
        negative_ttl_s=2.0,
        stale_grace_s=grace_s,
        max_entries=1000,
        private_stale_grace_s=private_grace_s,
        **kwargs,
    )


# ── coalescing ──────────────────────────────────────────────────────────────────────────────
async def test_concurrent_misses_share_one_store_read() -> None:
    store = GatedStore()
    await add_route(store)
    store.gate.clear()
    routes = lookup(store, ttl_s=0.0)  # no caching: only coalescing can save reads
    finds = [asyncio.get_running_loop().create_task(routes.find(HOST)) for _ in range(100)]
    await eventually(lambda: store.waiting == 1)
    assert not any(f.done() for f in finds)
    store.gate.set()
    results = await asyncio.gather(*finds)
    assert {r.hostname for r in results if r is not None} == {HOST}
    assert None not in results
    assert routes.stats["miss"] == 1 and store.reads == 1
    # Without a cache, the next burst is one more read, not a hundred.
    await asyncio.gather(*(routes.find(HOST) for _ in range(100)))
    assert routes.stats["miss"] == 2


async def test_concurrent_misses_on_redis_share_one_read(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    store = RedisStore(
        connect_redis(redis_server.url, 2.0), connect_redis(redis_server.url, 30.0), redis_prefix
    )
    try:
        await store.put_sandbox(
            Sandbox(workspace="ws", name="sb", target_host="10.0.0.7"), create=True
        )
        await store.put_preview(
            Preview(workspace="ws", sandbox="sb", name="web", port=1, public=True, hostname=HOST),
            create=True,
            force=False,
        )
        routes = lookup(store, ttl_s=0.0)
        results = await asyncio.gather(*(routes.find(HOST) for _ in range(100)))
        assert all(r is not None and r.hostname == HOST for r in results)
        assert routes.stats["miss"] == 1
        unknown = "ghost.eu.preview.test"
        assert await asyncio.gather(*(routes.find(unknown) for _ in range(100))) == [None] * 100
        # One read per candidate key (the name, then its one-label wildcard).
        assert routes.stats["miss"] == 1 + len(wildcard_candidates(unknown))
    finally:
        await store.close()


async def test_a_cancelled_caller_does_not_strand_the_others() -> None:
    store = GatedStore()
    await add_route(store)
    store.gate.clear()
    routes = lookup(store)
    loop = asyncio.get_running_loop()
    first = loop.create_task(routes.find(HOST))
    await eventually(lambda: store.waiting == 1)
    others = [loop.create_task(routes.find(HOST)) for _ in range(5)]
    await asyncio.sleep(0)
    first.cancel()  # its client went away
    store.gate.set()
    assert [r.hostname for r in await asyncio.gather(*others) if r is not None] == [HOST] * 5
    with pytest.raises(asyncio.CancelledError):
        await first
    assert store.reads == 1
    assert (await routes.find(HOST)) is not None and store.reads == 1, "the result was cached"


# ── cache behaviour ─────────────────────────────────────────────────────────────────────────
async def test_hits_cost_no_read_until_the_ttl_passes() -> None:
    store, clock = GatedStore(), Clock()
    await add_route(store)
    routes = lookup(store, clock=clock, ttl_s=30.0)
    for _ in range(10):
        assert await routes.find(HOST) is not None
    assert store.reads == 1
    clock.now += 31
    assert await routes.find(HOST) is not None
    assert store.reads == 2


async def test_misses_are_remembered_briefly() -> None:
    store, clock = GatedStore(), Clock()
    routes = lookup(store, clock=clock)
    ghost = "ghost.eu.preview.test"
    for _ in range(10):
        assert await routes.find(ghost) is None
    assert store.reads == len(wildcard_candidates(ghost))
    clock.now += 3  # past the 2 s negative TTL
    assert await routes.find(ghost) is None
    assert store.reads == 2 * len(wildcard_candidates(ghost))


async def test_invalidation_takes_effect_at_once() -> None:
    store = GatedStore()
    routes = lookup(store)
    assert await routes.find(HOST) is None
    await add_route(store)
    assert await routes.find(HOST) is None, "the miss is cached"
    routes.invalidate(HOST)
    assert await routes.find(HOST) is not None
    await store.delete_sandbox("ws", "sb")
    routes.invalidate(FLUSH_ALL)
    assert await routes.find(HOST) is None


async def test_a_read_racing_an_invalidation_is_not_cached() -> None:
    store = GatedStore()
    await add_route(store)
    store.gate.clear()
    routes = lookup(store)
    pending = asyncio.get_running_loop().create_task(routes.find(HOST))
    await eventually(lambda: store.waiting == 1)
    routes.invalidate(HOST)  # the route changed while the read was in flight
    store.gate.set()
    assert await pending is not None
    assert await routes.find(HOST) is not None
    assert store.reads == 2, "the racing result was served once but not kept"


async def test_invalidations_reach_listeners_and_follow_the_store() -> None:
    store = GatedStore()
    routes = lookup(store)
    heard: list[str] = []
    routes.add_listener(heard.append)
    assert await routes.find(HOST) is None
    follower = asyncio.get_running_loop().create_task(routes.follow_invalidations())
    try:
        async with asyncio.timeout(10):
            while HOST not in heard:  # until the follower is subscribed and hears the write
                await add_route(store)  # publishes HOST
                await asyncio.sleep(0.01)
        assert await routes.find(HOST) is not None
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


async def test_wildcard_covers_one_label_and_an_exact_name_wins() -> None:
    store = GatedStore()
    await add_route(store, "*.cust.test")
    await add_route(store, "exact.cust.test")
    routes = lookup(store)
    found = await routes.find("a.cust.test")
    assert found is not None and found.hostname == "*.cust.test"
    exact = await routes.find("exact.cust.test")
    assert exact is not None and exact.hostname == "exact.cust.test"
    assert await routes.find("a.b.cust.test") is None
    assert await routes.find("cust.test") is None


async def test_expired_routes_are_not_served() -> None:
    store = GatedStore()
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    await add_route(store, expires_at=expires)
    assert await lookup(store, wall=expires - timedelta(seconds=1)).find(HOST) is not None
    assert await lookup(store, wall=expires).find(HOST) is None


# ── the store fails ─────────────────────────────────────────────────────────────────────────
async def test_a_hung_store_fails_within_the_timeout() -> None:
    store = GatedStore()
    store.gate.clear()
    routes = lookup(store, timeout_s=0.05)
    async with asyncio.timeout(10):
        with pytest.raises(RoutingUnavailable) as caught:
            await routes.find(HOST)
    assert caught.value.status == 503 and caught.value.retry_after_s


@pytest.mark.parametrize(
    ("public", "age_s", "served"),
    [
        (True, 31, True),
        (True, 599, True),
        (True, 601, False),
        (False, 31, True),
        (False, 59, True),
        (False, 61, False),
    ],
    ids=[
        "public-after-ttl",
        "public-within-grace",
        "public-after-grace",
        "private-after-ttl",
        "private-within-private-grace",
        "private-after-private-grace",
    ],
)
async def test_stale_routes_during_an_outage(public: bool, age_s: float, served: bool) -> None:
    store, clock = GatedStore(), Clock()
    await add_route(store, public=public)
    routes = lookup(store, clock=clock, ttl_s=30, timeout_s=0.02, grace_s=600, private_grace_s=60)
    assert await routes.find(HOST) is not None
    store.gate.clear()  # the store hangs from now on
    clock.now += age_s
    if served:
        route = await routes.find(HOST)
        assert route is not None and route.public is public
    else:
        with pytest.raises(RoutingUnavailable):
            await routes.find(HOST)
    with pytest.raises(RoutingUnavailable):
        await routes.find("never-seen.eu.preview.test")


async def test_cancelled_reads_never_answer_another_host(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """K06 (redis-py CVE-2023-28858/28859): reads cut off by the lookup deadline or by their
    caller going away must not leave a reply on a pooled connection for the next read to take.
    Every answer that does arrive is for the host that was asked about."""
    store = RedisStore(
        connect_redis(redis_server.url, 2.0), connect_redis(redis_server.url, 30.0), redis_prefix
    )
    try:
        await store.put_sandbox(
            Sandbox(workspace="ws", name="sb", target_host="10.0.0.7"), create=True
        )
        hosts = [f"h{i}.eu.preview.test" for i in range(40)]
        for i, hostname in enumerate(hosts):
            preview = Preview(
                workspace="ws",
                sandbox="sb",
                name=f"p{i}",
                port=1000 + i,
                public=True,
                hostname=hostname,
            )
            await store.put_preview(preview, create=True, force=False)
        routes = lookup(store, ttl_s=0.0, grace_s=0.0, timeout_s=0.002)
        rng = random.Random(7)  # noqa: S311 - jitter for cancellations, not a secret
        answered = 0
        for _ in range(5):

            async def one(i: int) -> None:
                nonlocal answered
                hostname = hosts[i % len(hosts)]
                try:
                    if i % 10 == 0:
                        # No deadline: these always answer, so the check below is never vacuous
                        # however slow the machine, and they share the pool with the cut-off ones.
                        route = await store.get_route(hostname)
                    elif i % 2:
                        route = await asyncio.wait_for(routes.find(hostname), rng.random() / 200)
                    else:
                        route = await asyncio.wait_for(
                            store.get_route(hostname), rng.random() / 200
                        )
                except (TimeoutError, RoutingUnavailable):
                    return
                assert route is not None and route.hostname == hostname
                assert route.port == 1000 + hosts.index(hostname)
                answered += 1

            await asyncio.gather(*(one(i) for i in range(200)))
        # After the storm, the pool still answers correctly and promptly.
        for i, hostname in enumerate(hosts):
            route = await store.get_route(hostname)
            assert route is not None and route.port == 1000 + i
        assert answered > 0
    finally:
        await store.close()


# ── real gateways on a real Redis ───────────────────────────────────────────────────────────
async def get(gw: Gateway, host: str, path: str = "/", **headers: str) -> aiohttp.ClientResponse:
    async with asyncio.timeout(10):
        async with gw.session.get(
            gw.edge(path), headers={"Host": host, **headers}, allow_redirects=False
        ) as response:
            await response.read()
            return response


async def until_status(gw: Gateway, host: str, status: int, **headers: str) -> None:
    async with asyncio.timeout(10):
        while (await get(gw, host, **headers)).status != status:
            await asyncio.sleep(0.02)


async def test_invalidation_travels_between_gateways(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """A change made through gateway A's API reaches gateway B's cache over pub/sub; B's TTLs are
    long enough that only the invalidation can explain B changing its answer."""
    shared: dict[str, Any] = {
        "redis_url": redis_server.url,
        "redis_prefix": redis_prefix,
        "cache_ttl_s": 600,
        "cache_negative_ttl_s": 600,
    }
    async with (
        probe_upstream() as first,
        probe_upstream() as second,
        run_gateway(**shared) as a,
        run_gateway(**shared) as b,
    ):
        # Both gateways listen on the channel before anything is published (pub/sub keeps
        # nothing for late subscribers).
        channel = Keys(redis_prefix).invalidations
        raw = aioredis.Redis.from_url(redis_server.url)
        try:
            async with asyncio.timeout(10):
                while (await raw.pubsub_numsub(channel))[0][1] < 2:
                    await asyncio.sleep(0.02)
        finally:
            await raw.aclose()
        host = "web-default.preview.localhost"
        assert (await get(b, host)).status == 404  # B now remembers "no such host"
        await a.sandbox()
        body = await a.preview(first.port, prefixUrl="web")
        assert host_of(body) == host
        await until_status(b, host, 200)
        assert first.requests >= 1

        status, _ = await a.call(
            "PUT",
            "/sandboxes/sb/previews/web",
            json={
                "metadata": {"name": "web"},
                "spec": {"port": second.port, "public": True, "prefixUrl": "web"},
            },
        )
        assert status == 200
        async with asyncio.timeout(10):
            while second.requests == 0:
                assert (await get(b, host)).status == 200
                await asyncio.sleep(0.02)

        status, _ = await a.call("DELETE", "/sandboxes/sb/previews/web")
        assert status == 200
        await until_status(b, host, 404)


@pytest.mark.parametrize(
    "private_grace_s", [0.0, 600.0], ids=["private-fails-closed", "private-within-grace"]
)
async def test_redis_stopped(
    redis_server: RedisServer, redis_prefix: str, private_grace_s: float
) -> None:
    """Redis down: cached routes keep serving (cache TTL 0, so every request asks the store and
    is served from the stale copy), unknown hosts get 503 with Retry-After instead of 404, and a
    private preview is served on cached state only within its shorter grace."""
    async with (
        probe_upstream() as probe,
        run_gateway(
            redis_url=redis_server.url,
            redis_prefix=redis_prefix,
            cache_ttl_s=0,
            cache_stale_grace_s=600,
            private_stale_grace_s=private_grace_s,
        ) as gw,
    ):
        public = await gw.public_preview(probe.port)
        private = host_of(await gw.preview(probe.port, name="secret", public=False))
        token = (await gw.mint("secret"))["spec"]["token"]
        with_token = {"X-Blaxel-Preview-Token": token}
        assert (await get(gw, public)).status == 200
        assert (await get(gw, private, **with_token)).status == 200
        reads = gw.running.lookup.stats["miss"] if gw.running else 0

        with redis_server.stopped():
            assert (await get(gw, public)).status == 200
            unknown = await get(gw, "nobody.local.preview.localhost", Accept="text/html")
            assert unknown.status == 503
            assert unknown.headers["X-Blaxel-Error-Code"] == "routing_unavailable"
            assert int(unknown.headers["Retry-After"]) > 0
            response = await get(gw, private, **with_token)
            anonymous = await get(gw, private)
            if private_grace_s:
                assert response.status == 200
                assert anonymous.status == 401
            else:
                assert response.status == 503 and "Retry-After" in response.headers
                assert anonymous.status == 503, "fail closed: neither served nor a 401"
            assert gw.running is not None and gw.running.lookup.stats["miss"] > reads

        # The store came back empty: nothing routes, and a private preview never turns public.
        async with asyncio.timeout(10):
            while (await get(gw, public)).status != 404:
                assert (await get(gw, private)).status in (401, 404, 503)
                await asyncio.sleep(0.02)
        assert (await get(gw, private)).status == 404
        assert (await get(gw, private, **with_token)).status == 404


async def test_redis_hung(redis_server: RedisServer, redis_prefix: str) -> None:
    """SIGSTOPped Redis: requests end within the lookup deadline (plus a generous bound), served
    from cache or refused with 503, and routing resumes with Redis."""
    async with (
        probe_upstream() as probe,
        run_gateway(
            redis_url=redis_server.url,
            redis_prefix=redis_prefix,
            redis_timeout_s=0.2,
            cache_ttl_s=0,
            private_stale_grace_s=0,
        ) as gw,
    ):
        public = await gw.public_preview(probe.port)
        private = host_of(await gw.preview(probe.port, name="secret", public=False))
        token = (await gw.mint("secret"))["spec"]["token"]
        assert (await get(gw, public)).status == 200
        assert (await get(gw, private, **{"X-Blaxel-Preview-Token": token})).status == 200

        with redis_server.paused():
            async with asyncio.timeout(5):
                assert (await get(gw, public)).status == 200
            async with asyncio.timeout(5):
                assert (await get(gw, "nobody.local.preview.localhost")).status == 503
            async with asyncio.timeout(5):
                response = await get(gw, private, **{"X-Blaxel-Preview-Token": token})
                assert response.status == 503
            async with asyncio.timeout(5):
                many = await asyncio.gather(*(get(gw, public) for _ in range(20)))
                assert {r.status for r in many} == {200}

        await until_status(gw, private, 200, **{"X-Blaxel-Preview-Token": token})


async def test_the_embedded_store_invalidates_inside_the_write() -> None:
    """Read-your-writes on one node: once a write returns, the cache that the edge answers from
    without awaiting (``cached``) no longer holds the old route, before any other task runs."""
    store = MemoryStore()
    routes = lookup(store)
    store.on_write(routes.invalidate)
    await add_route(store, public=False)
    private = await routes.find(HOST)
    assert private is not None and not private.public
    assert routes.cached(HOST) == private
    await add_route(store, public=True)  # no await between the write and the check below
    answer = routes.cached(HOST)
    assert not isinstance(answer, Route) or answer.public
