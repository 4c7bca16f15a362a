"""Which routing table the settings name: the embedded one, or Redis as one server, Sentinel or
a Cluster (the connection shapes are in ``store.redis_connect``)."""

from __future__ import annotations

from pydantic import SecretStr

from gateway.ops.settings import Settings
from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.redis_connect import (
    cluster_clients,
    cluster_url,
    parse_sentinels,
    sentinel_clients,
    single_clients,
)


def build_store(settings: Settings) -> Store:
    """The memory store, or Redis in the shape the settings name: Sentinel, Cluster or one."""
    password = _secret(settings.redis_password)
    timeout = settings.redis_timeout_s
    if settings.redis_sentinels:
        clients = sentinel_clients(
            parse_sentinels(settings.redis_sentinels),
            settings.redis_master,
            timeout,
            password=password,
            sentinel_password=_secret(settings.redis_sentinel_password),
        )
    elif settings.redis_url is None:
        return MemoryStore()
    else:
        url, cluster_scheme = cluster_url(settings.redis_url.get_secret_value())
        connect = cluster_clients if settings.redis_cluster or cluster_scheme else single_clients
        clients = connect(url, timeout, password)
    return RedisStore(clients, settings.redis_prefix)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
