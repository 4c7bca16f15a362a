"""The WebSocket hub on its own: which tunnels a route change or a token expiry re-admits, how
often, and what drain does. The tunnels are small recording objects (the hub knows a tunnel
only as something it can close); the relays' own tests cover real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from gateway.core.errors import ShuttingDown
from gateway.core.records import Route
from gateway.core.tokens import LEEWAY_S
from gateway.edge.ws_hub import WebSocketHub
from gateway.store.base import FLUSH_ALL

WAIT_S = 5.0


def route(host: str, **extra: object) -> Route:
    return Route.model_validate(
        {
            "hostname": host,
            "workspace": "ws",
            "sandbox": "sb",
            "preview": "web",
            "target_host": "10.0.0.7",
            "port": 3000,
            "public": True,
            **extra,
        }
    )


class Recorder:
    def __init__(self) -> None:
        self.closed: list[tuple[int, str]] = []

    def close(self, code: int, reason: str, *, timeout_s: float | None = None) -> None:
        self.closed.append((code, reason))

    def buffered_bytes(self) -> int:
        return 7


class Readmit:
    """Answers from a table per host; can hold a check until released."""

    policy = None

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.answers: dict[str, str | Route] = {}
        self.hold: asyncio.Event | None = None
        self.fail = False
        self.then: list[str | Route] = []
        """Answers for the next calls, in order, before the table."""

    async def __call__(self, host: str, admitted: Route, credentials: object) -> str | Route:
        self.asked.append(host)
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise RuntimeError("a bug in the callback")
        return self.then.pop(0) if self.then else self.answers.get(host, admitted)


@contextlib.asynccontextmanager
async def running(readmit: Readmit) -> AsyncIterator[WebSocketHub]:
    hub = WebSocketHub(readmit, close_timeout_s=1.0)
    worker = asyncio.create_task(hub.run())
    try:
        yield hub
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


async def until(check: object) -> None:
    async with asyncio.timeout(WAIT_S):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_an_invalidation_rechecks_that_previews_tunnels_only() -> None:
    readmit = Readmit()
    a, b = Recorder(), Recorder()
    async with running(readmit) as hub:
        with hub.registered(a, route("a.x"), "a.x"), hub.registered(b, route("b.x"), "b.x"):
            readmit.answers["a.x"] = "access revoked"
            hub.on_invalidation("a.x")
            await until(lambda: a.closed)
            assert a.closed == [(1008, "access revoked")] and not b.closed
            assert readmit.asked == ["a.x"]
            hub.on_invalidation(FLUSH_ALL)  # after a resubscribe: every tunnel is re-checked
            await until(lambda: len(readmit.asked) == 3)
            assert sorted(readmit.asked[1:]) == ["a.x", "b.x"]
        assert hub.open_count == 0


async def test_changes_during_a_check_give_exactly_one_more_check() -> None:
    readmit = Readmit()
    readmit.hold = asyncio.Event()
    tunnel = Recorder()
    async with running(readmit) as hub:
        with hub.registered(tunnel, route("a.x"), "a.x"):
            hub.on_invalidation("a.x")
            await until(lambda: readmit.asked == ["a.x"])
            hub.on_invalidation("a.x")
            hub.on_invalidation("a.x")
            for _ in range(20):  # loop turns: the worker starts checks on its next turn
                await asyncio.sleep(0)
            assert readmit.asked == ["a.x"]  # not two checks of one tunnel at once
            readmit.then = [route("a.x"), "preview changed"]  # the first check lets it stay
            readmit.hold.set()
            await until(lambda: tunnel.closed)
            assert readmit.asked == ["a.x", "a.x"]
            assert tunnel.closed == [(1008, "preview changed")]


async def test_a_token_expiry_rechecks_without_an_invalidation_and_follows_the_new_route() -> None:
    readmit = Readmit()
    soon = time.time() - LEEWAY_S + 0.2
    private = route("a.x", public=False, tokens={"t1": soon})
    # The first check finds a newer token list: the next expiry comes from it.
    readmit.answers["a.x"] = route("a.x", public=False, tokens={"t1": soon, "t2": soon + 0.2})
    tunnel = Recorder()
    async with running(readmit) as hub:
        with hub.registered(tunnel, private, "a.x"):
            await until(lambda: len(readmit.asked) == 1)
            await until(lambda: len(readmit.asked) == 2)  # t2's expiry, known only from it
            assert not tunnel.closed


async def test_a_callback_that_fails_closes_nothing_and_the_worker_goes_on() -> None:
    readmit = Readmit()
    readmit.fail = True
    tunnel = Recorder()
    async with running(readmit) as hub:
        with hub.registered(tunnel, route("a.x"), "a.x"):
            hub.on_invalidation("a.x")
            await until(lambda: len(readmit.asked) == 1)
            readmit.fail = False
            readmit.answers["a.x"] = "preview deleted"
            hub.on_invalidation("a.x")
            await until(lambda: tunnel.closed)
            assert tunnel.closed == [(1008, "preview deleted")]


async def test_drain_closes_everything_refuses_more_and_gives_up_after_its_bound() -> None:
    hub = WebSocketHub(None, close_timeout_s=5.0)
    stuck = Recorder()  # never goes away
    with hub.registered(stuck, route("a.x"), "a.x"):
        assert hub.buffered_bytes() == 7
        hub.refuse_if_draining()
        started = asyncio.get_running_loop().time()
        await hub.close_all(1001, "gateway shutting down", timeout_s=0.2)
        assert asyncio.get_running_loop().time() - started < WAIT_S
        assert stuck.closed == [(1001, "gateway shutting down")]
        assert hub.open_count == 1 and hub.draining
        with pytest.raises(ShuttingDown) as refused:
            hub.refuse_if_draining()
        assert (refused.value.status, refused.value.code) == (503, "shutting_down")
    assert hub.open_count == 0
