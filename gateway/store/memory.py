"""The embedded single-node store, used when no Redis is configured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from datetime import datetime

from gateway.core.records import Preview, Route, Sandbox
from gateway.store.base import PutResult
from gateway.store.rules import deletable, plan_preview_put, plan_sandbox_put


class MemoryStore:
    """Single-process store. Each method runs without an ``await`` between its reads and writes,
    so every operation is atomic with respect to the event loop."""

    def __init__(self) -> None:
        self._sandboxes: dict[tuple[str, str], Sandbox] = {}
        self._previews: dict[tuple[str, str, str], Preview] = {}
        self._routes: dict[str, Route] = {}
        self._subscribers: set[asyncio.Queue[str]] = set()
        self._wake_locks: dict[tuple[str, str], float] = {}
        self.errors: dict[str, int] = {}
        """Always empty: nothing here can fail the way Redis can (same shape as RedisStore's)."""

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get_route(self, hostname: str) -> Route | None:
        return self._routes.get(hostname)

    async def get_sandbox(self, workspace: str, name: str) -> Sandbox | None:
        return self._sandboxes.get((workspace, name))

    async def list_sandboxes(self, workspace: str) -> list[Sandbox]:
        return sorted(
            (s for (ws, _), s in self._sandboxes.items() if ws == workspace), key=lambda s: s.name
        )

    async def put_sandbox(
        self, sandbox: Sandbox, *, create: bool, must_exist: bool = False
    ) -> PutResult:
        key = (sandbox.workspace, sandbox.name)
        result = plan_sandbox_put(
            exists=key in self._sandboxes, create=create, must_exist=must_exist
        )
        if result is not PutResult.OK:
            return result
        self._sandboxes[key] = sandbox
        touched = []
        for preview in self._previews_of(sandbox.workspace, sandbox.name):
            self._routes[preview.hostname] = Route.build(sandbox, preview)
            touched.append(preview.hostname)
        self._publish(touched)
        return PutResult.OK

    async def delete_sandbox(
        self, workspace: str, name: str, *, only_expired_at: datetime | None = None
    ) -> Sandbox | None:
        if not deletable(self._sandboxes.get((workspace, name)), only_expired_at):
            return None
        sandbox = self._sandboxes.pop((workspace, name))
        touched = []
        for preview in self._previews_of(workspace, name):
            del self._previews[(workspace, name, preview.name)]
            self._routes.pop(preview.hostname, None)
            touched.append(preview.hostname)
        self._publish(touched)
        return sandbox

    async def get_preview(self, workspace: str, sandbox: str, name: str) -> Preview | None:
        return self._previews.get((workspace, sandbox, name))

    async def list_previews(self, workspace: str, sandbox: str) -> list[Preview]:
        return sorted(self._previews_of(workspace, sandbox), key=lambda p: p.name)

    async def put_preview(
        self, preview: Preview, *, create: bool, force: bool, expect_revision: int | None = None
    ) -> PutResult:
        key = (preview.workspace, preview.sandbox, preview.name)
        write = plan_preview_put(
            preview,
            sandbox=self._sandboxes.get((preview.workspace, preview.sandbox)),
            old=self._previews.get(key),
            holder=self._routes.get(preview.hostname),
            create=create,
            force=force,
            expect_revision=expect_revision,
        )
        if isinstance(write, PutResult):
            return write
        if write.evict is not None:
            self._previews.pop(write.evict, None)
        if write.old_hostname is not None:
            self._routes.pop(write.old_hostname, None)
        self._previews[key] = write.stored
        self._routes[preview.hostname] = write.route
        self._publish(write.touched)
        return PutResult.OK

    async def delete_preview(
        self, workspace: str, sandbox: str, name: str, *, only_expired_at: datetime | None = None
    ) -> Preview | None:
        if not deletable(self._previews.get((workspace, sandbox, name)), only_expired_at):
            return None
        preview = self._previews.pop((workspace, sandbox, name), None)
        if preview is not None:
            self._routes.pop(preview.hostname, None)
            self._publish([preview.hostname])
        return preview

    async def expired(self, now: datetime) -> list[tuple[str, str, str | None]]:
        found: list[tuple[str, str, str | None]] = [
            (s.workspace, s.name, None) for s in self._sandboxes.values() if s.expired(now)
        ]
        found += [
            (p.workspace, p.sandbox, p.name) for p in self._previews.values() if p.expired(now)
        ]
        return found

    async def invalidations(self) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    async def shared_secret(self, name: str, candidate: str) -> str:
        return candidate

    async def take_wake_lock(self, workspace: str, sandbox: str, ttl_s: float) -> bool:
        now = time.monotonic()
        key = (workspace, sandbox)
        if self._wake_locks.get(key, 0.0) > now:
            return False
        if len(self._wake_locks) > 4096:
            self._wake_locks = {k: t for k, t in self._wake_locks.items() if t > now}
        self._wake_locks[key] = now + ttl_s
        return True

    def _previews_of(self, workspace: str, sandbox: str) -> list[Preview]:
        return [p for (ws, sb, _), p in self._previews.items() if (ws, sb) == (workspace, sandbox)]

    def _publish(self, hostnames: Iterable[str]) -> None:
        for hostname in hostnames:
            for queue in self._subscribers:
                queue.put_nowait(hostname)
