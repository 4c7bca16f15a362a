"""The invalidation subscription: hostnames whose routes changed, from any replica.

Pub/sub is fire-and-forget: messages published while this replica was disconnected (a killed
subscriber connection, a Sentinel failover, a restarted Redis) are lost. So every
(re)subscription first yields ``FLUSH_ALL``, and the route cache starts over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.core.records import Keys
from gateway.store.base import FLUSH_ALL
from gateway.store.redis_connect import Client

log = logging.getLogger("gateway.routing")

RESUBSCRIBE_DELAY_S = 1.0


PrimaryCheck = Callable[[PubSub], Awaitable[bool]]
"""Is this subscription still on the current primary? (Sentinel: ask the sentinels.)"""


class PrimaryMoved(RedisConnectionError):
    """The subscription is on a node that is no longer the primary."""


async def subscribe(
    subscriber: Client,
    keys: Keys,
    errors: dict[str, int],
    ping_interval_s: float,
    on_primary: PrimaryCheck | None = None,
) -> AsyncIterator[str]:
    """Hostnames whose routes changed, from any replica.

    Pub/sub is fire-and-forget: messages published while this replica was disconnected are
    lost. So every (re)subscription first yields ``FLUSH_ALL``.
    """
    while True:
        pubsub = subscriber.pubsub(ignore_subscribe_messages=True)
        try:
            # On a Cluster each workspace publishes on a channel of its own slot (so the
            # PUBLISH can be part of its transaction); classic pub/sub reaches every node, so
            # one pattern subscription on any node hears every workspace.
            if keys.tagged:
                await pubsub.psubscribe(keys.invalidations)
            else:
                await pubsub.subscribe(keys.invalidations)
            yield FLUSH_ALL
            async for hostname in _listen(pubsub, keys.tagged, ping_interval_s, on_primary):
                yield hostname
        except (RedisError, OSError) as exc:
            errors["subscriber"] += 1
            log.warning(
                "invalidation subscriber lost Redis (%s); resubscribing", type(exc).__name__
            )
            await asyncio.sleep(RESUBSCRIBE_DELAY_S)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()


async def _listen(
    pubsub: PubSub, tagged: bool, ping_interval_s: float, on_primary: PrimaryCheck | None
) -> AsyncIterator[str]:
    checked = time.monotonic()
    while True:
        message = await pubsub.get_message(timeout=ping_interval_s)
        # redis-py can swallow a CancelledError that lands while it handles a message;
        # without this check the loop, and so shutdown, never ends.
        _raise_if_cancelling()
        if on_primary is not None and time.monotonic() - checked >= ping_interval_s:
            # A demoted primary that stays up keeps this subscription open, and hears the new
            # primary's messages only while it replicates from it: move to the primary.
            checked = time.monotonic()
            if not await on_primary(pubsub):
                raise PrimaryMoved("the primary moved")
        if message is None:
            await pubsub.ping()
            _raise_if_cancelling()
            continue
        # Only published messages are invalidations. The PONG answering the ping above comes
        # back on the subscription too (type "pong", data b"").
        if message.get("type") != ("pmessage" if tagged else "message"):
            continue
        data = message.get("data")
        if isinstance(data, bytes):
            yield data.decode()


def _raise_if_cancelling() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
