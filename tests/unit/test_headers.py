"""Header policy as tables (threat model P01-P08, S07, S08, L01, L02, L06, CK03, C04).

Header names are matched case-insensitively everywhere: HTTP/1.1 names are case-insensitive, and
HTTP clients (undici/fetch, Go, curl -H) send them in lower case.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.core import header_policy as policy
from gateway.core import netpolicy
from gateway.core.errors import BadRequest, GatewayError, MethodNotAllowed, PayloadTooLarge

HOST = "abc.eu.preview.localhost"
PEER = "203.0.113.9"
LB = ipaddress.ip_network("10.0.0.0/8")


def hdrs(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def upstream_headers(
    *pairs: tuple[str, str],
    trusted: bool = False,
    peer: str = PEER,
    preview: Mapping[str, str] | None = None,
    websocket: bool = False,
) -> CIMultiDict[str]:
    return policy.upstream_request_headers(
        hdrs(("Host", HOST), *pairs),
        peer_ip=peer,
        proto="https",
        trusted_peer=trusted,
        preview_headers=preview or {},
        websocket=websocket,
    )


# ── framing checks ─────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("method", "version", "pairs", "error"),
    [
        ("TRACE", (1, 1), [], MethodNotAllowed),
        ("TRACK", (1, 1), [], MethodNotAllowed),
        ("CONNECT", (1, 1), [], MethodNotAllowed),
        ("POST", (1, 0), [("Transfer-Encoding", "chunked")], BadRequest),
        ("POST", (1, 0), [("transfer-encoding", "chunked")], BadRequest),
        (
            "POST",
            (1, 1),
            [("Transfer-Encoding", "chunked"), ("Content-Length", "4")],
            BadRequest,
        ),
        ("GET", (1, 1), [("Transfer_Encoding", "chunked")], BadRequest),
        ("GET", (1, 1), [("Content_Length", "5")], BadRequest),
        ("GET", (1, 1), [("X_Forwarded_For", "1.2.3.4")], BadRequest),
        ("GET", (1, 1), [("Host", "a.example")], BadRequest),
        ("POST", (1, 1), [("Content-Length", "1025")], PayloadTooLarge),
    ],
    ids=[
        "trace",
        "track",
        "connect",
        "te-on-http10",
        "te-on-http10-lowercase",
        "te-and-cl",
        "underscore-te",
        "underscore-cl",
        "underscore-xff",
        "two-hosts",
        "declared-body-too-large",
    ],
)
def test_check_request_refuses(
    method: str,
    version: tuple[int, int],
    pairs: list[tuple[str, str]],
    error: type[GatewayError],
) -> None:
    with pytest.raises(error):
        policy.check_request(method, version, hdrs(("Host", HOST), *pairs), max_body_bytes=1024)


@pytest.mark.parametrize(
    ("method", "version", "pairs", "limit"),
    [
        ("GET", (1, 1), [], 1024),
        ("POST", (1, 1), [("Transfer-Encoding", "chunked")], 1024),
        ("POST", (1, 0), [("Content-Length", "10")], 1024),
        ("POST", (1, 1), [("Content-Length", "1024")], 1024),
        ("POST", (1, 1), [("Content-Length", "999999999")], 0),
        ("OPTIONS", (1, 1), [("X-Custom-Header", "1")], 1024),
    ],
    ids=["get", "chunked-http11", "cl-http10", "cl-at-limit", "no-limit", "hyphenated-name"],
)
def test_check_request_accepts(
    method: str, version: tuple[int, int], pairs: list[tuple[str, str]], limit: int
) -> None:
    try:
        policy.check_request(method, version, hdrs(("Host", HOST), *pairs), max_body_bytes=limit)
    except GatewayError as exc:
        pytest.fail(f"refused with {type(exc).__name__} ({exc.status}): {exc}")


# ── hop-by-hop and Connection-listed headers ────────────────────────────────────────────────
HOP_BY_HOP_CASES = [
    ("Connection", "keep-alive"),
    ("Proxy-Connection", "keep-alive"),
    ("Keep-Alive", "timeout=5"),
    ("TE", "trailers"),
    ("Trailer", "X-Checksum"),
    ("Transfer-Encoding", "chunked"),
    ("Upgrade", "h2c"),
    ("Proxy-Authorization", "Basic eA=="),
    ("Proxy-Authenticate", "Basic"),
]
HOP_IDS = [name.lower() for name, _ in HOP_BY_HOP_CASES]


@pytest.mark.parametrize("spelling", ["canonical", "lower", "upper"])
@pytest.mark.parametrize(("name", "value"), HOP_BY_HOP_CASES, ids=HOP_IDS)
def test_hop_by_hop_request_headers_are_not_forwarded(name: str, value: str, spelling: str) -> None:
    sent = {"canonical": name, "lower": name.lower(), "upper": name.upper()}[spelling]
    out = upstream_headers((sent, value))
    assert name not in out


@pytest.mark.parametrize("spelling", ["canonical", "lower", "upper"])
@pytest.mark.parametrize(("name", "value"), HOP_BY_HOP_CASES, ids=HOP_IDS)
def test_hop_by_hop_response_headers_are_not_relayed(name: str, value: str, spelling: str) -> None:
    sent = {"canonical": name, "lower": name.lower(), "upper": name.upper()}[spelling]
    out = policy.downstream_response_headers(
        hdrs((sent, value), ("X-App", "1")), preview_headers={}, protected_domains=()
    )
    assert name not in out
    assert out["X-App"] == "1"


@pytest.mark.parametrize(
    ("connection", "listed"),
    [
        ("close, X-Secret", "X-Secret"),
        ("x-secret", "X-Secret"),
        ("keep-alive,  X-Secret ,", "X-Secret"),
        ("X-Real-Thing", "x-real-thing"),
    ],
    ids=["listed", "lowercase-token", "spaces-and-empty", "lowercase-header"],
)
def test_connection_listed_headers_are_removed(connection: str, listed: str) -> None:
    out = upstream_headers(("Connection", connection), (listed, "v"), ("X-Kept", "1"))
    assert listed not in out
    assert out["X-Kept"] == "1"


def test_connection_listed_response_headers_are_removed() -> None:
    out = policy.downstream_response_headers(
        hdrs(("connection", "x-internal"), ("X-Internal", "1"), ("X-App", "1")),
        preview_headers={},
        protected_domains=(),
    )
    assert "X-Internal" not in out and out["X-App"] == "1"


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
@pytest.mark.parametrize(
    "listed",
    ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded", "Host"],
)
def test_connection_can_never_remove_what_the_gateway_sets(listed: str, trusted: bool) -> None:
    """Traefik CVE-2021-32813 / CVE-2024-45410: a client naming the gateway's own headers in
    ``Connection`` must not make them disappear upstream."""
    out = upstream_headers(
        ("Connection", f"close, {listed}"),
        ("X-Forwarded-For", "10.1.1.1"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", HOST),
        ("Forwarded", "for=10.1.1.1"),
        trusted=trusted,
    )
    assert out["Host"] == HOST
    assert out["X-Forwarded-For"].endswith(PEER)
    assert out["X-Forwarded-Proto"]
    assert out["X-Forwarded-Host"]
    assert f"for={PEER}" in out["Forwarded"]


# ── Host and the forwarding headers ─────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "host",
    [HOST, HOST.upper(), f"{HOST}:8080", f"{HOST}."],
    ids=["plain", "upper", "port", "trailing-dot"],
)
def test_host_is_kept_exactly(host: str) -> None:
    out = policy.upstream_request_headers(
        hdrs(("Host", host)), peer_ip=PEER, proto="http", trusted_peer=False, preview_headers={}
    )
    assert out.getall("Host") == [host]
    assert out["X-Forwarded-Host"] == host


SPOOFED = [
    ("X-Forwarded-For", "1.2.3.4"),
    ("X-Forwarded-Proto", "evil"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Port", "1"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Real-IP", "1.2.3.4"),
    ("Forwarded", "for=1.2.3.4;host=evil.example;proto=https"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
]


@pytest.mark.parametrize("spelling", ["canonical", "lower"])
def test_untrusted_peer_cannot_claim_an_identity(spelling: str) -> None:
    sent = [(n if spelling == "canonical" else n.lower(), v) for n, v in SPOOFED]
    out = upstream_headers(*sent, trusted=False)
    assert out.getall("X-Forwarded-For") == [PEER]
    assert out.getall("X-Forwarded-Proto") == ["https"]
    assert out.getall("X-Forwarded-Host") == [HOST]
    assert out.getall("Forwarded") == [f'for={PEER};host="{HOST}";proto=https']
    for name in ("X-Forwarded-Port", "X-Forwarded-Prefix", "X-Real-IP"):
        assert name not in out
    for name in ("X-Original-URL", "X-Rewrite-URL"):
        assert name not in out
    assert "1.2.3.4" not in str(list(out.items()))


def test_trusted_proxy_values_are_kept_and_appended_to() -> None:
    out = upstream_headers(
        ("X-Forwarded-For", "198.51.100.1, 10.0.0.2"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "public.example"),
        ("Forwarded", "for=198.51.100.1;proto=https"),
        trusted=True,
        peer="10.0.0.3",
    )
    assert out.getall("X-Forwarded-For") == ["198.51.100.1, 10.0.0.2, 10.0.0.3"]
    assert out.getall("X-Forwarded-Proto") == ["https"]
    assert out.getall("X-Forwarded-Host") == ["public.example"]
    assert out.getall("Forwarded") == [
        f'for=198.51.100.1;proto=https, for=10.0.0.3;host="{HOST}";proto=https'
    ]


def test_trusted_proxy_without_forwarding_headers_gets_the_gateways() -> None:
    out = upstream_headers(trusted=True, peer="10.0.0.3")
    assert out["X-Forwarded-For"] == "10.0.0.3"
    assert out["X-Forwarded-Proto"] == "https"
    assert out["X-Forwarded-Host"] == HOST


def test_ipv6_peer_is_quoted_in_forwarded() -> None:
    out = upstream_headers(peer="2001:db8::1")
    assert out["X-Forwarded-For"] == "2001:db8::1"
    assert out["Forwarded"].startswith('for="[2001:db8::1]";')


@pytest.mark.parametrize(
    ("peer", "trusted", "expected"),
    [
        ("10.1.2.3", [LB], True),
        ("::ffff:10.1.2.3", [LB], True),
        ("192.0.2.1", [LB], False),
        ("10.1.2.3", [], False),
        ("", [LB], False),
        (None, [LB], False),
        ("not-an-ip", [LB], False),
        ("fd00::1", [ipaddress.ip_network("fd00::/8")], True),
    ],
    ids=["inside", "v4-mapped", "outside", "none-trusted", "empty", "unknown", "garbage", "v6"],
)
def test_is_trusted(
    peer: str | None,
    trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    expected: bool,
) -> None:
    assert netpolicy.is_trusted(peer, trusted) is expected


# ── credentials and gateway-owned headers ───────────────────────────────────────────────────
@pytest.mark.parametrize("spelling", ["canonical", "lower"])
@pytest.mark.parametrize(
    "name",
    [
        "X-Blaxel-Preview-Token",
        "X-Blaxel-Authorization",
        "X-Blaxel-Fallback",
        "X-Blaxel-Fallback-Preview",
        "X-Blaxel-Fallback-Domain",
    ],
)
def test_gateway_owned_headers_never_reach_the_sandbox(name: str, spelling: str) -> None:
    sent = name if spelling == "canonical" else name.lower()
    out = upstream_headers((sent, "secret"))
    assert name not in out
    assert "secret" not in str(list(out.items()))


def test_app_authorization_and_other_headers_pass_unchanged() -> None:
    out = upstream_headers(
        ("Authorization", "Bearer app-token"),
        ("Accept", "text/html"),
        ("X-Custom", "a"),
        ("X-Custom", "b"),
    )
    assert out["Authorization"] == "Bearer app-token"
    assert out.getall("X-Custom") == ["a", "b"]
    assert out["Accept"] == "text/html"


def test_nothing_is_invented() -> None:
    """No Accept-Encoding or User-Agent appears unless the client sent one (P05)."""
    out = upstream_headers()
    assert "Accept-Encoding" not in out and "User-Agent" not in out


@pytest.mark.parametrize("spelling", ["Expect", "expect"])
def test_expect_is_answered_by_the_gateway_not_forwarded(spelling: str) -> None:
    assert "Expect" not in upstream_headers((spelling, "100-continue"))


@pytest.mark.parametrize(
    ("cookie", "forwarded"),
    [
        ("a=1; bl_preview_token=t; b=2", "a=1; b=2"),
        ("bl_preview_token=t; a=1", "a=1"),
        ("a=1;bl_preview_token=t", "a=1"),
        ("__Host-bl_preview_token=t; a=1", "a=1"),
        ("bl_preview_token=t", None),
        ("bl_preview_token=t; bl_preview_token=u", None),
        ("a=1; B=2; c=x=y", "a=1; B=2; c=x=y"),
        ("BL_PREVIEW_TOKEN=t", "BL_PREVIEW_TOKEN=t"),
    ],
    ids=[
        "middle",
        "first",
        "no-space",
        "host-prefix",
        "only",
        "twice",
        "untouched",
        "other-case-is-another-cookie",
    ],
)
def test_token_cookie_is_stripped(cookie: str, forwarded: str | None) -> None:
    out = upstream_headers(("Cookie", cookie))
    assert out.get("Cookie") == forwarded


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("bl_preview_token=t", ""),
        ("a=1&bl_preview_token=t&b=2", "a=1&b=2"),
        ("bl_preview_token=t&bl_preview_token=u&x=1", "x=1"),
        ("bl_preview_token", ""),
        ("a=%20b&token=x&bl_preview_token=t", "a=%20b&token=x"),
        ("x_bl_preview_token=1&bl_preview_tokenx=2", "x_bl_preview_token=1&bl_preview_tokenx=2"),
        ("bl%5Fpreview%5Ftoken=t", "bl%5Fpreview%5Ftoken=t"),
        ("a=1&&b=2", "a=1&&b=2"),
        ("", ""),
    ],
    ids=[
        "only",
        "middle",
        "repeated",
        "no-value",
        "others-byte-identical",
        "similar-names",
        "encoded-name-is-not-the-name",
        "empty-pairs-kept",
        "empty",
    ],
)
def test_token_param_is_stripped(query: str, expected: str) -> None:
    assert policy.strip_token_param(query) == expected


@pytest.mark.parametrize(
    ("referer", "expected"),
    [
        (f"https://{HOST}/x?bl_preview_token=t&y=1", f"https://{HOST}/x?y=1"),
        (f"https://{HOST}/x?bl_preview_token=t", f"https://{HOST}/x"),
        (f"https://{HOST}/x?bl_preview_token=t#frag", f"https://{HOST}/x#frag"),
        (f"https://{HOST}/x", f"https://{HOST}/x"),
    ],
    ids=["with-others", "only", "fragment", "none"],
)
def test_referer_loses_the_token(referer: str, expected: str) -> None:
    assert upstream_headers(("Referer", referer))["Referer"] == expected


def test_preview_request_headers_are_added_and_replace_the_clients() -> None:
    out = upstream_headers(("X-Env", "client"), preview={"X-Env": "preview", "X-Added": "1"})
    assert out.getall("X-Env") == ["preview"]
    assert out["X-Added"] == "1"


def test_websocket_handshake_headers_are_left_to_the_gateways_own_handshake() -> None:
    pairs = [
        ("Sec-WebSocket-Key", "k"),
        ("sec-websocket-version", "13"),
        ("Sec-WebSocket-Extensions", "permessage-deflate"),
        ("Sec-WebSocket-Protocol", "vite-hmr"),
    ]
    relayed = upstream_headers(*pairs, websocket=True)
    for name, _ in pairs:
        assert name not in relayed
    plain = upstream_headers(*pairs, websocket=False)
    assert plain["Sec-WebSocket-Protocol"] == "vite-hmr"


@pytest.mark.parametrize(
    ("method", "pairs", "expected"),
    [
        ("GET", [("Upgrade", "websocket"), ("Connection", "Upgrade")], True),
        ("GET", [("Upgrade", "WebSocket"), ("Connection", "keep-alive, Upgrade")], True),
        ("GET", [("upgrade", "websocket"), ("connection", "upgrade")], True),
        ("POST", [("Upgrade", "websocket"), ("Connection", "Upgrade")], False),
        ("GET", [("Upgrade", "websocket"), ("Connection", "notupgrade")], False),
        ("GET", [("Upgrade", "h2c"), ("Connection", "Upgrade, HTTP2-Settings")], False),
        ("GET", [("Connection", "Upgrade")], False),
    ],
    ids=["plain", "firefox", "lowercase", "post", "notupgrade", "h2c", "no-upgrade-header"],
)
def test_is_websocket_upgrade(method: str, pairs: list[tuple[str, str]], expected: bool) -> None:
    assert policy.is_websocket_upgrade(method, hdrs(*pairs)) is expected


# ── response headers ────────────────────────────────────────────────────────────────────────
def test_response_precedence_app_then_preview_then_cors_defaults() -> None:
    out = policy.downstream_response_headers(
        hdrs(("access-control-allow-origin", "https://app.example"), ("X-Frame-Options", "DENY")),
        preview_headers={
            "Access-Control-Allow-Origin": "https://preview.example",
            "X-Frame-Options": "SAMEORIGIN",
            "Access-Control-Allow-Methods": "GET",
            "X-Preview": "1",
        },
        protected_domains=(),
    )
    assert out.getall("Access-Control-Allow-Origin") == ["https://app.example"]
    assert out.getall("X-Frame-Options") == ["DENY"]
    assert out.getall("Access-Control-Allow-Methods") == ["GET"]
    assert out["X-Preview"] == "1"
    for name, value in policy.CORS_DEFAULTS.items():
        if name not in ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods"):
            assert out.getall(name) == [value]


def test_cors_defaults_fill_an_app_that_sets_none() -> None:
    out = policy.downstream_response_headers(hdrs(), preview_headers={}, protected_domains=())
    for name, value in policy.CORS_DEFAULTS.items():
        assert out[name] == value
    assert out["Server"] == policy.SERVER


def test_app_server_header_wins() -> None:
    out = policy.downstream_response_headers(
        hdrs(("server", "vite")), preview_headers={}, protected_domains=()
    )
    assert out.getall("Server") == ["vite"]


def test_gateway_cookie_is_appended_after_the_apps() -> None:
    out = policy.downstream_response_headers(
        hdrs(("Set-Cookie", "app=1")),
        preview_headers={},
        protected_domains=(),
        set_cookie="bl_preview_token=t; Path=/",
    )
    assert out.getall("Set-Cookie") == ["app=1", "bl_preview_token=t; Path=/"]


DOMAIN = "preview.localhost"


@pytest.mark.parametrize(
    ("cookie", "relayed"),
    [
        ("sid=x; Domain=preview.localhost; Path=/", "sid=x; Path=/"),
        ("sid=x; Domain=.preview.localhost", "sid=x"),
        ("sid=x; domain=PREVIEW.LOCALHOST; Secure", "sid=x; Secure"),
        ("sid=x;Domain=localhost;HttpOnly", "sid=x;HttpOnly"),
        ("sid=x; Domain=other.eu.preview.localhost", "sid=x"),
        ("sid=x; Domain=example.org", "sid=x; Domain=example.org"),
        ("sid=x; Path=/; SameSite=Lax", "sid=x; Path=/; SameSite=Lax"),
        ("sid=x; Domain=preview.localhost; Domain=.localhost", "sid=x"),
        ("bl_preview_token=forged; Path=/", None),
        ("__Host-bl_preview_token=forged; Path=/; Secure", None),
        (" bl_preview_token =forged", None),
    ],
    ids=[
        "parent-domain",
        "leading-dot",
        "case",
        "grandparent",
        "sibling",
        "unrelated-domain-untouched",
        "no-domain",
        "two-domains",
        "token-cookie",
        "host-token-cookie",
        "token-cookie-spaces",
    ],
)
def test_set_cookie_is_made_host_only(cookie: str, relayed: str | None) -> None:
    assert policy.scope_set_cookie(cookie, (DOMAIN,)) == relayed
    out = policy.downstream_response_headers(
        hdrs(("Set-Cookie", cookie), ("Set-Cookie", "keep=1")),
        preview_headers={},
        protected_domains=(DOMAIN,),
    )
    expected = ([relayed] if relayed is not None else []) + ["keep=1"]
    assert out.getall("Set-Cookie") == expected


@pytest.mark.parametrize(
    ("name", "value", "valid"),
    [
        ("X-Env", "prod", True),
        ("X-Env", "a\tb", True),
        ("X-Env", "a\r\nX-Injected: 1", False),
        ("X-Env", "a\nb", False),
        ("X-Env", "a\x00b", False),
        ("X-Env", "a\x7fb", False),
        ("X Env", "v", False),
        ("X-Env:", "v", False),
        ("X_Env", "v", False),
        ("", "v", False),
    ],
    ids=["ok", "tab", "crlf", "lf", "nul", "del", "space-in-name", "colon", "underscore", "empty"],
)
def test_valid_header_pair(name: str, value: str, valid: bool) -> None:
    assert policy.valid_header_pair(name, value) is valid


@pytest.mark.parametrize(
    "name",
    ["Set-Cookie", "content-length", "Content-Encoding", "content-type", "Location", "connection"],
)
def test_preview_may_not_set_framing_or_cookie_response_headers(name: str) -> None:
    lowered = {n.lower() for n in policy.UNSETTABLE_RESPONSE_HEADERS}
    assert name.lower() in lowered
