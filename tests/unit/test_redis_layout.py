"""The Redis key layout (``Keys``) and the parsing of Redis addresses, as tables."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.core.records import Keys
from gateway.store.redis_connect import cluster_url, parse_sentinels

PLAIN = Keys("pgw:")
TAGGED = Keys("pgw:", tagged=True)


@pytest.mark.parametrize(
    ("key", "plain", "tagged"),
    [
        (lambda k: k.sandbox("ws", "sb"), "pgw:sb:ws:sb", "pgw:sb:{ws}:sb"),
        (lambda k: k.sandboxes("ws"), "pgw:sbs:ws", "pgw:sbs:{ws}"),
        (lambda k: k.preview("ws", "sb", "web"), "pgw:pv:ws:sb:web", "pgw:pv:{ws}:sb:web"),
        (lambda k: k.previews("ws", "sb"), "pgw:pvs:ws:sb", "pgw:pvs:{ws}:sb"),
        (lambda k: k.route("a.example", "ws"), "pgw:route:a.example", "pgw:route:{ws}:a.example"),
        (lambda k: k.expiries("ws"), "pgw:expiries", "pgw:expiries:{ws}"),
        (lambda k: k.channel("ws"), "pgw:invalidate", "pgw:invalidate:{ws}"),
        (lambda k: k.invalidations, "pgw:invalidate", "pgw:invalidate:*"),
        (lambda k: k.host_owner("a.example"), "pgw:host:{a.example}", "pgw:host:{a.example}"),
    ],
    ids=[
        "sandbox",
        "sandboxes",
        "preview",
        "previews",
        "route",
        "expiries",
        "channel",
        "subscription",
        "host-owner",
    ],
)
def test_key_names(key: Callable[[Keys], str], plain: str, tagged: str) -> None:
    assert (key(PLAIN), key(TAGGED)) == (plain, tagged)


@pytest.mark.parametrize("keys", [PLAIN, TAGGED], ids=["plain", "tagged"])
def test_expiry_members_parse_back(keys: Keys) -> None:
    assert keys.parse_record(keys.sandbox("ws", "sb")) == ("ws", "sb", None)
    assert keys.parse_record(keys.preview("ws", "sb", "web")) == ("ws", "sb", "web")
    assert keys.parse_record(keys.route("a.example", "ws")) is None
    assert keys.parse_record("pgw:pv:ws:only-two") is None


def test_a_cluster_prefix_cannot_hold_a_hash_tag() -> None:
    with pytest.raises(ValueError, match="braces"):
        Keys("pgw:{x}:", tagged=True)


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        (["10.0.0.1:26379"], [("10.0.0.1", 26379)]),
        (["sentinel-a"], [("sentinel-a", 26379)]),
        (["s:26380", "t:26381"], [("s", 26380), ("t", 26381)]),
        (["[fd00::1]:26379"], [("fd00::1", 26379)]),
    ],
)
def test_sentinel_addresses(given: list[str], parsed: list[tuple[str, int]]) -> None:
    assert parse_sentinels(given) == parsed


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://n1:7000/0", ("redis://n1:7000/0", False)),
        ("redis+cluster://n1:7000", ("redis://n1:7000", True)),
        ("rediss+cluster://:pw@n1:7000", ("rediss://:pw@n1:7000", True)),
        ("REDIS+CLUSTER://n1:7000", ("redis://n1:7000", True)),
    ],
)
def test_cluster_urls(url: str, expected: tuple[str, bool]) -> None:
    assert cluster_url(url) == expected
