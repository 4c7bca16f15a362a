"""Lifecycle: `spec.ttl` and `spec.expires` on sandboxes and previews. An expired object is
never served or listed, its name is free at once, the sweeper deletes it (a sandbox with all
its previews and tokens), and with several replicas each deletion is done by exactly one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.core.records import utcnow
from gateway.ops.sweeper import sweep_expired
from gateway.store.base import Store
from tests.helpers.api import api_gateway, assert_error
from tests.helpers.gateway import Gateway, host_of
from tests.helpers.polling import eventually

SWEEP_S = 0.2


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    return {"sweep_interval_s": SWEEP_S}


async def edge_status(gw: Gateway, host: str, **headers: str) -> int:
    async with gw.session.get(gw.edge("/"), headers={"Host": host, **headers}) as r:
        return r.status


def store_of(gw: Gateway) -> Store:
    assert gw.running is not None
    return gw.running.store


@pytest.mark.parametrize("field", ["ttl", "expires"])
async def test_preview_expiry_stops_routing_and_is_swept(
    gw: Gateway, upstream: int, field: str
) -> None:
    in_2s = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    lifetime = {"ttl": "2s"} if field == "ttl" else {"expires": in_2s}
    await gw.sandbox()
    keep = await gw.preview(upstream, name="keep")
    short = await gw.preview(upstream, name="short", **lifetime)
    assert await edge_status(gw, host_of(short)) == 200

    async def gone_from_edge() -> bool:
        return await edge_status(gw, host_of(short)) == 404

    await eventually(gone_from_edge, timeout=2 + SWEEP_S + 8)
    assert_error(*await gw.call("GET", "/sandboxes/sb/previews/short"), 404)
    listed = (await gw.call("GET", "/sandboxes/sb/previews"))[1]
    assert [p["metadata"]["name"] for p in listed] == ["keep"]
    assert await edge_status(gw, host_of(keep)) == 200

    async def swept() -> bool:
        return await store_of(gw).get_preview("default", "sb", "short") is None

    await eventually(swept, timeout=SWEEP_S + 8)
    assert await store_of(gw).get_route(host_of(short)) is None


async def test_sandbox_expiry_takes_previews_and_tokens(gw: Gateway, upstream: int) -> None:
    await gw.sandbox(ttl="2s")
    private = await gw.preview(upstream, public=False)
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, token = await gw.call(
        "POST",
        "/sandboxes/sb/previews/web/tokens",
        json={"metadata": {"name": "t"}, "spec": {"expiresAt": expires}},
    )
    assert status == 200
    header = {"X-Blaxel-Preview-Token": token["spec"]["token"]}
    assert await edge_status(gw, host_of(private), **header) == 200

    async def gone() -> bool:
        return await edge_status(gw, host_of(private), **header) == 404

    await eventually(gone, timeout=2 + SWEEP_S + 8)
    for path in ("/sandboxes/sb", "/sandboxes/sb/previews", "/sandboxes/sb/previews/web/tokens"):
        assert_error(*await gw.call("GET", path), 404)
    assert (await gw.call("GET", "/sandboxes"))[1] == []

    async def swept() -> bool:
        store = store_of(gw)
        return await store.get_sandbox("default", "sb") is None

    await eventually(swept, timeout=SWEEP_S + 8)
    assert await store_of(gw).get_preview("default", "sb", "web") is None
    assert await store_of(gw).list_previews("default", "sb") == []


async def test_the_earlier_of_ttl_and_expires_wins(gw: Gateway, upstream: int) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    created = await gw.sandbox(ttl="1w", expires=soon.isoformat())
    expires = datetime.fromisoformat(created["spec"]["expires"])
    assert abs((expires - soon).total_seconds()) < 1
    await gw.sandbox("b", ttl="30m", expires=(soon + timedelta(days=1)).isoformat())
    b = (await gw.call("GET", "/sandboxes/b"))[1]
    assert datetime.fromisoformat(b["spec"]["expires"]) < soon


async def _expire_now(gw: Gateway, sandbox: str, preview: str | None = None) -> None:
    """Move an object's expiry into the past in the store, as if its TTL had run out (the
    sweeper of this gateway runs every 15 s, so it stays in the store meanwhile)."""
    store = store_of(gw)
    past = utcnow() - timedelta(seconds=1)
    if preview is None:
        sb = await store.get_sandbox("default", sandbox)
        assert sb is not None
        await store.put_sandbox(sb.model_copy(update={"expires_at": past}), create=False)
    else:
        pv = await store.get_preview("default", sandbox, preview)
        assert pv is not None
        await store.put_preview(
            pv.model_copy(update={"expires_at": past}), create=False, force=False
        )


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_expired_names_and_hostnames_are_free_before_the_sweep(
    request: pytest.FixtureRequest, upstream: int, store: str
) -> None:
    async with api_gateway(store, request) as gw:  # the default 15 s sweep: it won't interfere
        await gw.sandbox("sb", ttl="1d")
        await gw.preview(upstream, name="web", ttl="1d")
        await gw.sandbox("other")
        await gw.preview(upstream, sandbox="other", name="pfx", prefixUrl="app", ttl="1d")

        # A preview past its expiry: a 404 everywhere, and create-if-not-exists works at once.
        await _expire_now(gw, "sb", "web")
        assert_error(*await gw.call("GET", "/sandboxes/sb/previews/web"), 404)
        assert_error(*await gw.call("DELETE", "/sandboxes/sb/previews/web"), 404)
        await _expire_now(gw, "other", "pfx")
        status, body = await gw.call(
            "POST",
            "/sandboxes/sb/previews",
            json={"metadata": {"name": "web"}, "spec": {"port": upstream}},
        )
        assert status == 200, body
        # The expired preview's prefix hostname is free too, without `force`.
        prefixed = await gw.preview(upstream, name="new", prefixUrl="app")
        assert host_of(prefixed) == "app-default.preview.localhost"

        # A sandbox past its expiry: same, and it takes its previews along.
        await _expire_now(gw, "sb")
        assert_error(*await gw.call("GET", "/sandboxes/sb"), 404)
        assert [s["metadata"]["name"] for s in (await gw.call("GET", "/sandboxes"))[1]] == ["other"]
        fresh = await gw.sandbox("sb")
        assert "expires" not in fresh["spec"]
        assert (await gw.call("GET", "/sandboxes/sb/previews"))[1] == []
        async with gw.session.get(gw.edge("/"), headers={"Host": host_of(prefixed)}) as r:
            assert r.status == 404


# ── several replicas ────────────────────────────────────────────────────────────────────────
async def _expiring_objects(gw: Gateway, port: int, ttl: str) -> set[tuple[str, str, str | None]]:
    """Previews that expire in sandboxes that don't, and sandboxes that expire with previews
    that don't: each is one deletion, whichever replica does it."""
    expected: set[tuple[str, str, str | None]] = set()
    for s in range(3):
        await gw.sandbox(f"keep{s}")
        for p in range(4):
            await gw.preview(port, sandbox=f"keep{s}", name=f"p{p}", ttl=ttl)
            expected.add(("default", f"keep{s}", f"p{p}"))
    for s in range(2):
        await gw.sandbox(f"gone{s}", ttl=ttl)
        for p in range(2):
            await gw.preview(port, sandbox=f"gone{s}", name=f"p{p}")
        expected.add(("default", f"gone{s}", None))
    return expected


