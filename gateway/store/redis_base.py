"""What every Redis-backed part of the store shares: the client, the key layout, and the one
place where redis errors become ``RoutingUnavailable``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError, WatchError

from gateway.core.errors import RoutingUnavailable
from gateway.core.records import Keys

log = logging.getLogger("gateway.routing")

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class RedisBase:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._keys = Keys(prefix)
        self.errors = {"command": 0, "transaction": 0, "subscriber": 0}
        """Redis failures by kind of operation, for the ``gateway_store_errors`` metric."""

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
                async with self._client.pipeline(transaction=True) as pipe:
                    return await attempt(pipe)
            except WatchError:
                continue
            except (RedisError, OSError) as exc:
                self.errors["transaction"] += 1
                raise RoutingUnavailable(
                    "The routing table is unreachable.", retry_after_s=2
                ) from exc
        raise RoutingUnavailable("The routing table is too busy; try again.", retry_after_s=1)

    async def _mget(self, model: type[M], keys: list[str]) -> list[M]:
        if not keys:
            return []
        values = await self._call(self._client.mget(keys))
        return [m for m in (load(model, v) for v in values) if m is not None]

    def _publish(self, pipe: aioredis.client.Pipeline, hostnames: Iterable[str]) -> None:
        for hostname in hostnames:
            pipe.publish(self._keys.invalidations, hostname)


def load(model: type[M], raw: bytes | str | None) -> M | None:
    """A value that fails validation is treated as absent and logged: a hand-edited or corrupt
    key must never crash the edge or route somewhere unintended."""
    if raw is None:
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        log.error("ignoring invalid %s record in the routing table", model.__name__)
        return None


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
