"""What the edge is configured with, built from settings by ``app.py``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core.admission import AdmissionConfig
from gateway.core.netpolicy import IPNetwork


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """Deadlines and the body cap of one relayed request."""

    body_idle_s: float
    """The client's request body may pause this long."""
    response_s: float
    """The upstream must start its response within this after the request was sent."""
    upstream_idle_s: float
    """The upstream's response body may pause this long (0: no limit, for SSE)."""
    max_body_bytes: int


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    preview_domain: str
    trusted_proxies: Sequence[IPNetwork]
    allowed_targets: Sequence[IPNetwork]
    limits: RelayLimits
    admission: AdmissionConfig
    public_scheme: str = "http"
