"""Admission as a table: every token location, validity and public/private route gives one decision
or one error (threat model T01-T03, T13, T14, C01, C02, CK04, O01, W03)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.core.admission import (
    MAX_COOKIE_TRIES,
    AdmissionConfig,
    Decision,
    Forward,
    Inbound,
    Preflight,
    Redirect,
    clean_location,
    cookie_name,
    cookie_tokens,
    decide,
    query_param,
    token_cookie,
)
from gateway.core.errors import GatewayError, OriginRejected, TokenRejected, TokenRequired
from gateway.core.header_policy import CORS_DEFAULTS
from gateway.core.records import Route
from gateway.core.tokens import SigningKey, TokenSigner

NOW = datetime.now(UTC).replace(microsecond=0)
HOST = "abc.eu.preview.localhost"
HOST_HEADER = f"{HOST}:8080"
SIGNER = TokenSigner([SigningKey("k1", b"k" * 40)])
LIVE_EXPIRY = NOW + timedelta(hours=1)


def route(*, public: bool, uid: str = "uid-p", **extra: Any) -> Route:
    return Route(
        hostname=HOST,
        workspace="ws",
        sandbox="sb",
        preview="web",
        target_host="10.0.0.7",
        port=3000,
        public=public,
        preview_uid=uid,
        tokens={"live": LIVE_EXPIRY.timestamp()},
        **extra,
    )


def token(jti: str = "live", uid: str = "uid-p", expires: datetime = LIVE_EXPIRY) -> str:
    return SIGNER.issue(preview_uid=uid, jti=jti, expires_at=expires, issued_at=NOW)


GOOD = token()
REVOKED = token(jti="revoked")
OTHER_PREVIEW = token(uid="uid-q")
EXPIRED = token(expires=NOW - timedelta(minutes=5))
GARBAGE = "not-a-token"


def inbound(
    *pairs: tuple[str, str],
    method: str = "GET",
    path: str = "/app",
    query: str = "",
    websocket: bool = False,
    scheme: str = "http",
) -> Inbound:
    return Inbound(
        method=method,
        headers=CIMultiDictProxy(CIMultiDict([("Host", HOST_HEADER), *pairs])),
        raw_path=path,
        raw_query=query,
        host_header=HOST_HEADER,
        scheme=scheme,
        websocket=websocket,
    )


POLICY = AdmissionConfig(
    signer=SIGNER, cookie_samesite="lax", allowed_origins=["https://IDE.example.com/"]
)


def run(request: Inbound, *, public: bool = False) -> Decision:
    return decide(request, route(public=public), POLICY, NOW)


# ── the matrix ──────────────────────────────────────────────────────────────────────────────
def by_header(value: str) -> Inbound:
    return inbound(("X-Blaxel-Preview-Token", value))


def by_query(value: str) -> Inbound:
    return inbound(query=f"a=1&bl_preview_token={value}")


def by_cookie(value: str) -> Inbound:
    return inbound(("Cookie", f"app=1; bl_preview_token={value}"))


LOCATIONS = {"header": by_header, "query": by_query, "cookie": by_cookie}
INVALID = {
    "garbage": (GARBAGE, "token_malformed"),
    "expired": (EXPIRED, "token_expired"),
    "revoked": (REVOKED, "token_revoked"),
    "other-preview": (OTHER_PREVIEW, "token_wrong_preview"),
}


@pytest.mark.parametrize("location", LOCATIONS)
def test_valid_token_admits_a_private_preview(location: str) -> None:
    decision = run(LOCATIONS[location](GOOD))
    assert isinstance(decision, Forward)
    # Only a query token is exchanged for the cookie; the others already travel by themselves.
    assert (decision.set_cookie is not None) is (location == "query")


@pytest.mark.parametrize("validity", INVALID)
@pytest.mark.parametrize("location", LOCATIONS)
def test_invalid_token_is_refused_on_a_private_preview(location: str, validity: str) -> None:
    value, reason = INVALID[validity]
    with pytest.raises(TokenRejected) as caught:
        run(LOCATIONS[location](value))
    assert caught.value.reason == reason and caught.value.status == 401


@pytest.mark.parametrize("validity", ["good", *INVALID])
@pytest.mark.parametrize("location", LOCATIONS)
def test_public_preview_admits_whatever_token_comes_along(location: str, validity: str) -> None:
    value = GOOD if validity == "good" else INVALID[validity][0]
    assert run(LOCATIONS[location](value), public=True) == Forward()


@pytest.mark.parametrize(
    "request_",
    [
        inbound(),
        inbound(("Cookie", "app=1")),
        inbound(("Cookie", "bl_preview_token=")),
        inbound(query="BL_PREVIEW_TOKEN=" + GOOD),
        inbound(query="bl%5Fpreview%5Ftoken=" + GOOD),
        inbound(query="bl_preview_token"),
        inbound(("X-Preview-Token", GOOD)),
        inbound(("Cookie", "BL_PREVIEW_TOKEN=" + GOOD)),
    ],
    ids=[
        "nothing",
        "other-cookies",
        "empty-cookie",
        "query-name-case",
        "query-name-encoded",
        "query-name-without-value",
        "other-header",
        "cookie-name-case",
    ],
)
def test_no_token_is_401_token_required(request_: Inbound) -> None:
    with pytest.raises(TokenRequired) as caught:
        run(request_)
    assert caught.value.status == 401 and caught.value.code == "token_required"


# ── precedence: header > query > cookie, and no fallback to a weaker source ─────────────────
@pytest.mark.parametrize(
    ("pairs", "query", "outcome"),
    [
        ([("X-Blaxel-Preview-Token", GOOD)], f"bl_preview_token={GARBAGE}", Forward),
        ([("X-Blaxel-Preview-Token", GARBAGE)], f"bl_preview_token={GOOD}", TokenRejected),
        ([("Cookie", f"bl_preview_token={GOOD}")], f"bl_preview_token={GARBAGE}", TokenRejected),
        ([("Cookie", f"bl_preview_token={GARBAGE}")], f"bl_preview_token={GOOD}", Forward),
        (
            [("X-Blaxel-Preview-Token", GARBAGE), ("Cookie", f"bl_preview_token={GOOD}")],
            "",
            TokenRejected,
        ),
        ([("X-Blaxel-Preview-Token", f"  {GOOD} ")], "", Forward),
        ([], f"bl_preview_token={GOOD}&bl_preview_token={GARBAGE}", Forward),
        ([], f"bl_preview_token={GARBAGE}&bl_preview_token={GOOD}", TokenRejected),
    ],
    ids=[
        "header-beats-bad-query",
        "bad-header-never-falls-back-to-query",
        "bad-query-never-falls-back-to-cookie",
        "query-beats-bad-cookie",
        "bad-header-never-falls-back-to-cookie",
        "header-whitespace",
        "first-query-value-counts",
        "first-query-value-bad",
    ],
)
def test_precedence(pairs: list[tuple[str, str]], query: str, outcome: type[object]) -> None:
    request_ = inbound(*pairs, query=query)
    if issubclass(outcome, GatewayError):
        with pytest.raises(outcome):
            run(request_)
    else:
        assert isinstance(run(request_), outcome)


# ── preflight ───────────────────────────────────────────────────────────────────────────────
PREFLIGHT = (("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST"))


@pytest.mark.parametrize("public", [False, True], ids=["private", "public"])
def test_preflight_is_answered_without_a_token(public: bool) -> None:
    decision = run(inbound(*PREFLIGHT, method="OPTIONS"), public=public)
    assert isinstance(decision, Preflight)
    assert decision.headers == dict(CORS_DEFAULTS)


def test_preflight_uses_the_previews_cors_headers_first() -> None:
    custom = route(
        public=False,
        response_headers={
            "Access-Control-Allow-Origin": "https://app.example",
            "access-control-allow-methods": "GET",
            "X-Frame-Options": "DENY",
        },
    )
    decision = decide(inbound(*PREFLIGHT, method="OPTIONS"), custom, POLICY, NOW)
    assert isinstance(decision, Preflight)
    lowered = {k.lower(): v for k, v in decision.headers.items()}
    assert lowered["access-control-allow-origin"] == "https://app.example"
    assert lowered["access-control-allow-methods"] == "GET"
    assert "x-frame-options" not in lowered
    assert lowered["access-control-max-age"] == CORS_DEFAULTS["Access-Control-Max-Age"]
    assert len(lowered) == len(decision.headers)  # no name twice in different cases


@pytest.mark.parametrize(
    ("method", "pairs"),
    [
        ("OPTIONS", [("Origin", "https://app.example")]),
        ("OPTIONS", [("Access-Control-Request-Method", "POST")]),
        ("GET", list(PREFLIGHT)),
    ],
    ids=["no-request-method", "no-origin", "not-options"],
)
def test_not_a_preflight_needs_a_token(method: str, pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(TokenRequired):
        run(inbound(*pairs, method=method))


# ── the query-token exchange ────────────────────────────────────────────────────────────────
NAVIGATE = ("Sec-Fetch-Mode", "navigate")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_navigation_with_query_token_redirects_without_it(method: str) -> None:
    decision = run(
        inbound(NAVIGATE, method=method, path="/p/q", query=f"x=1&bl_preview_token={GOOD}&y=%20")
    )
    assert isinstance(decision, Redirect)
    assert decision.location == "/p/q?x=1&y=%20"
    assert GOOD not in decision.location
    # The preview's own cookie name (see test_cookie_names_are_per_preview).
    assert decision.set_cookie.startswith(f"{cookie_name('http', 'uid-p')}={GOOD};")


@pytest.mark.parametrize(
    ("method", "pairs", "websocket"),
    [
        ("POST", [NAVIGATE], False),
        ("GET", [("Sec-Fetch-Mode", "cors")], False),
        ("GET", [], False),
        ("GET", [NAVIGATE], True),
    ],
    ids=["post", "fetch", "no-fetch-metadata", "websocket"],
)
def test_non_navigation_query_token_is_forwarded_with_the_cookie(
    method: str, pairs: list[tuple[str, str]], websocket: bool
) -> None:
    decision = run(
        inbound(*pairs, method=method, query=f"bl_preview_token={GOOD}", websocket=websocket)
    )
    assert isinstance(decision, Forward) and decision.set_cookie is not None


@pytest.mark.parametrize(
    ("path", "query", "location"),
    [
        ("/", f"bl_preview_token={GOOD}", "/"),
        ("/a", f"bl_preview_token={GOOD}&b=2", "/a?b=2"),
        ("//evil.test/x", f"bl_preview_token={GOOD}", "/evil.test/x"),
        ("///evil.test", "", "/evil.test"),
        ("/\\evil.test", "", "/evil.test"),
        ("/\\/evil.test", "", "/evil.test"),
        ("\\\\evil.test", "", "/evil.test"),
        ("/\t/evil.test", "", "/evil.test"),
        ("/\n/evil.test", "", "/evil.test"),
        ("/\r\n\\evil.test", "", "/evil.test"),
        ("/%2F%2Fevil.test", "", "/%2F%2Fevil.test"),
        ("", "", "/"),
        ("/a/b", "c=%2F%2F&d", "/a/b?c=%2F%2F&d"),
    ],
    ids=[
        "root",
        "keeps-other-params",
        "double-slash",
        "triple-slash",
        "slash-backslash",
        "mixed-slashes",
        "backslashes",
        "tab-between-slashes",
        "newline-between-slashes",
        "crlf-and-backslash",
        "encoded-slashes-stay-a-path",
        "empty",
        "query-untouched",
    ],
)
def test_clean_location(path: str, query: str, location: str) -> None:
    cleaned = clean_location(path, query)
    assert cleaned == location
    # How a browser reads it: tab, CR and LF are dropped anywhere in a URL (WHATWG URL parser).
    as_read = cleaned.translate({9: None, 10: None, 13: None})
    assert as_read.startswith("/") and as_read[1:2] not in ("/", "\\")


@pytest.mark.parametrize(
    ("scheme", "samesite", "name", "attributes"),
    [
        ("http", "lax", "bl_preview_token", ["Path=/", "HttpOnly", "Secure", "SameSite=Lax"]),
        (
            "https",
            "none",
            "__Host-bl_preview_token",
            ["Path=/", "HttpOnly", "Secure", "SameSite=None", "Partitioned"],
        ),
    ],
    ids=["http-lax", "https-none"],
)
def test_token_cookie(scheme: str, samesite: str, name: str, attributes: list[str]) -> None:
    expires = (NOW + timedelta(minutes=10)).timestamp()
    cookie = token_cookie(GOOD, scheme, samesite, expires, NOW)
    parts = cookie.split("; ")
    assert parts[0] == f"{name}={GOOD}" and cookie_name(scheme) == name
    for attribute in attributes:
        assert attribute in parts
    assert "Max-Age=600" in parts
    assert not any(p.lower().startswith("domain") for p in parts)


def test_cookie_max_age_never_negative() -> None:
    cookie = token_cookie(GOOD, "http", "lax", (NOW - timedelta(hours=1)).timestamp(), NOW)
    assert "Max-Age=0" in cookie.split("; ")


def test_https_cookie_name_is_accepted_back() -> None:
    assert isinstance(run(inbound(("Cookie", f"__Host-bl_preview_token={GOOD}"))), Forward)


# ── several cookies (a sibling preview may have tossed one in) ──────────────────────────────
@pytest.mark.parametrize(
    ("cookies", "admitted"),
    [
        ([OTHER_PREVIEW, GOOD], True),
        ([GARBAGE, EXPIRED, REVOKED, GOOD], True),
        ([GARBAGE, EXPIRED, REVOKED, OTHER_PREVIEW, GOOD], False),
        ([GARBAGE] * 10 + [GOOD], False),
        ([OTHER_PREVIEW], False),
    ],
    ids=["second", "fourth", "fifth-is-beyond-the-bound", "many-bad", "only-bad"],
)
def test_cookie_tries_are_bounded(cookies: list[str], admitted: bool) -> None:
    assert MAX_COOKIE_TRIES == 4
    header = "; ".join(f"bl_preview_token={c}" for c in cookies)
    request_ = inbound(("Cookie", header))
    if admitted:
        assert isinstance(run(request_), Forward)
    else:
        with pytest.raises(TokenRejected) as caught:
            run(request_)
        # The first failure is reported, whatever the later ones were.
        assert (
            caught.value.reason
            == INVALID["garbage" if cookies[0] == GARBAGE else "other-preview"][1]
        )


def test_cookie_tokens_reads_every_cookie_header() -> None:
    headers = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Cookie", 'a=1; bl_preview_token="t1"'),
                ("Cookie", "bl_preview_token=t2; __Host-bl_preview_token=t3"),
            ]
        )
    )
    assert cookie_tokens(headers) == ["t1", "t2", "t3"]


@pytest.mark.parametrize(
    ("query", "value"),
    [
        ("bl_preview_token=a%2Bb", "a+b"),
        ("x=1&bl_preview_token=v&bl_preview_token=w", "v"),
        ("bl_preview_token=", ""),
        ("xbl_preview_token=v", None),
        ("", None),
    ],
    ids=["decoded", "first", "empty-value", "suffix-name", "empty"],
)
def test_query_param(query: str, value: str | None) -> None:
    assert query_param(query, "bl_preview_token") == value


# ── WebSockets authenticated by cookie: the Origin must be the preview's own ────────────────
@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (f"http://{HOST_HEADER}", True),
        (f"https://{HOST_HEADER}", True),
        (f"HTTP://{HOST_HEADER.upper()}", True),
        ("https://ide.example.com", True),
        ("https://IDE.EXAMPLE.COM", True),
        (f"http://{HOST}", False),
        ("https://evil.example", False),
        ("http://other.eu.preview.localhost:8080", False),
        (f"http://{HOST_HEADER}.evil.example", False),
        ("null", False),
        (None, False),
    ],
    ids=[
        "own-http",
        "own-https",
        "own-upper",
        "configured-embedder",
        "configured-embedder-upper",
        "own-without-port",
        "cross-site",
        "sibling-preview",
        "suffix-attack",
        "null",
        "absent",
    ],
)
def test_websocket_cookie_needs_the_preview_origin(origin: str | None, allowed: bool) -> None:
    pairs = [("Cookie", f"bl_preview_token={GOOD}")]
    if origin is not None:
        pairs.append(("Origin", origin))
    request_ = inbound(*pairs, websocket=True)
    if allowed:
        assert isinstance(run(request_), Forward)
    else:
        with pytest.raises(OriginRejected) as caught:
            run(request_)
        assert caught.value.status == 403


@pytest.mark.parametrize("how", ["header", "query"])
def test_websocket_with_an_explicit_token_needs_no_origin_check(how: str) -> None:
    """A cross-site page cannot make a browser attach a header or query token it does not know."""
    if how == "header":
        request_ = inbound(
            ("X-Blaxel-Preview-Token", GOOD), ("Origin", "https://evil.example"), websocket=True
        )
    else:
        request_ = inbound(
            ("Origin", "https://evil.example"), query=f"bl_preview_token={GOOD}", websocket=True
        )
    assert isinstance(run(request_), Forward)


def test_plain_http_with_a_cookie_has_no_origin_check() -> None:
    request_ = inbound(("Cookie", f"bl_preview_token={GOOD}"), ("Origin", "https://evil.example"))
    assert isinstance(run(request_), Forward)
