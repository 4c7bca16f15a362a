"""The signature on the gateway's wake call, and its check (for orchestrators and tests). Pure.

``X-Gateway-Timestamp`` holds the Unix time in seconds; ``X-Gateway-Signature`` is
``sha256=<hex>`` of HMAC-SHA256 over ``<timestamp>.<body>`` with ``GATEWAY_WAKE_SECRET``. The
timestamp is inside the MAC, so a receiver that refuses old timestamps refuses replays.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Gateway-Timestamp"
SIGNATURE_HEADER = "X-Gateway-Signature"
DEFAULT_TOLERANCE_S = 300


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: bytes,
    timestamp: str,
    signature: str,
    body: bytes,
    now: float,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> bool:
    """Whether a wake call is genuine and fresh: compared in constant time."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)
