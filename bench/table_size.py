"""Route table size: lookup cost from 10 to 100,000 routes on both stores, memory per cached
route, loading 100,000 routes through the API, and a cold replica against that table.

* Lookups run in this process against the gateway's own ``RouteLookup`` and stores: a *store
  read* is one ``get_route`` (a dict for the embedded store, one GET round trip for Redis); a
  *cached* lookup is ``RouteLookup.find`` on a warm cache holding the whole table. Hosts are
  drawn at random, so neither figure benefits from one hot key (median of 5 passes of 10,000).
* Memory per cached route: ``tracemalloc`` over warming the cache from Redis (each entry is a
  ``Route`` parsed from its JSON, with its cache entry).
* Loading: 32 concurrent API clients POST previews (1,000 per sandbox) to one gateway.
* Cold replica: a new gateway process started against the loaded table; time to ``/readyz``,
  its RSS, and the first and second request to a random preview (a miss, then a hit).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp

from bench import gw
from bench.gw import API_KEY
from bench.procs import status_kib
from bench.propagation import Cluster, cluster
from gateway.core.records import Keys, Preview, Route, Sandbox
from gateway.store.lookup import RouteLookup
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore, connect_redis

SIZES = (10, 1_000, 10_000, 100_000)
SAMPLES = 10_000
PER_SANDBOX = 1_000


def _routes(count: int) -> list[Route]:
    sandbox = Sandbox(workspace="default", name="sb", target_host="10.0.0.1")
    return [
        Route.build(
            sandbox,
            Preview(
                workspace="default",
                sandbox="sb",
                name=f"p{i}",
                port=3000,
                public=True,
                hostname=f"h{i}.local.preview.localhost",
            ),
        )
        for i in range(count)
    ]


def _lookup(store: Any) -> RouteLookup:
    return RouteLookup(
        store, timeout_s=5.0, ttl_s=3600, negative_ttl_s=2, stale_grace_s=0, max_entries=200_000
    )


async def _per_call_us(call: Any, hosts: list[str], rounds: int = 5) -> float:
    """The median over ``rounds`` passes: a neighbour taking the CPU spoils one pass, not all."""
    passes = []
    for _ in range(rounds):
        started = time.perf_counter()
        for host in hosts:
            await call(host)
        passes.append((time.perf_counter() - started) / len(hosts) * 1e6)
    return round(statistics.median(passes), 2)


async def _fill_memory(routes: list[Route]) -> MemoryStore:
    store = MemoryStore()
    sandbox = Sandbox(workspace="default", name="sb", target_host="10.0.0.1")
    await store.put_sandbox(sandbox, create=True)
    for r in routes:
        preview = Preview(
            workspace="default",
            sandbox="sb",
            name=r.preview,
            port=r.port,
            public=True,
            hostname=r.hostname,
        )
        await store.put_preview(preview, create=True, force=False)
    return store


async def _fill_redis(url: str, prefix: str, routes: list[Route]) -> RedisStore:
    """Route keys written directly, pipelined: lookups read nothing else."""
    client = connect_redis(url, 5.0)
    keys = Keys(prefix)
    for start in range(0, len(routes), 1000):
        async with client.pipeline(transaction=False) as pipe:
            for r in routes[start : start + 1000]:
                pipe.set(keys.route(r.hostname), r.model_dump_json())  # type: ignore[unused-awaitable]
            await pipe.execute()
    return RedisStore(client, connect_redis(url, 30.0), prefix)


async def _measure(store: Any, routes: list[Route]) -> dict[str, float]:
    rng = random.Random(len(routes))
    hosts = [rng.choice(routes).hostname for _ in range(SAMPLES)]
    lookup = _lookup(store)
    read_us = await _per_call_us(store.get_route, hosts)
    for start in range(0, len(routes), 50):  # warm the whole table into the cache
        await asyncio.gather(*(lookup.find(r.hostname) for r in routes[start : start + 50]))
    cached_us = await _per_call_us(lookup.find, hosts)
    return {"store_read_us": read_us, "cached_lookup_us": cached_us}


async def lookups(redis_url: str, sizes: list[int]) -> dict[str, Any]:
    figures: dict[str, Any] = {"memory": {}, "redis": {}}
    for size in sizes:
        routes = _routes(size)
        figures["memory"][str(size)] = await _measure(await _fill_memory(routes), routes)
        store = await _fill_redis(redis_url, f"size{size}:", routes)
        try:
            figures["redis"][str(size)] = await _measure(store, routes)
        finally:
            await store.close()
        print(
            f"lookups at {size}: {figures['memory'][str(size)]} {figures['redis'][str(size)]}",
            flush=True,
        )
    return figures


async def cached_route_bytes(redis_url: str, count: int) -> float:
    routes = _routes(count)
    store = await _fill_redis(redis_url, "mem:", routes)
    lookup = _lookup(store)
    try:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, count, 50):
            await asyncio.gather(*(lookup.find(r.hostname) for r in routes[start : start + 50]))
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        await store.close()
    return round((after - before) / count)


async def load_through_api(
    c: Cluster, count: int, clients: int
) -> tuple[dict[str, Any], list[str]]:
    """``count`` previews POSTed by ``clients`` concurrent clients; the rate and the hostnames."""
    api = f"http://127.0.0.1:{c.replicas[0].api_port}/v0"
    hosts: list[str] = []
    connector = aiohttp.TCPConnector(limit=clients)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(headers=auth, connector=connector) as http:
        for s in range(-(-count // PER_SANDBOX)):
            body = {"metadata": {"name": f"t{s}"}, "spec": {"target": {"host": "127.0.0.1"}}}
            async with http.post(f"{api}/sandboxes", json=body) as r:
                assert r.status == 200, await r.text()
        todo = iter(range(count))
        retried = [0]

        async def client() -> None:
            for i in todo:
                sandbox, name = f"t{i // PER_SANDBOX}", f"p{i % PER_SANDBOX}"
                body = {
                    "metadata": {"name": name},
                    "spec": {"port": c.upstream_port, "public": True},
                }
                url = await _create(http, f"{api}/sandboxes/{sandbox}/previews", body, retried)
                hosts.append(url.split("//", 1)[1].split("/", 1)[0])

        started = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            for _ in range(clients):
                tasks.create_task(client())
        took = time.perf_counter() - started
    figures = {"routes": count, "clients": clients, "seconds": round(took, 1)}
    return {**figures, "per_s": round(count / took), "retried_503": retried[0]}, hosts


async def _create(http: aiohttp.ClientSession, url: str, body: Any, retried: list[int]) -> str:
    """POST, retrying a 503 after its Retry-After as a client should: on a loaded machine a
    write transaction can exceed GATEWAY_REDIS_TIMEOUT_S. Returns the preview's URL."""
    for _ in range(10):
        async with http.post(url, json=body) as r:
            if r.status == 503:
                retried[0] += 1
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            assert r.status == 200, await r.text()
            return str((await r.json())["spec"]["url"])
    raise RuntimeError("the API kept answering 503")


