"""The edge's components as the settings configure them: the upstream pools, the WebSocket
limits, the edge config with its abuse limits, the planner's config and the server. Read here,
next to ``listeners.py``, so that ``app.py`` only wires them together.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from gateway.core.admission import AdmissionConfig
from gateway.core.netpolicy import IPNetwork
from gateway.core.planner import PlannerConfig
from gateway.edge.config import EdgeConfig, HeadLimits, RelayLimits
from gateway.edge.guard import GuardLimits
from gateway.edge.handler import EdgeHandler
from gateway.edge.pool import UpstreamPool
from gateway.edge.server import EdgeServer
from gateway.edge.ws_hub import WsLimits
from gateway.ops.settings import Settings

L = TypeVar("L")


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
