"""What the edge is configured with, built from settings by ``app.py``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.core import http_framing
from gateway.core.admission import AdmissionConfig
from gateway.core.netpolicy import IPNetwork
from gateway.edge.guard import GuardLimits


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """What a request head may hold before it gets 431 (``GATEWAY_MAX_HEADER_*``)."""

    max_header_line_bytes: int = http_framing.MAX_LINE_BYTES
    """The request line and each header line."""
    max_header_fields: int = http_framing.MAX_FIELDS
    max_header_bytes: int = http_framing.MAX_HEAD_BYTES


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
    min_upload_rate: int = 0
    """Bytes a second a request body must average over ``upload_window_s`` (0: no rule)."""
    upload_window_s: float = 30.0


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    preview_domain: str
    trusted_proxies: Sequence[IPNetwork]
    allowed_targets: Sequence[IPNetwork]
    limits: RelayLimits
    admission: AdmissionConfig
    public_scheme: str = "http"
    guard: GuardLimits = field(default_factory=GuardLimits)
