"""Orchestration of the comparison (``python -m bench.compare``): the upstreams and nginx are
started once; the gateway is started fresh per round, and per memory scenario.

Rate scenarios run in interleaved rounds (direct, nginx, gateway..., direct, ...), so a burst
of a neighbour's load hits every target in turn; each figure is the median of its rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import compare_nginx, gw, nginx, profile, transfer, wrk, ws, ws_load
from bench.procs import (
    PYTHON,
    REPO,
    Child,
    RssSampler,
    cpu_seconds,
    free_port,
    wait_http_ok,
    wait_tcp,
)
from bench.rounds import merge_rounds

RATE = ("small", "private_header", "private_cookie", "new_conn", "large", "ws_echo")
MEMORY = ("ws_idle", "download", "upload")
SCENARIOS = RATE + MEMORY
PRIVATE = {"private_header", "private_cookie"}  # gateways only: nginx has no token check
TOKEN_HEADER = "X-Blaxel-Preview-Token"
TOKEN_COOKIE = "bl_preview_token"
Raw = dict[str, dict[str, list[dict[str, Any]]]]  # scenario -> target -> one result per round


@dataclass
class Endpoint:
    port: int
    host: str  # Host header to send
    pid: int  # the process charged for CPU and RSS: the upstream (direct) or the proxy
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Target:
    name: str
    static: Endpoint
    ws: Endpoint
    app: Endpoint
    token: str = ""  # the private preview's (gateways only)
    private_host: str = ""


def pinning() -> tuple[set[int] | None, set[int] | None]:
    """(load generator cores, server cores): 0 and 1 when both are ours, else no pinning."""
    usable = os.sched_getaffinity(0)
    if {0, 1} <= usable:
        return {0}, {1}
    print(f"  ! cores {sorted(usable)} usable: not pinning", file=sys.stderr)
    return None, None


class Compare:
    def __init__(self, args: argparse.Namespace, work_dir: Path) -> None:
        self.args = args
        self.work_dir = work_dir
        self.children: list[Child] = []
        self.load_cpus, self.server_cpus = pinning()
        self.own_cpus = os.sched_getaffinity(0)
        nginx_bin, wrk_bin = nginx.binary(), wrk.binary()
        if not nginx_bin or not wrk_bin:
            raise SystemExit("nginx and wrk are required: apt-get install -y nginx-light wrk")
        self.nginx_bin, self.wrk_bin = nginx_bin, wrk_bin
        self.gateway_src = REPO
        self.starts = 0
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}

    # ── fixed processes ─────────────────────────────────────────────────────────────────────
    def start_fixed(self) -> None:
        if self.load_cpus:
            os.sched_setaffinity(0, self.load_cpus)  # this process is a load generator too
        p = self.ports = {k: free_port() for k in ("static", "ws", "app", "nginx")}
        static = compare_nginx.start_upstream(
            self.nginx_bin, p["static"], self.work_dir, self.server_cpus
        )
        self.children.append(static)
        echo = self._python("ws-echo", "bench.ws_echo", p["ws"])
        wait_tcp(p["ws"], echo)
        app = self._python("app", "bench.upstream", p["app"])
        wait_http_ok(f"http://127.0.0.1:{p['app']}/small", app)
        proxy = compare_nginx.start_proxy(
            self.nginx_bin,
            p["nginx"],
            self.work_dir,
            self.server_cpus,
            static_port=p["static"],
            ws_port=p["ws"],
            app_port=p["app"],
        )
        self.children.append(proxy)
        self.pids = {
            "static": nginx.worker_pid(static),
            "ws": echo.pid,
            "app": app.pid,
            "nginx": nginx.worker_pid(proxy),
        }

    def _python(self, name: str, module: str, port: int) -> Child:
        argv = [str(PYTHON), "-m", module, "--port", str(port)]
        child = Child(name, argv, self.work_dir, cpus=self.server_cpus)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):  # proxies before what they proxy to
            with contextlib.suppress(Exception):
                child.stop()
        self.children.clear()
        # CpuLedger counts the machine's capacity from this process's affinity: give it back.
        os.sched_setaffinity(0, self.own_cpus)

    # ── targets ─────────────────────────────────────────────────────────────────────────────
    def targets(self) -> list[str]:
        return ["direct", "nginx", "gateway"]

    @contextlib.asynccontextmanager
    async def target(self, name: str, env: dict[str, str] | None = None) -> AsyncIterator[Target]:
        p, pids = self.ports, self.pids
        if name in ("direct", "nginx"):

            def at(service: str) -> Endpoint:
                port = p["nginx"] if name == "nginx" else p[service]
                pid = pids["nginx"] if name == "nginx" else pids[service]
                return Endpoint(port, f"127.0.0.1:{port}", pid)

            yield Target(name, at("static"), at("ws"), at("app"))
            return
        async with self.gateway(name, env or {}) as t:
            yield t

    @contextlib.asynccontextmanager
    async def gateway(self, name: str, env: dict[str, str]) -> AsyncIterator[Target]:
        self.starts += 1
        g = await asyncio.to_thread(
            gw.start,
            self.ports["static"],
            self.work_dir,
            name=f"{name}-{self.starts}",
            src=self.gateway_src,
            extra_env=env,
            cpus=self.server_cpus,
        )
        self.children.append(g.child)
        try:
            ws_host = gw.add_preview(g.api_port, "ws", self.ports["ws"])
            app_host = gw.add_preview(g.api_port, "app", self.ports["app"])
            private_host = gw.add_preview(g.api_port, "priv", self.ports["static"], public=False)
            token = gw.mint_token(g.api_port, "priv")

            def at(host: str) -> Endpoint:
                return Endpoint(g.edge_port, host, g.pid)

            yield Target(name, at(g.hostname), at(ws_host), at(app_host), token, private_host)
        except Exception:
            print(f"  ! {name} log tail:\n{g.child.tail()}", file=sys.stderr)
            raise
        finally:
            g.child.stop()
            self.children.remove(g.child)

    # ── measurements ────────────────────────────────────────────────────────────────────────
    def wrk(self, e: Endpoint, path: str, *, connections: int, duration_s: float) -> wrk.WrkRun:
        return wrk.command(
            self.wrk_bin,
            f"http://127.0.0.1:{e.port}{path}",
            e.host,
            connections=connections,
            duration_s=duration_s,
            work_dir=self.work_dir,
            headers=e.headers,
        )

    async def rate(self, e: Endpoint, path: str, connections: int) -> dict[str, Any]:
        run = self.wrk(e, path, connections=connections, duration_s=self.args.duration)
        cpu = cpu_seconds(e.pid)
        result: dict[str, Any] = await run.run()
        cpu = cpu_seconds(e.pid) - cpu
        result["cpu_us_per_req"] = round(cpu / max(1, result.get("requests", 0)) * 1e6, 1)
        bad = result["errors"] + result["non_2xx"]
        if bad * 1000 > result.get("requests", 0):  # over 0.1 % failed: not a rate of answers
            raise RuntimeError(f"{result['errors']} socket errors, {result['non_2xx']} non-2xx")
        return result

    def private(self, t: Target, how: str) -> Endpoint:
        # The token goes in argv of wrk (loopback, a throwaway key) but never into a result.
        if how == "header":
            headers = {TOKEN_HEADER: t.token}
        else:
            headers = {"Cookie": f"{TOKEN_COOKIE}={t.token}"}
        return Endpoint(t.static.port, t.private_host, t.static.pid, headers)

    def plan(self) -> dict[str, Callable[[Target], Awaitable[dict[str, Any]]]]:
        a = self.args
        closing = {"Connection": "close"}
        return {
            "small": lambda t: self.rate(t.static, "/small", a.connections),
            "private_header": lambda t: self.rate(
                self.private(t, "header"), "/small", a.connections
            ),
            "private_cookie": lambda t: self.rate(
                self.private(t, "cookie"), "/small", a.connections
            ),
            "new_conn": lambda t: self.rate(
                Endpoint(t.static.port, t.static.host, t.static.pid, closing),
                "/small",
                a.connections,
            ),
            "large": lambda t: self.rate(t.static, "/1m", a.large_connections),
            "ws_echo": self.ws_echo,
            "ws_idle": self.ws_idle,
            "download": lambda t: self.transfer(t, transfer.download),
            "upload": lambda t: self.transfer(t, transfer.upload),
        }

    async def ws_echo(self, t: Target) -> dict[str, Any]:
        a = self.args
        return await ws_load.echo_throughput(
            t.ws.port,
            t.ws.host,
            connections=a.ws_connections,
            window=a.ws_window,
            duration_s=a.duration,
            cpu_pid=t.ws.pid,
        )

    async def ws_idle(self, t: Target) -> dict[str, Any]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            return await ws.idle_memory(
                session, t.ws.port, t.ws.host, t.ws.pid, count=self.args.idle_ws
            )

    async def transfer(self, t: Target, fn: Callable[..., transfer.Transfer]) -> dict[str, Any]:
        size = self.args.transfer_mib << 20
        async with RssSampler(t.app.pid) as sampler:
            done = await asyncio.to_thread(fn, t.app.port, t.app.host, size, 120.0)
        return {"mib_s": round(done.mib_s, 1), **sampler.summary()}

    def env_for(self, scenario: str) -> dict[str, str]:
        return gw.pool_env(self.args.idle_ws) if scenario == "ws_idle" else {}

    # ── the run ─────────────────────────────────────────────────────────────────────────────
    async def run(self, chosen: list[str]) -> dict[str, Any]:
        names = self.targets()
        raw: Raw = {s: {n: [] for n in names} for s in chosen}
        rate = [s for s in RATE if s in chosen]
        for r in range(self.args.rounds if rate else 0):
            for name in names:
                mine = [s for s in rate if name.startswith("gateway") or s not in PRIVATE]
                await self.round(r, name, mine, raw, warm=True)
        for scenario in (s for s in MEMORY if s in chosen):
            for name in names:  # a fresh gateway each: its RSS is this scenario's alone
                await self.round(0, name, [scenario], raw, env=self.env_for(scenario))
        out: dict[str, Any] = {
            s: {n: merge_rounds(runs) for n, runs in per.items() if runs} for s, per in raw.items()
        }
        if self.args.profile:
            out["profile"] = {n: await self.profile(n) for n in names if n.startswith("gateway")}
        return out

    async def warm_up(self, t: Target) -> None:
        # Fills the gateway's upstream pool and route cache, and nginx's keep-alive cache.
        await self.wrk(t.static, "/small", connections=self.args.connections, duration_s=1).run()

    async def round(
        self,
        r: int,
        name: str,
        scenarios: list[str],
        raw: Raw,
        env: dict[str, str] | None = None,
        warm: bool = False,
    ) -> None:
        plan = self.plan()
        try:
            async with self.target(name, env) as t:
                if warm:
                    await self.warm_up(t)
                for scenario in scenarios:
                    started = time.monotonic()
                    try:
                        result = await plan[scenario](t)
                    except Exception as exc:
                        result = {"error": f"{type(exc).__name__}: {exc}"}
                    raw[scenario][name].append(result)
                    shown = {k: v for k, v in result.items() if k in SHOWN}
                    took = time.monotonic() - started
                    print(f"   {r + 1} {name:16} {scenario:15} {took:4.1f}s {shown}", flush=True)
        except Exception as exc:  # the target did not start: every scenario of it failed
            for scenario in scenarios:
                raw[scenario][name].append({"error": f"{type(exc).__name__}: {exc}"})
            print(f"   {r + 1} {name:16} failed: {exc}", flush=True)

    async def profile(self, name: str) -> dict[str, Any]:
        a = self.args
        try:
            async with self.target(name) as t:
                await self.warm_up(t)
                load = self.wrk(
                    t.static, "/small", connections=a.connections, duration_s=a.duration
                )
                return await profile.record(
                    t.static.pid, load, a.duration, self.work_dir, cpus=self.load_cpus
                )
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}


SHOWN = {
    "rps",
    "p99_ms",
    "cpu_us_per_req",
    "msg_per_s",
    "cpu_us_per_msg",
    "kib_per_socket",
    "mib_s",
    "rss_growth_mib",
    "error",
    "note",
}
