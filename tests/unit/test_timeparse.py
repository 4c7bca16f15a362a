"""Durations and timestamps as the Blaxel SDKs send them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.core.timeparse import MAX_TTL, format_timestamp, parse_timestamp, parse_ttl


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1s", timedelta(seconds=1)),
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        (" 24h ", timedelta(hours=24)),
        ("999999s", timedelta(seconds=999999)),
        ("3650d", MAX_TTL),
        ("521w", timedelta(weeks=521)),
    ],
    ids=["s", "90s", "m", "h", "d", "w", "padded", "six-digits", "ten-years", "521-weeks"],
)
def test_parse_ttl(value: str, expected: timedelta) -> None:
    assert parse_ttl(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "30",
        "m",
        "0s",
        "05m",
        "-1h",
        "+1h",
        "1.5h",
        "1H",
        "1y",
        "1 h",
        "1h30m",
        "1000000s",
        "3651d",
        "522w",
        "87601h",
        "\u0661h",
        "1_0m",
    ],
    ids=[
        "empty",
        "no-unit",
        "no-number",
        "zero",
        "leading-zero",
        "negative",
        "plus",
        "fraction",
        "upper-unit",
        "years",
        "inner-space",
        "compound",
        "seven-digits",
        "over-ten-years-days",
        "over-ten-years-weeks",
        "over-ten-years-hours",
        "arabic-indic-digit",
        "underscore",
    ],
)
def test_parse_ttl_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="ttl"):
        parse_ttl(value)


T = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-02T03:04:05Z", T),
        ("2026-01-02T03:04:05z", T),
        ("2026-01-02T03:04:05.123Z", T.replace(microsecond=123000)),
        ("2026-01-02T03:04:05.123456Z", T.replace(microsecond=123456)),
        ("2026-01-02T03:04:05", T),
        ("2026-01-02T03:04:05+00:00", T),
        ("2026-01-02T05:04:05+02:00", T),
        ("2026-01-01T22:04:05-05:00", T),
        ("2026-01-02T05:04:05+02:00Z", T),
        ("2026-01-02T05:04:05+0200Z", T),
        ("2026-01-02T03:04:05.5+00:00Z", T.replace(microsecond=500000)),
        ("  2026-01-02T03:04:05Z  ", T),
        ("2026-01-02", datetime(2026, 1, 2, tzinfo=UTC)),
        ("2026-01-02Z", datetime(2026, 1, 2, tzinfo=UTC)),
    ],
    ids=[
        "python-z",
        "lower-z",
        "js-toISOString",
        "micros",
        "naive-is-utc",
        "utc-offset",
        "positive-offset",
        "negative-offset",
        "python-sdk-offset-and-z",
        "compact-offset-and-z",
        "fraction-offset-and-z",
        "padded",
        "date-only",
        "date-only-z",
    ],
)
def test_parse_timestamp(value: str, expected: datetime) -> None:
    parsed = parse_timestamp(value)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Z",
        "soon",
        "1735787045",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-01-02T25:00:00Z",
        "2026-01-02T03:04:05+25:00",
        "2026-01-02T03:04:05ZZ",
        "x" * 65,
    ],
    ids=[
        "empty",
        "only-z",
        "word",
        "epoch",
        "month-13",
        "feb-30",
        "hour-25",
        "offset-25h",
        "double-z",
        "too-long",
    ],
)
def test_parse_timestamp_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_timestamp(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (T, "2026-01-02T03:04:05Z"),
        (T.replace(microsecond=123456), "2026-01-02T03:04:05.123Z"),
        (T.replace(microsecond=999), "2026-01-02T03:04:05.000Z"),
        (T.astimezone(timezone(timedelta(hours=2))), "2026-01-02T03:04:05Z"),
    ],
    ids=["whole-seconds", "millis", "sub-milli", "other-zone"],
)
def test_format_timestamp(value: datetime, text: str) -> None:
    assert format_timestamp(value) == text
    assert parse_timestamp(text) == value.replace(microsecond=value.microsecond // 1000 * 1000)
