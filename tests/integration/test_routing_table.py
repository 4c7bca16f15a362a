"""One contract suite for every routing table: the embedded ``MemoryStore`` and the ``RedisStore``
against a real redis-server, a real Sentinel set (primary, replica, three sentinels, passwords)
and a real 3-primary Redis Cluster (each test under its own key prefix).

Invalidations are checked exactly: after an operation the test writes a marker and collects what
was published before the marker arrived, so "published these hostnames and nothing else" is
proved by message order on the channel, not by waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from gateway.core.errors import RoutingUnavailable
from gateway.core.records import Keys, Preview, Route, Sandbox, TokenRecord, utcnow
from gateway.store.base import FLUSH_ALL, PutResult, Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.redis_connect import single_clients
from tests.helpers.redis_server import RedisServer
from tests.helpers.redis_stores import redis_store

WS = "ws1"
OTHER_WS = "ws2"
DOMAIN = "preview.test"


def sandbox(name: str = "sb", target: str = "10.0.0.7", ws: str = WS, **extra: object) -> Sandbox:
    return Sandbox(workspace=ws, name=name, target_host=target, **extra)


def host(label: str) -> str:
    return f"{label}.eu.{DOMAIN}"


def preview(
    name: str = "web",
    hostname: str | None = None,
    *,
    sb: str = "sb",
    ws: str = WS,
    port: int = 3000,
    **extra: object,
) -> Preview:
    return Preview(
        workspace=ws,
        sandbox=sb,
        name=name,
        port=port,
        public=True,
        hostname=hostname or host(f"{name}-{sb}-{ws}"),
        **extra,
    )


@pytest.fixture(params=["memory", "redis", "sentinel", "cluster"])
async def store(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Store]:
    made: Store
    if request.param == "memory":
        made = MemoryStore()
    else:
        made = redis_store(request, request.param, redis_prefix)
    try:
        yield made
    finally:
        await made.close()


class Published:
    """Collects the store's invalidations; ``drain()`` returns what an operation published."""

    MARKER_SB = "zz-marker"

    def __init__(self, store: Store) -> None:
        self._store = store
        self._seen: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._marker = preview("marker", host("zz-marker"), sb=self.MARKER_SB)

    async def __aenter__(self) -> Published:
        await self._store.put_sandbox(sandbox(self.MARKER_SB), create=True)
        assert await self._store.put_preview(self._marker, create=True, force=False) is PutResult.OK

        async def collect() -> None:
            async for hostname in self._store.invalidations():
                self._seen.append(hostname)

        self._task = asyncio.get_running_loop().create_task(collect())
        # Subscribed once a marker written now comes back (Redis first sends FLUSH_ALL).
        async with asyncio.timeout(10):
            while self._marker.hostname not in self._seen:
                await self._store.put_preview(self._marker, create=False, force=False)
                await asyncio.sleep(0.02)
        self._seen.clear()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def drain(self) -> list[str]:
        """Everything published since the last drain, in order, up to a fresh marker."""
        await self._store.put_preview(self._marker, create=False, force=False)
        async with asyncio.timeout(10):
            while self._marker.hostname not in self._seen:
                await asyncio.sleep(0.005)
        index = self._seen.index(self._marker.hostname)
        before, self._seen = self._seen[:index], self._seen[index + 1 :]
        return [h for h in before if h != FLUSH_ALL]


# ── sandboxes ───────────────────────────────────────────────────────────────────────────────
async def test_sandbox_crud(store: Store) -> None:
    assert await store.get_sandbox(WS, "sb") is None
    assert await store.put_sandbox(sandbox(), create=True) is PutResult.OK
    assert await store.put_sandbox(sandbox(target="10.0.0.8"), create=True) is (
        PutResult.NAME_EXISTS
    )
    got = await store.get_sandbox(WS, "sb")
    assert got is not None and got.target_host == "10.0.0.7"
    assert await store.put_sandbox(sandbox(target="10.0.0.8"), create=False) is PutResult.OK
    got = await store.get_sandbox(WS, "sb")
    assert got is not None and got.target_host == "10.0.0.8"
    await store.put_sandbox(sandbox("a-first"), create=True)
    assert [s.name for s in await store.list_sandboxes(WS)] == ["a-first", "sb"]
    deleted = await store.delete_sandbox(WS, "sb")
    assert deleted is not None and deleted.name == "sb"
    assert await store.delete_sandbox(WS, "sb") is None
    assert await store.get_sandbox(WS, "sb") is None
    assert [s.name for s in await store.list_sandboxes(WS)] == ["a-first"]


