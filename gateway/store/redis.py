"""The Redis store: the shared truth for many replicas, on one Redis, Sentinel or a Cluster.

Every write that spans keys runs in one ``MULTI``/``EXEC`` under ``WATCH``, so a crash can never
leave a preview without its route or a route without its preview. Every write publishes the
hostnames it touched in the same transaction, so replicas drop exactly those cache entries.
On a Cluster all keys of one workspace share a hash slot (``Keys(tagged=True)``), so those
transactions stay on one node, and hostnames are claimed across workspaces by
``redis_hosts.HostClaims``. Custom domains (``redis_domains``) work on one Redis and Sentinel;
a Cluster refuses their writes.

This is the only module that talks to Redis; redis errors become ``RoutingUnavailable`` here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime
from typing import TypeVar

from gateway.core.errors import RoutingUnavailable
from gateway.core.records import CustomHost, Domain, Preview, Route, Sandbox
from gateway.store.base import PutResult
from gateway.store.redis_base import Pipe, load
from gateway.store.redis_connect import RedisClients, as_text
from gateway.store.redis_domains import RedisDomainTable
from gateway.store.redis_subscriber import subscribe
from gateway.store.rules import deletable, plan_preview_put, plan_sandbox_put

T = TypeVar("T")


class RedisStore(RedisDomainTable):
    def __init__(self, clients: RedisClients, prefix: str, *, ping_interval_s: float = 5.0) -> None:
        super().__init__(clients, prefix)
        self._ping_interval_s = ping_interval_s
        """How long the subscription may be quiet before it is pinged (a dead link shows up)."""

    async def ping(self) -> None:
        await self._call(self._client.ping())

    async def close(self) -> None:
        await self._client.aclose()
        await self._sub.aclose()
        for close in self._closers:
            await close()

    async def get_route(self, hostname: str) -> Route | None:
        # On a Cluster the claim says which workspace's route to read: a read, no transaction.
        key = await self._call(self._hosts.route_key(hostname))
        if key is None:
            return None
        return load(Route, await self._call(self._client.get(key)))

    async def get_sandbox(self, workspace: str, name: str) -> Sandbox | None:
        return load(
            Sandbox, await self._call(self._client.get(self._keys.sandbox(workspace, name)))
        )

    async def list_sandboxes(self, workspace: str) -> list[Sandbox]:
        names = await self._call(self._client.smembers(self._keys.sandboxes(workspace)))
        keys = [self._keys.sandbox(workspace, as_text(n)) for n in sorted(names)]
        return await self._mget(Sandbox, keys)

    async def put_sandbox(
        self, sandbox: Sandbox, *, create: bool, must_exist: bool = False
    ) -> PutResult:
        ws, name = sandbox.workspace, sandbox.name
        sb_key, pvs_key = self._keys.sandbox(ws, name), self._keys.previews(ws, name)

        await self._note_expiring(ws, sandbox.expires_at)

        async def attempt(pipe: Pipe) -> PutResult:
            await pipe.watch(sb_key, pvs_key)
            if create or must_exist:
                # GET, not EXISTS: a cluster pipeline drops EXISTS between WATCH and MULTI.
                exists = await pipe.get(sb_key) is not None
                result = plan_sandbox_put(exists=exists, create=create, must_exist=must_exist)
                if result is not PutResult.OK:
                    return result
            previews = await self._previews_in(pipe, ws, name)
            pipe.multi()
            pipe.set(sb_key, sandbox.model_dump_json())
            pipe.sadd(self._keys.sandboxes(ws), name)
            self._track_expiry(pipe, ws, self._keys.sandbox(ws, name), sandbox.expires_at)
            for preview in previews:
                pipe.set(
                    self._keys.route(preview.hostname, ws),
                    Route.build(sandbox, preview).model_dump_json(),
                )
            self._publish(pipe, ws, [p.hostname for p in previews])
            await pipe.execute()
            return PutResult.OK

        return await self._transaction(attempt)

    async def delete_sandbox(
        self, workspace: str, name: str, *, only_expired_at: datetime | None = None
    ) -> Sandbox | None:
        sb_key, pvs_key = self._keys.sandbox(workspace, name), self._keys.previews(workspace, name)

        async def attempt(pipe: Pipe) -> tuple[Sandbox | None, list[str]]:
            await pipe.watch(sb_key, pvs_key)
            sandbox = load(Sandbox, await pipe.get(sb_key))
            if sandbox is None or not deletable(sandbox, only_expired_at):
                return None, []
            previews = await self._previews_in(pipe, workspace, name)
            pipe.multi()
            pipe.delete(sb_key, pvs_key)
            pipe.srem(self._keys.sandboxes(workspace), name)
            pipe.zrem(self._keys.expiries(workspace), sb_key)
            for preview in previews:
                pv_key = self._keys.preview(workspace, name, preview.name)
                pipe.delete(pv_key, self._keys.route(preview.hostname, workspace))
                pipe.zrem(self._keys.expiries(workspace), pv_key)
                self._publish(pipe, workspace, self._release_custom(pipe, preview))
            hostnames = [p.hostname for p in previews]
            self._publish(pipe, workspace, hostnames)
            await pipe.execute()
            return sandbox, hostnames

        touched: list[str] = []

        async def recording(pipe: Pipe) -> Sandbox | None:
            deleted, touched[:] = await attempt(pipe)
            return deleted

        return await self._settled(self._transaction(recording), workspace, touched)

    async def get_preview(self, workspace: str, sandbox: str, name: str) -> Preview | None:
        return load(
            Preview,
            await self._call(self._client.get(self._keys.preview(workspace, sandbox, name))),
        )

    async def list_previews(self, workspace: str, sandbox: str) -> list[Preview]:
        names = await self._call(self._client.smembers(self._keys.previews(workspace, sandbox)))
        keys = [self._keys.preview(workspace, sandbox, as_text(n)) for n in sorted(names)]
        return await self._mget(Preview, keys)

    async def put_preview(
        self, preview: Preview, *, create: bool, force: bool, expect_revision: int | None = None
    ) -> PutResult:
        ws, sb, name = preview.workspace, preview.sandbox, preview.name
        sb_key, pv_key = self._keys.sandbox(ws, sb), self._keys.preview(ws, sb, name)
        route_key = self._keys.route(preview.hostname, ws)
        custom_key = self._keys.custom_host(preview.custom_domain or "")
        domain_key = self._keys.domain(preview.domain or "")
        # Only keys the write reads are watched: on a Cluster (no custom domains) the watch
        # stays in the workspace's slot.
        reads = ((custom_key, preview.custom_domain), (domain_key, preview.domain))
        extra = [key for key, used in reads if used]
        touched = [preview.hostname]  # the claims it settles: its own, any it moved from

        async def attempt(pipe: Pipe) -> PutResult:
            await pipe.watch(sb_key, pv_key, route_key, *extra)
            old = load(Preview, await pipe.get(pv_key))
            custom = load(CustomHost, await pipe.get(custom_key)) if preview.custom_domain else None
            write = plan_preview_put(
                preview,
                sandbox=load(Sandbox, await pipe.get(sb_key)),
                old=old,
                holder=load(Route, await pipe.get(route_key)),
                create=create,
                force=force,
                expect_revision=expect_revision,
                custom_holder=custom,
                domain=load(Domain, await pipe.get(domain_key)) if preview.domain else None,
            )
            if isinstance(write, PutResult):
                return write
            touched[1:] = [write.old_hostname] if write.old_hostname else []
            if write.evict is not None:
                await pipe.watch(self._keys.preview(*write.evict))
            pipe.multi()
            if write.evict is not None:
                self._unlink_preview(pipe, *write.evict)
            if write.old_hostname is not None:
                pipe.delete(self._keys.route(write.old_hostname, ws))
            if write.old_custom is not None and old is not None:
                self._release_custom(pipe, old)
            if write.custom is not None:
                pipe.set(custom_key, write.custom.model_dump_json())
                pipe.sadd(self._keys.domain_hosts(write.custom.domain), write.custom_host)
            pipe.set(pv_key, write.stored.model_dump_json())
            pipe.sadd(self._keys.previews(ws, sb), name)
            pipe.set(route_key, write.route.model_dump_json())
            if write.custom_route is not None:
                pipe.set(self._keys.route(write.custom_host), write.custom_route.model_dump_json())
            self._track_expiry(pipe, ws, pv_key, preview.expires_at)
            self._publish(pipe, ws, write.touched)
            await pipe.execute()
            return PutResult.OK

        if preview.custom_domain:
            self.check_domains()
        if not await self._call(self._hosts.claim(preview.hostname, ws)):
            return await self._refusal(preview, create, expect_revision)
        await self._note_expiring(ws, preview.expires_at)
        return await self._settled(self._transaction(attempt), ws, touched)

    async def delete_preview(
        self, workspace: str, sandbox: str, name: str, *, only_expired_at: datetime | None = None
    ) -> Preview | None:
        pv_key = self._keys.preview(workspace, sandbox, name)

        async def attempt(pipe: Pipe) -> Preview | None:
            await pipe.watch(pv_key)
            preview = load(Preview, await pipe.get(pv_key))
            if preview is None or not deletable(preview, only_expired_at):
                return None
            pipe.multi()
            self._unlink_preview(pipe, workspace, sandbox, name)
            pipe.delete(self._keys.route(preview.hostname, workspace))
            self._publish(pipe, workspace, [preview.hostname, *self._release_custom(pipe, preview)])
            await pipe.execute()
            return preview

        touched: list[str] = []

        async def recording(pipe: Pipe) -> Preview | None:
            deleted = await attempt(pipe)
            touched[:] = [deleted.hostname] if deleted is not None else []
            return deleted

        return await self._settled(self._transaction(recording), workspace, touched)

    async def expired(self, now: datetime) -> list[tuple[str, str, str | None]]:
        if self._keys.tagged:
            members = await self._call(self._client.smembers(self._keys.expiring()))
            sets = [self._keys.expiries(as_text(ws)) for ws in sorted(members)]
        else:
            sets = [self._keys.expiries()]
        found: list[tuple[str, str, str | None]] = []
        for zset in sets:
            keys = await self._call(self._client.zrangebyscore(zset, "-inf", now.timestamp()))
            parsed = (self._keys.parse_record(as_text(raw)) for raw in keys)
            found += [p for p in parsed if p is not None]
        return found

    def invalidations(self) -> AsyncIterator[str]:
        return subscribe(
            self._sub, self._keys, self.errors, self._ping_interval_s, self._on_primary
        )

    async def shared_secret(self, name: str, candidate: str) -> str:
        """The first replica's candidate wins (SET NX); every replica then uses it."""
        key = f"{self._keys.prefix}secret:{name}"
        await self._call(self._client.set(key, candidate, nx=True))
        return as_text(await self._call(self._client.get(key)))

    async def take_wake_lock(self, workspace: str, sandbox: str, ttl_s: float) -> bool:
        """SET NX PX: one replica wins; the key expires by itself, so a replica that dies
        mid-wake holds nobody up for longer than ``ttl_s``."""
        key = self._keys.wake_lock(workspace, sandbox)
        ttl_ms = max(1, int(ttl_s * 1000))
        return bool(await self._call(self._client.set(key, b"1", nx=True, px=ttl_ms)))

    # ── helpers ────────────────────────────────────────────────────────────────────────────
    async def _previews_in(self, pipe: Pipe, workspace: str, sandbox: str) -> list[Preview]:
        """A sandbox's previews, read inside a transaction that is about to write their routes.

        Each preview key is WATCHed before it is read, as the set of names is: a preview that
        changes between this read and EXEC (a new port, a new hostname) makes the transaction
        retry. Otherwise a sandbox update would write a route from the stale copy, and a sandbox
        delete would remove the old hostname's route and leave the new one behind.
        """
        names = await pipe.smembers(self._keys.previews(workspace, sandbox))
        keys = [self._keys.preview(workspace, sandbox, as_text(n)) for n in sorted(names)]
        if keys:
            await pipe.watch(*keys)
        previews = []
        for key in keys:
            preview = load(Preview, await pipe.get(key))
            if preview is not None:
                previews.append(preview)
        return previews

    def _track_expiry(
        self, pipe: Pipe, workspace: str, key: str, expires_at: datetime | None
    ) -> None:
        if expires_at is None:
            pipe.zrem(self._keys.expiries(workspace), key)
        else:
            pipe.zadd(self._keys.expiries(workspace), {key: expires_at.timestamp()})

    async def _note_expiring(self, workspace: str, expires_at: datetime | None) -> None:
        """Cluster: list the workspace for the sweeper before the write (which cannot touch
        another slot) adds to its expiries, so no expiry is ever missed. Never removed: a
        workspace with nothing left to expire costs the sweeper one empty read."""
        if self._keys.tagged and expires_at is not None:
            await self._call(self._client.sadd(self._keys.expiring(), workspace))

    async def _refusal(
        self, preview: Preview, create: bool, expect_revision: int | None
    ) -> PutResult:
        """Another workspace holds the hostname. Report what the rules put first (a missing
        sandbox, a taken name, a stale revision), as on one Redis; else ``HOST_TAKEN``."""
        ws, sb = preview.workspace, preview.sandbox
        found = plan_preview_put(
            preview,
            sandbox=await self.get_sandbox(ws, sb),
            old=await self.get_preview(ws, sb, preview.name),
            holder=None,
            create=create,
            force=False,
            expect_revision=expect_revision,
        )
        return found if isinstance(found, PutResult) else PutResult.HOST_TAKEN

    async def _settled(self, write: Awaitable[T], workspace: str, touched: list[str]) -> T:
        """Run a write, then settle the claims of the hostnames it touched (``touched`` is
        filled in by the write). Also after a failed write, whose outcome may be unknown: a
        claim left pending then expires by itself, so that settle is best effort."""
        try:
            result = await write
        except RoutingUnavailable:
            with contextlib.suppress(RoutingUnavailable):
                await self._call(self._hosts.settle(touched, workspace))
            raise
        await self._call(self._hosts.settle(touched, workspace))
        return result

    def _unlink_preview(self, pipe: Pipe, workspace: str, sandbox: str, name: str) -> None:
        """Queue the removal of a preview's record, its listing and its expiry (not its route,
        which the caller deletes or overwrites)."""
        key = self._keys.preview(workspace, sandbox, name)
        pipe.delete(key)
        pipe.srem(self._keys.previews(workspace, sandbox), name)
        pipe.zrem(self._keys.expiries(workspace), key)