async def test_two_replicas_race_and_each_object_is_deleted_once(
    request: pytest.FixtureRequest, upstream: int
) -> None:
    async with (
        api_gateway("redis", request) as a,
        api_gateway("redis", request) as b,  # the same Redis prefix: one routing table
    ):
        expected = await _expiring_objects(a, upstream, "1d")
        later = utcnow() + timedelta(days=2)
        deleted: list[tuple[str, str, str | None]] = []
        for _ in range(3):  # three rounds of both replicas sweeping at the same moment
            swept_a, swept_b = await asyncio.gather(
                sweep_expired(store_of(a), lambda: later),
                sweep_expired(store_of(b), lambda: later),
            )
            deleted += swept_a + swept_b
        assert len(deleted) == len(set(deleted)), "an object was deleted twice"
        assert set(deleted) == expected
        assert [s["metadata"]["name"] for s in (await a.call("GET", "/sandboxes"))[1]] == [
            "keep0",
            "keep1",
            "keep2",
        ]
        assert (await a.call("GET", "/sandboxes/keep0/previews"))[1] == []


async def test_two_replicas_sweepers_delete_each_object_once(
    request: pytest.FixtureRequest, upstream: int
) -> None:
    async with (
        api_gateway("redis", request, sweep_interval_s=0.05) as a,
        api_gateway("redis", request, sweep_interval_s=0.05) as b,
    ):
        expected = await _expiring_objects(a, upstream, "2s")

        async def all_gone() -> bool:
            store = store_of(a)
            for ws, sb, pv in expected:
                found = await (
                    store.get_sandbox(ws, sb) if pv is None else store.get_preview(ws, sb, pv)
                )
                if found is not None:
                    return False
            return True

        await eventually(all_gone, timeout=2 + 8)
        assert a.running is not None and b.running is not None
        sweepers = (a.running.sweeper, b.running.sweeper)
        # A sweep may still be between its last delete and counting it; the round after that
        # one started with everything gone, so two more rounds each means all are counted.
        counted = [s.rounds + 2 for s in sweepers]
        await eventually(lambda: all(s.rounds >= n for s, n in zip(sweepers, counted, strict=True)))
        assert sweepers[0].deleted + sweepers[1].deleted == len(expected)
