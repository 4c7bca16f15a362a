"""Composition: builds the store, the route lookup, the upstream session and both listeners from
``Settings``, runs the background work in one ``TaskGroup``, and shuts down in stages.

Shutdown order (SIGTERM): ``/readyz`` turns 503 at once; the edge stops accepting; open
WebSockets get close 1001; in-flight HTTP requests get ``shutdown_grace_s`` to finish; then the
store and the upstream pool are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from gateway.components import (
    admission_for,
    allowed_targets,
    api_config,
    build_lookup,
    edge_handler,
    edge_server,
)
from gateway.control import tls_ask
from gateway.control.api_keys import KeyRing
from gateway.control.domains import DomainService
from gateway.control.handlers import ControlApi
from gateway.control.service import ControlService
from gateway.core.errors import RoutingUnavailable
from gateway.core.tokens import SigningKey, TokenSigner, generate_key, parse_keys
from gateway.edge.holds import StartupHolds
from gateway.edge.listeners import ListenerPorts, certificate_store, start_listeners
from gateway.edge.pool import UpstreamPool
from gateway.edge.server import EdgeServer
from gateway.edge.tls import CertificateStore
from gateway.edge.ws_hub import WebSocketHub
from gateway.ops import log
from gateway.ops.memory import MemoryWatch
from gateway.ops.metrics import Metrics
from gateway.ops.redis_config import build_store
from gateway.ops.settings import Settings
from gateway.ops.sweeper import Sweeper
from gateway.ops.workers import WorkerSlot, join_workers, metrics_endpoint
from gateway.store.base import Store
from gateway.store.lookup import RouteLookup

logger = logging.getLogger("gateway.app")
T = TypeVar("T")


@dataclass
class Running:
    """What a started gateway exposes: bound ports and the generated key, if any."""

    edge_port: int
    api_port: int
    api_key: str | None
    store: Store
    lookup: RouteLookup
    hub: WebSocketHub
    sweeper: Sweeper
    keys: KeyRing
    service: ControlService
    """The control API's rules, for in-process callers (the demo)."""
    memory: MemoryWatch
    pool: UpstreamPool
    domains: DomainService
    holds: StartupHolds
    """Held requests' probe loops and the wake calls (issue 14)."""
    tls_port: int | None = None
    certs: CertificateStore | None = None
    """The edge's certificates when it serves TLS (``reload`` on SIGHUP)."""
    draining: bool = False


def key_ring(settings: Settings) -> tuple[KeyRing, str | None]:
    pairs = [tuple(p.split(":", 1)) for p in settings.api_keys]
    generated = None
    if not pairs and settings.api_keys_file is None:
        generated = "pgw_" + secrets.token_urlsafe(24)
        pairs = [("default", generated)]
    return KeyRing([(ws, key) for ws, key in pairs], settings.api_keys_file), generated


async def signing_keys(settings: Settings, store: Store) -> list[SigningKey]:
    """Configured keys, or one generated key shared by every replica through the store."""
    if settings.token_keys:
        return parse_keys([k.get_secret_value() for k in settings.token_keys])
    generated = generate_key()
    shared = await store.shared_secret("token-key", f"{generated.kid}:{generated.secret.decode()}")
    return parse_keys([shared])


STARTUP_RETRY_S = 30.0
"""How long a starting replica waits for its store (Redis still starting, a failover)."""


class StartupFailed(Exception):
    """The gateway cannot start; the message says why, in one line."""


async def _with_startup_retries(attempt: Callable[[], Awaitable[T]]) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_RETRY_S
    delay = 0.2
    while True:
        try:
            return await attempt()
        except RoutingUnavailable as exc:
            if loop.time() + delay > deadline:
                raise StartupFailed(
                    f"the store (Redis) did not answer for {STARTUP_RETRY_S:.0f} s"
                ) from exc
            logger.warning("waiting for the store (Redis) to answer")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


