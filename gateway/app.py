"""Composition: builds the store, the route lookup, the upstream session and both listeners from
``Settings``, runs the background work in one ``TaskGroup``, and shuts down in stages.

Shutdown order (SIGTERM): ``/readyz`` turns 503 at once; the edge stops accepting; open
WebSockets get close 1001; in-flight HTTP requests get ``shutdown_grace_s`` to finish; then the
store and the upstream pool are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from gateway.control.api_keys import KeyRing
from gateway.control.domains import DomainConfig, DomainService
from gateway.control.handlers import ApiConfig, ControlApi
from gateway.control.service import ControlService, ServiceConfig
from gateway.core.admission import AdmissionConfig
from gateway.core.errors import RoutingUnavailable
from gateway.core.netpolicy import IPNetwork
from gateway.core.planner import PlannerConfig
from gateway.core.tokens import SigningKey, TokenSigner, generate_key, parse_keys
from gateway.edge.config import EdgeConfig, RelayLimits
from gateway.edge.handler import EdgeHandler
from gateway.edge.holds import StartupHolds
from gateway.edge.pool import UpstreamPool
from gateway.edge.server import EdgeServer
from gateway.edge.starting import Starting
from gateway.edge.wake import Waker
from gateway.edge.ws_hub import WebSocketHub, WsLimits
from gateway.edge.ws_readmit import Readmission
from gateway.ops import log
from gateway.ops.metrics import CONTENT_TYPE, Metrics, StatsCollector
from gateway.ops.settings import Settings
from gateway.ops.sweeper import Sweeper
from gateway.store.base import RouteSource, Store
from gateway.store.lookup import RouteLookup
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore, connect_redis

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
    domains: DomainService
    holds: StartupHolds
    """Held requests' probe loops and the wake calls (issue 14)."""
    draining: bool = False


def build_store(settings: Settings) -> Store:
    if settings.redis_url is None:
        return MemoryStore()
    url = settings.redis_url.get_secret_value()
    client = connect_redis(url, settings.redis_timeout_s)
    subscriber = connect_redis(url, 30.0)
    return RedisStore(client, subscriber, settings.redis_prefix)


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


# ── each component's config, from settings: the one place that reads them ─────────────────
def allowed_targets(settings: Settings, extra: list[str] | None = None) -> list[IPNetwork]:
    return [*settings.allowed_targets, *(ipaddress.ip_network(n) for n in extra or [])]


def build_lookup(settings: Settings, store: RouteSource) -> RouteLookup:
    return RouteLookup(
        store,
        timeout_s=settings.redis_timeout_s,
        ttl_s=settings.cache_ttl_s,
        negative_ttl_s=settings.cache_negative_ttl_s,
        stale_grace_s=settings.cache_stale_grace_s,
        private_stale_grace_s=settings.private_stale_grace_s,
        max_entries=settings.cache_max_entries,
        preview_domain=settings.preview_domain,
    )


def upstream_pool(
    settings: Settings, allowed: list[IPNetwork], *, websocket: bool = False
) -> UpstreamPool:
    """WebSockets hold their upstream connection for their whole life, so they get a pool of
    their own, without a per-sandbox limit: in the HTTP pool they would take the per-sandbox
    slots that keep one busy sandbox from starving requests to the same port."""
    total = settings.upstream_max_connections
    return UpstreamPool(
        allowed=allowed,
        max_connections=total,
        max_per_target=total if websocket else settings.upstream_max_connections_per_target,
        connect_timeout_s=settings.upstream_connect_timeout_s,
    )


def admission_for(settings: Settings, signer: TokenSigner) -> AdmissionConfig:
    return AdmissionConfig(
        signer=signer,
        cookie_samesite=settings.cookie_samesite,
        allowed_origins=settings.ws_allowed_origins,
    )


def ws_limits(settings: Settings) -> WsLimits:
    return WsLimits(
        idle_timeout_s=settings.ws_idle_timeout_s,
        max_lifetime_s=settings.ws_max_lifetime_s,
        ping_interval_s=settings.ws_ping_interval_s,
        max_message_bytes=settings.ws_max_message_bytes,
        handshake_timeout_s=settings.upstream_response_timeout_s,
    )


def edge_config(
    settings: Settings, allowed: list[IPNetwork], admission: AdmissionConfig
) -> EdgeConfig:
    return EdgeConfig(
        preview_domain=settings.preview_domain,
        trusted_proxies=settings.trusted_proxies,
        allowed_targets=allowed,
        limits=RelayLimits(
            body_idle_s=settings.body_idle_timeout_s,
            response_s=settings.upstream_response_timeout_s,
            upstream_idle_s=settings.upstream_idle_timeout_s,
            max_body_bytes=settings.max_body_bytes,
        ),
        admission=admission,
        public_scheme=settings.public_scheme,
    )


