"""The edge's abuse limits, counted in one place: connections per replica and per client IP,
requests in flight and WebSockets per preview and per client IP, a request rate per preview,
and the memory budget's levels.

Each refusal is a ``GatewayError`` with its status: 503 ``overloaded`` for the replica's own
limits (another replica may have room), 429 with ``Retry-After`` for one client's or one
preview's. The decisions themselves are ``core.limits``; this module keeps the counts.

Peers in ``trusted_proxies`` are exempt from the per-client-IP caps: a load balancer carries
many clients on its own address, and capping it would cap them all together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.core.errors import GatewayError, Overloaded, RateLimited, TooManyConnections
from gateway.core.limits import Caps, Pressure, RateLimiter, retry_after
from gateway.core.netpolicy import IPNetwork, is_trusted
from gateway.core.records import Route
from gateway.edge.pages import render_bytes

CAP_RETRY_AFTER_S = 1
"""Concurrency frees up as requests finish: a short ``Retry-After``."""


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """``GATEWAY_MAX_*`` and ``GATEWAY_PREVIEW_RATE_*``, named as those settings; 0 means no
    cap for each."""

    max_connections: int = 0
    max_connections_per_client_ip: int = 0
    max_connections_per_preview: int = 0
    """Requests in flight to one preview."""
    max_websockets_per_client_ip: int = 0
    max_websockets_per_preview: int = 0
    preview_rate_limit: float = 0.0
    preview_rate_burst: int = 1


def preview_key(route: Route) -> str:
    return route.preview_uid or f"{route.workspace}/{route.preview}"


class EdgeGuard:
    def __init__(
        self,
        limits: GuardLimits,
        trusted: Sequence[IPNetwork] = (),
        pressure: Callable[[], Pressure] = lambda: Pressure.NONE,
    ) -> None:
        self.limits = limits
        self._trusted = trusted
        self._pressure = pressure
        self._per_ip = Caps(limits.max_connections_per_client_ip)
        self._per_preview = Caps(limits.max_connections_per_preview)
        self._ws_per_ip = Caps(limits.max_websockets_per_client_ip)
        self._ws_per_preview = Caps(limits.max_websockets_per_preview)
        self._rate = RateLimiter(limits.preview_rate_limit, limits.preview_rate_burst)
        self.refused: dict[str, int] = {}
        """Refusals by error code, for ``/metrics``."""

    # ── client connections ──
    def admit_connection(self, peer: str, open_now: int) -> GatewayError | None:
        """None, and a slot for ``peer`` taken, or the error to answer the connection with."""
        cap = self.limits.max_connections
        if cap and open_now >= cap:
            return self._refuse(Overloaded("The gateway has too many connections open."))
        if self._exempt(peer):
            return None
        if not self._per_ip.acquire(peer):
            return self._refuse(
                TooManyConnections(
                    "Too many connections from this address.", retry_after_s=CAP_RETRY_AFTER_S
                )
            )
        return None

    def connection_closed(self, peer: str) -> None:
        if not self._exempt(peer):
            self._per_ip.release(peer)

    # ── requests ──
    def check_memory(self, *, websocket: bool) -> None:
        level = self._pressure()
        if level is Pressure.REQUESTS or (websocket and level is Pressure.WEBSOCKETS):
            raise self._refuse(Overloaded("The gateway is low on memory."))

    def enter_request(self, key: str, now: float) -> None:
        """Count a request in flight to preview ``key``; pair with ``leave_request``."""
        wait = self._rate.take(key, now)
        if wait:
            raise self._refuse(
                RateLimited(
                    "This preview is over its request rate.", retry_after_s=retry_after(wait)
                )
            )
        if not self._per_preview.acquire(key):
            raise self._refuse(
                TooManyConnections(
                    "This preview has too many requests in flight.",
                    retry_after_s=CAP_RETRY_AFTER_S,
                )
            )

    def leave_request(self, key: str) -> None:
        self._per_preview.release(key)

    # ── WebSockets ──
    def enter_websocket(self, key: str, peer: str, *, trusted_peer: bool) -> None:
        """Count an open WebSocket to preview ``key`` from ``peer``; pair with
        ``leave_websocket`` (same arguments)."""
        if not self._ws_per_preview.acquire(key):
            raise self._refuse(
                TooManyConnections(
                    "This preview has too many WebSockets open.", retry_after_s=CAP_RETRY_AFTER_S
                )
            )
        if not trusted_peer and not self._ws_per_ip.acquire(peer):
            self._ws_per_preview.release(key)
            raise self._refuse(
                TooManyConnections(
                    "Too many WebSockets from this address.", retry_after_s=CAP_RETRY_AFTER_S
                )
            )

    def leave_websocket(self, key: str, peer: str, *, trusted_peer: bool) -> None:
        self._ws_per_preview.release(key)
        if not trusted_peer:
            self._ws_per_ip.release(peer)

    # ── helpers ──
    def _exempt(self, peer: str) -> bool:
        return bool(self._trusted) and is_trusted(peer, self._trusted)

    def _refuse(self, error: GatewayError) -> GatewayError:
        self.refused[error.code] = self.refused.get(error.code, 0) + 1
        return error


SHED_LINGER_S = 2.0
"""A shed connection is aborted this long after its answer if the client has not closed."""


def shed(transport: asyncio.Transport, error: GatewayError, date: str) -> asyncio.TimerHandle:
    """Answer a connection refused at accept and half-close it. Closing outright would make the
    kernel reset it when the client's request arrives, and a reset can destroy the answer
    before the client reads it; so the client's bytes are read and dropped until it closes,
    for at most ``SHED_LINGER_S``."""
    transport.write(render_bytes(error, "", extra=date + "Connection: close\r\n"))
    if transport.can_write_eof():
        transport.write_eof()
    return asyncio.get_running_loop().call_later(SHED_LINGER_S, transport.abort)
