"""Abuse limits as pure decisions: concurrency caps per key, a token bucket per key, the memory
budget's levels, and the upload progress rule. No I/O, no clock: callers pass ``now``.

The edge keeps one ``Caps`` per dimension (client IP, preview, and their WebSocket twins); the
counts are exact because every acquire is paired with a release in a ``finally`` or a done
callback. Keys whose count drops to zero are deleted, so the maps hold only live keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum


class Caps:
    """At most ``limit`` concurrent holders per key; ``limit`` 0 means no cap."""

    __slots__ = ("_counts", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        """Take a slot for ``key``; False (and nothing taken) when the key is at its cap."""
        count = self._counts.get(key, 0)
        if self.limit and count >= self.limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: str) -> None:
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)

    def __len__(self) -> int:
        return len(self._counts)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key: ``rate`` tokens a second, at most ``burst`` saved up. ``rate`` 0
    means no limit. Full buckets carry no information, so when more than ``max_keys`` are held
    the full ones are forgotten first (a flood of distinct keys cannot grow the map without
    bound)."""

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, now: float) -> float:
        """Spend one token for ``key``: 0.0 when allowed, else the seconds until one is due."""
        if not self.rate:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            elapsed = max(now - bucket.updated, 0.0)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        full = [
            key
            for key, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()  # all busy: forgetting errs on the side of serving

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(seconds: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))


class Pressure(IntEnum):
    """How close the process is to its memory budget; each level refuses more."""

    NONE = 0
    WEBSOCKETS = 1
    """At 90 %: new WebSockets get 503 (each holds buffers for its whole life)."""
    REQUESTS = 2
    """At 95 %: new requests get 503 as well."""


WEBSOCKET_SHARE = 0.90
REQUEST_SHARE = 0.95


def memory_pressure(rss_bytes: int, limit_bytes: int) -> Pressure:
    """The level for this resident set size; ``limit_bytes`` 0 means no budget."""
    if not limit_bytes:
        return Pressure.NONE
    if rss_bytes >= limit_bytes * REQUEST_SHARE:
        return Pressure.REQUESTS
    if rss_bytes >= limit_bytes * WEBSOCKET_SHARE:
        return Pressure.WEBSOCKETS
    return Pressure.NONE


def upload_too_slow(received: int, window_s: float, min_rate: int) -> bool:
    """Did a request body bring fewer than ``min_rate`` bytes a second over a whole window?
    ``min_rate`` 0 disables the rule."""
    return bool(min_rate) and received < min_rate * window_s
