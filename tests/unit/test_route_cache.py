"""Route cache bookkeeping with a fake clock: TTL, negative TTL, LRU bound, misses kept apart from
hits, the stale-grace window (threat model K01, H14) and the invalidation generation."""

from __future__ import annotations

import pytest

from gateway.core.route_cache import RouteCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(
    clock: Clock,
    *,
    ttl: float = 30.0,
    negative_ttl: float = 2.0,
    grace: float = 600.0,
    max_entries: int = 100,
) -> RouteCache[str]:
    return RouteCache(
        clock=clock,
        ttl_s=ttl,
        negative_ttl_s=negative_ttl,
        stale_grace_s=grace,
        max_entries=max_entries,
    )


def value_of(cache: RouteCache[str], key: str) -> str | None:
    entry = cache.fresh(key)
    assert entry is not None, f"{key} is not cached"
    return entry.value


@pytest.mark.parametrize(
    ("elapsed", "fresh"),
    [(0.0, True), (29.9, True), (30.0, False), (31.0, False)],
    ids=["at-once", "just-before", "at-ttl", "after"],
)
def test_hit_ttl(clock: Clock, elapsed: float, fresh: bool) -> None:
    cache = make(clock)
    cache.store("a", "route-a", cache.generation)
    clock.advance(elapsed)
    entry = cache.fresh("a")
    assert (entry is not None and entry.value == "route-a") is fresh


@pytest.mark.parametrize(
    ("elapsed", "fresh"),
    [(0.0, True), (1.9, True), (2.0, False), (5.0, False)],
    ids=["at-once", "just-before", "at-ttl", "after"],
)
def test_negative_ttl(clock: Clock, elapsed: float, fresh: bool) -> None:
    cache = make(clock)
    cache.store("ghost", None, cache.generation)
    clock.advance(elapsed)
    entry = cache.fresh("ghost")
    assert (entry is not None and entry.value is None) is fresh


def test_zero_ttl_never_serves(clock: Clock) -> None:
    cache = make(clock, ttl=0.0, negative_ttl=0.0)
    cache.store("a", "route-a", cache.generation)
    cache.store("b", None, cache.generation)
    assert cache.fresh("a") is None and cache.fresh("b") is None


def test_unknown_key(clock: Clock) -> None:
    assert make(clock).fresh("nope") is None


def test_lru_evicts_the_least_recently_used(clock: Clock) -> None:
    cache = make(clock, max_entries=3)
    for key in "abc":
        cache.store(key, f"route-{key}", cache.generation)
    assert value_of(cache, "a") == "route-a"  # a is now the most recently used
    cache.store("d", "route-d", cache.generation)
    assert cache.fresh("b") is None
    for key in "acd":
        assert value_of(cache, key) == f"route-{key}"
    assert len(cache) == 3


def test_a_flood_of_misses_never_evicts_routes(clock: Clock) -> None:
    """A scan of random hostnames (H14) fills the small miss table, not the route table."""
    cache = make(clock, max_entries=20)
    for i in range(20):
        cache.store(f"route{i}", f"r{i}", cache.generation)
    for i in range(1000):
        cache.store(f"ghost{i}", None, cache.generation)
    for i in range(20):
        assert value_of(cache, f"route{i}") == f"r{i}"
    # The miss table is bounded too (a tenth of the entries).
    assert len(cache) == 20 + 2
    assert cache.fresh("ghost999") is not None and cache.fresh("ghost0") is None


def test_a_hit_replaces_a_miss_and_a_miss_replaces_a_hit(clock: Clock) -> None:
    cache = make(clock)
    cache.store("a", None, cache.generation)
    cache.store("a", "route-a", cache.generation)
    assert value_of(cache, "a") == "route-a"
    cache.store("a", None, cache.generation)
    assert value_of(cache, "a") is None
    assert cache.stale("a") is None
    assert len(cache) == 1


@pytest.mark.parametrize(
    ("elapsed", "served"),
    [(10.0, True), (599.0, True), (600.0, False), (1000.0, False)],
    ids=["within-ttl", "within-grace", "at-grace", "after-grace"],
)
def test_stale_grace(clock: Clock, elapsed: float, served: bool) -> None:
    cache = make(clock, ttl=30.0, grace=600.0)
    cache.store("a", "route-a", cache.generation)
    clock.advance(elapsed)
    assert (cache.stale("a") == "route-a") is served


def test_a_cached_miss_is_never_served_stale(clock: Clock) -> None:
    """An unknown host during an outage must get 503, not a remembered 404."""
    cache = make(clock)
    cache.store("ghost", None, cache.generation)
    assert cache.stale("ghost") is None


@pytest.mark.parametrize(
    ("shorter", "elapsed", "served"),
    [
        (None, 100.0, True),
        (60.0, 59.0, True),
        (60.0, 61.0, False),
        (0.0, 29.0, True),
        (0.0, 31.0, False),
        (9999.0, 700.0, False),
    ],
    ids=[
        "no-override",
        "private-within",
        "private-after",
        "zero-grace-within-ttl",
        "zero-grace-after-ttl",
        "override-never-lengthens",
    ],
)
def test_grace_may_be_shortened_per_value(
    clock: Clock, shorter: float | None, elapsed: float, served: bool
) -> None:
    cache = make(clock, ttl=30.0, grace=600.0)
    cache.store("a", "route-a", cache.generation)
    clock.advance(elapsed)
    assert (cache.stale("a", lambda _: shorter) == "route-a") is served


def test_invalidate_drops_hits_and_misses_at_once(clock: Clock) -> None:
    cache = make(clock)
    cache.store("a", "route-a", cache.generation)
    cache.store("b", None, cache.generation)
    cache.invalidate("a")
    cache.invalidate("b")
    assert cache.fresh("a") is None and cache.fresh("b") is None
    assert cache.stale("a") is None


def test_a_fetch_that_started_before_an_invalidation_is_not_stored(clock: Clock) -> None:
    cache = make(clock)
    started = cache.generation
    cache.invalidate("a")  # the route changed while the read was in flight
    cache.store("a", "old-route", started)
    assert cache.fresh("a") is None
    cache.store("a", "new-route", cache.generation)
    assert value_of(cache, "a") == "new-route"


def test_clear_drops_everything_and_bumps_the_generation(clock: Clock) -> None:
    cache = make(clock)
    for key in "abc":
        cache.store(key, key, cache.generation)
    before = cache.generation
    cache.clear()
    assert len(cache) == 0 and cache.generation > before
    cache.store("a", "late", before)
    assert cache.fresh("a") is None
