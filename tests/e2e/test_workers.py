"""``GATEWAY_WORKERS=2``: two real worker processes under the supervisor, on one real Redis.

Connections are spread by the kernel (``SO_REUSEPORT`` hashes each connection's addresses), so
tests that need both workers open many connections: the chance that 40 all land on one of two
workers is 2^-39.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers.gateway import ROOT
from tests.helpers.polling import eventually
from tests.helpers.ports import unused_ports
from tests.helpers.process import GatewayProcess, gateway_env
from tests.helpers.redis_server import RedisServer

CONNECTIONS = 40
CHUNK = b"w" * 65536


@pytest.fixture
def workers(
    gateway_process: Callable[..., GatewayProcess], redis_server: RedisServer, redis_prefix: str
) -> Callable[..., Awaitable[GatewayProcess]]:
    async def start(**env: str) -> GatewayProcess:
        gp = gateway_process(
            env={
                "GATEWAY_WORKERS": "2",
                "GATEWAY_REDIS_URL": redis_server.url,
                "GATEWAY_REDIS_PREFIX": redis_prefix,
                "GATEWAY_ACCESS_LOG": "false",
                **env,
            }
        )
        # Ready means one worker answered /readyz; a worker joins the metrics once it listens.
        await eventually(lambda: _reporting(gp))
        return gp

    return start


async def _reporting(gp: GatewayProcess) -> bool:
    return (await metrics(gp)).get("gateway_workers_reporting") == 2


def worker_pids(gp: GatewayProcess) -> set[int]:
    pid = gp.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(c) for c in children}


async def metrics(gp: GatewayProcess) -> dict[str, float]:
    """The scraped samples, by ``name{labels}`` as the exposition writes them."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{gp.api_port}/metrics") as r,
    ):
        text = await r.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def requests_on_fresh_connections(gp: GatewayProcess, count: int) -> None:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(count):
            url = f"http://127.0.0.1:{gp.edge_port}/"
            async with http.get(url, headers={"Host": "nothing.preview.localhost"}) as r:
                assert r.status == 404


def per_worker(samples: dict[str, float]) -> dict[str, float]:
    found = {}
    for name, value in samples.items():
        match = re.fullmatch(r'gateway_worker_requests_total\{worker="(\d+)"\}', name)
        if match:
            found[match.group(1)] = value
    return found


def total_requests(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith("gateway_requests_total{"))


async def test_both_workers_take_connections_and_metrics_count_across_both(
    workers: Callable[..., Awaitable[GatewayProcess]],
) -> None:
    gp = await workers()
    assert len(worker_pids(gp)) == 2
    await requests_on_fresh_connections(gp, CONNECTIONS)
    samples = await metrics(gp)
    assert samples["gateway_workers_reporting"] == 2
    counts = per_worker(samples)
    assert set(counts) == {"0", "1"}
    assert all(c > 0 for c in counts.values()), counts
    # The scrape itself went to one worker; every edge request of either is in one sum.
    assert total_requests(samples) == CONNECTIONS == sum(counts.values())


async def test_a_killed_worker_is_restarted_and_takes_connections(
    workers: Callable[..., Awaitable[GatewayProcess]],
) -> None:
    gp = await workers()
    before = worker_pids(gp)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    await eventually(lambda: len(worker_pids(gp)) == 2 and victim not in worker_pids(gp))
    replacement = worker_pids(gp) - before
    assert len(replacement) == 1

    async def both_serve() -> bool:
        await requests_on_fresh_connections(gp, CONNECTIONS)
        counts = per_worker(await metrics(gp))
        return len(counts) == 2 and all(c > 0 for c in counts.values())

    # The replacement binds the shared ports again and answers its siblings' scrapes.
    await eventually(both_serve, timeout=20)
    assert gp.proc.poll() is None


async def test_sighup_reaches_every_worker(
    workers: Callable[..., Awaitable[GatewayProcess]], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("default:first-key-0123456789abcdef\n")
    gp = await workers(GATEWAY_API_KEYS_FILE=str(keys))

    def reloads() -> int:
        return gp.output().count("loaded 1 API keys from the keys file")

    await eventually(lambda: reloads() == 2)  # each worker read it once at start
    gp.proc.send_signal(signal.SIGHUP)
    await eventually(lambda: reloads() == 4)


async def test_sigterm_drains_both_workers(
    workers: Callable[..., Awaitable[GatewayProcess]], upstream: int
) -> None:
    gp = await workers(GATEWAY_SHUTDOWN_GRACE_S="15")
    pids = worker_pids(gp)
    async with gp.client() as gw:
        host = await gw.public_preview(upstream)
    release = asyncio.Event()
    started = 0
    all_started = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        nonlocal started
        yield CHUNK
        started += 1
        if started == CONNECTIONS // 2:
            all_started.set()
        await release.wait()
        yield CHUNK

    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def upload() -> Any:
            url = f"http://127.0.0.1:{gp.edge_port}/upload"
            async with http.post(url, headers={"Host": host}, data=body()) as r:
                assert r.status == 200
                return (await r.json())["body_bytes"]

        async with asyncio.TaskGroup() as tasks:
            uploads = [tasks.create_task(upload()) for _ in range(CONNECTIONS // 2)]
            async with asyncio.timeout(10):
                await all_started.wait()
            gp.proc.send_signal(signal.SIGTERM)

            async def refused() -> bool:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", gp.edge_port)
                except ConnectionRefusedError:
                    return True
                writer.close()
                return False

            # Refused only once no worker listens any more: both began draining.
            await eventually(refused)
            release.set()
    # Every upload, on whichever worker, finished within the grace period.
    assert [u.result() for u in uploads] == [2 * len(CHUNK)] * (CONNECTIONS // 2)
    assert await asyncio.to_thread(gp.proc.wait, 20) == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
    assert gp.output().count("draining") == 2


async def test_workers_that_cannot_listen_stop_the_supervisor(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """A port held by another program: the workers keep exiting at once, and the supervisor
    gives up with exit code 1 instead of restarting them forever."""
    edge_port, api_port = unused_ports(2)
    with socket.create_server(("127.0.0.1", edge_port)):  # held, without SO_REUSEPORT
        env = gateway_env(
            edge_port,
            api_port,
            {
                "GATEWAY_WORKERS": "2",
                "GATEWAY_REDIS_URL": redis_server.url,
                "GATEWAY_REDIS_PREFIX": redis_prefix,
            },
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            out, _ = await asyncio.to_thread(proc.communicate, timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 1
    assert "keeps exiting" in out
    assert "cannot listen" in out