async def test_workspaces_are_separate(store: Store) -> None:
    await store.put_sandbox(sandbox(ws=WS), create=True)
    assert await store.put_sandbox(sandbox(ws=OTHER_WS), create=True) is PutResult.OK
    await store.put_preview(preview(ws=WS), create=True, force=False)
    await store.put_preview(preview(ws=OTHER_WS), create=True, force=False)
    assert [s.workspace for s in await store.list_sandboxes(WS)] == [WS]
    assert [p.workspace for p in await store.list_previews(OTHER_WS, "sb")] == [OTHER_WS]
    await store.delete_sandbox(WS, "sb")
    assert await store.get_preview(OTHER_WS, "sb", "web") is not None
    assert await store.get_route(preview(ws=OTHER_WS).hostname) is not None


# ── previews and routes ─────────────────────────────────────────────────────────────────────
async def test_preview_crud_and_its_route(store: Store) -> None:
    pv = preview(port=5173, request_headers={"X-Env": "dev"}, response_headers={"X-A": "1"})
    assert await store.put_preview(pv, create=True, force=False) is PutResult.NO_SANDBOX
    assert await store.get_route(pv.hostname) is None
    await store.put_sandbox(sandbox(), create=True)
    assert await store.put_preview(pv, create=True, force=False) is PutResult.OK
    got = await store.get_preview(WS, "sb", "web")
    assert got is not None and got.revision == 0 and got.uid == pv.uid
    route = await store.get_route(pv.hostname)
    assert route == Route.build(sandbox(), got)
    assert (route.target_host, route.port, route.preview, route.public) == (
        "10.0.0.7",
        5173,
        "web",
        True,
    )
    assert route.request_headers == {"X-Env": "dev"} and route.response_headers == {"X-A": "1"}
    assert [p.name for p in await store.list_previews(WS, "sb")] == ["web"]

    updated = pv.model_copy(update={"port": 8080, "public": False})
    assert await store.put_preview(updated, create=False, force=False) is PutResult.OK
    got = await store.get_preview(WS, "sb", "web")
    assert got is not None and got.revision == 1 and got.port == 8080
    route = await store.get_route(pv.hostname)
    assert route is not None and route.port == 8080 and route.public is False

    deleted = await store.delete_preview(WS, "sb", "web")
    assert deleted is not None and deleted.name == "web"
    assert await store.delete_preview(WS, "sb", "web") is None
    assert await store.get_route(pv.hostname) is None
    assert await store.list_previews(WS, "sb") == []


async def test_name_conflict(store: Store) -> None:
    await store.put_sandbox(sandbox(), create=True)
    assert await store.put_preview(preview(), create=True, force=False) is PutResult.OK
    again = preview(hostname=host("elsewhere"))
    assert await store.put_preview(again, create=True, force=True) is PutResult.NAME_EXISTS
    assert await store.get_route(host("elsewhere")) is None
    got = await store.get_preview(WS, "sb", "web")
    assert got is not None and got.hostname == preview().hostname


async def test_hostname_conflict_and_force_within_one_workspace(store: Store) -> None:
    shared = host("shared")
    for ws in (WS, OTHER_WS):
        await store.put_sandbox(sandbox(ws=ws), create=True)
    first = preview("first", shared)
    assert await store.put_preview(first, create=True, force=False) is PutResult.OK

    second = preview("second", shared, port=4000)
    assert await store.put_preview(second, create=True, force=False) is PutResult.HOST_TAKEN
    foreign = preview("foreign", shared, ws=OTHER_WS)
    assert await store.put_preview(foreign, create=True, force=True) is PutResult.HOST_TAKEN
    route = await store.get_route(shared)
    assert route is not None and route.preview == "first"
    assert await store.get_preview(OTHER_WS, "sb", "foreign") is None

    assert await store.put_preview(second, create=True, force=True) is PutResult.OK
    route = await store.get_route(shared)
    assert route is not None and (route.preview, route.port) == ("second", 4000)
    assert await store.get_preview(WS, "sb", "first") is None, "the evicted preview is gone"
    assert [p.name for p in await store.list_previews(WS, "sb")] == ["second"]
    # Re-saving a preview under its own hostname is not a conflict.
    assert await store.put_preview(second, create=False, force=False) is PutResult.OK


