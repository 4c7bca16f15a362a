"""The control API's domain rules, apart from HTTP: typed arguments in, records out.

What lives here and nowhere else:

- **expiry**: whatever has expired is "not found" and left out of lists even before the sweeper
  (``ops.sweeper``) deletes it; a create that collides with an expired name or hostname reaps
  the expired object first, so "GET, then POST on 404" always works;
- **compare-and-swap**: a change to a preview is read, changed and written at the revision it
  read, and retried when another write got in between, so a token minted meanwhile is never lost;
- **token retention**: expired tokens stay listed for ``TOKEN_RETENTION``, then are pruned on a
  write; a preview holds at most ``MAX_TOKENS_PER_PREVIEW``;
- **hostname choice**: a ``prefixUrl`` names the hostname, otherwise a random one is drawn once
  and kept across replacements.

Every failure is a ``core.errors`` class; the handlers only translate HTTP to and from these
calls.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.control.domains import attach, resync
from gateway.control.models import Lifetime, PreviewIn, SandboxIn, StateIn, TokenIn
from gateway.control.openapi import PATH_PATTERNS
from gateway.core import hostnames
from gateway.core.errors import BadRequest, Conflict, NotFound
from gateway.core.netpolicy import IPNetwork, address_allowed, address_denied, is_ip_literal
from gateway.core.records import CustomHost, Lifecycle, Preview, Sandbox, TokenRecord, utcnow
from gateway.core.timeparse import parse_timestamp
from gateway.core.tokens import new_token_id
from gateway.store.base import PutResult, Registry

MAX_TOKENS_PER_PREVIEW = 256
TOKEN_RETENTION = timedelta(days=1)
"""Expired tokens stay listed (with `expired: true`) this long, then are pruned on a write."""
CAS_ATTEMPTS = 8
"""How often a preview change is retried when other writes keep getting in between."""
TOKEN_NAME = re.compile(PATH_PATTERNS["tokenName"])


@dataclass(frozen=True)
class ServiceConfig:
    preview_domain: str
    region: str
    blocked_ports: frozenset[int]
    allowed_targets: list[IPNetwork]
    token_max_lifetime_s: int = 30 * 86400
    denied_targets: Sequence[IPNetwork] = ()
    """``deny_target_nets``: never registered, even inside ``allowed_targets``."""


class ControlService:
    def __init__(
        self, config: ServiceConfig, store: Registry, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._config = config
        self._store = store
        self._now = clock

    # ── sandboxes ─────────────────────────────────────────────────────────────────────────
    async def sandboxes(self, workspace: str) -> list[Sandbox]:
        now = self._now()
        return [s for s in await self._store.list_sandboxes(workspace) if not s.expired(now)]

    async def sandbox(self, workspace: str, name: str) -> Sandbox:
        sandbox = await self._live_sandbox(workspace, name)
        if sandbox is None:
            raise NotFound(f"Sandbox {name} not found")
        return sandbox

    async def create_sandbox(
        self, workspace: str, body: SandboxIn, *, if_not_exists: bool = False
    ) -> Sandbox:
        """A new sandbox; with ``if_not_exists``, a live one of that name is returned as is."""
        sandbox = self._sandbox_from(body, workspace, existing=None)
        result = await self._store.put_sandbox(sandbox, create=True)
        if result is not PutResult.OK and await self._reap(workspace, sandbox.name):
            # The name was held by an expired sandbox, now gone: try once more.
            result = await self._store.put_sandbox(sandbox, create=True)
        if result is PutResult.OK:
            return sandbox
        if if_not_exists:
            existing = await self._live_sandbox(workspace, sandbox.name)
            if existing is not None:
                return existing
        raise Conflict(f"Sandbox {sandbox.name} already exists")

    async def replace_sandbox(self, existing: Sandbox, body: SandboxIn) -> Sandbox:
        if body.metadata.name != existing.name:
            raise BadRequest("metadata.name: must match the sandbox name in the path")
        sandbox = self._sandbox_from(body, existing.workspace, existing=existing)
        # must_exist: a sandbox deleted while this PUT was on its way stays deleted.
        result = await self._store.put_sandbox(sandbox, create=False, must_exist=True)
        if result is not PutResult.OK:
            raise NotFound(f"Sandbox {sandbox.name} not found")
        await resync(self._store, sandbox.workspace)  # custom hostnames follow the target
        return sandbox

    async def set_state(self, existing: Sandbox, body: StateIn) -> Sandbox:
        """The orchestrator's word that the sandbox sleeps or runs. Written as the sandbox is,
        so every preview's route carries it and every replica's cache entry is dropped."""
        sandbox = existing.model_copy(update={"state": body.status, "updated_at": self._now()})
        result = await self._store.put_sandbox(sandbox, create=False, must_exist=True)
        if result is not PutResult.OK:
            raise NotFound(f"Sandbox {sandbox.name} not found")
        return sandbox

    async def delete_sandbox(self, workspace: str, name: str) -> Sandbox:
        deleted = await self._store.delete_sandbox(workspace, name)
        await resync(self._store, workspace)
        if deleted is None or deleted.expired(self._now()):
            # An expired sandbox is deleted all the same, but it was already "not found".
            raise NotFound(f"Sandbox {name} not found")
        return deleted

    # ── previews ──────────────────────────────────────────────────────────────────────────
    async def previews(self, sandbox: Sandbox) -> list[Preview]:
        now = self._now()
        previews = await self._store.list_previews(sandbox.workspace, sandbox.name)
        return [p for p in previews if not p.expired(now)]

    async def preview(self, workspace: str, sandbox: str, name: str) -> Preview:
        live = await self.sandbox(workspace, sandbox)
        preview = await self._store.get_preview(live.workspace, live.name, name)
        if preview is None or preview.expired(self._now()):
            raise NotFound(f"Preview {name} not found")
        return preview

    async def create_preview(
        self, sandbox: Sandbox, body: PreviewIn, *, force: bool = False
    ) -> Preview:
        """A new preview; ``force`` takes its hostname from another preview of the workspace."""
        domain = await self._domain_of(sandbox, body)
        preview = self._preview_from(body, sandbox, existing=None, domain=domain)
        result = await self._store.put_preview(preview, create=True, force=force)
        if result is not PutResult.OK and await self._reap_conflict(result, preview, force):
            # The name or hostname was held by an expired preview, now gone: try once more.
            result = await self._store.put_preview(preview, create=True, force=force)
        _raise_for(result, preview)
        await resync(self._store, preview.workspace)
        return preview

    async def replace_preview(
        self, sandbox: Sandbox, name: str, body: PreviewIn, *, force: bool = False
    ) -> Preview:
        if body.metadata.name != name:
            raise BadRequest("metadata.name: must match the preview name in the path")
        domain = await self._domain_of(sandbox, body)

        def replace(current: Preview) -> Preview:
            return self._preview_from(body, sandbox, existing=current, domain=domain)

        return await self._update_preview(sandbox.workspace, sandbox.name, name, replace, force)

    async def delete_preview(self, sandbox: Sandbox, name: str) -> Preview:
        deleted = await self._store.delete_preview(sandbox.workspace, sandbox.name, name)
        await resync(self._store, sandbox.workspace)
        if deleted is None or deleted.expired(self._now()):
            raise NotFound(f"Preview {name} not found")
        return deleted

    # ── tokens ────────────────────────────────────────────────────────────────────────────
    @staticmethod
    def tokens(preview: Preview) -> list[TokenRecord]:
        return sorted(preview.tokens.values(), key=lambda t: t.created_at)

    async def create_token(
        self, workspace: str, sandbox: str, preview: str, body: TokenIn
    ) -> tuple[Preview, TokenRecord]:
        """A new token for the preview (its claims; the handler signs them) and the preview as
        written, with expired tokens past their retention pruned."""
        now = self._now()
        try:
            expires_at = parse_timestamp(body.spec.expires_at)
        except ValueError as exc:
            raise BadRequest(f"spec.expiresAt: {exc}") from exc
        if expires_at <= now:
            raise BadRequest("spec.expiresAt: the expiry is in the past")
        expires_at = min(expires_at, now + timedelta(seconds=self._config.token_max_lifetime_s))
        # The Python SDK always sends an empty name and needs one back to delete the token.
        name = body.metadata.name or f"token-{secrets.token_hex(4)}"
        if not TOKEN_NAME.match(name):
            raise BadRequest("metadata.name: use lower-case letters, digits and '-'")
        record = TokenRecord(name=name, jti=new_token_id(), expires_at=expires_at, created_at=now)

        def add(current: Preview) -> Preview:
            if name in current.tokens:
                raise Conflict(f"Token {name} already exists")
            kept = {k: t for k, t in current.tokens.items() if t.expires_at > now - TOKEN_RETENTION}
            if len(kept) >= MAX_TOKENS_PER_PREVIEW:
                raise BadRequest(f"A preview may have at most {MAX_TOKENS_PER_PREVIEW} tokens")
            return current.model_copy(update={"tokens": {**kept, name: record}, "updated_at": now})

        return await self._update_preview(workspace, sandbox, preview, add), record

    async def delete_token(self, workspace: str, sandbox: str, preview: str, name: str) -> None:
        """Revocation is immediate: the route no longer lists the token, and every replica's
        cache entry for the hostname is invalidated by the same write."""

        def remove(current: Preview) -> Preview:
            if name not in current.tokens:
                raise NotFound(f"Token {name} not found")
            tokens = {k: t for k, t in current.tokens.items() if k != name}
            return current.model_copy(update={"tokens": tokens, "updated_at": self._now()})

        await self._update_preview(workspace, sandbox, preview, remove)

    # ── reads and writes ──────────────────────────────────────────────────────────────────
    async def _live_sandbox(self, workspace: str, name: str) -> Sandbox | None:
        sandbox = await self._store.get_sandbox(workspace, name)
        return None if sandbox is None or sandbox.expired(self._now()) else sandbox

    async def _update_preview(
        self,
        workspace: str,
        sandbox: str,
        name: str,
        change: Callable[[Preview], Preview],
        force: bool = False,
    ) -> Preview:
        """Read, change and write a preview at the revision read, retrying when another write
        got in between."""
        for attempt in range(CAS_ATTEMPTS):
            current = await self.preview(workspace, sandbox, name)
            updated = change(current)
            result = await self._store.put_preview(
                updated, create=False, force=force, expect_revision=current.revision
            )
            if result is PutResult.OK:
                # A custom hostname's route carries the same tokens, port and headers: a
                # revocation must reach it as it reaches the preview's own hostname.
                await resync(self._store, workspace)
                return updated
            if result is PutResult.CHANGED:
                continue
            if attempt == 0 and await self._reap_conflict(result, updated, force):
                continue
            _raise_for(result, updated)
        raise Conflict("The preview is being changed concurrently; try again")

    async def _reap(self, workspace: str, sandbox: str, preview: str | None = None) -> bool:
        """Delete the named sandbox, or else the preview, if it has expired (the sweeper may
        not have come by yet). True if it had expired, whoever deleted it: the caller may then
        retry, as the name is free."""
        now = self._now()
        found = await self._store.get_sandbox(workspace, sandbox)
        if found is not None and found.expired(now):
            # Deleted only if still expired inside the store's transaction: never a sandbox
            # that someone recreated under this name in between.
            await self._store.delete_sandbox(workspace, sandbox, only_expired_at=now)
            return True
        if preview is None:
            return False
        held = await self._store.get_preview(workspace, sandbox, preview)
        if held is not None and held.expired(now):
            await self._store.delete_preview(workspace, sandbox, preview, only_expired_at=now)
            return True
        return False

    async def _reap_conflict(self, result: PutResult, preview: Preview, force: bool) -> bool:
        if result is PutResult.NAME_EXISTS:
            return await self._reap(preview.workspace, preview.sandbox, preview.name)
        if result is PutResult.HOST_TAKEN and await self._free_custom(preview, force):
            return True
        if result is PutResult.HOST_TAKEN:
            holder = await self._store.get_route(preview.hostname)
            if holder is not None and holder.expired(self._now()):
                return await self._reap(holder.workspace, holder.sandbox, holder.preview)
        return False

    async def _free_custom(self, preview: Preview, force: bool) -> bool:
        """Frees the preview's custom hostname when its holder is gone, expired, or (with
        ``force``) another preview of the same workspace, which is deleted."""
        host = preview.custom_domain
        entry = await self._store.get_custom_host(host) if host else None
        if entry is None:
            return False
        if _holder(entry) == (preview.workspace, preview.sandbox, preview.name):
            return False
        holder = await self._store.get_preview(*_holder(entry))
        if holder is None or holder.custom_domain != host:
            await self._store.sync_domain(entry.domain)  # a stale entry: the sync drops it
            return True
        now = self._now()
        if holder.expired(now):
            # Only if still expired inside the delete: never a holder renewed in between.
            await self._store.delete_preview(*_holder(entry), only_expired_at=now)
            return True
        if force and entry.workspace == preview.workspace:
            await self._store.delete_preview(*_holder(entry))
            return True
        return False

    async def _domain_of(self, sandbox: Sandbox, body: PreviewIn) -> str | None:
        host = body.spec.custom_domain
        return await attach(self._store, sandbox.workspace, host) if host else None

    # ── building records ──────────────────────────────────────────────────────────────────
    def _expiry(self, spec: Lifetime, created: datetime) -> datetime | None:
        expires_at = spec.expires_at(created)
        if expires_at is not None and expires_at <= self._now():
            raise BadRequest("spec.ttl/spec.expires: the expiry is already in the past")
        return expires_at

    def _sandbox_from(self, body: SandboxIn, workspace: str, existing: Sandbox | None) -> Sandbox:
        host = body.spec.target.host.strip().lower()
        if is_ip_literal(host):
            if address_denied(host, self._config.denied_targets):
                raise BadRequest("spec.target.host: in the gateway's deny_target_nets")
            if not address_allowed(host, self._config.allowed_targets):
                raise BadRequest("spec.target.host: outside the gateway's allowed_targets")
        elif not hostnames.is_valid_dns_name(host):
            raise BadRequest("spec.target.host: must be an IP address or a DNS name")
        now = self._now()
        created = existing.created_at if existing else now
        return Sandbox(
            workspace=workspace,
            name=body.metadata.name,
            target_host=host,
            created_at=created,
            updated_at=now,
            expires_at=self._expiry(body.spec, created),
            ttl=body.spec.ttl,
            labels=body.metadata.labels or {},
            lifecycle=body.spec.lifecycle.record() if body.spec.lifecycle else Lifecycle(),
            # A replacement of the spec is not word from the orchestrator: the state stays.
            state=existing.state if existing else "running",
        )

    def _hostname(self, body: PreviewIn, sandbox: Sandbox, existing: Preview | None) -> str:
        """A prefixUrl names the hostname; otherwise a replacement keeps its random one."""
        config, prefix = self._config, body.spec.prefix_url
        if prefix:
            hostname = hostnames.prefix_hostname(prefix, sandbox.workspace, config.preview_domain)
            if not hostnames.is_valid_dns_name(hostname):
                raise BadRequest("spec.prefixUrl: makes an invalid hostname")
            return hostname
        if existing is not None and existing.prefix_url is None:
            return existing.hostname
        preview_id = hostnames.random_preview_id()
        return hostnames.random_hostname(preview_id, config.region, config.preview_domain)

    def _preview_from(
        self, body: PreviewIn, sandbox: Sandbox, existing: Preview | None, domain: str | None
    ) -> Preview:
        """A preview from a request body. A replacement (``existing``) keeps its identity
        (uid, so tokens stay valid), its tokens and, without a prefixUrl, its random hostname."""
        spec = body.spec
        if spec.port in self._config.blocked_ports:
            raise BadRequest(f"spec.port: port {spec.port} is reserved and cannot be previewed")
        hostname = self._hostname(body, sandbox, existing)
        now = self._now()
        created = existing.created_at if existing else now
        values: dict[str, Any] = {}
        if existing is not None:
            values = {"uid": existing.uid, "revision": existing.revision, "tokens": existing.tokens}
        return Preview(
            workspace=sandbox.workspace,
            sandbox=sandbox.name,
            name=body.metadata.name,
            port=spec.port,
            public=spec.public,
            hostname=hostname,
            prefix_url=spec.prefix_url,
            custom_domain=spec.custom_domain,
            domain=domain,
            request_headers=spec.request_headers or {},
            response_headers=spec.response_headers or {},
            created_at=created,
            updated_at=now,
            expires_at=self._expiry(spec, created),
            ttl=spec.ttl,
            expires=spec.expires,
            **values,
        )


def _holder(entry: CustomHost) -> tuple[str, str, str]:
    return entry.workspace, entry.sandbox, entry.preview


def _raise_for(result: PutResult, preview: Preview) -> None:
    if result is PutResult.NAME_EXISTS:
        raise Conflict(f"Preview {preview.name} already exists")
    if result is PutResult.HOST_TAKEN:
        where = f"{preview.hostname} or {preview.custom_domain}"
        raise Conflict(
            f"Another preview already uses {where if preview.custom_domain else preview.hostname}"
        )
    if result is PutResult.NO_SANDBOX:
        raise NotFound(f"Sandbox {preview.sandbox} not found")
    if result is PutResult.CHANGED:
        raise NotFound(f"Preview {preview.name} not found")
