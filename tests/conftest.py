"""Shared fixtures: free ports, a real redis-server, real upstreams, in-process and subprocess
gateways. Nothing here mocks the network, Redis or aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.app import Running, serve
from gateway.ops.settings import Settings
from tests.helpers.upstreams import echo_app

ROOT = Path(__file__).resolve().parent.parent
TEST_KEY = "test-workspace-key-0123456789"
OTHER_KEY = "other-workspace-key-0123456789"
TEST_KEYS = f"default:{TEST_KEY},other:{OTHER_KEY}"


def unused_port() -> int:
    return unused_ports(1)[0]


def unused_ports(count: int) -> list[int]:
    """Distinct free ports: all are held open while they are chosen, so two calls in a row can
    never hand out the same port (which made a gateway refuse to start: edge = api port)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(contextlib.closing(socket.socket()))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


# ── redis ───────────────────────────────────────────────────────────────────────────────────
class RedisServer:
    """A real redis-server on a free port, which tests may stop and start again."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            # In CI a missing redis-server must fail, never skip: .ci/run installs it.
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = unused_port()
        self.dir = tempfile.mkdtemp(prefix="pgw-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--enable-debug-command",
                "local",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(19)  # SIGSTOP: a hung Redis

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(18)  # SIGCONT


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.resume()
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def redis_prefix() -> str:
    return f"t{secrets.token_hex(4)}:"


# ── upstreams ───────────────────────────────────────────────────────────────────────────────
@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    """The echo app on 127.0.0.1; yields its port."""
    runner = web.AppRunner(echo_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


# ── gateways ────────────────────────────────────────────────────────────────────────────────
@dataclass
class Gateway:
    edge_port: int
    api_port: int
    key: str
    session: aiohttp.ClientSession
    running: Running | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/v0"

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    async def call(
        self, method: str, path: str, *, key: str | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        async with self.session.request(
            method, self.api + path, headers=self.auth(key), **kwargs
        ) as r:
            body = await r.json(content_type=None)
            return r.status, body

    async def sandbox(
        self, name: str = "sb", host: str = "127.0.0.1", **spec: Any
    ) -> dict[str, Any]:
        status, body = await self.call(
            "POST",
            "/sandboxes",
            json={"metadata": {"name": name}, "spec": {"target": {"host": host}, **spec}},
        )
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async def preview(
        self, port: int, *, sandbox: str = "sb", name: str = "web", public: bool = True, **spec: Any
    ) -> dict[str, Any]:
        status, body = await self.call(
            "POST",
            f"/sandboxes/{sandbox}/previews",
            json={"metadata": {"name": name}, "spec": {"port": port, "public": public, **spec}},
        )
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async def public_preview(self, port: int, **spec: Any) -> str:
        """A sandbox `sb` on loopback with a public preview of ``port``; returns its hostname."""
        await self.sandbox()
        body = await self.preview(port, **spec)
        return host_of(body)

    def edge(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.edge_port}{path}"


def host_of(preview: dict[str, Any]) -> str:
    url: str = preview["spec"]["url"]
    return url.split("//", 1)[1].split("/", 1)[0].split(":", 1)[0]


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "bind": "127.0.0.1",
        "edge_port": 0,
        "api_port": 0,
        "api_keys": TEST_KEYS,
        "allowed_targets": "127.0.0.0/8",
        "access_log": True,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def run_gateway(**overrides: Any) -> AsyncIterator[Gateway]:
    """The real gateway, in this test's event loop, on ephemeral loopback ports."""
    settings = make_settings(**overrides)
    stop = asyncio.Event()
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.get_running_loop().create_task(
        serve(settings, stop, on_ready=lambda r: ready.done() or ready.set_result(r))
    )
    done, _ = await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    running = ready.result()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        try:
            yield Gateway(running.edge_port, running.api_port, TEST_KEY, session, running)
        finally:
            stop.set()
            await task


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with run_gateway() as gw:
        yield gw


@pytest.fixture
async def redis_gateway(redis_server: RedisServer, redis_prefix: str) -> AsyncIterator[Gateway]:
    async with run_gateway(redis_url=redis_server.url, redis_prefix=redis_prefix) as gw:
        yield gw


# ── the real process ────────────────────────────────────────────────────────────────────────
@dataclass
class GatewayProcess:
    proc: subprocess.Popen[str]
    edge_port: int
    api_port: int
    key: str
    log_path: Path
    log_file: Any = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout)
        self.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.close()

    def close(self) -> None:
        if self.log_file is not None and not self.log_file.closed:
            self.log_file.close()


def spawn_gateway(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> GatewayProcess:
    edge_port, api_port = unused_ports(2)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    full_env.update(
        GATEWAY_BIND="127.0.0.1",
        GATEWAY_EDGE_PORT=str(edge_port),
        GATEWAY_API_PORT=str(api_port),
        GATEWAY_API_KEYS=TEST_KEYS,
        GATEWAY_ALLOWED_TARGETS="127.0.0.0/8",
        PYTHONUNBUFFERED="1",
    )
    full_env.update(env or {})
    log_path = tmp_path / f"gateway-{edge_port}.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        env=full_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        text=True,
    )
    gp = GatewayProcess(proc, edge_port, api_port, TEST_KEY, log_path, log_file)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            gp.close()
            raise RuntimeError(f"gateway exited early:\n{gp.output()}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", api_port), 0.2) as s,
        ):
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if b" 200 " in s.recv(64):
                return gp
        time.sleep(0.05)
    gp.kill()
    raise RuntimeError(f"gateway did not become ready:\n{gp.output()}")


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``gateway_process(*args, env={...})``; every process is stopped at teardown."""
    started: list[GatewayProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> GatewayProcess:
        gp = spawn_gateway(tmp_path, *args, env=env)
        started.append(gp)
        return gp

    yield start
    for gp in started:
        gp.kill()