async def test_revision_compare_and_set(store: Store) -> None:
    await store.put_sandbox(sandbox(), create=True)
    pv = preview()
    assert (
        await store.put_preview(pv, create=False, force=False, expect_revision=0)
        is PutResult.CHANGED
    ), "a preview that does not exist yet has no revision to match"
    await store.put_preview(pv, create=True, force=False)
    changed = pv.model_copy(update={"port": 1234})
    assert (
        await store.put_preview(changed, create=False, force=False, expect_revision=1)
        is PutResult.CHANGED
    )
    got = await store.get_preview(WS, "sb", "web")
    assert got is not None and got.port == 3000 and got.revision == 0
    assert (
        await store.put_preview(changed, create=False, force=False, expect_revision=0)
        is PutResult.OK
    )
    stale = pv.model_copy(update={"port": 999})
    assert (
        await store.put_preview(stale, create=False, force=False, expect_revision=0)
        is PutResult.CHANGED
    ), "a writer that read revision 0 loses once revision 1 is stored"
    got = await store.get_preview(WS, "sb", "web")
    route = await store.get_route(pv.hostname)
    assert got is not None and got.port == 1234 and got.revision == 1
    assert route is not None and route.port == 1234
    await store.delete_preview(WS, "sb", "web")
    assert (
        await store.put_preview(changed, create=False, force=False, expect_revision=1)
        is PutResult.CHANGED
    )
    assert await store.get_route(pv.hostname) is None


async def test_tokens_travel_with_the_route(store: Store) -> None:
    await store.put_sandbox(sandbox(), create=True)
    expires = utcnow() + timedelta(hours=1)
    token = TokenRecord(name="t1", jti="jti-1", expires_at=expires)
    await store.put_preview(preview(tokens={"t1": token}), create=True, force=False)
    route = await store.get_route(preview().hostname)
    assert route is not None and route.tokens == {"jti-1": expires.timestamp()}
    await store.put_preview(preview(tokens={}), create=False, force=False)
    route = await store.get_route(preview().hostname)
    assert route is not None and route.tokens == {}, "a revoked token leaves the route"


async def test_cascade_delete(store: Store) -> None:
    async with Published(store) as published:
        await store.put_sandbox(sandbox(), create=True)
        await store.put_sandbox(sandbox("keep"), create=True)
        names = ["a", "b", "c"]
        for name in names:
            await store.put_preview(preview(name), create=True, force=False)
        await store.put_preview(preview("k", sb="keep"), create=True, force=False)
        await published.drain()

        deleted = await store.delete_sandbox(WS, "sb")
        assert deleted is not None
        assert sorted(await published.drain()) == sorted(preview(n).hostname for n in names)
    for name in names:
        assert await store.get_preview(WS, "sb", name) is None
        assert await store.get_route(preview(name).hostname) is None
    assert await store.list_previews(WS, "sb") == []
    assert await store.get_route(preview("k", sb="keep").hostname) is not None
    # A sandbox created again under the old name starts empty.
    await store.put_sandbox(sandbox(), create=True)
    assert await store.list_previews(WS, "sb") == []


async def test_route_follows_the_sandbox_target(store: Store) -> None:
    async with Published(store) as published:
        await store.put_sandbox(sandbox(), create=True)
        await store.put_preview(preview("a"), create=True, force=False)
        await store.put_preview(preview("b", port=4000), create=True, force=False)
        await published.drain()

        assert await store.put_sandbox(sandbox(target="10.9.9.9"), create=False) is PutResult.OK
        assert sorted(await published.drain()) == sorted(
            [preview("a").hostname, preview("b").hostname]
        )
    for name, port in (("a", 3000), ("b", 4000)):
        route = await store.get_route(preview(name).hostname)
        assert route is not None and (route.target_host, route.port) == ("10.9.9.9", port)


