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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime
from typing import TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError

from gateway.core.errors import RoutingUnavailable
from gateway.core.records import Keys, Preview, Route, Sandbox
from gateway.store.base import FLUSH_ALL, PutResult

log = logging.getLogger("gateway.routing")

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


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


class RedisStore:
    def __init__(
        self,
        client: aioredis.Redis,
        subscriber: aioredis.Redis,
        prefix: str,
        *,
        ping_interval_s: float = 5.0,
    ) -> None:
        self._r = client
        # Pub/sub blocks on reads for as long as nothing is published, so it needs a client
        # without the short socket timeout of the request path.
        self._sub = subscriber
        self.errors = {"command": 0, "transaction": 0, "subscriber": 0}
        """Redis failures by kind of operation, for the ``gateway_store_errors`` metric."""
        self._k = Keys(prefix)
        self._ping_interval_s = ping_interval_s
        """How long the subscription may be quiet before it is pinged (a dead link shows up)."""

    async def ping(self) -> None:
        await self._call(self._r.ping())

    async def close(self) -> None:
        await self._r.aclose()
        await self._sub.aclose()

    async def get_route(self, hostname: str) -> Route | None:
        return _load(Route, await self._call(self._r.get(self._k.route(hostname))))

    async def get_sandbox(self, workspace: str, name: str) -> Sandbox | None:
        return _load(Sandbox, await self._call(self._r.get(self._k.sandbox(workspace, name))))

    async def list_sandboxes(self, workspace: str) -> list[Sandbox]:
        names = await self._call(self._r.smembers(self._k.sandboxes(workspace)))
        keys = [self._k.sandbox(workspace, _text(n)) for n in sorted(names)]
        return await self._mget(Sandbox, keys)

    async def put_sandbox(
        self, sandbox: Sandbox, *, create: bool, must_exist: bool = False
    ) -> PutResult:
        ws, name = sandbox.workspace, sandbox.name
        sb_key, pvs_key = self._k.sandbox(ws, name), self._k.previews(ws, name)

        async def attempt(pipe: aioredis.client.Pipeline) -> PutResult:
            await pipe.watch(sb_key, pvs_key)
            if create or must_exist:
                exists = bool(await pipe.exists(sb_key))
                if create and exists:
                    return PutResult.NAME_EXISTS
                if must_exist and not exists:
                    return PutResult.NO_SANDBOX
            previews = await self._previews_in(pipe, ws, name)
            pipe.multi()
            pipe.set(sb_key, sandbox.model_dump_json())
            pipe.sadd(self._k.sandboxes(ws), name)
            self._track_expiry(pipe, self._k.sandbox(ws, name), sandbox.expires_at)
            for preview in previews:
                pipe.set(
                    self._k.route(preview.hostname), Route.build(sandbox, preview).model_dump_json()
                )
            self._publish(pipe, [p.hostname for p in previews])
            await pipe.execute()
            return PutResult.OK

        return await self._transaction(attempt)

    async def delete_sandbox(
        self, workspace: str, name: str, *, only_expired_at: datetime | None = None
    ) -> Sandbox | None:
        sb_key, pvs_key = self._k.sandbox(workspace, name), self._k.previews(workspace, name)

        async def attempt(pipe: aioredis.client.Pipeline) -> Sandbox | None:
            await pipe.watch(sb_key, pvs_key)
            sandbox = _load(Sandbox, await pipe.get(sb_key))
            if sandbox is None:
                return None
            if only_expired_at is not None and not sandbox.expired(only_expired_at):
                return None  # recreated or renewed since it was found expired
            previews = await self._previews_in(pipe, workspace, name)
            pipe.multi()
            pipe.delete(sb_key, pvs_key)
            pipe.srem(self._k.sandboxes(workspace), name)
            pipe.zrem(self._k.expiries(), sb_key)
            for preview in previews:
                pv_key = self._k.preview(workspace, name, preview.name)
                pipe.delete(pv_key, self._k.route(preview.hostname))
                pipe.zrem(self._k.expiries(), pv_key)
            self._publish(pipe, [p.hostname for p in previews])
            await pipe.execute()
            return sandbox

        return await self._transaction(attempt)

    async def get_preview(self, workspace: str, sandbox: str, name: str) -> Preview | None:
        return _load(
            Preview, await self._call(self._r.get(self._k.preview(workspace, sandbox, name)))
        )

    async def list_previews(self, workspace: str, sandbox: str) -> list[Preview]:
        names = await self._call(self._r.smembers(self._k.previews(workspace, sandbox)))
        keys = [self._k.preview(workspace, sandbox, _text(n)) for n in sorted(names)]
        return await self._mget(Preview, keys)

    async def put_preview(
        self, preview: Preview, *, create: bool, force: bool, expect_revision: int | None = None
    ) -> PutResult:
        ws, sb, name = preview.workspace, preview.sandbox, preview.name
        sb_key, pv_key = self._k.sandbox(ws, sb), self._k.preview(ws, sb, name)
        route_key = self._k.route(preview.hostname)

        async def attempt(pipe: aioredis.client.Pipeline) -> PutResult:
            await pipe.watch(sb_key, pv_key, route_key)
            sandbox = _load(Sandbox, await pipe.get(sb_key))
            if sandbox is None:
                return PutResult.NO_SANDBOX
            old = _load(Preview, await pipe.get(pv_key))
            if create and old is not None:
                return PutResult.NAME_EXISTS
            if expect_revision is not None and (old is None or old.revision != expect_revision):
                return PutResult.CHANGED
            stored = preview.model_copy(update={"revision": old.revision + 1 if old else 0})
            holder = _load(Route, await pipe.get(route_key))
            evict: str | None = None
            if holder is not None and (holder.workspace, holder.sandbox, holder.preview) != (
                ws,
                sb,
                name,
            ):
                if not force or holder.workspace != ws:
                    return PutResult.HOST_TAKEN
                evict = self._k.preview(holder.workspace, holder.sandbox, holder.preview)
                await pipe.watch(evict)
            pipe.multi()
            touched = [preview.hostname]
            if evict is not None and holder is not None:
                pipe.delete(evict)
                pipe.srem(self._k.previews(holder.workspace, holder.sandbox), holder.preview)
                pipe.zrem(self._k.expiries(), evict)
            if old is not None and old.hostname != preview.hostname:
                pipe.delete(self._k.route(old.hostname))
                touched.append(old.hostname)
            pipe.set(pv_key, stored.model_dump_json())
            pipe.sadd(self._k.previews(ws, sb), name)
            pipe.set(route_key, Route.build(sandbox, stored).model_dump_json())
            self._track_expiry(pipe, pv_key, preview.expires_at)
            self._publish(pipe, touched)
            await pipe.execute()
            return PutResult.OK

        return await self._transaction(attempt)

    async def delete_preview(
        self, workspace: str, sandbox: str, name: str, *, only_expired_at: datetime | None = None
    ) -> Preview | None:
        pv_key = self._k.preview(workspace, sandbox, name)

        async def attempt(pipe: aioredis.client.Pipeline) -> Preview | None:
            await pipe.watch(pv_key)
            preview = _load(Preview, await pipe.get(pv_key))
            if preview is None:
                return None
            if only_expired_at is not None and not preview.expired(only_expired_at):
                return None  # recreated or renewed since it was found expired
            pipe.multi()
            pipe.delete(pv_key, self._k.route(preview.hostname))
            pipe.srem(self._k.previews(workspace, sandbox), name)
            pipe.zrem(self._k.expiries(), pv_key)
            self._publish(pipe, [preview.hostname])
            await pipe.execute()
            return preview

        return await self._transaction(attempt)

    async def expired(self, now: datetime) -> list[tuple[str, str, str | None]]:
        keys = await self._call(self._r.zrangebyscore(self._k.expiries(), "-inf", now.timestamp()))
        found: list[tuple[str, str, str | None]] = []
        for raw in keys:
            kind, _, rest = _text(raw).removeprefix(self._k.prefix).partition(":")
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
                await pubsub.subscribe(self._k.invalidations)
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
        key = f"{self._k.prefix}secret:{name}"
        await self._call(self._r.set(key, candidate, nx=True))
        return _text(await self._call(self._r.get(key)))

    # ── helpers ────────────────────────────────────────────────────────────────────────────
    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            self.errors["command"] += 1
            raise RoutingUnavailable("The routing table is unreachable.", retry_after_s=2) from exc

    async def _transaction(self, attempt: Callable[[aioredis.client.Pipeline], Awaitable[T]]) -> T:
        for _ in range(16):
            try:
                async with self._r.pipeline(transaction=True) as pipe:
                    return await attempt(pipe)
            except WatchError:
                continue
            except (RedisError, OSError) as exc:
                self.errors["transaction"] += 1
                raise RoutingUnavailable(
                    "The routing table is unreachable.", retry_after_s=2
                ) from exc
        raise RoutingUnavailable("The routing table is too busy; try again.", retry_after_s=1)

    async def _previews_in(
        self, pipe: aioredis.client.Pipeline, workspace: str, sandbox: str
    ) -> list[Preview]:
        """A sandbox's previews, read inside a transaction that is about to write their routes.

        Each preview key is WATCHed before it is read, as the set of names is: a preview that
        changes between this read and EXEC (a new port, a new hostname) makes the transaction
        retry. Otherwise a sandbox update would write a route from the stale copy, and a sandbox
        delete would remove the old hostname's route and leave the new one behind.
        """
        names = await pipe.smembers(self._k.previews(workspace, sandbox))
        keys = [self._k.preview(workspace, sandbox, _text(n)) for n in sorted(names)]
        if keys:
            await pipe.watch(*keys)
        previews = []
        for key in keys:
            preview = _load(Preview, await pipe.get(key))
            if preview is not None:
                previews.append(preview)
        return previews

    async def _mget(self, model: type[M], keys: list[str]) -> list[M]:
        if not keys:
            return []
        values = await self._call(self._r.mget(keys))
        return [m for m in (_load(model, v) for v in values) if m is not None]

    def _track_expiry(
        self, pipe: aioredis.client.Pipeline, key: str, expires_at: datetime | None
    ) -> None:
        if expires_at is None:
            pipe.zrem(self._k.expiries(), key)
        else:
            pipe.zadd(self._k.expiries(), {key: expires_at.timestamp()})

    def _publish(self, pipe: aioredis.client.Pipeline, hostnames: Iterable[str]) -> None:
        for hostname in hostnames:
            pipe.publish(self._k.invalidations, hostname)


def _load(model: type[M], raw: bytes | str | None) -> M | None:
    """A value that fails validation is treated as absent and logged: a hand-edited or corrupt
    key must never crash the edge or route somewhere unintended."""
    if raw is None:
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        log.error("ignoring invalid %s record in the routing table", model.__name__)
        return None


def _raise_if_cancelling() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
