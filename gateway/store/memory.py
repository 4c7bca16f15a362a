"""The embedded single-node store, used when no Redis is configured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime

from gateway.core import domains
from gateway.core.records import CustomHost, Domain, Preview, Route, Sandbox
from gateway.store.base import PutResult
from gateway.store.rules import (
    Attached,
    deletable,
    plan_domain_routes,
    plan_preview_put,
    plan_sandbox_put,
)


class MemoryStore:
    """Single-process store. Each method runs without an ``await`` between its reads and writes,
    so every operation is atomic with respect to the event loop."""

    def __init__(self) -> None:
        self._sandboxes: dict[tuple[str, str], Sandbox] = {}
        self._previews: dict[tuple[str, str, str], Preview] = {}
        self._routes: dict[str, Route] = {}
        self._domains: dict[str, Domain] = {}
        self._custom: dict[str, CustomHost] = {}
        self._domain_hosts: dict[str, set[str]] = {}
        self._subscribers: set[asyncio.Queue[str]] = set()
        self._wake_locks: dict[tuple[str, str], float] = {}
        self._on_write: list[Callable[[str], None]] = []
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
            touched += self._release_custom(preview)
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
            custom_holder=self._custom.get(preview.custom_domain or ""),
            domain=self._domains.get(preview.domain or ""),
        )
        if isinstance(write, PutResult):
            return write
        if write.evict is not None:
            self._previews.pop(write.evict, None)
        if write.old_hostname is not None:
            self._routes.pop(write.old_hostname, None)
        old = self._previews.get(key)
        if write.old_custom is not None and old is not None:
            self._release_custom(old)
        if write.custom is not None and preview.custom_domain:
            self._custom[preview.custom_domain] = write.custom
            self._domain_hosts.setdefault(write.custom.domain, set()).add(preview.custom_domain)
        if write.custom_route is not None:
            self._routes[write.custom_route.hostname] = write.custom_route
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
            self._publish([preview.hostname, *self._release_custom(preview)])
        return preview

    async def expired(self, now: datetime) -> list[tuple[str, str, str | None]]:
        found: list[tuple[str, str, str | None]] = [
            (s.workspace, s.name, None) for s in self._sandboxes.values() if s.expired(now)
        ]
        found += [
            (p.workspace, p.sandbox, p.name) for p in self._previews.values() if p.expired(now)
        ]
        return found

    # ── custom domains ─────────────────────────────────────────────────────────────────────
    async def get_domain(self, name: str) -> Domain | None:
        return self._domains.get(name)

    async def list_domains(self, workspace: str | None) -> list[Domain]:
        found = (d for d in self._domains.values() if workspace in (None, d.workspace))
        return sorted(found, key=lambda d: d.name)

    def check_domains(self) -> None:
        return None

    async def get_custom_host(self, hostname: str) -> CustomHost | None:
        return self._custom.get(hostname)

    async def put_domain(
        self, domain: Domain, *, create: bool, expect_revision: int | None = None
    ) -> PutResult:
        old = self._domains.get(domain.name)
        if create:
            if old is not None:
                return PutResult.NAME_EXISTS
            parents = {
                n: d.workspace
                for n in domains.ancestors(domain.name)
                if (d := self._domains.get(n))
            }
            tree = {
                d.workspace for d in self._domains.values() if domains.under(d.name, domain.name)
            }
            if domains.claim_conflict(domain.workspace, parents, tree):
                return PutResult.HOST_TAKEN
        elif old is None or (expect_revision is not None and old.revision != expect_revision):
            return PutResult.CHANGED
        revision = old.revision + 1 if old else 0
        self._domains[domain.name] = domain.model_copy(update={"revision": revision})
        self._sync(domain.name)
        return PutResult.OK

    async def delete_domain(self, name: str) -> Domain | None:
        domain = self._domains.pop(name, None)
        if domain is not None:
            self._sync(name)
            self._domain_hosts.pop(name, None)
        return domain

    async def sync_domain(self, name: str) -> None:
        self._sync(name)

    def _sync(self, name: str) -> None:
        domain = self._domains.get(name)
        rows = []
        for host in sorted(self._domain_hosts.get(name, set())):
            entry = self._custom.get(host)
            preview = sandbox = None
            if entry is not None:
                preview = self._previews.get((entry.workspace, entry.sandbox, entry.preview))
                sandbox = self._sandboxes.get((entry.workspace, entry.sandbox))
            rows.append(Attached(host, entry, preview, sandbox))
        target = target_sandbox = None
        if domain is not None and domain.fallback:
            sb, _, pv = domain.fallback.partition("/")
            target = self._previews.get((domain.workspace, sb, pv))
            target_sandbox = self._sandboxes.get((domain.workspace, sb))
        plan = plan_domain_routes(name, domain, rows, (target, target_sandbox))
        for host in plan.dropped:
            self._domain_hosts.get(name, set()).discard(host)
        for host in plan.forgotten:
            self._custom.pop(host, None)
        for key in plan.removed:
            self._routes.pop(key, None)
        self._routes.update(plan.routes)
        self._publish(plan.touched)

    def _release_custom(self, preview: Preview) -> list[str]:
        """Drops the preview's custom hostname (entry, table row, route); what it touched."""
        host = preview.custom_domain
        entry = self._custom.get(host or "")
        if host is None or entry is None:
            return []
        if (entry.workspace, entry.sandbox, entry.preview) != (
            preview.workspace,
            preview.sandbox,
            preview.name,
        ):
            return []
        del self._custom[host]
        self._domain_hosts.get(entry.domain, set()).discard(host)
        self._routes.pop(host, None)
        return [host]

    def on_write(self, listener: Callable[[str], None]) -> None:
        """``listener(hostname)`` runs inside each write, before it returns, so this node's
        route cache is current when the API answers (read-your-writes). ``invalidations`` alone
        cannot promise it: the edge may answer from its cache before the queue is read."""
        self._on_write.append(listener)

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
            for listener in self._on_write:
                listener(hostname)
            for queue in self._subscribers:
                queue.put_nowait(hostname)