async def test_hostname_change_moves_the_route(store: Store) -> None:
    async with Published(store) as published:
        await store.put_sandbox(sandbox(), create=True)
        await store.put_preview(preview(hostname=host("old")), create=True, force=False)
        assert await published.drain() == [host("old")]
        moved = preview(hostname=host("new"))
        assert await store.put_preview(moved, create=False, force=False) is PutResult.OK
        assert sorted(await published.drain()) == sorted([host("new"), host("old")])
        assert await store.get_route(host("old")) is None
        route = await store.get_route(host("new"))
        assert route is not None and route.preview == "web"
        assert await store.delete_preview(WS, "sb", "web") is not None
        assert await published.drain() == [host("new")]
        # Nothing is published for what did not change.
        assert await store.delete_preview(WS, "sb", "web") is None
        assert await store.put_sandbox(sandbox("empty"), create=True) is PutResult.OK
        assert await published.drain() == []


async def test_expiry_listing_and_route_expiry(store: Store) -> None:
    now = utcnow()
    past, soon, later = now - timedelta(minutes=1), now + timedelta(minutes=5), now + timedelta(1)
    await store.put_sandbox(sandbox("old", expires_at=past), create=True)
    await store.put_sandbox(sandbox(expires_at=later), create=True)
    await store.put_preview(preview("gone", expires_at=past), create=True, force=False)
    await store.put_preview(preview("soon", expires_at=soon), create=True, force=False)
    await store.put_preview(preview("forever"), create=True, force=False)

    assert set(await store.expired(now)) == {(WS, "old", None), (WS, "sb", "gone")}
    assert set(await store.expired(now + timedelta(minutes=10))) == {
        (WS, "old", None),
        (WS, "sb", "gone"),
        (WS, "sb", "soon"),
    }
    # A route expires with the earlier of its sandbox and its preview.
    route = await store.get_route(preview("soon").hostname)
    assert route is not None and route.expires_at == soon
    route = await store.get_route(preview("forever").hostname)
    assert route is not None and route.expires_at == later
    # Clearing or deleting takes the object off the list.
    await store.put_preview(preview("gone"), create=False, force=False)
    await store.delete_sandbox(WS, "old")
    assert await store.expired(now) == []


async def test_conditional_deletes_spare_what_is_no_longer_expired(store: Store) -> None:
    """The sweeper deletes by name: a name recreated (or renewed) after it was found expired
    must survive, so the expiry is checked again inside the delete's transaction."""
    now = utcnow()
    past = now - timedelta(minutes=1)
    await store.put_sandbox(sandbox(), create=True)
    await store.put_preview(preview("web", expires_at=past), create=True, force=False)
    assert (WS, "sb", "web") in await store.expired(now)
    # Recreated without an expiry between the listing and the delete:
    await store.delete_preview(WS, "sb", "web")
    await store.put_preview(preview("web"), create=True, force=False)
    assert await store.delete_preview(WS, "sb", "web", only_expired_at=now) is None
    assert await store.get_preview(WS, "sb", "web") is not None
    assert await store.get_route(preview("web").hostname) is not None
    # Still expired: deleted.
    await store.put_preview(preview("old", expires_at=past), create=True, force=False)
    assert await store.delete_preview(WS, "sb", "old", only_expired_at=now) is not None
    assert await store.get_preview(WS, "sb", "old") is None

    await store.put_sandbox(sandbox("renewed", expires_at=past), create=True)
    await store.put_sandbox(sandbox("renewed"), create=False)  # a PUT cleared the expiry
    assert await store.delete_sandbox(WS, "renewed", only_expired_at=now) is None
    assert await store.get_sandbox(WS, "renewed") is not None
    await store.put_sandbox(sandbox("stale", expires_at=past), create=True)
    assert await store.delete_sandbox(WS, "stale", only_expired_at=now) is not None


async def test_a_replace_never_brings_a_deleted_sandbox_back(store: Store) -> None:
    assert await store.put_sandbox(sandbox("gone"), create=False, must_exist=True) is (
        PutResult.NO_SANDBOX
    )
    assert await store.get_sandbox(WS, "gone") is None
    await store.put_sandbox(sandbox("here"), create=True)
    result = await store.put_sandbox(
        sandbox("here", target="10.0.0.8"), create=False, must_exist=True
    )
    assert result is PutResult.OK
    found = await store.get_sandbox(WS, "here")
    assert found is not None and found.target_host == "10.0.0.8"


