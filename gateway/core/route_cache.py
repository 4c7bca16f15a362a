"""In-process route cache bookkeeping with an injected clock. Pure: no I/O, no awaits.

* Hits are kept ``ttl_s`` (a backstop for lost invalidations), misses ``negative_ttl_s`` in a
  separate, smaller LRU, so a scan of random hostnames cannot evict real routes.
* When the store fails, a hit stays usable for ``stale_grace_s`` past its expiry (Caddy's grace
  period, mlcache's resurrect_ttl). A cached miss is never served stale: an unknown host during
  an outage gets 503, not 404.
* ``invalidate`` removes an entry at once; deletions and revocations never wait for a TTL.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Entry(Generic[V]):
    value: V | None
    fetched_at: float


class RouteCache(Generic[V]):
    def __init__(
        self,
        *,
        clock: Callable[[], float],
        ttl_s: float,
        negative_ttl_s: float,
        stale_grace_s: float,
        max_entries: int,
    ) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._stale_grace_s = stale_grace_s
        self._max = max_entries
        self._hits: OrderedDict[str, Entry[V]] = OrderedDict()
        self._misses: OrderedDict[str, Entry[V]] = OrderedDict()
        self.generation = 0
        """Bumped by every invalidation, so a fetch that started before one does not store a
        value that is already out of date."""

    def fresh(self, key: str) -> Entry[V] | None:
        """The entry if it is still within its TTL."""
        now = self._clock()
        entry = self._hits.get(key)
        if entry is not None:
            if now - entry.fetched_at < self._ttl_s:
                self._hits.move_to_end(key)
                return entry
            return None
        entry = self._misses.get(key)
        if entry is not None and now - entry.fetched_at < self._negative_ttl_s:
            return entry
        return None

    def stale(self, key: str, grace_for: Callable[[V], float | None] | None = None) -> V | None:
        """A positive entry within the grace period after it was fetched; for store outages
        only. ``grace_for`` may shorten the grace for particular values."""
        entry = self._hits.get(key)
        if entry is None or entry.value is None:
            return None
        grace = self._stale_grace_s
        if grace_for is not None:
            shorter = grace_for(entry.value)
            if shorter is not None:
                grace = min(grace, shorter)
        if self._clock() - entry.fetched_at < max(self._ttl_s, grace):
            return entry.value
        return None

    def store(self, key: str, value: V | None, generation: int) -> None:
        if generation != self.generation:
            return
        entry = Entry(value, self._clock())
        if value is None:
            self._hits.pop(key, None)
            self._put(self._misses, key, entry, max(1, self._max // 10))
        else:
            self._misses.pop(key, None)
            self._put(self._hits, key, entry, self._max)

    def invalidate(self, key: str) -> None:
        self.generation += 1
        self._hits.pop(key, None)
        self._misses.pop(key, None)

    def clear(self) -> None:
        self.generation += 1
        self._hits.clear()
        self._misses.clear()

    def __len__(self) -> int:
        return len(self._hits) + len(self._misses)

    @staticmethod
    def _put(table: OrderedDict[str, Entry[V]], key: str, entry: Entry[V], limit: int) -> None:
        table[key] = entry
        table.move_to_end(key)
        while len(table) > limit:
            table.popitem(last=False)