# ── wiring ──────────────────────────────────────────────────────────────────────────────────
class Readiness:
    """``/readyz``: not ready before the listeners are up nor while draining. A store outage
    makes a replica unready only once its cache has gone stale: otherwise every replica would
    drop out of the load balancer at the same moment, although their caches could keep previews
    working."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.running: Running | None = None
        self._store = store
        self._timeout_s = max(settings.redis_timeout_s, 1.0)
        self._grace_s = settings.cache_stale_grace_s
        self._last_store_ok = asyncio.get_running_loop().time()

    async def __call__(self) -> bool:
        if self.running is None or self.running.draining:
            return False
        now = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._store.ping()
        except Exception:
            return now - self._last_store_ok < self._grace_s
        self._last_store_ok = now
        return True


def _api_app(
    api: ControlApi, metrics: Metrics, lookup: RouteLookup, worker: WorkerSlot | None
) -> web.Application:
    """The control API with the replica's metrics and the TLS on-demand ask endpoint."""
    app = api.app()
    app.router.add_get("/metrics", metrics_endpoint(metrics.render, worker))
    app.router.add_get(tls_ask.ASK_PATH, tls_ask.ask_endpoint(lookup.find))
    return app


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[Running], object] | None = None,
    extra_targets: list[str] | None = None,
    worker: WorkerSlot | None = None,
) -> None:
    """Run the gateway until ``stop`` is set, then drain and return. A ``worker`` shares its
    ports with its siblings (``SO_REUSEPORT``) and their metrics."""
    allowed = allowed_targets(settings, extra_targets)
    store = build_store(settings)
    lookup = build_lookup(settings, store)
    keys, generated_key = key_ring(settings)
    signer = TokenSigner(await _with_startup_retries(lambda: signing_keys(settings, store)))
    admission = admission_for(settings, signer)
    handler, metrics, memory = edge_handler(settings, allowed, store, lookup, admission)
    pool, hub, starting = handler.pool, handler.hub, handler.starting
    assert starting is not None
    edge = edge_server(settings, handler)
    readiness = Readiness(store, settings)
    api = ControlApi(api_config(settings, allowed), store, keys, readiness, signer)
    api_runner = web.AppRunner(
        _api_app(api, metrics, lookup, worker), access_log=None, shutdown_timeout=2.0
    )
    shared = worker is not None
    certs = certificate_store(settings)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(store.close)
        # Cleanups run last-in first-out: the edge drains its in-flight requests first, while
        # the API listener still answers /readyz with 503; only then does the API close.
        await _listen(stack, api_runner, settings.bind, settings.api_port, reuse_port=shared)
        await stack.enter_async_context(edge)  # on exit, busy connections get their grace
        edge_port, tls_port = await start_listeners(
            ListenerPorts.from_settings(settings), edge, certs, reuse_port=shared
        )
        await join_workers(stack, worker, metrics.render)  # once it serves, siblings see it
        if settings.public_port is None:
            api.set_public_port(tls_port or edge_port)  # an ephemeral port is only known now
        sweeper = Sweeper(store, settings.sweep_interval_s)
        running = Running(
            edge_port=edge_port,
            api_port=_bound_port(api_runner),
            api_key=generated_key,
            store=store,
            lookup=lookup,
            hub=hub,
            sweeper=sweeper,
            keys=keys,
            service=api.service,
            memory=memory,
            pool=pool,
            domains=api.domains,
            holds=starting.holds,
            tls_port=tls_port,
            certs=certs,
        )
        readiness.running = running
        await _run_until_stopped(running, stop, edge, on_ready)
    logger.info("stopped")


async def _run_until_stopped(
    running: Running,
    stop: asyncio.Event,
    edge: EdgeServer,
    on_ready: Callable[[Running], object] | None,
) -> None:
    async with asyncio.TaskGroup() as tasks:
        background = [
            tasks.create_task(running.lookup.follow_invalidations(), name="invalidations"),
            tasks.create_task(running.hub.run(), name="websocket re-admission"),
            tasks.create_task(running.sweeper.run(), name="sweeper"),
            tasks.create_task(running.memory.run(), name="memory budget"),
            tasks.create_task(running.domains.run_rechecks(), name="domain re-checks"),
            tasks.create_task(running.holds.run(), name="startup holds and wake calls"),
        ]
        if running.certs is not None:
            watch = running.certs.watch(running.certs.interval_s)
            background.append(tasks.create_task(watch, name="certificate reload"))
        if on_ready is not None:
            on_ready(running)
        await stop.wait()
        running.draining = True
        logger.info("draining: closing WebSockets, finishing in-flight requests")
        edge.stop_accepting()
        await running.hub.close_all(1001, "gateway shutting down")
        for task in background:
            task.cancel()


async def _listen(
    stack: contextlib.AsyncExitStack,
    runner: web.BaseRunner,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
) -> web.TCPSite:
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port or None)
    await site.start()
    return site


def _bound_port(runner: web.BaseRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("listener has no address")


def configure_logging(settings: Settings) -> None:
    log.configure(settings.log_level, settings.access_log)
