"""The real gateway process (``python -m gateway``) on loopback ports, for the e2e tests."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers.gateway import ROOT, TEST_KEY, TEST_KEYS, Gateway
from tests.helpers.ports import unused_ports


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[str]
    edge_port: int
    api_port: int
    key: str
    log_path: Path
    log_file: Any = None

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Gateway]:
        """This process's API and edge through the client the in-process tests use."""
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            yield Gateway(self.edge_port, self.api_port, self.key, session)

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


READY_S = 20.0


def gateway_env(edge_port: int, api_port: int, env: dict[str, str] | None) -> dict[str, str]:
    # A developer's GATEWAY_ variables never reach a spawned gateway: they would change tests.
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
    return full_env


def spawn_gateway(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ports: tuple[int, int] | None = None,
) -> GatewayProcess:
    """``python -m gateway *args`` on free loopback ports, or on ``ports`` (edge, api) to restart
    a gateway in place; returns once its API answers ``/readyz`` with 200."""
    edge_port, api_port = ports or unused_ports(2)
    # A restart on the same ports must not overwrite the first process's log.
    log_path = tmp_path / f"gateway-{edge_port}-{secrets.token_hex(3)}.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        env=gateway_env(edge_port, api_port, env),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        text=True,
    )
    gp = GatewayProcess(proc, edge_port, api_port, TEST_KEY, log_path, log_file)
    deadline = time.monotonic() + READY_S
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
