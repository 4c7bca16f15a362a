"""Idle WebSocket capacity (threat model D06, D13, goal 9): ``python -m bench.capacity``.

``--gateways`` gateway processes (protocol edge), each relaying ``--sockets`` idle WebSockets
to one cheap echo upstream (``bench.ws_echo``, its own process), opened from this process with
a raw client (``bench.ws_load.EchoClient``, 200 handshakes in flight per gateway). One relayed
socket costs the gateway 2 fds, so with this machine's 20,000-fd limit one process cannot hold
10,000: the default is 2 x 5,000. Each of ``--cycles`` cycles opens every socket, reads each
gateway's RSS and fds, sends one echo on every socket, closes them all and reads again once the
fds have settled. Writes ``bench/results/capacity.json``.

The gateway's ping interval is raised (``GATEWAY_WS_PING_INTERVAL_S``) because the raw client
does not answer pings; idle sockets then cost what they cost between pings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import gw
from bench.cli import raise_fd_limit
from bench.procs import PYTHON, REPO, Child, fd_count, free_port, status_kib, wait_tcp
from bench.ws_load import CLOSE, Counter, EchoClient, upgrade_request

OUT = REPO / "bench" / "results"
IN_FLIGHT = 200


async def rss_mib(pid: int) -> float:
    """Median of five samples 50 ms apart (one read can catch a transient buffer)."""
    values = []
    for _ in range(5):
        values.append(status_kib(pid)["VmRSS"])
        await asyncio.sleep(0.05)
    return round(sorted(values)[2] / 1024, 1)


async def open_sockets(port: int, host: str, count: int, counter: Counter) -> list[EchoClient]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(IN_FLIGHT)
    clients: list[EchoClient] = []

    async def one() -> None:
        async with gate:
            upgraded: asyncio.Future[None] = loop.create_future()
            _, client = await loop.create_connection(
                functools.partial(EchoClient, 1, counter, upgraded), "127.0.0.1", port
            )
            clients.append(client)
            assert client.transport is not None
            client.transport.write(upgrade_request(host))
            await upgraded

    await asyncio.gather(*(one() for _ in range(count)))
    return clients


async def settle_fds(pid: int, target: int, deadline_s: float = 30.0) -> int:
    """Polls the fd count until it is within 10 of ``target`` or the deadline passes."""
    stop = time.monotonic() + deadline_s
    while (fds := fd_count(pid)) > target + 10 and time.monotonic() < stop:
        await asyncio.sleep(0.2)
    return fds


async def cycle(gateways: list[gw.Gateway], sockets: int, base: list[dict[str, float]]) -> Any:
    counter = Counter(sending=False)
    started = time.perf_counter()
    opened = await asyncio.gather(
        *(open_sockets(g.edge_port, g.hostname, sockets, counter) for g in gateways)
    )
    open_s = time.perf_counter() - started
    await asyncio.sleep(1.0)  # the relays settle into idle
    held = [{"rss_mib": await rss_mib(g.pid), "fds": fd_count(g.pid)} for g in gateways]
    clients = [c for group in opened for c in group]
    started = time.perf_counter()
    for client in clients:
        client.start()  # one 32-byte text frame each; sending=False: no second one
    async with asyncio.timeout(120):
        while counter.echoed < len(clients):
            await asyncio.sleep(0.01)
    echo_s = time.perf_counter() - started
    for client in clients:
        assert client.transport is not None
        client.transport.write(CLOSE)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60):
            await asyncio.gather(*(c.closed for c in clients))
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    after = []
    for g, b in zip(gateways, base, strict=True):
        fds = await settle_fds(g.pid, int(b["fds"]))
        after.append({"rss_mib": await rss_mib(g.pid), "fds": fds})
    total = sockets * len(gateways)
    return {
        "sockets": total,
        "open_s": round(open_s, 2),
        "opens_per_s": round(total / open_s),
        "echo_all_s": round(echo_s, 3),
        "held": held,
        "kib_per_socket": [
            round((h["rss_mib"] - b["rss_mib"]) * 1024 / sockets, 1)
            for h, b in zip(held, base, strict=True)
        ],
        "after_close": after,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "capacity-logs"
    work.mkdir(exist_ok=True)
    echo_port = free_port()
    echo = Child("ws_echo", [str(PYTHON), "-m", "bench.ws_echo", "--port", str(echo_port)], work)
    gateways: list[gw.Gateway] = []
    try:
        wait_tcp(echo_port, echo)
        env = gw.pool_env(args.sockets) | {
            "GATEWAY_WS_PING_INTERVAL_S": "3600",
        }
        for i in range(args.gateways):
            gateways.append(gw.start(echo_port, work, f"gateway{i}", extra_env=env))
        # Warm-up: first-use imports and the upstream pool are not charged to idle sockets.
        warm = Counter(sending=False)
        for g in gateways:
            clients = await open_sockets(g.edge_port, g.hostname, 20, warm)
            for client in clients:
                assert client.transport is not None
                client.transport.write(CLOSE)
            await asyncio.gather(*(c.closed for c in clients))
        await asyncio.sleep(1.0)
        base = [{"rss_mib": await rss_mib(g.pid), "fds": fd_count(g.pid)} for g in gateways]
        cycles = []
        for i in range(args.cycles):
            result = await cycle(gateways, args.sockets, base)
            print(f"cycle {i + 1}: {json.dumps(result)}", flush=True)
            cycles.append(result)
        return {
            "gateways": args.gateways,
            "sockets_per_gateway": args.sockets,
            "baseline": base,
            "cycles": cycles,
        }
    finally:
        for g in gateways:
            g.child.stop()
        echo.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--sockets", type=int, default=5000, help="per gateway")
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args(argv)
    raise_fd_limit(2 * args.gateways * args.sockets + 1024)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args))
    Path(OUT / "capacity.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
