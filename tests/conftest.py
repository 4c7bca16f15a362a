"""Shared fixtures: a real redis-server, real upstreams, in-process and subprocess gateways.
The machinery they use lives in ``tests/helpers``. Nothing here mocks the network, Redis or
aiohttp."""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.helpers.api import api_gateway
from tests.helpers.gateway import Gateway, run_gateway
from tests.helpers.process import GatewayProcess, spawn_gateway
from tests.helpers.redis_server import RedisServer
from tests.helpers.redis_topologies import RedisCluster, SentinelSet, running
from tests.helpers.upstreams import echo_app
from tests.helpers.ws_upstreams import WsUpstream, ws_upstream


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.resume()
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_sentinels() -> Iterator[SentinelSet]:
    """A primary, a replica and three sentinels, shared by the tests that do not fail it over."""
    with running(SentinelSet()) as sentinels:
        yield sentinels


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A real 3-primary Redis Cluster."""
    with running(RedisCluster()) as cluster:
        yield cluster


@pytest.fixture
def redis_prefix() -> str:
    return f"t{secrets.token_hex(4)}:"


# ── upstreams ───────────────────────────────────────────────────────────────────────────────
@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    """The echo app on 127.0.0.1; yields its port."""
    runner = web.AppRunner(echo_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@pytest.fixture
async def wsup() -> AsyncIterator[WsUpstream]:
    """The WebSocket upstream of ``tests/helpers/ws_upstreams.py`` on 127.0.0.1."""
    async with ws_upstream() as up:
        yield up


# ── gateways ────────────────────────────────────────────────────────────────────────────────
@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with run_gateway() as gw:
        yield gw


@pytest.fixture
async def redis_gateway(redis_server: RedisServer, redis_prefix: str) -> AsyncIterator[Gateway]:
    async with run_gateway(redis_url=redis_server.url, redis_prefix=redis_prefix) as gw:
        yield gw


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    """Settings of the ``gw`` fixture's gateway; a test module overrides this fixture."""
    return {}


@pytest.fixture(params=["memory", "redis"])
async def gw(request: pytest.FixtureRequest, gw_settings: dict[str, Any]) -> AsyncIterator[Gateway]:
    """The in-process gateway with the embedded store and with Redis: what a test shows must not
    depend on which one is behind it (with Redis, invalidations travel by pub/sub)."""
    async with api_gateway(request.param, request, **gw_settings) as gateway:
        yield gateway


# ── the real process ────────────────────────────────────────────────────────────────────────
@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``gateway_process(*args, env={...}, ports=(edge, api))`` (ports: optional, to
    restart a gateway in place); every process is stopped at teardown."""
    started: list[GatewayProcess] = []

    def start(
        *args: str, env: dict[str, str] | None = None, ports: tuple[int, int] | None = None
    ) -> GatewayProcess:
        gp = spawn_gateway(tmp_path, *args, env=env, ports=ports)
        started.append(gp)
        return gp

    yield start
    for gp in started:
        gp.kill()
