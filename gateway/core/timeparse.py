"""Durations and timestamps as the Blaxel SDKs send them. Pure: no I/O."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_TTL = re.compile(r"^([1-9][0-9]{0,5})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_TTL = timedelta(days=3650)


def parse_ttl(value: str) -> timedelta:
    """``30m``, ``2h``, ``1d``, ``1w`` (Blaxel's units, plus seconds)."""
    match = _TTL.match(value.strip())
    if match is None:
        raise ValueError("ttl must be a number followed by s, m, h, d or w (e.g. 30m, 24h, 7d)")
    delta = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if delta > MAX_TTL:
        raise ValueError("ttl is longer than ten years")
    return delta


def parse_timestamp(value: str) -> datetime:
    """An ISO 8601 timestamp, read leniently and returned in UTC.

    Accepts what the SDKs produce: ``...Z`` with or without fractions (Python and
    ``toISOString``), a naive time (read as UTC), an explicit offset, and the Python SDK's
    ``+02:00Z`` (an offset with a stray ``Z``: the offset wins).
    """
    text = value.strip()
    if not text or len(text) > 64:
        raise ValueError("not an ISO 8601 timestamp")
    if text.endswith(("Z", "z")):
        body = text[:-1]
        has_offset = re.search(r"[+-]\d{2}:?\d{2}$", body) is not None and "T" in body
        text = body if has_offset else body + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise ValueError("the timestamp is out of range") from None


def format_timestamp(value: datetime) -> str:
    """UTC with a ``Z``, milliseconds when present; parseable by both SDKs."""
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")
