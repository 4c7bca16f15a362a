"""Routing-table stores on each Redis shape, and raw clients to look inside them."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as ClusterClient

from gateway.store.redis import RedisStore
from gateway.store.redis_connect import (
    cluster_clients,
    parse_sentinels,
    sentinel_clients,
    single_clients,
)
from tests.helpers.redis_server import RedisServer
from tests.helpers.redis_topologies import (
    DATA_PASSWORD,
    MASTER,
    SENTINEL_PASSWORD,
    RedisCluster,
    SentinelSet,
)

SHAPES = ["redis", "sentinel", "cluster"]


def redis_store(request: pytest.FixtureRequest, kind: str, prefix: str) -> RedisStore:
    """A store on the named Redis shape; its fixture starts on first use."""
    if kind == "sentinel":
        sentinels: SentinelSet = request.getfixturevalue("redis_sentinels")
        clients = sentinel_clients(
            parse_sentinels(sentinels.addresses.split(",")),
            MASTER,
            5.0,
            password=DATA_PASSWORD,
            sentinel_password=SENTINEL_PASSWORD,
        )
    elif kind == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        clients = cluster_clients(cluster.url, 5.0)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        clients = single_clients(server.url, 5.0)
    return RedisStore(clients, prefix)


def raw_nodes(request: pytest.FixtureRequest, kind: str) -> list[aioredis.Redis]:
    """Plain clients of every data node that serves writes (the primary; every cluster node)."""
    if kind == "sentinel":
        sentinels: SentinelSet = request.getfixturevalue("redis_sentinels")
        ports = [sentinels.primary_port()]
        return [aioredis.Redis(port=p, password=DATA_PASSWORD) for p in ports]
    if kind == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return [aioredis.Redis(port=p) for p in cluster.ports]
    server: RedisServer = request.getfixturevalue("redis_server")
    return [aioredis.Redis(port=server.port)]


def raw_client(request: pytest.FixtureRequest, kind: str) -> aioredis.Redis | ClusterClient:
    """One client that reaches every key of the shape."""
    if kind == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return ClusterClient.from_url(cluster.url)
    return raw_nodes(request, kind)[0]
