"""Server-sent events: how long after the app wrote an event does the client see it?

The app stamps each event with ``time.monotonic_ns()`` right before writing it; the client
subtracts that from its own ``time.monotonic_ns()`` when the ``data:`` line arrives. Both run on
this host, and CLOCK_MONOTONIC is one clock for all processes, so no synchronisation is needed.
The delay includes the client's own parsing; that cost is the same for every target.
"""

from __future__ import annotations

import math
import time

import aiohttp


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: an observed value, never an interpolation."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


async def measure(
    session: aiohttp.ClientSession, port: int, host: str, count: int, interval_ms: float
) -> dict[str, float]:
    delays_ms: list[float] = []
    timeout = aiohttp.ClientTimeout(total=count * interval_ms / 1000 + 30)
    url = f"http://127.0.0.1:{port}/sse?n={count}&interval_ms={interval_ms:g}"
    async with session.get(url, headers={"Host": host}, timeout=timeout) as resp:
        if resp.status != 200:
            raise RuntimeError(f"SSE answered {resp.status}")
        async for line in resp.content:
            if line.startswith(b"data: "):
                sent_ns = int(line[6:])
                delays_ms.append((time.monotonic_ns() - sent_ns) / 1e6)
    if len(delays_ms) != count:
        raise RuntimeError(f"SSE: received {len(delays_ms)} of {count} events")
    return {
        "events": len(delays_ms),
        "p50_ms": round(percentile(delays_ms, 50), 3),
        "p99_ms": round(percentile(delays_ms, 99), 3),
        "max_ms": round(max(delays_ms), 3),
        "over_50ms": sum(d > 50 for d in delays_ms),
    }
