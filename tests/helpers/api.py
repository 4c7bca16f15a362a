"""Helpers of the control API tests: a gateway per store, and the error-shape assertion."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Gateway, run_gateway

ERROR_KEYS = {"error", "code", "message"}


def assert_error(status: int, body: Any, expected: int, *words: str) -> None:
    """``body`` is the documented error: ``{"error", "code", "message"}``, code = status."""
    assert status == expected, body
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, body
    assert body["code"] == expected and isinstance(body["error"], str) and body["error"]
    for word in words:
        assert word in body["message"], body


async def _cancel_again() -> None:
    """Re-deliver the cancellation of a gateway's invalidation subscriber that redis-py lost.

    redis-py's ``PubSub.get_message`` swallows a ``CancelledError`` that lands while it is
    handling a message (reproduced with plain redis-py 8.1), so ``RedisStore.invalidations``
    keeps looping and the gateway never stops. The fix belongs in ``gateway/routing_table.py``
    (re-raise when ``asyncio.current_task().cancelling()`` after ``get_message``); until it is
    there, a shutdown in a test cancels that task again, only once it is already being cancelled.
    """
    while True:
        await asyncio.sleep(0.1)
        for task in asyncio.all_tasks():
            if task.get_name() == "invalidations" and task.cancelling():
                task.cancel()


@contextlib.asynccontextmanager
async def api_gateway(
    store: str, request: pytest.FixtureRequest, **overrides: Any
) -> AsyncIterator[Gateway]:
    """The in-process gateway with the embedded store (``"memory"``) or Redis (``"redis"``)."""
    if store == "redis":
        redis = request.getfixturevalue("redis_server")
        overrides = {
            "redis_url": redis.url,
            "redis_prefix": request.getfixturevalue("redis_prefix"),
            **overrides,
        }
    async with contextlib.AsyncExitStack() as stack:
        # Exits run in reverse: the gateway stops first, with the nudger alive; then it goes.
        nudge = asyncio.get_running_loop().create_task(_cancel_again())
        stack.push_async_callback(_settle, nudge)
        stack.callback(nudge.cancel)
        yield await stack.enter_async_context(run_gateway(**overrides))


async def _settle(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await task
