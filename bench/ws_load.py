"""WebSocket echo throughput: messages per second relayed, with a cheap raw client.

Each of ``connections`` sockets keeps ``window`` 32-byte messages in flight: every echo that
comes back is answered by the next message, in the same write when several arrive together.
The client is an ``asyncio.Protocol`` with one pre-masked frame (the mask is fixed: servers do
not check it, and the proxies relay frames without looking at the key), so it spends little of
its core; the figure is messages echoed per second, each crossing the proxy twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import time
from dataclasses import dataclass
from typing import cast

from bench.procs import cpu_seconds
from bench.ws_echo import parse_frame

PAYLOAD = b"x" * 32
MASK = b"\x01\x02\x03\x04"
FRAME = (
    bytes((0x81, 0x80 | len(PAYLOAD)))
    + MASK
    + bytes(b ^ MASK[i % 4] for i, b in enumerate(PAYLOAD))
)
CLOSE = bytes((0x88, 0x82)) + MASK + bytes(b ^ MASK[i] for i, b in enumerate(b"\x03\xe8"))


def upgrade_request(host: str, path: str = "/ws", extra: dict[str, str] | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in (extra or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Counter:
    echoed: int = 0
    sending: bool = True


class EchoClient(asyncio.Protocol):
    def __init__(self, window: int, counter: Counter, upgraded: asyncio.Future[None]) -> None:
        self.window = window
        self.counter = counter
        self.upgraded = upgraded
        self.in_flight = 0
        self.buf = bytearray()
        self.head_done = False
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def start(self) -> None:
        assert self.transport is not None
        self.in_flight = self.window
        self.transport.write(FRAME * self.window)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buf[:end]).split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                self.upgraded.set_exception(RuntimeError(f"upgrade answered {status!r}"))
                return
            del self.buf[: end + 4]
            self.head_done = True
            self.upgraded.set_result(None)
        got = 0
        while (parsed := parse_frame(self.buf)) is not None:
            first, _payload, end = parsed
            del self.buf[:end]
            if first & 0x0F == 0x1:  # text: one of our echoes (pings from a proxy are skipped)
                got += 1
        if got:
            self.in_flight -= got
            self.counter.echoed += got
            if self.counter.sending:
                assert self.transport is not None
                self.transport.write(FRAME * got)
                self.in_flight += got

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed before the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)


async def echo_throughput(
    port: int, host: str, *, connections: int, window: int, duration_s: float, cpu_pid: int = 0
) -> dict[str, float]:
    """Messages echoed per second over ``duration_s``, after a short warm-up; with ``cpu_pid``,
    also that process's CPU µs per message over the same window."""
    loop = asyncio.get_running_loop()
    counter = Counter()
    clients: list[EchoClient] = []
    try:
        async with asyncio.timeout(30):
            for _ in range(connections):
                upgraded: asyncio.Future[None] = loop.create_future()
                _, client = await loop.create_connection(
                    functools.partial(EchoClient, window, counter, upgraded), "127.0.0.1", port
                )
                assert client.transport is not None
                client.transport.write(upgrade_request(host))
                await upgraded
                clients.append(client)
        for client in clients:
            client.start()
        await asyncio.sleep(min(1.0, duration_s / 4))  # warm-up: pools, caches, TCP windows
        cpu = cpu_seconds(cpu_pid) if cpu_pid else 0.0
        start_count, started = counter.echoed, time.perf_counter()
        await asyncio.sleep(duration_s)
        echoed, elapsed = counter.echoed - start_count, time.perf_counter() - started
        cpu = cpu_seconds(cpu_pid) - cpu if cpu_pid else 0.0
        counter.sending = False
    finally:
        for client in clients:
            if client.transport is not None and not client.transport.is_closing():
                client.transport.write(CLOSE)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*(c.closed for c in clients), return_exceptions=True)
        for client in clients:
            if client.transport is not None:
                client.transport.abort()
    if not echoed:
        raise RuntimeError("no message was echoed")
    return {
        "connections": connections,
        "window": window,
        "messages": echoed,
        "seconds": round(elapsed, 3),
        "msg_per_s": round(echoed / elapsed, 1),
        **({"cpu_us_per_msg": round(cpu / echoed * 1e6, 2)} if cpu_pid else {}),
    }
