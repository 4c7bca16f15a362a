"""Soak: mixed traffic through one gateway for a while, ``python -m bench.soak [--duration S]``.

Ten minutes by default (``--duration 60`` for a short run). One gateway process (protocol
edge) in front of ``bench.upstream``, with a public and a private preview of it; concurrent
workers loop until the end:

* 4 x ``GET /small`` on the public preview (200, the 13-byte body);
* 2 x ``GET /small`` on the private preview with a token (200), and without one (401);
* 1 x ``POST /upload`` of 1 MiB (the app's byte count must match);
* 2 x a WebSocket: open, 20 echoes, close.

Every answer is checked; anything else counts as an error. The gateway's RSS and fds are
sampled every ``--sample`` seconds. RSS is flat when the median of the last fifth of the run is
within 5 % (at least 4 MiB) of the median of the second fifth (the first is warm-up). Exit 0 when
there were no errors, RSS stayed flat and the fds came back. Writes ``bench/results/soak.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bench import gw
from bench.procs import PYTHON, REPO, Child, fd_count, free_port, status_kib, wait_tcp

OUT = REPO / "bench" / "results"
UPLOAD = b"u" * (1 << 20)
SMALL = b"hello, bench\n"


class Soak:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        gateway: gw.Gateway,
        private: str,
        token: str,
        until: float,
    ) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{gateway.edge_port}"
        self.public = gateway.hostname
        self.private = private
        self.token = token
        self.until = until
        self.ok: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    async def loop(self, name: str, step: Callable[[], Awaitable[bool]]) -> None:
        while time.monotonic() < self.until:
            try:
                good = await step()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.errors[f"{name}: {type(exc).__name__}"] += 1
                continue
            if good:
                self.ok[name] += 1
            else:
                self.errors[name] += 1

    async def get_public(self) -> bool:
        async with self.session.get(self.base + "/small", headers={"Host": self.public}) as r:
            return r.status == 200 and await r.read() == SMALL

    async def get_private(self) -> bool:
        headers = {"Host": self.private, "X-Blaxel-Preview-Token": self.token}
        async with self.session.get(self.base + "/small", headers=headers) as r:
            allowed = r.status == 200 and await r.read() == SMALL
        async with self.session.get(self.base + "/small", headers={"Host": self.private}) as r:
            await r.read()
            return allowed and r.status == 401

    async def upload(self) -> bool:
        async with self.session.post(
            self.base + "/upload", data=UPLOAD, headers={"Host": self.public}
        ) as r:
            return r.status == 200 and (await r.json())["bytes"] == len(UPLOAD)

    async def websocket(self) -> bool:
        async with self.session.ws_connect(
            self.base + "/ws", headers={"Host": self.public}, heartbeat=None
        ) as ws:
            for i in range(20):
                await ws.send_str(f"m{i}")
                msg = await ws.receive(timeout=10)
                if msg.type != aiohttp.WSMsgType.TEXT or msg.data != f"m{i}":
                    return False
        return True


async def sample(pid: int, every_s: float, until: float, out: list[dict[str, float]]) -> None:
    started = time.monotonic()
    while time.monotonic() < until:
        out.append(
            {
                "t_s": round(time.monotonic() - started, 1),
                "rss_mib": round(status_kib(pid)["VmRSS"] / 1024, 1),
                "fds": fd_count(pid),
            }
        )
        await asyncio.sleep(every_s)


def verdict(samples: list[dict[str, float]]) -> dict[str, Any]:
    fifth = max(1, len(samples) // 5)
    early = statistics.median(s["rss_mib"] for s in samples[fifth : 2 * fifth])
    late = statistics.median(s["rss_mib"] for s in samples[-fifth:])
    return {
        "rss_early_mib": early,
        "rss_late_mib": late,
        "rss_peak_mib": max(s["rss_mib"] for s in samples),
        "rss_flat": late - early <= max(4.0, 0.05 * early),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "soak-logs"
    work.mkdir(exist_ok=True)
    port = free_port()
    app = Child("upstream", [str(PYTHON), "-m", "bench.upstream", "--port", str(port)], work)
    gateway = None
    try:
        wait_tcp(port, app)
        gateway = gw.start(port, work)
        private = gw.add_preview(gateway.api_port, "private", port, public=False)
        token = gw.mint_token(gateway.api_port, "private", lifetime_s=args.duration + 600)
        fds_start = fd_count(gateway.pid)
        until = time.monotonic() + args.duration
        samples: list[dict[str, float]] = []
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            soak = Soak(session, gateway, private, token, until)
            workers = (
                [("http", soak.get_public)] * 4
                + [("private", soak.get_private)] * 2
                + [("upload", soak.upload)]
                + [("websocket", soak.websocket)] * 2
            )
            async with asyncio.TaskGroup() as tg:
                tg.create_task(sample(gateway.pid, args.sample, until, samples))
                for name, step in workers:
                    tg.create_task(soak.loop(name, step))
        await asyncio.sleep(2.0)  # keep-alive connections closed by the session's exit
        fds_end = fd_count(gateway.pid)
        return {
            "duration_s": args.duration,
            "ok": dict(soak.ok),
            "errors": dict(soak.errors),
            "fds_start": fds_start,
            "fds_end": fds_end,
            **verdict(samples),
            "samples": samples,
        }
    finally:
        if gateway is not None:
            gateway.child.stop()
        app.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=600, help="seconds (default 600)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    (OUT / "soak.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    good = (
        not result["errors"]
        and result["rss_flat"]
        and result["fds_end"] <= result["fds_start"] + 10
    )
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
