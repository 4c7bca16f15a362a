"""Waiting for a condition the test cannot be told about directly: poll it, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

WAIT_S = 10.0
"""Upper bound for any one event a test waits for: generous, so a slow machine never flakes,
and finite, so a missing event fails instead of hanging."""


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = WAIT_S
) -> None:
    """Poll ``predicate`` (plain or async) until it holds; TimeoutError after ``timeout``, which
    bounds a hang and is never a timing assertion."""
    async with asyncio.timeout(timeout):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)
