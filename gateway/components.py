"""Each component's config, from ``Settings``: the one place that reads them (``app`` composes
and runs what these build)."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import TypeVar

from gateway.control.domains import DomainConfig
from gateway.control.handlers import ApiConfig
from gateway.control.service import ServiceConfig
from gateway.core.admission import AdmissionConfig
from gateway.core.netpolicy import IPNetwork
from gateway.core.planner import PlannerConfig
from gateway.core.tokens import TokenSigner
from gateway.edge.config import EdgeConfig, HeadLimits, RelayLimits
from gateway.edge.guard import EdgeGuard, GuardLimits
from gateway.edge.handler import EdgeHandler
from gateway.edge.holds import StartupHolds
from gateway.edge.pool import UpstreamPool
from gateway.edge.server import EdgeServer
from gateway.edge.starting import Starting
from gateway.edge.wake import Waker
from gateway.edge.ws_hub import WebSocketHub, WsLimits
from gateway.edge.ws_readmit import Readmission
from gateway.ops.memory import MemoryWatch
from gateway.ops.metrics import Metrics, StatsCollector
from gateway.ops.settings import Settings
from gateway.store.base import RouteSource, Store
from gateway.store.lookup import RouteLookup
from gateway.store.memory import MemoryStore

L = TypeVar("L")


def allowed_targets(settings: Settings, extra: list[str] | None = None) -> list[IPNetwork]:
    return [*settings.allowed_targets, *(ipaddress.ip_network(n) for n in extra or [])]


def build_lookup(settings: Settings, store: RouteSource) -> RouteLookup:
    lookup = RouteLookup(
        store,
        timeout_s=settings.redis_timeout_s,
        ttl_s=settings.cache_ttl_s,
        negative_ttl_s=settings.cache_negative_ttl_s,
        stale_grace_s=settings.cache_stale_grace_s,
        private_stale_grace_s=settings.private_stale_grace_s,
        max_entries=settings.cache_max_entries,
        preview_domain=settings.preview_domain,
    )
    if isinstance(store, MemoryStore):
        store.on_write(lookup.invalidate)
    return lookup


def upstream_pool(
    settings: Settings, allowed: list[IPNetwork], *, websocket: bool = False
) -> UpstreamPool:
    """WebSockets hold their upstream connection for their whole life, so they get a pool of
    their own, without a per-sandbox limit: in the HTTP pool they would take the per-sandbox
    slots that keep one busy sandbox from starving requests to the same port."""
    total = settings.upstream_max_connections
    return UpstreamPool(
        allowed=allowed,
        denied=settings.deny_target_nets,
        max_connections=total,
        max_per_target=total if websocket else settings.upstream_max_connections_per_target,
        connect_timeout_s=settings.upstream_connect_timeout_s,
        queue_per_target=settings.upstream_queue_per_target,
        queue_timeout_s=settings.upstream_queue_timeout_s,
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
            min_upload_rate=settings.min_upload_rate,
            upload_window_s=settings.min_upload_rate_window_s,
        ),
        admission=admission,
        public_scheme=settings.effective_public_scheme,
        guard=from_settings(GuardLimits, settings),
    )


def api_config(settings: Settings, allowed: list[IPNetwork]) -> ApiConfig:
    return ApiConfig(
        rules=ServiceConfig(
            preview_domain=settings.preview_domain,
            region=settings.region,
            blocked_ports=settings.blocked_ports(),
            allowed_targets=allowed,
            token_max_lifetime_s=settings.token_max_lifetime_s,
            denied_targets=settings.deny_target_nets,
        ),
        public_scheme=settings.effective_public_scheme,
        public_port=settings.effective_public_port,
        domains=DomainConfig.from_settings(settings),
    )


def from_settings(cls: type[L], settings: Settings) -> L:
    """A limits dataclass whose fields are named as the settings they are read from."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**settings.model_dump(include=names))


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
        head_limits=from_settings(HeadLimits, settings),
    )


def starting_for(settings: Settings, store: Store, pool: UpstreamPool) -> Starting:
    holds = StartupHolds.on_pool(pool)
    secret = settings.wake_secret.get_secret_value().encode() if settings.wake_secret else None
    return Starting(holds, Waker(store, holds, secret), settings.upstream_startup_wait_s)


def metrics_for(
    lookup: RouteLookup,
    store: Store,
    hub: WebSocketHub,
    edge: tuple[EdgeGuard, MemoryWatch, Starting],
) -> Metrics:
    guard, memory, starting = edge
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
                "gateway_limit_refusals": ("code", guard.refused),
                "gateway_wakes": ("outcome", starting.waker.stats),
            },
            gauges=lambda: {
                "gateway_websockets_open": hub.open_count,
                "gateway_memory_resident_bytes": memory.rss_bytes,
                "gateway_requests_held": starting.holds.held,
            },
        )
    )
    return metrics


def edge_handler(
    settings: Settings,
    allowed: list[IPNetwork],
    store: Store,
    lookup: RouteLookup,
    admission: AdmissionConfig,
) -> tuple[EdgeHandler, Metrics, MemoryWatch]:
    """The edge's request handler with its pools, WebSocket hub, guard and holds, and the
    metrics and the memory budget (``app`` runs its task)."""
    pool = upstream_pool(settings, allowed)
    ws_pool = upstream_pool(settings, allowed, websocket=True)
    limits = ws_limits(settings)
    hub = WebSocketHub(Readmission(lookup.find, admission), close_timeout_s=limits.close_timeout_s)
    lookup.add_listener(hub.on_invalidation)
    starting = starting_for(settings, store, pool)
    config = edge_config(settings, allowed, admission)
    memory = MemoryWatch(settings.memory_limit_mib)
    guard = EdgeGuard(config.guard, config.trusted_proxies, memory.pressure)
    metrics = metrics_for(lookup, store, hub, (guard, memory, starting))
    ws = (ws_pool, limits, hub)
    handler = EdgeHandler(
        config, planner_config(config), lookup, pool, ws, metrics.observe, guard, starting
    )
    return handler, metrics, memory
