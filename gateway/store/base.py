"""The routing table's contract: what every store offers, tested by one contract suite.

Three views of it: ``RouteSource`` (what the edge reads), ``Registry`` (what the control service
and the sweeper write) and ``Store`` (both, plus what the app needs to run one). The rules of a
write are in ``store.rules``, shared by both implementations.

Two implementations: ``store.memory.MemoryStore`` (embedded, single node) and
``store.redis.RedisStore`` (shared by many replicas).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Protocol

from gateway.core.records import CustomHost, Domain, Preview, Route, Sandbox

FLUSH_ALL = "*"
"""Invalidation meaning "drop every cached entry" (sent after a resubscribe, when messages may
have been lost)."""


class PutResult(enum.Enum):
    OK = "ok"
    NAME_EXISTS = "name_exists"
    HOST_TAKEN = "host_taken"
    NO_SANDBOX = "no_sandbox"
    CHANGED = "changed"
    """The preview changed since it was read (or vanished); read it again and retry."""


class RouteSource(Protocol):
    """All the edge needs: routes by hostname, and word of which ones changed."""

    async def get_route(self, hostname: str) -> Route | None: ...
    def invalidations(self) -> AsyncIterator[str]: ...


class WakeLocks(Protocol):
    """The short lock that makes a burst of requests on many replicas one wake call."""

    async def take_wake_lock(self, workspace: str, sandbox: str, ttl_s: float) -> bool:
        """True for the one caller that may call the orchestrator until ``ttl_s`` passes."""
        ...


class Registry(Protocol):
    """Sandboxes and previews, for the control service and the sweeper."""

    async def get_route(self, hostname: str) -> Route | None:
        """The route at a hostname: which preview holds it."""
        ...

    async def get_sandbox(self, workspace: str, name: str) -> Sandbox | None: ...
    async def list_sandboxes(self, workspace: str) -> list[Sandbox]: ...
    async def put_sandbox(
        self, sandbox: Sandbox, *, create: bool, must_exist: bool = False
    ) -> PutResult: ...
    async def delete_sandbox(
        self, workspace: str, name: str, *, only_expired_at: datetime | None = None
    ) -> Sandbox | None: ...
    async def get_preview(self, workspace: str, sandbox: str, name: str) -> Preview | None: ...
    async def list_previews(self, workspace: str, sandbox: str) -> list[Preview]: ...
    async def put_preview(
        self, preview: Preview, *, create: bool, force: bool, expect_revision: int | None = None
    ) -> PutResult: ...
    async def delete_preview(
        self, workspace: str, sandbox: str, name: str, *, only_expired_at: datetime | None = None
    ) -> Preview | None: ...
    async def expired(self, now: datetime) -> list[tuple[str, str, str | None]]: ...

    # custom domains (issue 11)
    async def get_domain(self, name: str) -> Domain | None: ...
    async def list_domains(self, workspace: str | None) -> list[Domain]:
        """The workspace's domains by name; ``None``: every workspace's (the re-check)."""
        ...

    async def put_domain(
        self, domain: Domain, *, create: bool, expect_revision: int | None = None
    ) -> PutResult:
        """Writes the domain and, in the same transaction, the routes derived from it
        (``rules.plan_domain_routes``). Create: ``NAME_EXISTS``, or ``HOST_TAKEN`` when the
        name is inside another workspace's domain or holds one. Update: ``CHANGED`` when the
        stored revision is not ``expect_revision`` (or the domain is gone)."""
        ...

    async def delete_domain(self, name: str) -> Domain | None:
        """Deletes the domain, its table and every route derived from it."""
        ...

    async def sync_domain(self, name: str) -> None:
        """Rewrites the routes derived from the domain from what the store holds now (after a
        preview, its sandbox or the fallback target changed)."""
        ...

    async def get_custom_host(self, hostname: str) -> CustomHost | None: ...

    def check_domains(self) -> None:
        """Raises ``DomainsUnsupported`` where this store cannot write custom domains (a Redis
        Cluster), before a write that needs one does anything."""


class Store(RouteSource, Registry, WakeLocks, Protocol):
    """A whole store, for the app that builds, shares and closes it."""

    async def ping(self) -> None: ...
    async def close(self) -> None: ...
    async def shared_secret(self, name: str, candidate: str) -> str: ...
    @property
    def errors(self) -> dict[str, int]: ...
