"""The gateway's cookie is named per preview (issue 12, "Cookies"): copies a sibling preview
planted under the old shared name, or another preview's cookies, are ignored rather than
counted against the bound of tries, and over https only ``__Host-`` names count."""

from __future__ import annotations

import pytest

from gateway.core.admission import (
    MAX_COOKIE_TRIES,
    Decision,
    Forward,
    cookie_name,
    own_cookie_name,
)
from gateway.core.errors import TokenRejected, TokenRequired
from gateway.core.header_names import is_token_cookie_name
from gateway.core.header_values import scope_set_cookie, split_token_cookie_pairs
from tests.unit.test_admission import GARBAGE, GOOD, OTHER_PREVIEW, inbound, run

OWN = own_cookie_name("uid-p")
OTHER = own_cookie_name("uid-q")


def test_names_are_per_preview_stable_and_opaque() -> None:
    assert OWN.startswith("bl_preview_token_") and len(OWN) == len("bl_preview_token_") + 16
    assert OWN == own_cookie_name("uid-p") != OTHER
    assert "uid-p" not in OWN
    assert cookie_name("https", "uid-p") == "__Host-" + OWN
    assert cookie_name("http", "uid-p") == OWN
    assert cookie_name("http") == "bl_preview_token", "no uid: the old shared name"


def cookies(*pairs: tuple[str, str], scheme: str = "http") -> Decision:
    header = "; ".join(f"{name}={value}" for name, value in pairs)
    return run(inbound(("Cookie", header), scheme=scheme))


def test_planted_shared_name_copies_cannot_lock_the_owner_out() -> None:
    """Before: five planted `bl_preview_token` cookies ahead of the owner's exhausted the tries.
    Now the owner's own name is tried first, whatever the order in the header."""
    planted = [("bl_preview_token", GARBAGE)] * (MAX_COOKIE_TRIES + 6)
    assert isinstance(cookies(*planted, (OWN, GOOD)), Forward)


def test_another_previews_cookies_are_not_even_counted() -> None:
    foreign = [(OTHER, OTHER_PREVIEW)] * 20
    assert isinstance(cookies(*foreign, (OWN, GOOD)), Forward)
    with pytest.raises(TokenRequired):
        cookies(*foreign)  # none of them is this preview's: as if there were no cookie


def test_the_old_shared_name_still_works_after_the_own_one() -> None:
    assert isinstance(cookies(("bl_preview_token", GOOD)), Forward)
    with pytest.raises(TokenRejected):
        cookies((OWN, GARBAGE), ("bl_preview_token", GARBAGE))


@pytest.mark.parametrize(
    ("name", "admitted"),
    [
        ("__Host-" + OWN, True),
        ("__Host-bl_preview_token", True),  # the old shared name, host-only by its prefix
        (OWN, False),
        ("bl_preview_token", False),
        ("__Host-" + OTHER, False),
    ],
)
def test_over_https_only_host_prefixed_names_count(name: str, admitted: bool) -> None:
    if admitted:
        assert isinstance(cookies((name, GOOD), scheme="https"), Forward)
    else:
        with pytest.raises(TokenRequired):
            cookies((name, GOOD), scheme="https")


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("bl_preview_token", True),
        ("__Host-bl_preview_token", True),
        (OWN, True),
        ("__Host-" + OTHER, True),
        ("bl_preview_tokenx", False),
        ("xbl_preview_token", False),
        ("__host-bl_preview_token", False),
        ("bl_preview", False),
    ],
)
def test_token_cookie_names(name: str, token: bool) -> None:
    assert is_token_cookie_name(name) is token


def test_per_preview_cookies_never_go_upstream_nor_come_from_the_app() -> None:
    kept, pairs = split_token_cookie_pairs(f"a=1; {OWN}=t1; __Host-{OTHER}=t2; b=2")
    assert kept == "a=1; b=2"
    assert pairs == [(OWN, "t1"), (f"__Host-{OTHER}", "t2")]
    assert scope_set_cookie(f"{OWN}=forged; Path=/", ["preview.localhost"]) is None