async def _timed_get(http: aiohttp.ClientSession, port: int, host: str) -> float:
    started = time.perf_counter()
    async with http.get(f"http://127.0.0.1:{port}/small", headers={"Host": host}) as r:
        await r.read()
        assert r.status == 200, r.status
    return round((time.perf_counter() - started) * 1000, 2)


async def cold_replica(c: Cluster, work_dir: Path, hosts: list[str], prefix: str) -> dict[str, Any]:
    """Start a replica against ``prefix``'s table: ready time, RSS, first and second request."""
    started = time.perf_counter()
    env = {"GATEWAY_REDIS_URL": c.redis_url, "GATEWAY_REDIS_PREFIX": prefix}
    replica = await asyncio.to_thread(
        gw.start,
        c.upstream_port,
        work_dir,
        f"cold-{prefix.rstrip(':')}",
        extra_env=env,
        register=False,
    )
    ready_s = round(time.perf_counter() - started, 2)
    try:
        figures: dict[str, Any] = {"ready_s": ready_s, "rss_kib": status_kib(replica.pid)["VmRSS"]}
        if hosts:
            host = random.Random(7).choice(hosts)
            async with aiohttp.ClientSession() as http:
                figures["first_request_ms"] = await _timed_get(http, replica.edge_port, host)
                figures["second_request_ms"] = await _timed_get(http, replica.edge_port, host)
        return figures
    finally:
        replica.child.stop()


async def run(work_dir: Path, routes: int, clients: int, workers: int) -> dict[str, Any]:
    env = {"GATEWAY_WORKERS": str(workers)}
    with cluster(work_dir, count=1, env=env) as c:
        figures: dict[str, Any] = {
            "lookups": await lookups(c.redis_url, [s for s in SIZES if s <= routes])
        }
        figures["cached_route_bytes"] = await cached_route_bytes(c.redis_url, min(routes, 100_000))
        print(f"memory per cached route: {figures['cached_route_bytes']} B", flush=True)
        load, hosts = await load_through_api(c, routes, clients)
        load["workers"] = workers
        figures["api_load"] = load
        print(f"api load: {load}", flush=True)
        figures["cold_replica"] = {
            "empty_table": await cold_replica(c, work_dir, [], "empty:"),
            f"{len(hosts) + 1}_routes": await cold_replica(c, work_dir, hosts, "pgw:"),
        }
        print(f"cold replica: {figures['cold_replica']}", flush=True)
    return figures
