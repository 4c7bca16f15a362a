"""Re-admission of an open WebSocket as a table: route changes and token expiries give one
verdict each (threat model W03)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.core.admission import AdmissionPolicy, Inbound
from gateway.core.readmission import (
    CHANGED,
    DELETED,
    EXPIRED,
    REVOKED,
    next_token_expiry,
    verdict,
)
from gateway.core.records import Route
from gateway.core.tokens import LEEWAY_S, SigningKey, TokenSigner

NOW = datetime.now(UTC).replace(microsecond=0)
HOST = "abc.eu.preview.localhost"
SIGNER = TokenSigner([SigningKey("k1", b"k" * 40)])
POLICY = AdmissionPolicy(signer=SIGNER, cookie_samesite="lax", allowed_origins=[])
SOON = NOW + timedelta(hours=1)  # real time passes while the suite runs: keep it far


def route(*, public: bool = False, tokens: dict[str, float] | None = None, **extra: Any) -> Route:
    fields: dict[str, Any] = {
        "hostname": HOST,
        "workspace": "ws",
        "sandbox": "sb",
        "preview": "web",
        "target_host": "10.0.0.7",
        "port": 3000,
        "preview_uid": "uid-p",
        **extra,
    }
    live = {"live": SOON.timestamp()} if tokens is None else tokens
    return Route(public=public, tokens=live, **fields)


def upgrade(token: str | None) -> Inbound:
    pairs = [("Host", HOST)] + ([("X-Blaxel-Preview-Token", token)] if token else [])
    return Inbound(
        method="GET",
        headers=CIMultiDictProxy(CIMultiDict(pairs)),
        raw_path="/ws",
        raw_query="",
        host_header=HOST,
        scheme="http",
        websocket=True,
    )


LIVE = SIGNER.issue(preview_uid="uid-p", jti="live", expires_at=SOON, issued_at=NOW)
OUTLIVED = SIGNER.issue(
    preview_uid="uid-p", jti="old", expires_at=NOW - timedelta(minutes=5), issued_at=NOW
)
PRIVATE, PUBLIC = route(), route(public=True)

CASES: dict[str, tuple[Route, Route | None, str | None, bool, str | None]] = {
    # name: admitted route, current route, token of the upgrade, policy known, expected reason
    "unchanged private": (PRIVATE, PRIVATE, LIVE, True, None),
    "another token minted": (
        PRIVATE,
        route(tokens={"live": SOON.timestamp(), "b": 1e10}),
        LIVE,
        True,
        None,
    ),
    "its token revoked": (PRIVATE, route(tokens={"b": 1e10}), LIVE, True, REVOKED),
    "its token ran out": (
        route(tokens={"old": 1e10}),
        route(tokens={"old": 1e10}),
        OUTLIVED,
        True,
        EXPIRED,
    ),
    "deleted": (PRIVATE, None, LIVE, True, DELETED),
    "moved to another port": (PRIVATE, route(port=4000), LIVE, True, CHANGED),
    "moved to another sandbox": (PRIVATE, route(target_host="10.0.0.8"), LIVE, True, CHANGED),
    "recreated (new uid)": (PRIVATE, route(preview_uid="uid-q"), LIVE, True, CHANGED),
    "public stays public": (PUBLIC, PUBLIC, None, True, None),
    "public turned private": (PUBLIC, PRIVATE, None, True, REVOKED),
    "private turned public": (PRIVATE, PUBLIC, LIVE, True, None),
    "no policy: public turned private": (PUBLIC, PRIVATE, None, False, REVOKED),
    "no policy: token socket lives on": (PRIVATE, route(tokens={}), LIVE, False, None),
}


@pytest.mark.parametrize("name", CASES)
def test_verdict(name: str) -> None:
    admitted, current, token, with_policy, expected = CASES[name]
    outcome = verdict(admitted, current, upgrade(token), POLICY if with_policy else None, NOW)
    if expected is None:
        assert outcome == current  # it stays, on the current route (its token list)
    else:
        assert outcome == expected


@pytest.mark.parametrize(
    ("tokens", "after", "expected"),
    [
        ({}, 0.0, None),
        ({"a": 100.0}, 0.0, 100.0 + LEEWAY_S),
        ({"a": 100.0, "b": 50.0}, 0.0, 50.0 + LEEWAY_S),
        ({"a": 100.0, "b": 50.0}, 50.0 + LEEWAY_S, 100.0 + LEEWAY_S),  # b already handled
        ({"a": 100.0}, 200.0, None),
    ],
)
def test_next_token_expiry(tokens: dict[str, float], after: float, expected: float | None) -> None:
    assert next_token_expiry(route(tokens=tokens), after) == expected


def test_public_previews_have_no_expiry_to_wait_for() -> None:
    assert next_token_expiry(route(public=True, tokens={"a": 100.0}), 0.0) is None
