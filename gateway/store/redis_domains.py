"""Custom domains in Redis (keys in ``core.records.Keys``, rules in ``store.rules``).

A domain's routes are derived state: every write that can change them (the domain itself, or a
sync after a preview, its sandbox or the fallback target changed) reads the domain, its table,
the holders of its hostnames and their sandboxes under ``WATCH``, and writes the routes in the
same ``MULTI``/``EXEC``, publishing the keys it touched like every other route write.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from gateway.core import domains
from gateway.core.records import CustomHost, Domain, Preview, Sandbox
from gateway.store.base import PutResult
from gateway.store.redis_base import RedisBase, load, text
from gateway.store.rules import Attached, DomainRoutes, plan_domain_routes

Pipeline = aioredis.client.Pipeline


class RedisDomainTable(RedisBase):
    async def get_domain(self, name: str) -> Domain | None:
        return load(Domain, await self._call(self._client.get(self._keys.domain(name))))

    async def list_domains(self, workspace: str | None) -> list[Domain]:
        index = self._keys.all_domains() if workspace is None else self._keys.domains(workspace)
        names = await self._call(self._client.smembers(index))
        return await self._mget(Domain, [self._keys.domain(text(n)) for n in sorted(names)])

    async def get_custom_host(self, hostname: str) -> CustomHost | None:
        raw = await self._call(self._client.get(self._keys.custom_host(hostname)))
        return load(CustomHost, raw)

    async def put_domain(
        self, domain: Domain, *, create: bool, expect_revision: int | None = None
    ) -> PutResult:
        name, key = domain.name, self._keys.domain(domain.name)
        parents = domains.ancestors(name)[1:]

        async def attempt(pipe: Pipeline) -> PutResult:
            await pipe.watch(key, self._keys.domain_tree(name), *map(self._keys.domain, parents))
            old = load(Domain, await pipe.get(key))
            if create:
                if old is not None:
                    return PutResult.NAME_EXISTS
                if await self._conflicts(pipe, domain.workspace, name, parents):
                    return PutResult.HOST_TAKEN
            elif old is None or (expect_revision is not None and old.revision != expect_revision):
                return PutResult.CHANGED
            stored = domain.model_copy(update={"revision": old.revision + 1 if old else 0})
            plan = await self._plan(pipe, name, stored)
            pipe.multi()
            pipe.set(key, stored.model_dump_json())
            pipe.sadd(self._keys.domains(domain.workspace), name)
            pipe.sadd(self._keys.all_domains(), name)
            if create:
                for ancestor in domains.ancestors(name):
                    pipe.hincrby(self._keys.domain_tree(ancestor), domain.workspace, 1)
            self._apply(pipe, name, plan)
            await pipe.execute()
            return PutResult.OK

        return await self._transaction(attempt)

    async def delete_domain(self, name: str) -> Domain | None:
        key = self._keys.domain(name)

        async def attempt(pipe: Pipeline) -> Domain | None:
            await pipe.watch(key)
            domain = load(Domain, await pipe.get(key))
            if domain is None:
                return None
            plan = await self._plan(pipe, name, None)
            pipe.multi()
            pipe.delete(key, self._keys.domain_hosts(name))
            pipe.srem(self._keys.domains(domain.workspace), name)
            pipe.srem(self._keys.all_domains(), name)
            for ancestor in domains.ancestors(name):
                # A count that reaches 0 stays as 0; ``_conflicts`` reads 0 as absent.
                pipe.hincrby(self._keys.domain_tree(ancestor), domain.workspace, -1)
            self._apply(pipe, name, plan)
            await pipe.execute()
            return domain

        return await self._transaction(attempt)

    async def sync_domain(self, name: str) -> None:
        async def attempt(pipe: Pipeline) -> None:
            await pipe.watch(self._keys.domain(name))
            domain = load(Domain, await pipe.get(self._keys.domain(name)))
            plan = await self._plan(pipe, name, domain)
            pipe.multi()
            self._apply(pipe, name, plan)
            await pipe.execute()

        await self._transaction(attempt)

    # ── inside a transaction ──────────────────────────────────────────────────────────────
    async def _conflicts(
        self, pipe: Pipeline, workspace: str, name: str, parents: list[str]
    ) -> bool:
        owners = {}
        for parent in parents:
            found = load(Domain, await pipe.get(self._keys.domain(parent)))
            if found is not None:
                owners[parent] = found.workspace
        counts = await pipe.hgetall(self._keys.domain_tree(name))
        tree = {text(ws) for ws, count in counts.items() if int(count) > 0}
        return domains.claim_conflict(workspace, owners, tree)

    async def _plan(self, pipe: Pipeline, name: str, domain: Domain | None) -> DomainRoutes:
        """Reads (and WATCHes) everything the domain's routes derive from."""
        await pipe.watch(self._keys.domain_hosts(name))
        hosts = sorted(text(h) for h in await pipe.smembers(self._keys.domain_hosts(name)))
        rows = []
        for host in hosts:
            await pipe.watch(self._keys.custom_host(host))
            entry = load(CustomHost, await pipe.get(self._keys.custom_host(host)))
            preview, sandbox = None, None
            if entry is not None:
                preview, sandbox = await self._holder(pipe, entry.workspace, entry.sandbox,
                                                      entry.preview)  # fmt: skip
            rows.append(Attached(host, entry, preview, sandbox))
        fallback: tuple[Preview | None, Sandbox | None] = (None, None)
        if domain is not None and domain.fallback:
            sb, _, pv = domain.fallback.partition("/")
            fallback = await self._holder(pipe, domain.workspace, sb, pv)
        return plan_domain_routes(name, domain, rows, fallback)

    async def _holder(
        self, pipe: Pipeline, workspace: str, sandbox: str, preview: str
    ) -> tuple[Preview | None, Sandbox | None]:
        pv_key, sb_key = (
            self._keys.preview(workspace, sandbox, preview),
            self._keys.sandbox(workspace, sandbox),
        )
        await pipe.watch(pv_key, sb_key)
        return load(Preview, await pipe.get(pv_key)), load(Sandbox, await pipe.get(sb_key))

    def _apply(self, pipe: Pipeline, name: str, plan: DomainRoutes) -> None:
        """Queues the plan's writes (after ``multi``)."""
        for host in plan.dropped:
            pipe.srem(self._keys.domain_hosts(name), host)
        for host in plan.forgotten:
            pipe.delete(self._keys.custom_host(host))
        for key in plan.removed:
            pipe.delete(self._keys.route(key))
        for key, route in plan.routes.items():
            pipe.set(self._keys.route(key), route.model_dump_json())
        self._publish(pipe, plan.touched)

    def _release_custom(self, pipe: Pipeline, preview: Preview) -> list[str]:
        """Queues the removal of the preview's custom hostname: its entry, its row in the
        domain's table and its route. Only the holder ever writes an entry (a new holder first
        deletes the old one), so the entry at the preview's hostname is its own."""
        host = preview.custom_domain
        if not host:
            return []
        pipe.delete(self._keys.custom_host(host), self._keys.route(host))
        if preview.domain:
            pipe.srem(self._keys.domain_hosts(preview.domain), host)
        return [host]
