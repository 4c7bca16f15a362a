"""The real gateway in the test's event loop, and the client-side view of it the tests use."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from gateway.app import Running, serve
from gateway.ops.settings import Settings

ROOT = Path(__file__).resolve().parent.parent.parent
TEST_KEY = "test-workspace-key-0123456789"
OTHER_KEY = "other-workspace-key-0123456789"
TEST_KEYS = f"default:{TEST_KEY},other:{OTHER_KEY}"


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

    async def replace_preview(
        self, port: int, *, sandbox: str = "sb", name: str = "web", public: bool = True, **spec: Any
    ) -> tuple[int, Any]:
        """PUT a preview's whole spec; returns the API's status and body."""
        return await self.call(
            "PUT",
            f"/sandboxes/{sandbox}/previews/{name}",
            json={"metadata": {"name": name}, "spec": {"port": port, "public": public, **spec}},
        )

    async def mint(
        self,
        preview: str = "web",
        sandbox: str = "sb",
        *,
        minutes: int = 60,
        key: str | None = None,
    ) -> dict[str, Any]:
        """A token for ``preview`` through the API; returns the API's answer (the token is at
        ``["spec"]["token"]``, its name at ``["metadata"]["name"]``)."""
        status, body = await self.call(
            "POST",
            f"/sandboxes/{sandbox}/previews/{preview}/tokens",
            key=key,
            json={"metadata": {"name": ""}, "spec": {"expiresAt": expires_in(minutes=minutes)}},
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


def expires_in(**delta: float) -> str:
    """An ``expiresAt`` that far from now (``timedelta`` arguments), in the API's format."""
    return (datetime.now(UTC) + timedelta(**delta)).isoformat().replace("+00:00", "Z")


def host_of(preview: dict[str, Any]) -> str:
    url: str = preview["spec"]["url"]
    return url.split("//", 1)[1].split("/", 1)[0].split(":", 1)[0]


def make_settings(**overrides: Any) -> Settings:
    """Loopback, test keys, loopback targets; ``overrides`` win."""
    values: dict[str, Any] = {
        "bind": "127.0.0.1",
        "edge_port": 0,
        "api_port": 0,
        "api_keys": TEST_KEYS,
        "allowed_targets": "127.0.0.0/8",
        "access_log": True,
        # A refused port answers 502 at once, as these tests expect; the startup wait that
        # holds such requests (issue 14) is tested with its own settings in test_sandbox_wake.
        "upstream_startup_wait_s": 0,
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
