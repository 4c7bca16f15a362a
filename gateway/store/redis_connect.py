"""Connections to the routing table's Redis in each of its three shapes.

* one server (or any endpoint that follows failovers itself): a URL;
* Sentinel: redis-py asks the sentinels for the primary on every new connection, so after a
  failover the next connection goes to the promoted replica, without a restart;
* Cluster: redis-py routes each command (and each transaction) to the node of its hash slot.

Each shape gives two clients: one for requests, whose every command fails within the request
timeout, and one for the invalidation subscription, which blocks on reads for as long as
nothing is published and so needs a long timeout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

Client = aioredis.Redis | RedisCluster

SUBSCRIBER_TIMEOUT_S = 30.0
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""``redis+cluster://host:port`` is a URL that means "this is a Cluster" by itself."""


@dataclass
class RedisClients:
    client: Client
    subscriber: Client
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """More to close with the store (the Sentinel's own connections)."""
    on_primary: Callable[[PubSub], Awaitable[bool]] | None = None
    """Sentinel: is a subscription still on the primary the sentinels name?"""


def _no_retries(timeout_s: float) -> dict[str, Any]:
    """redis-py's default retries turned a 250 ms socket timeout into a 7.5 s stall per lookup
    (threat model K02), so retries are off: the caller decides what a failure means."""
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }


def connect_redis(url: str, timeout_s: float, password: str | None = None) -> aioredis.Redis:
    """A client whose every command fails within ``timeout_s``."""
    return aioredis.Redis.from_url(
        url, decode_responses=False, password=password, **_no_retries(timeout_s)
    )


def cluster_url(url: str) -> tuple[str, bool]:
    """The URL redis-py understands, and whether the scheme said "cluster"."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in CLUSTER_SCHEMES:
        return f"{CLUSTER_SCHEMES[scheme.lower()]}://{rest}", True
    return url, False


def connect_cluster(url: str, timeout_s: float, password: str | None = None) -> RedisCluster:
    """A cluster client started from any one node's URL; it learns the others from it."""
    return RedisCluster.from_url(
        cluster_url(url)[0], decode_responses=False, password=password, **_no_retries(timeout_s)
    )


def single_clients(url: str, timeout_s: float, password: str | None = None) -> RedisClients:
    return RedisClients(
        connect_redis(url, timeout_s, password),
        connect_redis(url, SUBSCRIBER_TIMEOUT_S, password),
    )


def cluster_clients(url: str, timeout_s: float, password: str | None = None) -> RedisClients:
    return RedisClients(
        connect_cluster(url, timeout_s, password),
        connect_cluster(url, SUBSCRIBER_TIMEOUT_S, password),
    )


def parse_sentinels(addresses: list[str]) -> list[tuple[str, int]]:
    """``host:port`` (or ``[v6]:port``) strings; port 26379 when left out."""
    parsed = []
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit() or host.endswith(":"):
            host, port = address, "26379"
        parsed.append((host.strip("[]"), int(port)))
    return parsed


def sentinel_clients(
    sentinels: list[tuple[str, int]],
    master: str,
    timeout_s: float,
    *,
    password: str | None = None,
    sentinel_password: str | None = None,
) -> RedisClients:
    """Clients of the primary that Sentinel names now, and after every failover."""
    sentinel_kwargs = _no_retries(timeout_s)
    if sentinel_password:
        sentinel_kwargs["password"] = sentinel_password
    manager = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs, password=password)

    def primary(timeout: float) -> aioredis.Redis:
        client: aioredis.Redis = manager.master_for(
            master, decode_responses=False, **_no_retries(timeout)
        )
        return client

    async def on_primary(pubsub: PubSub) -> bool:
        connection: Connection | None = pubsub.connection
        if connection is None:
            return True
        try:
            address: tuple[str, int] = await manager.discover_master(master)
        except RedisError:
            return True  # the sentinels are unreachable: no news is no reason to move
        return (connection.host, connection.port) == address

    return RedisClients(
        primary(timeout_s), primary(SUBSCRIBER_TIMEOUT_S), [manager.aclose], on_primary
    )


def as_text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
