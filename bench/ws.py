"""WebSocket scenarios: sequential echo round trips, and memory held per idle relayed socket."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

import aiohttp

from bench.procs import fd_count, status_kib

PAYLOAD = "x" * 32  # an HMR-sized message: the cost measured is per message, not per byte


async def echo_round_trips(
    session: aiohttp.ClientSession,
    port: int,
    host: str,
    *,
    connections: int,
    trips_per_connection: int,
) -> dict[str, float]:
    """Each connection sends one message and waits for its echo before the next, so the rate is
    the inverse of the full round-trip latency through the relay (both directions)."""
    url = f"http://127.0.0.1:{port}/ws"

    async def one() -> float:
        async with session.ws_connect(url, headers={"Host": host}, heartbeat=None) as ws:
            started = time.perf_counter()
            for _ in range(trips_per_connection):
                await ws.send_str(PAYLOAD)
                msg = await ws.receive(timeout=10)
                if msg.type is not aiohttp.WSMsgType.TEXT or msg.data != PAYLOAD:
                    raise RuntimeError(f"echo: unexpected {msg.type} {str(msg.data)[:80]!r}")
            return time.perf_counter() - started

    started = time.perf_counter()
    async with asyncio.timeout(120):
        await asyncio.gather(*(one() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    total = connections * trips_per_connection
    return {
        "connections": connections,
        "round_trips": total,
        "seconds": round(elapsed, 3),
        "rt_per_s": round(total / elapsed, 1),
        "mean_rtt_ms": round(elapsed / trips_per_connection * 1000, 3),
    }


async def _rss_median_kib(pid: int, samples: int = 5) -> int:
    values = []
    for _ in range(samples):
        values.append(status_kib(pid)["VmRSS"])
        await asyncio.sleep(0.05)
    return int(statistics.median(values))


async def idle_memory(
    session: aiohttp.ClientSession,
    port: int,
    host: str,
    proxy_pid: int,
    *,
    count: int,
    in_flight: int = 100,
) -> dict[str, float]:
    """Open ``count`` sockets through the proxy (``in_flight`` handshakes at a time), let them
    sit idle, read the proxy's RSS and fds, close them all, and read again.

    The per-socket figure is (RSS held - RSS before) / count. The baseline is taken after a few
    warm-up sockets were opened and closed, so one-off costs (imports on first use, the upstream
    pool) are not charged to the idle sockets.
    """
    url = f"http://127.0.0.1:{port}/ws"
    for _ in range(5):
        async with session.ws_connect(url, headers={"Host": host}, heartbeat=None) as ws:
            await ws.send_str("warm")
            await ws.receive(timeout=10)
    await asyncio.sleep(0.5)
    rss_before = await _rss_median_kib(proxy_pid)
    fds_before = fd_count(proxy_pid)

    sockets: list[aiohttp.ClientWebSocketResponse] = []
    gate = asyncio.Semaphore(in_flight)

    async def open_one() -> None:
        async with gate:
            sockets.append(await session.ws_connect(url, headers={"Host": host}, heartbeat=None))

    try:
        started = time.perf_counter()
        async with asyncio.timeout(120):
            await asyncio.gather(*(open_one() for _ in range(count)))
        open_s = time.perf_counter() - started
        await asyncio.sleep(1.0)  # let the relay tasks settle into their idle receive()
        rss_held = await _rss_median_kib(proxy_pid)
        fds_held = fd_count(proxy_pid)
        # Prove every socket still relays (one echo each); message buffers may grow RSS a bit,
        # which is why it is read again afterwards.
        started = time.perf_counter()
        async with asyncio.timeout(60):
            await asyncio.gather(*(_echo_once(ws) for ws in sockets))
        echo_all_s = time.perf_counter() - started
        await asyncio.sleep(0.5)
        rss_after_echo = await _rss_median_kib(proxy_pid)
    finally:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    await asyncio.sleep(1.0)
    rss_after = await _rss_median_kib(proxy_pid)
    fds_after = fd_count(proxy_pid)
    return {
        "sockets": count,
        "open_s": round(open_s, 2),
        "opens_per_s": round(count / open_s, 1),
        "echo_all_s": round(echo_all_s, 3),
        "rss_before_mib": round(rss_before / 1024, 1),
        "rss_held_mib": round(rss_held / 1024, 1),
        "rss_after_echo_mib": round(rss_after_echo / 1024, 1),
        "rss_after_close_mib": round(rss_after / 1024, 1),
        "kib_per_socket": round((rss_held - rss_before) / count, 1),
        "kib_per_socket_after_echo": round((rss_after_echo - rss_before) / count, 1),
        "fds_before": fds_before,
        "fds_held": fds_held,
        "fds_after_close": fds_after,
    }


async def _echo_once(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.send_str("ping")
    msg = await ws.receive(timeout=30)
    if msg.type is not aiohttp.WSMsgType.TEXT:
        raise RuntimeError(f"idle socket did not echo: {msg.type}")