# ── concurrency: one MULTI per write ────────────────────────────────────────────────────────
async def test_concurrent_writes_keep_previews_and_routes_consistent(store: Store) -> None:
    """50 creates of different previews and 50 updates of one preview (each moving its route to
    a new hostname) at once. Every write either commits entirely or not at all: each preview has
    exactly its route, no route is left behind, and no update was lost."""
    await store.put_sandbox(sandbox(), create=True)
    hot = preview("hot", host("hot-0"))
    await store.put_preview(hot, create=True, force=False)

    async def update(i: int) -> PutResult | None:
        moved = hot.model_copy(update={"hostname": host(f"hot-{i}"), "port": 10000 + i})
        try:
            return await store.put_preview(moved, create=False, force=False)
        except RoutingUnavailable:
            return None  # "too busy, try again" after repeated WATCH conflicts is allowed

    async def create(i: int) -> PutResult:
        return await store.put_preview(preview(f"p{i}"), create=True, force=False)

    results = await asyncio.gather(
        *(create(i) for i in range(50)), *(update(i) for i in range(1, 51))
    )
    assert results[:50] == [PutResult.OK] * 50
    updates_ok = sum(r is PutResult.OK for r in results[50:])
    assert updates_ok >= 1
    assert all(r in (PutResult.OK, None) for r in results[50:])

    previews = {p.name: p for p in await store.list_previews(WS, "sb")}
    assert set(previews) == {"hot", *(f"p{i}" for i in range(50))}
    for pv in previews.values():
        route = await store.get_route(pv.hostname)
        assert route is not None and route == Route.build(sandbox(), pv), pv.name
    final = previews["hot"]
    assert final.revision == updates_ok, "an update was lost or applied twice"
    assert final.port == 10000 + int(final.hostname.split(".")[0].removeprefix("hot-"))
    for i in range(51):
        if host(f"hot-{i}") != final.hostname:
            assert await store.get_route(host(f"hot-{i}")) is None, f"orphan route hot-{i}"


async def test_concurrent_target_changes_reach_every_route(store: Store) -> None:
    """Sandbox target changes racing preview creates: every route ends up with the target the
    sandbox finally has (a create never builds its route from a target that was replaced)."""
    await store.put_sandbox(sandbox(), create=True)
    targets = [f"10.0.1.{i}" for i in range(20)]

    async def retarget(target: str) -> None:
        with contextlib.suppress(RoutingUnavailable):
            await store.put_sandbox(sandbox(target=target), create=False)

    async def create(i: int) -> None:
        with contextlib.suppress(RoutingUnavailable):
            await store.put_preview(preview(f"p{i}"), create=True, force=False)

    await asyncio.gather(*(retarget(t) for t in targets), *(create(i) for i in range(30)))
    final = await store.get_sandbox(WS, "sb")
    assert final is not None
    previews = await store.list_previews(WS, "sb")
    assert previews
    for pv in previews:
        route = await store.get_route(pv.hostname)
        assert route is not None and route.target_host == final.target_host, pv.name


async def test_preview_updates_racing_retargets_keep_every_route_exact(store: Store) -> None:
    """A sandbox write rebuilds its previews' routes from what it read; a preview updated in
    between must make it read again, or the route would keep the old port or hostname."""
    await store.put_sandbox(sandbox(), create=True)
    names = [f"p{i}" for i in range(5)]
    for name in names:
        await store.put_preview(preview(name), create=True, force=False)
    used = {preview(name).hostname for name in names}

    async def retarget(i: int) -> None:
        with contextlib.suppress(RoutingUnavailable):
            await store.put_sandbox(sandbox(target=f"10.0.2.{i}"), create=False)

    async def update(i: int) -> None:
        name = names[i % len(names)]
        current = await store.get_preview(WS, "sb", name)
        assert current is not None
        moved = current.model_copy(update={"hostname": host(f"{name}-{i}"), "port": 20000 + i})
        used.add(moved.hostname)
        with contextlib.suppress(RoutingUnavailable):
            await store.put_preview(moved, create=False, force=False)

    for _ in range(3):
        await asyncio.gather(*(retarget(i) for i in range(15)), *(update(i) for i in range(40)))
    final = await store.get_sandbox(WS, "sb")
    assert final is not None
    holders = {}
    for pv in await store.list_previews(WS, "sb"):
        holders[pv.hostname] = pv
        assert await store.get_route(pv.hostname) == Route.build(final, pv), pv.name
    for hostname in used - set(holders):
        assert await store.get_route(hostname) is None, f"orphan route {hostname}"


