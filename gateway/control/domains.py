"""Custom domains' rules, apart from HTTP: register, verify, re-check, and attach previews.

- **ownership**: a domain, or anything under it, belongs to one workspace (the store refuses a
  claim into another workspace's tree); another workspace's domain answers 404, as if absent;
- **verification**: ``verify`` reads the TXT challenge and sets ``verified`` or ``failed``;
  ``recheck_all`` runs on every replica and turns a verified domain whose record is gone
  ``failed`` after the grace period (``core.domains.recheck``);
- **derived routes**: a domain's routes are rewritten by the store in the write that changes
  the domain; after a preview or sandbox write, ``resync`` rewrites those of the workspace's
  domains, so fallbacks and custom hostnames follow their preview's port, target and expiry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from gateway.control.domain_models import DomainIn
from gateway.core import domains
from gateway.core.domains import Lookup
from gateway.core.errors import BadRequest, Conflict, NotFound, RoutingUnavailable
from gateway.core.records import Domain, utcnow
from gateway.ops.settings import Settings
from gateway.store.base import PutResult, Registry

log = logging.getLogger("gateway.domains")
CAS_ATTEMPTS = 8


class Resolver(Protocol):
    async def lookup(self, name: str) -> Lookup: ...


@dataclass(frozen=True)
class DomainConfig:
    nameservers: list[str] = field(default_factory=list)
    dns_timeout_s: float = 3.0
    grace_s: float = 3600.0
    recheck_interval_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DomainConfig:
        return cls(
            nameservers=settings.dns_nameservers,
            dns_timeout_s=settings.dns_timeout_s,
            grace_s=settings.domain_grace_s,
            recheck_interval_s=settings.domain_recheck_interval_s,
        )


async def attach(store: Registry, workspace: str, host: str) -> str:
    """The registered domain of ``workspace`` that a preview's ``customDomain`` falls under
    (the nearest one). Another workspace's domain, or none, is 404."""
    for name in domains.ancestors(host):
        found = await store.get_domain(name)
        if found is not None and found.workspace == workspace:
            return found.name
    raise NotFound(f"spec.customDomain: no custom domain of the workspace covers {host}")


async def resync(store: Registry, workspace: str) -> None:
    for domain in await store.list_domains(workspace):
        await store.sync_domain(domain.name)


class DomainService:
    def __init__(
        self,
        store: Registry,
        resolver: Resolver,
        *,
        preview_domain: str,
        region: str,
        config: DomainConfig,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._resolver = resolver
        self._preview_domain = preview_domain
        self._region = region
        self._grace = timedelta(seconds=config.grace_s)
        self._interval_s = config.recheck_interval_s
        self._now = clock

    async def list(self, workspace: str) -> list[Domain]:
        return await self._store.list_domains(workspace)

    async def get(self, workspace: str, name: str) -> Domain:
        found = await self._store.get_domain(name)
        if found is None or found.workspace != workspace:
            raise NotFound(f"Custom domain {name[:253]} not found")
        return found

    async def create(self, workspace: str, body: DomainIn) -> Domain:
        name = body.metadata.name
        domains.check_domain_name(name, self._preview_domain)
        now = self._now()
        domain = Domain(
            name=name,
            workspace=workspace,
            display_name=body.metadata.display_name,
            txt_value=domains.new_challenge(),
            fallback=await self._fallback(workspace, body.spec.fallback_preview_id),
            region=body.spec.region or self._region,
            created_at=now,
            updated_at=now,
        )
        result = await self._store.put_domain(domain, create=True)
        if result is PutResult.NAME_EXISTS:
            raise Conflict(f"Custom domain {name} already exists")
        if result is PutResult.HOST_TAKEN:
            raise Conflict(f"{name} is inside, or contains, another workspace's domain")
        return domain

    async def update(self, workspace: str, name: str, body: DomainIn) -> Domain:
        if body.metadata.name != name:
            raise BadRequest("metadata.name: must match the domain name in the path")
        fallback = await self._fallback(workspace, body.spec.fallback_preview_id)

        def change(current: Domain) -> Domain:
            return current.model_copy(
                update={
                    "display_name": body.metadata.display_name,
                    "fallback": fallback,
                    "region": body.spec.region or current.region,
                    "updated_at": self._now(),
                }
            )

        return await self._update(workspace, name, change)

    async def delete(self, workspace: str, name: str) -> Domain:
        await self.get(workspace, name)
        deleted = await self._store.delete_domain(name)
        if deleted is None:
            raise NotFound(f"Custom domain {name} not found")
        return deleted

    async def verify(self, workspace: str, name: str) -> Domain:
        await self.get(workspace, name)  # another workspace's domain is never even looked up
        found = await self._resolver.lookup(domains.challenge_name(name))
        return await self._update(workspace, name, lambda d: domains.verify(d, found, self._now()))

    async def recheck_all(self) -> int:
        """One round of re-checks of every verified domain; how many changed."""
        changed = 0
        for domain in await self._store.list_domains(None):
            if not domain.served:
                continue
            found = await self._resolver.lookup(domains.challenge_name(domain.name))
            updated = domains.recheck(domain, found, self._now(), self._grace)
            if updated == domain:
                continue
            result = await self._store.put_domain(
                updated, create=False, expect_revision=domain.revision
            )
            changed += result is PutResult.OK  # another replica's write wins otherwise
            if updated.status == "failed" and result is PutResult.OK:
                log.warning("custom domain %s failed re-verification", domain.name)
        return changed

    async def run_rechecks(self) -> None:
        """``recheck_all`` every re-check interval until cancelled (in the app's task group)."""
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.recheck_all()
            except RoutingUnavailable:
                log.warning("custom domain re-check skipped: the store is unreachable")

    async def _fallback(self, workspace: str, preview_id: str | None) -> str | None:
        if not preview_id:
            return None
        sandbox, slash, preview = preview_id.partition("/")
        found = await self._store.get_preview(workspace, sandbox, preview) if slash else None
        if found is None or found.expired(self._now()):
            raise BadRequest(
                "spec.fallbackPreviewId: must name a preview of the workspace (sandbox/preview)"
            )
        return f"{sandbox}/{preview}"

    async def _update(
        self, workspace: str, name: str, change: Callable[[Domain], Domain]
    ) -> Domain:
        for _ in range(CAS_ATTEMPTS):
            current = await self.get(workspace, name)
            updated = change(current)
            result = await self._store.put_domain(
                updated, create=False, expect_revision=current.revision
            )
            if result is PutResult.OK:
                return updated.model_copy(update={"revision": current.revision + 1})
        raise Conflict("The domain is being changed concurrently; try again")
