"""Helpers of the control API tests: a gateway per store, and the error-shape assertion."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.helpers.gateway import Gateway, run_gateway

ERROR_KEYS = {"error", "code", "message"}


def assert_error(status: int, body: Any, expected: int, *words: str) -> None:
    """``body`` is the documented error: ``{"error", "code", "message"}``, code = status."""
    assert status == expected, body
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, body
    assert body["code"] == expected and isinstance(body["error"], str) and body["error"]
    for word in words:
        assert word in body["message"], body


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
    async with run_gateway(**overrides) as gw:
        yield gw