async def test_sandbox_delete_racing_preview_updates_leaves_no_route(store: Store) -> None:
    """Deleting a sandbox while its previews move to new hostnames: afterwards no hostname that
    any of them ever had still routes (an orphan route would outlive its sandbox)."""
    for attempt in range(5):
        sb = f"sb{attempt}"
        await store.put_sandbox(sandbox(sb), create=True)
        names = [f"p{i}" for i in range(4)]
        for name in names:
            await store.put_preview(preview(name, sb=sb), create=True, force=False)
        used = {preview(name, sb=sb).hostname for name in names}

        async def update(
            i: int, sb: str = sb, used: set[str] = used, names: list[str] = names
        ) -> None:
            name = names[i % len(names)]
            current = await store.get_preview(WS, sb, name)
            if current is None:
                return
            moved = current.model_copy(update={"hostname": host(f"{sb}-{name}-{i}")})
            used.add(moved.hostname)
            with contextlib.suppress(RoutingUnavailable):
                await store.put_preview(moved, create=False, force=False)

        async def delete(sb: str = sb) -> None:
            await asyncio.sleep(0)
            while True:
                with contextlib.suppress(RoutingUnavailable):
                    await store.delete_sandbox(WS, sb)
                    return

        await asyncio.gather(*(update(i) for i in range(12)), delete())
        assert await store.get_sandbox(WS, sb) is None
        assert await store.list_previews(WS, sb) == []
        for hostname in used:
            assert await store.get_route(hostname) is None, f"orphan route {hostname}"


async def test_concurrent_creates_of_one_hostname_have_one_winner(store: Store) -> None:
    await store.put_sandbox(sandbox(), create=True)
    shared = host("contested")
    results = await asyncio.gather(
        *(store.put_preview(preview(f"p{i}", shared), create=True, force=False) for i in range(20))
    )
    assert results.count(PutResult.OK) == 1
    assert results.count(PutResult.HOST_TAKEN) == 19
    winner = f"p{results.index(PutResult.OK)}"
    route = await store.get_route(shared)
    assert route is not None and route.preview == winner
    assert [p.name for p in await store.list_previews(WS, "sb")] == [winner]


# ── Redis only: what is in the keys ─────────────────────────────────────────────────────────
@pytest.fixture
async def raw_redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "value",
    [b"{not json", b"[]", b'{"hostname": "x"}', b'{"port": "eighty"}', b"\xff\xfe", b""],
    ids=["broken-json", "wrong-type", "missing-fields", "wrong-field-type", "not-utf8", "empty"],
)
async def test_corrupt_redis_values_are_treated_as_absent(
    redis_server: RedisServer, redis_prefix: str, raw_redis: aioredis.Redis, value: bytes
) -> None:
    store = RedisStore(single_clients(redis_server.url, 5.0), redis_prefix)
    keys = Keys(redis_prefix)
    try:
        await store.put_sandbox(sandbox(), create=True)
        await store.put_preview(preview("good"), create=True, force=False)
        await raw_redis.set(keys.route(host("corrupt")), value)
        await raw_redis.set(keys.sandbox(WS, "bad"), value)
        await raw_redis.sadd(keys.sandboxes(WS), "bad")
        await raw_redis.set(keys.preview(WS, "sb", "bad"), value)
        await raw_redis.sadd(keys.previews(WS, "sb"), "bad")

        assert await store.get_route(host("corrupt")) is None
        assert await store.get_sandbox(WS, "bad") is None
        assert await store.get_preview(WS, "sb", "bad") is None
        assert [s.name for s in await store.list_sandboxes(WS)] == ["sb"]
        assert [p.name for p in await store.list_previews(WS, "sb")] == ["good"]
        # A corrupt record never blocks writes that walk over it.
        assert await store.put_sandbox(sandbox(target="10.0.0.9"), create=False) is PutResult.OK
        route = await store.get_route(preview("good").hostname)
        assert route is not None and route.target_host == "10.0.0.9"
        assert await store.delete_sandbox(WS, "sb") is not None
        assert await store.get_route(preview("good").hostname) is None
    finally:
        await store.close()


