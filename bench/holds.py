"""Held requests do not slow other previews (issue 14): ``python -m bench.holds``.

One gateway process with two previews: ``live`` (the bench upstream) and ``starting`` (a port
nothing listens on, so every request to it is held by the startup wait). The client measures
request latency to ``live`` at a fixed concurrency, then parks ``--held`` requests on
``starting`` (waiting until the gateway's ``gateway_requests_held`` gauge shows all of them),
measures ``live`` again, and reads the gateway's CPU time while the held requests only wait;
``--rounds`` times, and the medians.

A figure, not a timed test: the machine is shared, so compare the two rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from statistics import median

import aiohttp

from bench import gw
from bench.procs import PYTHON, Child, cpu_seconds, free_port, wait_http_ok
from bench.sse import percentile


async def latencies(
    session: aiohttp.ClientSession, url: str, host: str, count: int, concurrency: int
) -> dict[str, float]:
    samples: list[float] = []

    async def worker(n: int) -> None:
        for _ in range(n):
            started = time.perf_counter()
            async with session.get(url, headers={"Host": host}) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"live preview answered {r.status}")
            samples.append((time.perf_counter() - started) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {
        "requests": len(samples),
        "req_per_s": round(len(samples) / elapsed, 1),
        "p50_ms": round(percentile(samples, 50), 3),
        "p99_ms": round(percentile(samples, 99), 3),
    }


async def held_now(session: aiohttp.ClientSession, api_port: int) -> int:
    async with session.get(f"http://127.0.0.1:{api_port}/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith("gateway_requests_held "):
                return int(float(line.split()[1]))
    return 0


async def hold_many(
    session: aiohttp.ClientSession, gateway: gw.Gateway, host: str, count: int
) -> list[asyncio.Task[None]]:
    edge = f"http://127.0.0.1:{gateway.edge_port}/small"

    async def hold() -> None:
        async with session.get(edge, headers={"Host": host}) as r:
            await r.read()

    held = [asyncio.create_task(hold()) for _ in range(count)]
    async with asyncio.timeout(60):
        while await held_now(session, gateway.api_port) < count:
            await asyncio.sleep(0.1)
    return held


async def release(held: list[asyncio.Task[None]]) -> None:
    for task in held:
        task.cancel()
    await asyncio.gather(*held, return_exceptions=True)


async def run(args: argparse.Namespace, gateway: gw.Gateway, starting: str) -> dict[str, object]:
    """Rounds of (without, with) so that the shared machine's load drifts over both alike."""
    edge = f"http://127.0.0.1:{gateway.edge_port}/small"
    live = gateway.hostname
    rows: dict[str, list[dict[str, float]]] = {"without_holds": [], "with_holds": []}
    idle_cpu = 0.0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await latencies(session, edge, live, 200, args.concurrency)  # warm-up
        for _ in range(args.rounds):
            rows["without_holds"].append(
                await latencies(session, edge, live, args.count, args.concurrency)
            )
            held = await hold_many(session, gateway, starting, args.held)
            rows["with_holds"].append(
                await latencies(session, edge, live, args.count, args.concurrency)
            )
            cpu0 = cpu_seconds(gateway.pid)
            await asyncio.sleep(args.idle_s)  # the figure: CPU while requests only wait
            idle_cpu = max(idle_cpu, cpu_seconds(gateway.pid) - cpu0)
            await release(held)
    return {
        "held": args.held,
        "rounds": rows,
        "median_p50_ms": {k: median(r["p50_ms"] for r in v) for k, v in rows.items()},
        "median_p99_ms": {k: median(r["p99_ms"] for r in v) for k, v in rows.items()},
        "median_req_per_s": {k: median(r["req_per_s"] for r in v) for k, v in rows.items()},
        "gateway_cpu_s_while_only_holding": round(idle_cpu, 3),
        "idle_window_s": args.idle_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-holds-"))
    upstream_port = free_port()
    app = Child(
        "upstream", [str(PYTHON), "-m", "bench.upstream", "--port", str(upstream_port)], work
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{upstream_port}/small", app)
        gateway = gw.start(
            upstream_port,
            work,
            extra_env={"GATEWAY_UPSTREAM_STARTUP_WAIT_S": "300", **gw.pool_env(args.held)},
        )
        try:
            starting_host = gw.add_preview(gateway.api_port, "starting", free_port())
            result = asyncio.run(run(args, gateway, starting_host.split(":")[0]))
        finally:
            gateway.child.stop()
    finally:
        app.stop()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