def api_config(settings: Settings, allowed: list[IPNetwork]) -> ApiConfig:
    return ApiConfig(
        rules=ServiceConfig(
            preview_domain=settings.preview_domain,
            region=settings.region,
            blocked_ports=settings.blocked_ports(),
            allowed_targets=allowed,
            token_max_lifetime_s=settings.token_max_lifetime_s,
        ),
        public_scheme=settings.public_scheme,
        public_port=settings.effective_public_port,
        domains=DomainConfig.from_settings(settings),
    )


def planner_config(config: EdgeConfig) -> PlannerConfig:
    return PlannerConfig(
        preview_domain=config.preview_domain,
        trusted_proxies=config.trusted_proxies,
        admission=config.admission,
        max_body_bytes=config.limits.max_body_bytes,
        public_scheme=config.public_scheme,
    )


def edge_server(settings: Settings, handler: EdgeHandler) -> EdgeServer:
    return EdgeServer(
        handler,
        header_timeout_s=settings.header_read_timeout_s,
        keepalive_s=settings.keepalive_timeout_s,
        grace_s=settings.shutdown_grace_s,
        scheme=settings.public_scheme,
    )


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


def starting_for(settings: Settings, store: Store, pool: UpstreamPool) -> Starting:
    holds = StartupHolds.on_pool(pool)
    secret = settings.wake_secret.get_secret_value().encode() if settings.wake_secret else None
    return Starting(holds, Waker(store, holds, secret), settings.upstream_startup_wait_s)


def metrics_for(
    lookup: RouteLookup, store: Store, hub: WebSocketHub, starting: Starting
) -> Metrics:
    metrics = Metrics()
    failed_lookups = ("stale", "error")
    metrics.add_collector(
        StatsCollector(
            counters=lambda: {
                "gateway_route_cache": ("result", lookup.stats),
                "gateway_store_errors": (
                    "operation",
                    {"route_lookup": sum(lookup.stats[k] for k in failed_lookups), **store.errors},
                ),
                "gateway_wakes": ("outcome", starting.waker.stats),
            },
            gauges=lambda: {
                "gateway_websockets_open": hub.open_count,
                "gateway_requests_held": starting.holds.held,
            },
        )
    )
    return metrics


def metrics_endpoint(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve_metrics(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    return serve_metrics


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[Running], object] | None = None,
    extra_targets: list[str] | None = None,
) -> None:
    """Run the gateway until ``stop`` is set, then drain and return."""
    allowed = allowed_targets(settings, extra_targets)
    store = build_store(settings)
    lookup = build_lookup(settings, store)
    keys, generated_key = key_ring(settings)
    signer = TokenSigner(await _with_startup_retries(lambda: signing_keys(settings, store)))
    admission = admission_for(settings, signer)
    pool = upstream_pool(settings, allowed)
    ws_pool = upstream_pool(settings, allowed, websocket=True)
    limits = ws_limits(settings)
    hub = WebSocketHub(Readmission(lookup.find, admission), close_timeout_s=limits.close_timeout_s)
    lookup.add_listener(hub.on_invalidation)
    starting = starting_for(settings, store, pool)
    metrics = metrics_for(lookup, store, hub, starting)
    config = edge_config(settings, allowed, admission)
    ws = (ws_pool, limits, hub)
    handler = EdgeHandler(
        config, planner_config(config), lookup, pool, ws, metrics.observe, starting=starting
    )
    edge = edge_server(settings, handler)
    readiness = Readiness(store, settings)
    api = ControlApi(api_config(settings, allowed), store, keys, readiness, signer)
    api_app = api.app()
    api_app.router.add_get("/metrics", metrics_endpoint(metrics))
    api_runner = web.AppRunner(api_app, access_log=None, shutdown_timeout=2.0)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(store.close)
        # Cleanups run last-in first-out: the edge drains its in-flight requests first, while
        # the API listener still answers /readyz with 503; only then does the API close.
        await _listen(stack, api_runner, settings.bind, settings.api_port)
        await stack.enter_async_context(edge)  # on exit, busy connections get their grace
        edge_port = await edge.start(settings.bind, settings.edge_port)
        if settings.public_port is None and settings.edge_port == 0:
            api.set_public_port(edge_port)  # an ephemeral edge port is only known now
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
            domains=api.domains,
            holds=starting.holds,
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
            tasks.create_task(running.domains.run_rechecks(), name="domain re-checks"),
            tasks.create_task(running.holds.run(), name="startup holds and wake calls"),
        ]
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
    stack: contextlib.AsyncExitStack, runner: web.BaseRunner, host: str, port: int
) -> web.TCPSite:
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return site


def _bound_port(runner: web.BaseRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("listener has no address")


def configure_logging(settings: Settings) -> None:
    log.configure(settings.log_level, settings.access_log)
