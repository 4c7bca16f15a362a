"""The invalidation subscription: hostnames whose routes changed, from any replica.

Pub/sub is fire-and-forget: messages published while this replica was disconnected (a killed
subscriber connection, a Sentinel failover, a restarted Redis) are lost. So every
(re)subscription first yields ``FLUSH_ALL``, and the route cache starts over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from gateway.core.records import Keys
from gateway.store.base import FLUSH_ALL
from gateway.store.redis_connect import Client

log = logging.getLogger("gateway.routing")

RESUBSCRIBE_DELAY_S = 1.0


async def subscribe(
    subscriber: Client, keys: Keys, errors: dict[str, int], ping_interval_s: float
) -> AsyncIterator[str]:
    """Hostnames whose routes changed, from any replica.

    Pub/sub is fire-and-forget: messages published while this replica was disconnected are
    lost. So every (re)subscription first yields ``FLUSH_ALL``.
    """
    while True:
        pubsub = subscriber.pubsub(ignore_subscribe_messages=True)
        # On a Cluster each workspace publishes on a channel of its own slot (so the PUBLISH
        # can be part of its transaction); classic pub/sub reaches every node, so one
        # pattern subscription on any node hears every workspace.
        tagged = keys.tagged
        try:
            if tagged:
                await pubsub.psubscribe(keys.invalidations)
            else:
                await pubsub.subscribe(keys.invalidations)
            yield FLUSH_ALL
            while True:
                message = await pubsub.get_message(timeout=ping_interval_s)
                # redis-py can swallow a CancelledError that lands while it handles a
                # message; without this check the loop, and so shutdown, never ends.
                _raise_if_cancelling()
                if message is None:
                    await pubsub.ping()
                    _raise_if_cancelling()
                    continue
                # Only published messages are invalidations. The PONG answering the ping
                # above comes back on the subscription too (type "pong", data b"").
                if message.get("type") != ("pmessage" if tagged else "message"):
                    continue
                data = message.get("data")
                if isinstance(data, bytes):
                    yield data.decode()
        except (RedisError, OSError) as exc:
            errors["subscriber"] += 1
            log.warning(
                "invalidation subscriber lost Redis (%s); resubscribing", type(exc).__name__
            )
            await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()


def _raise_if_cancelling() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
