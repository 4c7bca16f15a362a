"""Propagation: how long a change made through one replica's API takes to show at the others'
edges, with three gateway processes on one Redis.

Change ``i`` is a PUT of the preview through replica ``i % 3`` that sets the response header
``X-Change: i``; the two other replicas' edges are then polled (one keep-alive connection each)
until they answer with it. The time runs from the PUT's 200 (the write is committed and
published) to the first edge answer carrying the new state, so it includes one poll's round trip.
Idle, then again with wrk at 32 connections on each replica's edge (saturation).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import gw, wrk
from bench.gw import API_KEY
from bench.procs import PYTHON, Child, free_port, wait_http_ok, wait_tcp

REDIS_EPHEMERAL = ("--save", "", "--appendonly", "no")
DEADLINE_S = 10.0
"""A change that no replica shows within this long counts as lost (reported, not hidden)."""


@dataclass
class Cluster:
    replicas: list[gw.Gateway]
    host: str
    upstream_port: int
    redis_url: str
    changed: list[tuple[int, float]] = field(default_factory=list)
    """Per change so far: the replica it was written through, and the wall time of its 200."""


def start_redis(work_dir: Path, name: str = "redis") -> tuple[Child, str]:
    port = free_port()
    child = Child(
        name,
        [*("redis-server", "--port", str(port), "--bind", "127.0.0.1"), *REDIS_EPHEMERAL],
        work_dir,
    )
    wait_tcp(port, child)
    return child, f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def cluster(work_dir: Path, count: int = 3, env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """An upstream, one Redis and ``count`` gateway processes on it; the first registers the
    preview. Every child is stopped on the way out."""
    children: list[Child] = []
    try:
        upstream_port = free_port()
        app = Child(
            "upstream",
            [str(PYTHON), "-m", "bench.upstream", "--port", str(upstream_port)],
            work_dir,
        )
        children.append(app)
        wait_http_ok(f"http://127.0.0.1:{upstream_port}/small", app)
        redis, url = start_redis(work_dir)
        children.append(redis)
        # Debug logs carry the time each invalidation was applied (see ``applied``).
        replica_env = {"GATEWAY_REDIS_URL": url, "GATEWAY_LOG_LEVEL": "debug", **(env or {})}
        replicas = []
        for i in range(count):
            replica = gw.start(
                upstream_port, work_dir, f"replica-{i}", extra_env=replica_env, register=i == 0
            )
            children.append(replica.child)
            replicas.append(replica)
        yield Cluster(replicas, replicas[0].hostname, upstream_port, url)
    finally:
        for child in reversed(children):
            child.stop()


async def _serves(
    session: aiohttp.ClientSession, replica: gw.Gateway, host: str, want: str
) -> bool:
    url = f"http://127.0.0.1:{replica.edge_port}/small"
    async with session.get(url, headers={"Host": host}) as r:
        await r.read()
        return r.headers.get("X-Change") == want


async def _until_serves(
    session: aiohttp.ClientSession, replica: gw.Gateway, host: str, want: str, t0: float
) -> float | None:
    while time.perf_counter() - t0 < DEADLINE_S:
        if await _serves(session, replica, host, want):
            return (time.perf_counter() - t0) * 1000
    return None


async def changes(c: Cluster, count: int) -> dict[str, Any]:
    """``count`` changes, each written through the next replica and awaited at the others."""
    api = aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"})
    edges = [aiohttp.ClientSession() for _ in c.replicas]
    took: list[float] = []
    lost = 0
    try:
        for i in range(count):
            writer = c.replicas[i % len(c.replicas)]
            body = {
                "metadata": {"name": "web"},
                "spec": {
                    "port": c.upstream_port,
                    "public": True,
                    "responseHeaders": {"X-Change": str(i)},
                },
            }
            url = f"http://127.0.0.1:{writer.api_port}/v0/sandboxes/sb/previews/web"
            async with api.put(url, json=body) as r:
                assert r.status == 200, await r.text()
            t0 = time.perf_counter()
            c.changed.append((i % len(c.replicas), time.time()))
            waits = [
                _until_serves(edges[j], replica, c.host, str(i), t0)
                for j, replica in enumerate(c.replicas)
                if replica is not writer
            ]
            for result in await asyncio.gather(*waits):
                if result is None:
                    lost += 1
                else:
                    took.append(result)
    finally:
        await api.close()
        for session in edges:
            await session.close()
    return {"changes": count, "observations": len(took), "lost": lost, **summary(took)}


_APPLIED = re.compile(r"route cache: invalidated (\S+) at ([\d.]+)")


def applied(c: Cluster, first: int) -> dict[str, Any]:
    """From the replicas' debug logs: how long after each change's 200 (from change ``first``
    on) the other replicas had applied its invalidation, before any request saw it. Negative:
    applied before the writer's answer reached the client."""
    delays: list[float] = []
    for index, replica in enumerate(c.replicas):
        log = replica.child.log_path.read_text(errors="replace")
        hostname = c.host.rsplit(":", 1)[0]
        times = [float(t) for host, t in _APPLIED.findall(log) if host == hostname]
        for (writer, at), seen in zip(c.changed[first:], times[first:], strict=False):
            if writer != index:
                delays.append((seen - at) * 1000)
    return {
        "applied_observations": len(delays),
        **{f"applied_{k}": v for k, v in summary(delays).items()},
    }


def summary(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {}
    ordered = sorted(ms)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def _start_load(c: Cluster, connections: int, work_dir: Path) -> list[subprocess.Popen[str]]:
    binary = wrk.binary()
    if binary is None:
        raise RuntimeError("wrk is not installed")
    procs = []
    for replica in c.replicas:
        run = wrk.command(
            binary,
            f"http://127.0.0.1:{replica.edge_port}/small",
            c.host,
            connections=connections,
            duration_s=600,
            work_dir=work_dir,
        )
        procs.append(run.spawn())
    return procs


def _stop_load(procs: list[subprocess.Popen[str]]) -> list[dict[str, float]]:
    """wrk prints its report when interrupted."""
    results = []
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for proc in procs:
        out, _ = proc.communicate(timeout=30)
        with contextlib.suppress(RuntimeError):
            results.append(wrk.parse(out))
    return results


async def run(work_dir: Path, count: int, connections: int) -> dict[str, Any]:
    with cluster(work_dir) as c:
        idle = await changes(c, count)
        idle.update(applied(c, 0))
        print(f"propagation idle: {idle}", flush=True)
        procs = _start_load(c, connections, work_dir)
        try:
            await asyncio.sleep(1.0)  # wrk has opened its connections and is saturating
            loaded = await changes(c, count)
        finally:
            load = _stop_load(procs)
        loaded.update(applied(c, count))
        # A request's own latency at saturation: the floor under "serves the new state".
        loaded["wrk_rps_per_replica"] = [round(r["rps"]) for r in load]
        loaded["wrk_p50_ms_per_replica"] = [r["p50_ms"] for r in load]
        loaded["wrk_p99_ms_per_replica"] = [r["p99_ms"] for r in load]
        loaded["wrk_connections_per_replica"] = connections
        print(f"propagation under load: {loaded}", flush=True)
    return {"replicas": 3, "idle": idle, "saturated": loaded}
