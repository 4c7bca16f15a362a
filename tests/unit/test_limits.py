"""The abuse limits' pure decisions, as tables (``gateway.core.limits``)."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.components import from_settings
from gateway.core.limits import (
    Caps,
    Pressure,
    RateLimiter,
    memory_pressure,
    retry_after,
    upload_too_slow,
)
from gateway.edge.config import HeadLimits
from gateway.edge.guard import GuardLimits
from gateway.ops.settings import Settings
from tests.helpers.gateway import make_settings


def test_caps_count_per_key_and_forget_released_keys() -> None:
    caps = Caps(2)
    assert caps.acquire("a") and caps.acquire("a")
    assert not caps.acquire("a"), "the third holder of a is over the cap"
    assert caps.count("a") == 2, "a refused acquire takes nothing"
    assert caps.acquire("b"), "another key has its own cap"
    caps.release("a")
    assert caps.acquire("a")
    for _ in range(2):
        caps.release("a")
    caps.release("b")
    assert len(caps) == 0, "keys at zero are deleted"
    caps.release("never-held")
    assert caps.count("never-held") == 0


def test_caps_of_zero_never_refuse() -> None:
    caps = Caps(0)
    assert all(caps.acquire("a") for _ in range(10_000))


@pytest.mark.parametrize(
    ("rate", "burst", "times", "expected"),
    [
        (0.0, 1, [0, 0, 0], [0.0, 0.0, 0.0]),  # no limit
        (1.0, 2, [0, 0, 0], [0.0, 0.0, 1.0]),  # burst of 2, then wait a second
        (1.0, 2, [0, 0, 0.5], [0.0, 0.0, 0.5]),  # half a token has come back
        (1.0, 2, [0, 0, 1.0], [0.0, 0.0, 0.0]),  # a whole token has come back
        (10.0, 1, [0, 0.05, 0.1], [0.0, 0.05, 0.0]),
        (2.0, 1, [0, 100, 100], [0.0, 0.0, 0.5]),  # idle time refills to burst, not beyond
        (1.0, 1, [5, 4, 4], [0.0, 1.0, 1.0]),  # a clock going back earns nothing
    ],
)
def test_token_bucket(rate: float, burst: int, times: list[float], expected: list[float]) -> None:
    limiter = RateLimiter(rate, burst)
    waits = [limiter.take("p", now) for now in times]
    assert waits == pytest.approx(expected)


def test_rate_limiter_keys_are_independent_and_bounded() -> None:
    limiter = RateLimiter(1.0, 1, max_keys=3)
    assert limiter.take("b", 0) == 0.0
    limiter.take("c", 0)
    assert limiter.take("a", 10) == 0.0
    assert limiter.take("a", 10) > 0, "a is spent"
    assert limiter.take("b", 10) == 0.0, "b has a bucket of its own, refilled by now"
    # b refills again by 11.5, c long since: a fourth key makes room by forgetting full buckets,
    # and a spent one is remembered.
    assert limiter.take("d", 10.5) == 0.0
    assert len(limiter) <= 3
    assert limiter.take("a", 10.5) > 0, "forgetting never hands a spent key a fresh bucket"


@pytest.mark.parametrize(
    ("seconds", "header"), [(0.0, 1), (0.01, 1), (1.0, 1), (1.2, 2), (59.5, 60)]
)
def test_retry_after_is_whole_seconds_at_least_one(seconds: float, header: int) -> None:
    assert retry_after(seconds) == header


MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("rss_mib", "limit_mib", "level"),
    [
        (10_000, 0, Pressure.NONE),  # no budget
        (89, 100, Pressure.NONE),
        (90, 100, Pressure.WEBSOCKETS),
        (94, 100, Pressure.WEBSOCKETS),
        (95, 100, Pressure.REQUESTS),
        (200, 100, Pressure.REQUESTS),
    ],
)
def test_memory_pressure_levels(rss_mib: int, limit_mib: int, level: Pressure) -> None:
    assert memory_pressure(rss_mib * MIB, limit_mib * MIB) is level


@pytest.mark.parametrize(
    ("received", "window", "rate", "slow"),
    [
        (0, 30.0, 0, False),  # disabled
        (30 * 1024 - 1, 30.0, 1024, True),
        (30 * 1024, 30.0, 1024, False),
        (0, 1.0, 1, True),
    ],
)
def test_upload_progress_rule(received: int, window: float, rate: int, slow: bool) -> None:
    assert upload_too_slow(received, window, rate) is slow


@pytest.mark.parametrize("cls", [GuardLimits, HeadLimits])
def test_limits_are_read_from_the_settings_of_their_names(cls: type) -> None:
    """``app.from_settings`` fills these by field name: a field no setting carries would keep
    its default without a word."""
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    assert names <= set(Settings.model_fields)
    # Values unlike any default, and valid for each setting.
    settings = make_settings(**{f.name: f.default * 2 if f.default else 7 for f in fields})
    limits = from_settings(cls, settings)
    assert all(getattr(limits, name) == getattr(settings, name) for name in names)
