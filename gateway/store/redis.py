"""The Redis store: the shared truth for many replicas.

Every write that spans keys runs in one ``MULTI``/``EXEC`` under ``WATCH``, so a crash can never
leave a preview without its route or a route without its preview. Every write publishes the
hostnames it touched on one channel, so replicas drop exactly those cache entries.

This is the only module that talks to Redis; redis errors become ``RoutingUnavailable`` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.core.records import CustomHost, Domain, Preview, Route, Sandbox
from gateway.store.base import FLUSH_ALL, PutResult
from gateway.store.redis_base import load, text
from gateway.store.redis_domains import RedisDomainTable
from gateway.store.rules import deletable, plan_preview_put, plan_sandbox_put

log = logging.getLogger("gateway.routing")


def connect_redis(url: str, timeout_s: float) -> aioredis.Redis:
    """A client whose every command fails within ``timeout_s``.

    redis-py's default retries turned a 250 ms socket timeout into a 7.5 s stall per lookup
    (threat model K02), so retries are off: the caller decides what a failure means.
    """
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
        health_check_interval=0,
    )


class RedisStore(RedisDomainTable):
    def __init__(
        self,
        client: aioredis.Redis,
        subscriber: aioredis.Redis,
        prefix: str,
        *,
        ping_interval_s: float = 5.0,
    ) -> None:
        super().__init__(client, prefix)
        # Pub/sub blocks on reads for as long as nothing is published, so it needs a client
        # without the short socket timeout of the request path.
        self._sub = subscriber
        self._ping_interval_s = ping_interval_s
        """How long the subscription may be quiet before it is pinged (a dead link shows up)."""

    async def ping(self) -> None:
        await self._call(self._client.ping())

    async def close(self) -> None:
        await self._client.aclose()
        await self._sub.aclose()

    async def get_route(self, hostname: str) -> Route | None:
        return load(Route, await self._call(self._client.get(self._keys.route(hostname))))

    async def get_sandbox(self, workspace: str, name: str) -> Sandbox | None:
        return load(
            Sandbox, await self._call(self._client.get(self._keys.sandbox(workspace, name)))
        )

    async def list_sandboxes(self, workspace: str) -> list[Sandbox]:
        names = await self._call(self._client.smembers(self._keys.sandboxes(workspace)))
        keys = [self._keys.sandbox(workspace, text(n)) for n in sorted(names)]
        return await self._mget(Sandbox, keys)

    async def put_sandbox(
        self, sandbox: Sandbox, *, create: bool, must_exist: bool = False
    ) -> PutResult:
        ws, name = sandbox.workspace, sandbox.name
        sb_key, pvs_key = self._keys.sandbox(ws, name), self._keys.previews(ws, name)

        async def attempt(pipe: aioredis.client.Pipeline) -> PutResult:
            await pipe.watch(sb_key, pvs_key)
            if create or must_exist:
                exists = bool(await pipe.exists(sb_key))
                result = plan_sandbox_put(exists=exists, create=create, must_exist=must_exist)
                if result is not PutResult.OK:
                    return result
            previews = await self._previews_in(pipe, ws, name)
            pipe.multi()
            pipe.set(sb_key, sandbox.model_dump_json())
            pipe.sadd(self._keys.sandboxes(ws), name)
            self._track_expiry(pipe, self._keys.sandbox(ws, name), sandbox.expires_at)
            for preview in previews:
                pipe.set(
                    self._keys.route(preview.hostname),
                    Route.build(sandbox, preview).model_dump_json(),
                )
            self._publish(pipe, [p.hostname for p in previews])
            await pipe.execute()
            return PutResult.OK

        return await self._transaction(attempt)

    async def delete_sandbox(
        self, workspace: str, name: str, *, only_expired_at: datetime | None = None
    ) -> Sandbox | None:
        sb_key, pvs_key = self._keys.sandbox(workspace, name), self._keys.previews(workspace, name)

        async def attempt(pipe: aioredis.client.Pipeline) -> Sandbox | None:
            await pipe.watch(sb_key, pvs_key)
            sandbox = load(Sandbox, await pipe.get(sb_key))
            if sandbox is None or not deletable(sandbox, only_expired_at):
                return None
            previews = await self._previews_in(pipe, workspace, name)
            pipe.multi()
            pipe.delete(sb_key, pvs_key)
            pipe.srem(self._keys.sandboxes(workspace), name)
            pipe.zrem(self._keys.expiries(), sb_key)
            for preview in previews:
                pv_key = self._keys.preview(workspace, name, preview.name)
                pipe.delete(pv_key, self._keys.route(preview.hostname))
                pipe.zrem(self._keys.expiries(), pv_key)
                self._publish(pipe, self._release_custom(pipe, preview))
            self._publish(pipe, [p.hostname for p in previews])
            await pipe.execute()
            return sandbox

        return await self._transaction(attempt)

    async def get_preview(self, workspace: str, sandbox: str, name: str) -> Preview | None:
        return load(
            Preview,
            await self._call(self._client.get(self._keys.preview(workspace, sandbox, name))),
        )

    async def list_previews(self, workspace: str, sandbox: str) -> list[Preview]:
        names = await self._call(self._client.smembers(self._keys.previews(workspace, sandbox)))
        keys = [self._keys.preview(workspace, sandbox, text(n)) for n in sorted(names)]
        return await self._mget(Preview, keys)

    async def put_preview(
        self, preview: Preview, *, create: bool, force: bool, expect_revision: int | None = None
    ) -> PutResult:
        ws, sb, name = preview.workspace, preview.sandbox, preview.name
        sb_key, pv_key = self._keys.sandbox(ws, sb), self._keys.preview(ws, sb, name)
        route_key = self._keys.route(preview.hostname)
        custom_key = self._keys.custom_host(preview.custom_domain or "")
        domain_key = self._keys.domain(preview.domain or "")

        async def attempt(pipe: aioredis.client.Pipeline) -> PutResult:
            await pipe.watch(sb_key, pv_key, route_key, custom_key, domain_key)
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
            if write.evict is not None:
                await pipe.watch(self._keys.preview(*write.evict))
            pipe.multi()
            if write.evict is not None:
                self._unlink_preview(pipe, *write.evict)
            if write.old_hostname is not None:
                pipe.delete(self._keys.route(write.old_hostname))
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
            self._track_expiry(pipe, pv_key, preview.expires_at)
            self._publish(pipe, write.touched)
            await pipe.execute()
            return PutResult.OK

        return await self._transaction(attempt)

    async def delete_preview(
        self, workspace: str, sandbox: str, name: str, *, only_expired_at: datetime | None = None
    ) -> Preview | None:
        pv_key = self._keys.preview(workspace, sandbox, name)

        async def attempt(pipe: aioredis.client.Pipeline) -> Preview | None:
            await pipe.watch(pv_key)
            preview = load(Preview, await pipe.get(pv_key))
            if preview is None or not deletable(preview, only_expired_at):
                return None
            pipe.multi()
            self._unlink_preview(pipe, workspace, sandbox, name)
            pipe.delete(self._keys.route(preview.hostname))
            self._publish(pipe, [preview.hostname, *self._release_custom(pipe, preview)])
            await pipe.execute()
            return preview

        return await self._transaction(attempt)

    async def expired(self, now: datetime) -> list[tuple[str, str, str | None]]:
        keys = await self._call(
            self._client.zrangebyscore(self._keys.expiries(), "-inf", now.timestamp())
        )
        found: list[tuple[str, str, str | None]] = []
        for raw in keys:
            kind, _, rest = text(raw).removeprefix(self._keys.prefix).partition(":")
            parts = rest.split(":")
            if kind == "sb" and len(parts) == 2:
                found.append((parts[0], parts[1], None))
            elif kind == "pv" and len(parts) == 3:
                found.append((parts[0], parts[1], parts[2]))
        return found

    async def invalidations(self) -> AsyncIterator[str]:
        """Hostnames whose routes changed, from any replica.

        Pub/sub is fire-and-forget: messages published while this replica was disconnected are
        lost. So every (re)subscription first yields ``FLUSH_ALL``.
        """
        while True:
            pubsub = self._sub.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._keys.invalidations)
                yield FLUSH_ALL
                while True:
                    message = await pubsub.get_message(timeout=self._ping_interval_s)
                    # redis-py can swallow a CancelledError that lands while it handles a
                    # message; without this check the loop, and so shutdown, never ends.
                    _raise_if_cancelling()
                    if message is None:
                        await pubsub.ping()
                        _raise_if_cancelling()
                        continue
                    # Only published messages are invalidations. The PONG answering the ping
                    # above comes back on the subscription too (type "pong", data b"").
                    if message.get("type") != "message":
                        continue
                    data = message.get("data")
                    if isinstance(data, bytes):
                        yield data.decode()
            except (RedisError, OSError) as exc:
                self.errors["subscriber"] += 1
                log.warning(
                    "invalidation subscriber lost Redis (%s); resubscribing", type(exc).__name__
                )
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def shared_secret(self, name: str, candidate: str) -> str:
        """The first replica's candidate wins (SET NX); every replica then uses it."""
        key = f"{self._keys.prefix}secret:{name}"
        await self._call(self._client.set(key, candidate, nx=True))
        return text(await self._call(self._client.get(key)))

    async def take_wake_lock(self, workspace: str, sandbox: str, ttl_s: float) -> bool:
        """SET NX PX: one replica wins; the key expires by itself, so a replica that dies
        mid-wake holds nobody up for longer than ``ttl_s``."""
        key = self._keys.wake_lock(workspace, sandbox)
        ttl_ms = max(1, int(ttl_s * 1000))
        return bool(await self._call(self._client.set(key, b"1", nx=True, px=ttl_ms)))

    async def _previews_in(
        self, pipe: aioredis.client.Pipeline, workspace: str, sandbox: str
    ) -> list[Preview]:
        """A sandbox's previews, read inside a transaction that is about to write their routes.

        Each preview key is WATCHed before it is read, as the set of names is: a preview that
        changes between this read and EXEC (a new port, a new hostname) makes the transaction
        retry. Otherwise a sandbox update would write a route from the stale copy, and a sandbox
        delete would remove the old hostname's route and leave the new one behind.
        """
        names = await pipe.smembers(self._keys.previews(workspace, sandbox))
        keys = [self._keys.preview(workspace, sandbox, text(n)) for n in sorted(names)]
        if keys:
            await pipe.watch(*keys)
        previews = []
        for key in keys:
            preview = load(Preview, await pipe.get(key))
            if preview is not None:
                previews.append(preview)
        return previews

    def _track_expiry(
        self, pipe: aioredis.client.Pipeline, key: str, expires_at: datetime | None
    ) -> None:
        if expires_at is None:
            pipe.zrem(self._keys.expiries(), key)
        else:
            pipe.zadd(self._keys.expiries(), {key: expires_at.timestamp()})

    def _unlink_preview(
        self, pipe: aioredis.client.Pipeline, workspace: str, sandbox: str, name: str
    ) -> None:
        """Queue the removal of a preview's record, its listing and its expiry (not its route,
        which the caller deletes or overwrites)."""
        key = self._keys.preview(workspace, sandbox, name)
        pipe.delete(key)
        pipe.srem(self._keys.previews(workspace, sandbox), name)
        pipe.zrem(self._keys.expiries(), key)


def _raise_if_cancelling() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