async def test_redis_keys_stay_under_the_prefix(
    redis_server: RedisServer, redis_prefix: str, raw_redis: aioredis.Redis
) -> None:
    store = RedisStore(single_clients(redis_server.url, 5.0), redis_prefix)
    try:
        await store.put_sandbox(sandbox(expires_at=utcnow() + timedelta(1)), create=True)
        await store.put_preview(preview(), create=True, force=False)
        keys = {k.decode() async for k in raw_redis.scan_iter(match=f"{redis_prefix}*")}
        k = Keys(redis_prefix)
        assert keys == {
            k.sandbox(WS, "sb"),
            k.sandboxes(WS),
            k.preview(WS, "sb", "web"),
            k.previews(WS, "sb"),
            k.route(preview().hostname),
            k.expiries(),
        }
        await store.delete_sandbox(WS, "sb")
        assert [k async for k in raw_redis.scan_iter(match=f"{redis_prefix}*")] == []
    finally:
        await store.close()


async def test_shared_secret_first_writer_wins(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    stores = [RedisStore(single_clients(redis_server.url, 5.0), redis_prefix) for _ in range(2)]
    try:
        first = await stores[0].shared_secret("token-key", "k1:aaa")
        second = await stores[1].shared_secret("token-key", "k2:bbb")
        assert first == second == "k1:aaa"
    finally:
        for s in stores:
            await s.close()
    assert await MemoryStore().shared_secret("token-key", "k3:ccc") == "k3:ccc"


async def test_keepalive_pongs_are_not_invalidations(
    redis_server: RedisServer, redis_prefix: str, raw_redis: aioredis.Redis
) -> None:
    """The subscriber pings Redis when the channel is quiet; the PONG that comes back on the
    subscription is not a hostname and must not reach the cache as one."""
    store = RedisStore(single_clients(redis_server.url, 5.0), redis_prefix, ping_interval_s=0.05)
    try:
        async with Published(store) as published:

            async def subscriber_pinged() -> bool:
                clients = await raw_redis.client_list()
                return any(c.get("sub") == "1" and c.get("cmd") == "ping" for c in clients)

            async with asyncio.timeout(10):
                while not await subscriber_pinged():
                    await asyncio.sleep(0.02)
            assert await published.drain() == []
    finally:
        await store.close()


async def test_concurrent_creates_across_workspaces_have_one_winner(store: Store) -> None:
    """Two workspaces race for one hostname (on a Cluster their keys are in different slots, so
    only the hostname's claim can decide): one create wins, everything else is HOST_TAKEN, and
    the route served is the winner's."""
    for ws in (WS, OTHER_WS):
        await store.put_sandbox(sandbox(ws=ws), create=True)
    shared = host("contested-across")
    contenders = [preview(f"p{i}", shared, ws=(WS, OTHER_WS)[i % 2]) for i in range(20)]
    results = await asyncio.gather(
        *(store.put_preview(p, create=True, force=False) for p in contenders)
    )
    assert results.count(PutResult.OK) == 1, results
    assert set(results) == {PutResult.OK, PutResult.HOST_TAKEN}
    winner = contenders[results.index(PutResult.OK)]
    route = await store.get_route(shared)
    assert route is not None and (route.workspace, route.preview) == (winner.workspace, winner.name)
    loser_ws = OTHER_WS if winner.workspace == WS else WS
    assert await store.list_previews(loser_ws, "sb") == []


async def test_a_missing_sandbox_is_reported_before_a_taken_hostname(store: Store) -> None:
    await store.put_sandbox(sandbox(ws=OTHER_WS), create=True)
    await store.put_preview(preview(ws=OTHER_WS, hostname=host("taken")), create=True, force=False)
    orphan = preview("orphan", host("taken"), sb="missing")
    assert await store.put_preview(orphan, create=True, force=False) is PutResult.NO_SANDBOX
