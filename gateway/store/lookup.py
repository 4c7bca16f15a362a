"""Route lookups for the edge: the store behind an in-process cache.

A hit costs no round trip. Concurrent misses for one hostname share one store read. No lookup
waits on the store longer than ``timeout_s``; when the store fails, cached routes keep serving
for the grace period and everything else fails closed with 503 (``RoutingUnavailable``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from gateway.core.domains import fallback_candidates
from gateway.core.errors import RoutingUnavailable
from gateway.core.hostnames import wildcard_candidates
from gateway.core.records import Route, utcnow
from gateway.core.route_cache import RouteCache
from gateway.store.base import FLUSH_ALL, RouteSource

log = logging.getLogger("gateway.routing")

InvalidationListener = Callable[[str], None]


class Miss:
    """``RouteLookup.cached``: the answer needs a store read."""


MISS = Miss()


class RouteLookup:
    def __init__(
        self,
        store: RouteSource,
        *,
        timeout_s: float,
        ttl_s: float,
        negative_ttl_s: float,
        stale_grace_s: float,
        max_entries: int,
        private_stale_grace_s: float | None = None,
        preview_domain: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utcnow,
    ) -> None:
        # One path for both stores: the embedded one is read through the same cache, so the
        # metrics count what happened and tests of the cache hold for both.
        self._store = store
        self._timeout_s = timeout_s
        self._wall_clock = wall_clock
        self._private_grace_s = private_stale_grace_s
        self._preview_domain = preview_domain
        """Set: unknown names outside it fall back to their nearest domain's fallback route."""
        self._cache: RouteCache[Route] = RouteCache(
            clock=clock,
            ttl_s=ttl_s,
            negative_ttl_s=negative_ttl_s,
            stale_grace_s=stale_grace_s,
            max_entries=max_entries,
        )
        self._inflight: dict[str, asyncio.Task[Route | None]] = {}
        self._listeners: list[InvalidationListener] = []
        self.stats = {"hit": 0, "miss": 0, "stale": 0, "error": 0}
        """Lookups by result, for the ``gateway_route_cache`` metric. ``miss`` counts store
        reads (concurrent misses share one); ``stale`` and ``error`` are failed reads."""

    def add_listener(self, listener: InvalidationListener) -> None:
        """``listener(hostname)`` runs for every invalidated hostname (``"*"`` for all)."""
        self._listeners.append(listener)

    async def find(self, host: str) -> Route | None:
        """The route for a canonical host: an exact name (a preview's own hostname, or a
        custom-domain preview's) first, then a one-label wildcard, then the fallback of the
        nearest registered parent domain. One cached key per step and label: never a scan."""
        route = await self._first(self._candidates(host))
        # Most routes never expire: no clock read for them.
        if route is not None and route.expires_at is not None:
            return None if route.expired(self._wall_clock()) else route
        return route

    def _candidates(self, host: str) -> Iterator[str]:
        """The keys to try, in order, for both ``find`` and ``cached``: the exact name, the
        one-label wildcard, then the fallbacks of the parent domains (nearest first). Lazy: a
        hit on the exact name, the common case, never builds the fallback keys."""
        yield from wildcard_candidates(host)
        if self._preview_domain is not None:
            yield from fallback_candidates(host, self._preview_domain)

    async def _first(self, keys: Iterable[str]) -> Route | None:
        for key in keys:
            route = await self._get(key)
            if route is not None:
                return route
        return None

    def cached(self, host: str) -> Route | Miss | None:
        """``find`` answered from the cache alone, without awaiting (so the edge's common case
        needs no task), or ``MISS`` when a candidate needs a store read: then ``find``."""
        hits = 0
        found: Route | None = None
        for key in self._candidates(host):
            entry = self._cache.fresh(key)
            if entry is None:
                return MISS  # find() counts these hits itself
            hits += 1
            found = entry.value
            if found is not None:
                break
        self.stats["hit"] += hits
        if found is not None and found.expires_at is not None and found.expired(self._wall_clock()):
            return None
        return found

    async def _get(self, key: str) -> Route | None:
        entry = self._cache.fresh(key)
        if entry is not None:
            self.stats["hit"] += 1
            return entry.value
        task = self._inflight.get(key)
        if task is None:
            # The read runs in its own task, bounded by the timeout, so that the first caller's
            # cancellation (its client went away) cannot strand the others waiting on it.
            task = asyncio.get_running_loop().create_task(self._fetch(key))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        return await asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[Route | None]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved, so a read nobody waited for does not warn

    async def _fetch(self, key: str) -> Route | None:
        generation = self._cache.generation
        self.stats["miss"] += 1
        try:
            async with asyncio.timeout(self._timeout_s):
                route = await self._store.get_route(key)
        except (TimeoutError, RoutingUnavailable) as exc:
            stale = self._cache.stale(key, self._grace_for)
            self.stats["stale" if stale is not None else "error"] += 1
            if stale is not None:
                log.warning("routing table unavailable; serving a cached route")
                return stale
            raise RoutingUnavailable("The routing table is unreachable.", retry_after_s=2) from exc
        self._cache.store(key, route, generation)
        return route

    def _grace_for(self, route: Route) -> float | None:
        # A private preview's cached copy carries its revocation state; serving it long after
        # the store went away could honour a revoked token, so it fails closed sooner.
        return None if route.public else self._private_grace_s

    def invalidate(self, hostname: str) -> None:
        if log.isEnabledFor(logging.DEBUG):
            # The wall clock, so that bench/propagation.py can tell when the change was applied
            # here apart from when a request, queued behind others, saw it.
            log.debug("route cache: invalidated %s at %.6f", hostname, time.time())
        if hostname == FLUSH_ALL:
            self._cache.clear()
        else:
            self._cache.invalidate(hostname)
        for listener in self._listeners:
            listener(hostname)

    async def follow_invalidations(self) -> None:
        """Apply the store's invalidations until cancelled (run it in the app's task group)."""
        async for hostname in self._store.invalidations():
            self.invalidate(hostname)
