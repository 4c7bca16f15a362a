"""Where the route of a hostname lives, and who may take a hostname.

On one Redis (or Sentinel) a route is keyed by its hostname and every write checks the holder
inside its own transaction: ``SharedKeyspace`` has nothing more to do.

On a Redis Cluster each workspace's keys share one hash slot, so one transaction cannot both
check another workspace's route and write its own. ``HostClaims`` keeps a claim per hostname in
the hostname's own slot (``Keys.host_owner``, value: the workspace). Reads follow the claim, so a
route whose claim is held by another workspace is never served. Each step is atomic in one
slot (a Lua script on one key):

1. before its transaction a writer claims the hostname: free → claimed as *pending* (with a TTL
   of ``CLAIM_TTL_MS``); its own workspace's → kept; another's → taken (``HOST_TAKEN``), unless
   that claim is settled (no TTL) and that workspace has no route there: left by a writer that
   died before step 2, and taken over;
2. after its transaction (committed or not) every writer settles each hostname it touched:
   it turns its workspace's claim pending, then reads its workspace's route there and, if there
   is one, makes the claim settled again. Every commit is followed by its own settle, and each
   settle reads the route after it made the claim pending, so whichever settle runs last
   leaves the claim settled exactly when a route is there; concurrent writers of one workspace
   cannot release one another's claim.

A claim without a route is pending, so it expires and the hostname is free again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from gateway.core.records import Keys
from gateway.store.redis_connect import Client, as_text

log = logging.getLogger("gateway.routing")

CLAIM_TTL_MS = 30_000
"""A pending claim's life: far longer than any write transaction (each command is bounded by
the request timeout), short enough that a writer that died frees the hostname soon."""

_CLAIM = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return 1 end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return v
"""
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
_UNSETTLE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_SETTLE = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PERSIST', KEYS[1]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
return 0
"""


class SharedKeyspace:
    """One Redis: routes keyed by hostname alone; transactions check holders themselves."""

    def __init__(self, keys: Keys) -> None:
        self._keys = keys

    async def route_key(self, hostname: str) -> str | None:
        return self._keys.route(hostname)

    async def claim(self, hostname: str, workspace: str) -> bool:
        """False: another workspace holds the hostname."""
        return True

    async def settle(self, hostnames: Iterable[str], workspace: str) -> None:
        return None


class HostClaims(SharedKeyspace):
    """Redis Cluster: a claim per hostname, in the hostname's slot (see the module docstring)."""

    def __init__(self, keys: Keys, client: Client) -> None:
        super().__init__(keys)
        self._client = client

    async def route_key(self, hostname: str) -> str | None:
        owner = await self._client.get(self._keys.host_owner(hostname))
        if owner is None:
            return None
        return self._keys.route(hostname, as_text(owner))

    async def claim(self, hostname: str, workspace: str) -> bool:
        key = self._keys.host_owner(hostname)
        found = await self._eval(_CLAIM, key, workspace, str(CLAIM_TTL_MS))
        if found == 1:
            return True
        owner = as_text(found)
        if await self._client.pttl(key) != -1:
            return False  # pending: its writer is between its transaction and its settle
        if await self._client.get(self._keys.route(hostname, owner)) is not None:
            return False
        taken = await self._eval(_TAKE_OVER, key, owner, workspace, str(CLAIM_TTL_MS))
        if taken == 1:
            log.warning("took over a hostname claim left without a route")
        return taken == 1

    async def settle(self, hostnames: Iterable[str], workspace: str) -> None:
        for hostname in hostnames:
            key = self._keys.host_owner(hostname)
            await self._eval(_UNSETTLE, key, workspace, str(CLAIM_TTL_MS))
            if await self._client.get(self._keys.route(hostname, workspace)) is None:
                continue
            if await self._eval(_SETTLE, key, workspace) != 1:
                # Only when a claim taken over (see claim()) raced this workspace's write.
                log.error("a route was written for a hostname another workspace holds")

    async def _eval(self, script: str, key: str, *args: str) -> object:
        result: object = await self._client.eval(script, 1, key, *args)
        return result
