"""Orchestration: start the app and nginx once, run each scenario against direct, nginx and the
gateway back to back, and write the results.

The gateway is started fresh for every scenario. Its RSS and VmHWM then describe that scenario
alone: after a 1 GiB transfer the allocator keeps freed arenas, which would hide the next
scenario's growth, and an earlier scenario's peak would mask the next one's in VmHWM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import gw, nginx, report, sse, transfer, wrk, ws
from bench.procs import (
    PYTHON,
    REPO,
    Child,
    CpuLedger,
    RssSampler,
    cpu_seconds,
    free_port,
    wait_http_ok,
)
from bench.rounds import REPEATED, merge_rounds

SCENARIOS = (
    "http",
    "http_paced",
    "download",
    "upload",
    "sse",
    "sse_loaded",
    "ws_echo_1",
    "ws_echo_n",
    "ws_idle",
)


@dataclass
class Target:
    name: str
    port: int
    host: str  # Host header to send
    pid: int  # the process whose memory is charged: the app (direct) or the proxy
    process: str


class Bench:
    def __init__(self, args: argparse.Namespace, work_dir: Path) -> None:
        self.args = args
        self.work_dir = work_dir
        self.children: list[Child] = []
        self.nginx_bin = nginx.binary()
        self.wrk_bin = wrk.binary()
        self.upstream_port = 0
        self.nginx_port = 0
        self.nginx_worker = 0
        self.gateway_starts = 0
        self.gateway_src = REPO
        self.gateway_env: dict[str, str] = {}
        self.ledger = CpuLedger()

    # ── processes ───────────────────────────────────────────────────────────────────────────
    def start_fixed(self) -> None:
        self.upstream_port = free_port()
        app = Child(
            "upstream",
            [str(PYTHON), "-m", "bench.upstream", "--port", str(self.upstream_port)],
            self.work_dir,
        )
        self.children.append(app)
        wait_http_ok(f"http://127.0.0.1:{self.upstream_port}/small", app)
        self.upstream_pid = app.pid
        if self.nginx_bin:
            self.nginx_port = free_port()
            master = nginx.start(self.nginx_bin, self.nginx_port, self.upstream_port, self.work_dir)
            self.children.append(master)
            self.nginx_worker = nginx.worker_pid(master)
        self.ledger.live_pids = [c.pid for c in self.children] + (
            [self.nginx_worker] if self.nginx_worker else []
        )

    def stop_all(self) -> None:
        # Reverse order: proxies before the app they proxy to.
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                child.stop()
        self.children.clear()

    @contextlib.asynccontextmanager
    async def target(self, name: str) -> AsyncIterator[Target]:
        if name == "direct":
            host = f"127.0.0.1:{self.upstream_port}"
            yield Target(name, self.upstream_port, host, self.upstream_pid, "app")
        elif name == "nginx":
            if not self.nginx_bin:
                raise RuntimeError("nginx is not installed")
            host = f"127.0.0.1:{self.nginx_port}"
            yield Target(name, self.nginx_port, host, self.nginx_worker, "nginx worker")
        else:
            self.gateway_starts += 1
            gateway = gw.start(
                self.upstream_port,
                self.work_dir,
                name=f"gateway-{self.gateway_starts}",
                src=self.gateway_src,
                extra_env=self.gateway_env,
            )
            self.children.append(gateway.child)
            try:
                yield Target(name, gateway.edge_port, gateway.hostname, gateway.pid, "gateway")
            except Exception:
                print(f"  ! gateway log tail:\n{gateway.child.tail()}", file=sys.stderr)
                raise
            finally:
                gateway.child.stop()
                self.children.remove(gateway.child)
                if gateway.child.proc.returncode not in (0, None):
                    print(
                        f"  ! gateway exited with {gateway.child.proc.returncode}:\n"
                        f"{gateway.child.tail()}",
                        file=sys.stderr,
                    )

    def session(self) -> aiohttp.ClientSession:
        # limit=0: each open WebSocket holds a pool slot, and the idle test holds a thousand.
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    # ── scenarios ───────────────────────────────────────────────────────────────────────────
    def _wrk(self, t: Target, *, paced: bool, duration_s: float) -> wrk.WrkRun:
        if not self.wrk_bin:
            raise RuntimeError("wrk is not installed")
        a = self.args
        if paced:
            connections = a.paced_connections
            delay = connections * 1000 / a.paced_rate
        else:
            connections, delay = a.wrk_connections, None
        return wrk.command(
            self.wrk_bin,
            f"http://127.0.0.1:{t.port}/small",
            t.host,
            connections=connections,
            duration_s=duration_s,
            delay_ms=delay,
            work_dir=self.work_dir,
        )

    async def http(self, t: Target, *, paced: bool = False) -> dict[str, Any]:
        # A short warm-up fills the gateway's upstream pool and the route cache first.
        await self._wrk(t, paced=False, duration_s=1).run()
        cpu = cpu_seconds(t.pid)
        result = await self._wrk(t, paced=paced, duration_s=self.args.wrk_s).run()
        cpu = cpu_seconds(t.pid) - cpu
        result["cpu_us_per_req"] = round(cpu / max(1, result.get("requests", 0)) * 1e6, 1)
        return {"process": t.process, **result}

    async def _transfer(self, t: Target, fn: Callable[..., transfer.Transfer]) -> dict[str, Any]:
        size = self.args.transfer_mib << 20
        cpu = cpu_seconds(t.pid)
        async with RssSampler(t.pid) as sampler:
            done = await asyncio.to_thread(fn, t.port, t.host, size, self.args.transfer_deadline_s)
        cpu = cpu_seconds(t.pid) - cpu
        return {
            "process": t.process,
            "bytes": done.body_bytes,
            "seconds": round(done.seconds, 3),
            "mib_s": round(done.mib_s, 1),
            "cpu_s_per_gib": round(cpu / (size / (1 << 30)), 2),
            **({"note": done.note} if done.note else {}),
            **sampler.summary(),
        }

    async def download(self, t: Target) -> dict[str, Any]:
        return await self._transfer(t, transfer.download)

    async def upload(self, t: Target) -> dict[str, Any]:
        return await self._transfer(t, transfer.upload)

    async def sse(self, t: Target, *, loaded: bool = False) -> dict[str, Any]:
        a = self.args
        async with self.session() as session:
            if not loaded:
                return await sse.measure(session, t.port, t.host, a.sse_events, a.sse_interval_ms)
            # wrk saturates the same target for the whole SSE run, plus a margin either side.
            duration = a.sse_events * a.sse_interval_ms / 1000 + 2
            load_task = asyncio.create_task(self._wrk(t, paced=False, duration_s=duration).run())
            try:
                await asyncio.sleep(1.0)
                result = await sse.measure(session, t.port, t.host, a.sse_events, a.sse_interval_ms)
            finally:
                load = await load_task
            result["background_rps"] = load["rps"]
            return result

    async def ws_echo(self, t: Target, *, connections: int, trips: int) -> dict[str, Any]:
        async with self.session() as session:
            cpu = cpu_seconds(t.pid)
            result = await ws.echo_round_trips(
                session, t.port, t.host, connections=connections, trips_per_connection=trips
            )
            cpu = cpu_seconds(t.pid) - cpu
        # Both directions cross the proxy: one round trip is two relayed messages.
        result["cpu_us_per_rt"] = round(cpu / result["round_trips"] * 1e6, 1)
        return {"process": t.process, **result}

    async def ws_idle(self, t: Target) -> dict[str, Any]:
        async with self.session() as session:
            result = await ws.idle_memory(session, t.port, t.host, t.pid, count=self.args.idle_ws)
        return {"process": t.process, **result}

    def env_for(self, scenario: str) -> dict[str, str]:
        """Gateway settings that differ from the defaults, per scenario: the pool limits of
        ``ws_idle`` only (see ``gw.pool_env`` and docs/benchmarks.md)."""
        return gw.pool_env(self.args.idle_ws) if scenario == "ws_idle" else {}

    def plan(self) -> dict[str, tuple[str, Callable[[Target], Awaitable[dict[str, Any]]]]]:
        a = self.args
        paced_delay = a.paced_connections * 1000 / a.paced_rate
        echo_n = max(1, a.ws_trips // a.ws_connections)
        return {
            "http": (f"wrk -t1 -c{a.wrk_connections} -d{a.wrk_s}s", self.http),
            "http_paced": (
                f"wrk -t1 -c{a.paced_connections} -d{a.wrk_s}s, {paced_delay:g} ms delay per "
                f"connection: ≤ {a.paced_rate} req/s offered",
                lambda t: self.http(t, paced=True),
            ),
            "download": (f"{a.transfer_mib} MiB", self.download),
            "upload": (f"{a.transfer_mib} MiB", self.upload),
            "sse": (f"{a.sse_events} events every {a.sse_interval_ms:g} ms", self.sse),
            "sse_loaded": (
                f"{a.sse_events} events every {a.sse_interval_ms:g} ms while wrk "
                f"-c{a.wrk_connections} saturates the same target",
                lambda t: self.sse(t, loaded=True),
            ),
            "ws_echo_1": (
                f"{a.ws_trips} sequential round trips of 32 bytes",
                lambda t: self.ws_echo(t, connections=1, trips=a.ws_trips),
            ),
            "ws_echo_n": (
                f"{a.ws_connections} connections x {echo_n} sequential round trips",
                lambda t: self.ws_echo(t, connections=a.ws_connections, trips=echo_n),
            ),
            "ws_idle": (
                f"{a.idle_ws} sockets; gateway upstream pool limits raised to "
                f"{max(4096, a.idle_ws + 64)}",
                self.ws_idle,
            ),
        }

    async def run(self, chosen: list[str]) -> dict[str, Any]:
        plan = self.plan()
        out: dict[str, Any] = {}
        for key in chosen:
            detail, fn = plan[key]
            rounds = self.args.rounds if key in REPEATED else 1
            if rounds > 1:
                detail += f"; median of {rounds} interleaved rounds"
            print(f"== {key}: {detail}", flush=True)
            self.gateway_env = self.env_for(key)
            load_before = self.ledger.snapshot()
            raw: dict[str, list[dict[str, Any]]] = {name: [] for name in report.TARGETS}
            # Rounds go direct, nginx, gateway, direct, ...: a burst of load from a neighbour
            # then hits every target in turn instead of one target's whole measurement.
            for r in range(rounds):
                for name in report.TARGETS:
                    started = time.monotonic()
                    try:
                        async with self.target(name) as t:
                            result = await fn(t)
                    except Exception as exc:
                        result = {"error": f"{type(exc).__name__}: {exc}"}
                    raw[name].append(result)
                    print(
                        f"   {r + 1}/{rounds} {name:8} {time.monotonic() - started:5.1f}s {result}",
                        flush=True,
                    )
                    await asyncio.sleep(self.args.pause_s)  # let TIME_WAIT and CPU settle
            results = {name: merge_rounds(runs) for name, runs in raw.items()}
            load = CpuLedger.share(load_before, self.ledger.snapshot())
            print(f"   machine share: {load}", flush=True)
            out[key] = {"detail": detail, "results": results, "load": load, "rounds": raw}
        return out
