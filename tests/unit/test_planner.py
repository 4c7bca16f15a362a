"""The planner as tables: one request head in, one plan (or one error) out. The old edge's
decisions (``header_policy``'s multidict functions, ``admission.decide``) are the reference the
planner must reproduce, header for header."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.core import header_policy as policy
from gateway.core.admission import AdmissionConfig, cookie_name
from gateway.core.errors import (
    BadRequest,
    GatewayError,
    InvalidHost,
    MethodNotAllowed,
    OriginRejected,
    PayloadTooLarge,
    TokenRejected,
    TokenRequired,
)
from gateway.core.planner import (
    BodyFraming,
    Forward,
    PlannerConfig,
    RequestHead,
    Respond,
    ResponseEdits,
    Upgrade,
    first_header,
    inspect,
    plan,
    shape_response,
)
from gateway.core.records import Route
from gateway.core.token_cache import TokenCache
from gateway.core.tokens import SigningKey, TokenSigner

NOW_DT = datetime.now(UTC).replace(microsecond=0)
NOW = NOW_DT.timestamp()
HOST = "abc.eu.preview.localhost"
HOST_HEADER = f"{HOST}:8080"
SIGNER = TokenSigner([SigningKey("k1", b"k" * 40)])
LIVE_EXPIRY = NOW_DT + timedelta(hours=1)
RID = "0123456789abcdef"
LB = "10.9.0.1"


def route(*, public: bool = True, **extra: Any) -> Route:
    values: dict[str, Any] = {
        "hostname": HOST,
        "workspace": "ws",
        "sandbox": "sb",
        "preview": "web",
        "target_host": "10.0.0.7",
        "port": 3000,
        "public": public,
        "preview_uid": "uid-p",
        "tokens": {"live": LIVE_EXPIRY.timestamp()},
    }
    return Route(**(values | extra))


def token(jti: str = "live", uid: str = "uid-p", expires: datetime = LIVE_EXPIRY) -> str:
    return SIGNER.issue(preview_uid=uid, jti=jti, expires_at=expires, issued_at=NOW_DT)


GOOD = token()


def config(**extra: Any) -> PlannerConfig:
    values: dict[str, Any] = {
        "preview_domain": "preview.localhost",
        "trusted_proxies": [ipaddress.ip_network("10.9.0.0/16")],
        "admission": AdmissionConfig(
            signer=SIGNER, cookie_samesite="lax", allowed_origins=["https://ide.example.com"]
        ),
        "max_body_bytes": 1024,
    }
    values.update(extra)
    return PlannerConfig(**values)


def head(
    *pairs: tuple[str, str],
    method: str = "GET",
    target: str = "/app",
    version: tuple[int, int] = (1, 1),
    peer: str = "203.0.113.5",
    scheme: str = "http",
    host: str | None = HOST_HEADER,
) -> RequestHead:
    headers = ([("Host", host)] if host is not None else []) + list(pairs)
    return RequestHead(method, target, version, headers, peer, scheme)


def planned(h: RequestHead, r: Route | None = None, cfg: PlannerConfig | None = None) -> Any:
    cfg = cfg or config()
    return plan(inspect(h, cfg), r or route(), NOW, cfg, request_id=RID)


def parse_head(data: bytes) -> tuple[str, list[tuple[str, str]]]:
    assert data.endswith(b"\r\n\r\n")
    line, *rest = data[:-4].decode("latin-1").split("\r\n")
    return line, [(n, v) for n, _, v in (h.partition(": ") for h in rest)]


def old_upstream(h: RequestHead, r: Route, *, trusted: bool, websocket: bool = False) -> list:
    """What the old edge sent: header_policy's multidict function plus the request id."""
    out = policy.upstream_request_headers(
        CIMultiDictProxy(CIMultiDict(h.headers)),
        peer_ip=h.peer,
        proto=h.scheme,
        trusted_peer=trusted,
        preview_headers=r.request_headers,
        websocket=websocket,
    )
    out["X-Request-Id"] = RID
    return list(out.items())


# ── refusals before routing, in the old edge's order ─────────────────────────────────────────
REFUSED: list[tuple[str, RequestHead, type[GatewayError]]] = [
    ("no-host", head(host=None), InvalidHost),
    ("two-hosts", head(("Host", HOST_HEADER)), InvalidHost),
    ("ip-host", head(host="10.0.0.1"), InvalidHost),
    ("bad-port", head(host=f"{HOST}:+80"), InvalidHost),
    ("two-hosts-before-trace", head(("host", HOST), method="TRACE"), InvalidHost),
    ("absolute-other-host", head(target="http://other.preview.localhost/x"), BadRequest),
    ("absolute-evil", head(target="http://evil.example/x"), BadRequest),
    ("asterisk", head(target="*", method="OPTIONS"), InvalidHost),
    ("authority-form", head(target=f"{HOST}:443", method="GET"), InvalidHost),
    ("trace", head(method="TRACE"), MethodNotAllowed),
    ("connect", head(method="CONNECT"), MethodNotAllowed),
    ("track", head(method="TRACK"), MethodNotAllowed),
    ("te-http10", head(("Transfer-Encoding", "chunked"), version=(1, 0)), BadRequest),
    ("te-and-cl", head(("Transfer-Encoding", "chunked"), ("Content-Length", "4")), BadRequest),
    ("te-xchunked", head(("Transfer-Encoding", "xchunked")), BadRequest),
    ("te-gzip-chunked", head(("Transfer-Encoding", "gzip, chunked")), BadRequest),
    (
        "te-twice",
        head(("Transfer-Encoding", "chunked"), ("transfer-encoding", "chunked")),
        BadRequest,
    ),
    ("underscore", head(("X_Forwarded_For", "1.2.3.4")), BadRequest),
    ("cl-plus", head(("Content-Length", "+2")), BadRequest),
    ("cl-unicode-digit", head(("Content-Length", "²")), BadRequest),
    ("cl-twice", head(("Content-Length", "2"), ("Content-Length", "2")), BadRequest),
    ("cl-too-large", head(("Content-Length", "1025")), PayloadTooLarge),
    ("cl-huge", head(("Content-Length", "9" * 5000)), PayloadTooLarge),
    ("cl-19-digits-no-limit", head(("Content-Length", "1" * 19)), BadRequest),
]


@pytest.mark.parametrize(("name", "request_head", "error"), REFUSED, ids=[r[0] for r in REFUSED])
def test_inspect_refuses(name: str, request_head: RequestHead, error: type[GatewayError]) -> None:
    cfg = config(max_body_bytes=0) if name.endswith("no-limit") else config()
    with pytest.raises(error) as caught:
        inspect(request_head, cfg)
    assert type(caught.value) is error


INSPECTED: list[tuple[str, RequestHead, dict[str, Any]]] = [
    ("plain", head(), {"host": HOST, "raw_path": "/app", "framing": BodyFraming.NONE}),
    ("query", head(target="/a/b?x=1&y"), {"raw_path": "/a/b", "raw_query": "x=1&y"}),
    ("fragment", head(target="/a?x=1#frag"), {"raw_path": "/a", "raw_query": "x=1"}),
    ("absolute-same", head(target=f"http://{HOST}/x?q"), {"raw_path": "/x", "raw_query": "q"}),
    ("absolute-no-path", head(target=f"http://{HOST}"), {"raw_path": "/"}),
    ("absolute-userinfo", head(target=f"http://u:p@{HOST}:8080/x"), {"raw_path": "/x"}),
    ("host-case-dot", head(host="ABC.eu.Preview.localhost."), {"host": HOST}),
    (
        "length",
        head(("Content-Length", "12"), method="POST"),
        {"framing": BodyFraming.LENGTH, "content_length": 12},
    ),
    ("length-zero", head(("Content-Length", "0"), method="POST"), {"framing": BodyFraming.NONE}),
    (
        "chunked",
        head(("transfer-encoding", "Chunked"), method="POST"),
        {"framing": BodyFraming.CHUNKED},
    ),
    ("expect", head(("Expect", "100-Continue")), {"expect_continue": True}),
    ("expect-http10", head(("Expect", "100-continue"), version=(1, 0)), {"expect_continue": False}),
    (
        "websocket",
        head(("Connection", "keep-alive, Upgrade"), ("Upgrade", "websocket")),
        {"websocket": True, "other_upgrade": False},
    ),
    (
        "websocket-post",
        head(("Connection", "Upgrade"), ("Upgrade", "websocket"), method="POST"),
        {"websocket": False, "other_upgrade": True},
    ),
    (
        "h2c",
        head(("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c")),
        {"websocket": False, "other_upgrade": True},
    ),
    ("untrusted-rid", head(("X-Request-Id", "abc")), {"request_id": None, "trusted_peer": False}),
    (
        "trusted-rid",
        head(("X-Request-Id", "abc"), peer=LB),
        {"request_id": "abc", "trusted_peer": True},
    ),
    ("trusted-rid-long", head(("X-Request-Id", "a" * 129), peer=LB), {"request_id": None}),
    ("trusted-rid-ctl", head(("X-Request-Id", "a\x01"), peer=LB), {"request_id": None}),
    ("accept", head(("accept", "text/html"), ("Accept", "x")), {"accept": "text/html"}),
]


@pytest.mark.parametrize(
    ("name", "request_head", "expected"), INSPECTED, ids=[r[0] for r in INSPECTED]
)
def test_inspect_reads(name: str, request_head: RequestHead, expected: dict[str, Any]) -> None:
    inspected = inspect(request_head, config())
    assert {key: getattr(inspected, key) for key in expected} == expected


# ── the upstream head is the old edge's, header for header ───────────────────────────────────
UPSTREAM_CASES: list[tuple[str, RequestHead]] = [
    ("plain", head(("Accept", "*/*"), ("User-Agent", "curl"))),
    (
        "hop-by-hop-and-credentials",
        head(
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic eDp5"),
            ("x-blaxel-preview-token", "tok-123"),
            ("x-blaxel-authorization", "Bearer key-123"),
            ("cookie", "a=1; bl_preview_token=tok-123; b=2"),
            ("cookie", "bl_preview_token=tok-123"),
            ("authorization", "Bearer app-token"),
            ("Referer", "http://x/?bl_preview_token=t&a=1#f"),
        ),
    ),
    (
        "spoofed-forwarding",
        head(("X-Forwarded-For", "6.6.6.6"), ("Forwarded", "for=6.6.6.6"), ("X-Real-IP", "1")),
    ),
    (
        "trusted-forwarding",
        head(
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-Proto", "https"),
            ("Forwarded", "for=198.51.100.1"),
            ("X-Request-Id", "lb-1"),
            peer=LB,
        ),
    ),
    (
        "trusted-connection-listed",
        head(("X-Forwarded-Proto", "https"), ("Connection", "X-Forwarded-Proto, Host"), peer=LB),
    ),
    ("connection-listed-host", head(("Connection", "Host, X-A"), ("X-A", "1"), ("X-B", "2"))),
    ("ipv6-peer", head(peer="2001:db8::1")),
    ("https", head(scheme="https")),
    ("client-request-id", head(("x-request-id", "mine"), ("X-A", "1"))),
    ("expect", head(("Expect", "100-continue"), ("Content-Length", "3"), method="PUT")),
    ("quoted-host", head(host="abc.eu.preview.localhost")),
]


@pytest.mark.parametrize(
    ("name", "request_head"), UPSTREAM_CASES, ids=[c[0] for c in UPSTREAM_CASES]
)
@pytest.mark.parametrize(
    "preview_headers", [{}, {"X-Env": "preview", "authorization": "Bearer cfg"}]
)
def test_forward_head_matches_the_old_edge(
    name: str, request_head: RequestHead, preview_headers: dict[str, str]
) -> None:
    r = route(request_headers=preview_headers)
    trusted = request_head.peer == LB
    expected = old_upstream(request_head, r, trusted=trusted)
    result = planned(request_head, r)
    assert isinstance(result, Forward)
    line, headers = parse_head(result.head)
    assert headers == expected
    assert line.endswith(" HTTP/1.1") and line.startswith(request_head.method + " ")


def test_request_line_strips_only_the_token_parameter() -> None:
    result = planned(head(target="/x/%2e%2e/y?a=1&bl_preview_token=t&b=%20"))
    assert parse_head(result.head)[0] == "GET /x/%2e%2e/y?a=1&b=%20 HTTP/1.1"
    result = planned(head(target="/x?bl_preview_token=t"))
    assert parse_head(result.head)[0] == "GET /x HTTP/1.1"


def test_chunked_body_keeps_its_framing_upstream() -> None:
    result = planned(head(("Transfer-Encoding", "chunked"), method="POST"))
    assert isinstance(result, Forward)
    _, headers = parse_head(result.head)
    assert headers[-1] == ("Transfer-Encoding", "chunked")
    assert [n for n, _ in headers].count("Transfer-Encoding") == 1
    assert result.framing is BodyFraming.CHUNKED and not result.idempotent


FORWARD_FLAGS: list[tuple[str, RequestHead, dict[str, Any]]] = [
    ("get", head(), {"idempotent": True, "response_bodyless": False, "close_after": False}),
    ("head", head(method="HEAD"), {"idempotent": True, "response_bodyless": True}),
    ("post", head(method="POST"), {"idempotent": False}),
    (
        "put-with-body",
        head(("Content-Length", "3"), method="PUT"),
        {"idempotent": False, "content_length": 3},
    ),
    ("delete", head(method="DELETE"), {"idempotent": True}),
    ("h2c", head(("Upgrade", "h2c"), ("Connection", "Upgrade")), {"close_after": True}),
    ("expect-no-body", head(("Expect", "100-continue")), {"expect_continue": False}),
    (
        "expect-body",
        head(("Expect", "100-continue"), ("Content-Length", "3"), method="POST"),
        {"expect_continue": True},
    ),
    ("target", head(), {"target_host": "10.0.0.7", "port": 3000}),
]


@pytest.mark.parametrize(
    ("name", "request_head", "expected"), FORWARD_FLAGS, ids=[f[0] for f in FORWARD_FLAGS]
)
def test_forward_flags(name: str, request_head: RequestHead, expected: dict[str, Any]) -> None:
    result = planned(request_head)
    assert isinstance(result, Forward)
    assert {key: getattr(result, key) for key in expected} == expected


def test_websocket_upgrade_keeps_the_handshake() -> None:
    h = head(
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Extensions", "permessage-deflate"),
        ("Sec-WebSocket-Protocol", "vite-hmr"),
        ("Origin", f"http://{HOST_HEADER}"),
    )
    result = planned(h)
    assert isinstance(result, Upgrade)
    line, headers = parse_head(result.head)
    assert line == "GET /app HTTP/1.1"
    names = [n.lower() for n, _ in headers]
    for name in ("sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"):
        assert names.count(name) == 1, name
    assert headers[-2:] == [("Connection", "Upgrade"), ("Upgrade", "websocket")]
    assert names.count("connection") == 1 and names.count("upgrade") == 1
    # Otherwise the old policy's headers (the handshake aside).
    old = [h for h in old_upstream(h, route(), trusted=False) if not h[0].startswith("Sec-")]
    assert [h for h in headers[:-2] if not h[0].startswith("Sec-")] == old
    assert result.edits.set_cookie is None


def test_non_latin1_preview_header_is_sent_as_utf8_and_client_bytes_unchanged() -> None:
    r = route(request_headers={"X-Name": "€uro"})
    result = planned(head(("X-Raw", "caf\xe9")), r)
    assert b"X-Name: \xe2\x82\xacuro\r\n" in result.head
    assert b"X-Raw: caf\xe9\r\n" in result.head


# ── admission, as the old decide() ─────────────────────────────────────────────────────────
def private(h: RequestHead, cfg: PlannerConfig | None = None) -> Any:
    return planned(h, route(public=False), cfg)


def test_public_preview_needs_no_token() -> None:
    assert isinstance(planned(head()), Forward)


def test_private_preview_without_token() -> None:
    with pytest.raises(TokenRequired):
        private(head())


@pytest.mark.parametrize(
    "request_head",
    [
        head(("X-Blaxel-Preview-Token", f" {GOOD} ")),
        head(("Cookie", f"a=1; bl_preview_token={GOOD}")),
        head(target=f"/app?bl_preview_token={GOOD}"),
    ],
    ids=["header", "cookie", "query"],
)
def test_private_preview_admits_a_good_token_and_never_forwards_it(
    request_head: RequestHead,
) -> None:
    result = private(request_head)
    assert isinstance(result, Forward)
    assert GOOD.encode() not in result.head
    query_token = "?" in request_head.target
    assert (result.edits.set_cookie is not None) is query_token
    if query_token:
        own = cookie_name("http", "uid-p")
        assert result.edits.set_cookie.startswith(f"{own}={GOOD}; Path=/; Max-Age=3600")


def test_query_token_on_navigation_redirects_with_the_cookie() -> None:
    result = private(
        head(
            ("Sec-Fetch-Mode", "navigate"),
            target=f"//evil/x?a=1&bl_preview_token={GOOD}",
            host=HOST_HEADER,
        )
    )
    assert isinstance(result, Respond) and result.status == 303
    headers = dict(result.headers)
    assert headers["Location"] == "/evil/x?a=1"
    assert headers["Set-Cookie"].startswith(cookie_name("http", "uid-p") + "=")
    assert headers["Cache-Control"] == "no-store" and headers["Server"] == policy.SERVER


def test_https_listener_names_the_host_cookie() -> None:
    own = cookie_name("https", "uid-p")
    assert own.startswith("__Host-bl_preview_token_")
    result = private(head(target=f"/?bl_preview_token={GOOD}", scheme="https"))
    assert result.edits.set_cookie.startswith(own + "=")
    result = private(head(target=f"/?bl_preview_token={GOOD}"), config(public_scheme="https"))
    assert result.edits.set_cookie.startswith(own + "=")


def test_preflight_is_answered_by_the_gateway() -> None:
    r = route(public=False, response_headers={"Access-Control-Allow-Origin": "https://a.test"})
    h = head(
        ("Origin", "https://a.test"), ("Access-Control-Request-Method", "PUT"), method="OPTIONS"
    )
    result = planned(h, r)
    assert isinstance(result, Respond) and result.status == 204
    assert result.error_code == "preflight"
    headers = dict(result.headers)
    assert headers["Access-Control-Allow-Origin"] == "https://a.test"
    assert headers["Access-Control-Max-Age"] == "86400" and headers["Server"] == policy.SERVER


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("garbage", "token_malformed"),
        (token(jti="revoked"), "token_revoked"),
        (token(uid="uid-q"), "token_wrong_preview"),
        (token(expires=NOW_DT - timedelta(minutes=5)), "token_expired"),
    ],
)
def test_bad_tokens_are_refused(value: str, reason: str) -> None:
    with pytest.raises(TokenRejected) as caught:
        private(head(("X-Blaxel-Preview-Token", value)))
    assert caught.value.reason == reason


def test_websocket_cookie_needs_an_allowed_origin() -> None:
    ws = (
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Cookie", f"bl_preview_token={GOOD}"),
    )
    with pytest.raises(OriginRejected):
        private(head(*ws, ("Origin", "https://evil.test")))
    assert isinstance(private(head(*ws, ("Origin", "https://IDE.example.com"))), Upgrade)
    assert isinstance(private(head(*ws, ("Origin", f"http://{HOST_HEADER}"))), Upgrade)


# ── the verified-token cache ─────────────────────────────────────────────────────────────────
class CountingSigner(TokenSigner):
    def __init__(self) -> None:
        super().__init__([SigningKey("k1", b"k" * 40)])
        self.calls = 0

    def verified(self, token: str, *, preview_uid: str, now: datetime) -> Any:
        self.calls += 1
        return super().verified(token, preview_uid=preview_uid, now=now)


def counting_config() -> tuple[PlannerConfig, CountingSigner]:
    signer = CountingSigner()
    cfg = config(
        admission=AdmissionConfig(signer=signer, cookie_samesite="lax", allowed_origins=[])
    )
    return cfg, signer


def test_a_token_is_verified_once() -> None:
    cfg, signer = counting_config()
    for _ in range(3):
        assert isinstance(private(head(("Cookie", f"bl_preview_token={GOOD}")), cfg), Forward)
    assert signer.calls == 1


def test_a_cached_token_is_still_revocable() -> None:
    cfg, _ = counting_config()
    h = head(("X-Blaxel-Preview-Token", GOOD))
    private(h, cfg)
    revoked = route(public=False).model_copy(update={"tokens": {}})
    with pytest.raises(TokenRejected) as caught:
        plan(inspect(h, cfg), revoked, NOW, cfg, request_id=RID)
    assert caught.value.reason == "token_revoked"


def test_a_cached_token_expires() -> None:
    cfg, signer = counting_config()
    short = token(expires=NOW_DT + timedelta(seconds=30))
    h = head(("X-Blaxel-Preview-Token", short))
    plan(inspect(h, cfg), route(public=False), NOW, cfg, request_id=RID)
    later = NOW + 30 + 6  # past exp and the verifier's 5 s leeway
    with pytest.raises(TokenRejected) as caught:
        plan(inspect(h, cfg), route(public=False), later, cfg, request_id=RID)
    assert caught.value.reason == "token_expired" and signer.calls == 2


def test_a_cached_token_opens_only_its_preview() -> None:
    cfg, _ = counting_config()
    h = head(("X-Blaxel-Preview-Token", GOOD))
    private(h, cfg)
    other = route(public=False, preview_uid="uid-q")
    with pytest.raises(TokenRejected) as caught:
        plan(inspect(h, cfg), other, NOW, cfg, request_id=RID)
    assert caught.value.reason == "token_wrong_preview"


def test_token_cache_is_bounded() -> None:
    cache = TokenCache(max_entries=2)
    cfg = config(tokens=cache)
    tokens = [token(jti=f"j{i}") for i in range(3)]
    r = route(public=False, tokens={f"j{i}": LIVE_EXPIRY.timestamp() for i in range(3)})
    for t in tokens:
        plan(inspect(head(("X-Blaxel-Preview-Token", t)), cfg), r, NOW, cfg, request_id=RID)
    assert len(cache) == 2
    assert cache.get("uid-p", tokens[0], NOW) is None
    assert cache.get("uid-p", tokens[2], NOW) is not None


# ── response shaping, as the old downstream_response_headers ───────────────────────────────
RESPONSES: list[list[tuple[str, str]]] = [
    [("Content-Type", "text/plain"), ("Content-Length", "5")],
    [
        ("Connection", "x-internal, keep-alive"),
        ("X-Internal", "1"),
        ("Keep-Alive", "t=5"),
        ("X-App", "1"),
    ],
    [
        ("Set-Cookie", "sid=1; Domain=preview.localhost; Path=/"),
        ("set-cookie", "bl_preview_token=f"),
        ("Set-Cookie", "a=2"),
    ],
    [
        ("access-control-allow-origin", "https://app"),
        ("Server", "nginx"),
        ("Transfer-Encoding", "chunked"),
    ],
    [("Upgrade", "h2c"), ("Proxy-Authenticate", "Basic"), ("X-Env", "app")],
]


@pytest.mark.parametrize("upstream", RESPONSES)
@pytest.mark.parametrize("set_cookie", [None, "bl_preview_token=t; Path=/"])
def test_shape_response_matches_the_old_edge(
    upstream: list[tuple[str, str]], set_cookie: str | None
) -> None:
    preview = {"X-Env": "preview", "Access-Control-Allow-Origin": "https://cfg"}
    expected = policy.downstream_response_headers(
        CIMultiDictProxy(CIMultiDict(upstream)),
        preview_headers=preview,
        protected_domains=("preview.localhost",),
        set_cookie=set_cookie,
    )
    edits = ResponseEdits(preview, ("preview.localhost",), set_cookie)
    assert shape_response(200, upstream, edits) == list(expected.items())


def test_shape_response_tells_the_client_about_relayed_chunks() -> None:
    out = shape_response(
        200, [("Transfer-Encoding", "chunked")], ResponseEdits({}, ()), chunked=True
    )
    assert [v for n, v in out if n == "Transfer-Encoding"] == ["chunked"]


def test_shape_response_keeps_a_101_handshake() -> None:
    upstream = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ("Sec-WebSocket-Extensions", "permessage-deflate"),
        ("Keep-Alive", "x"),
        ("Set-Cookie", "s=1; Domain=.preview.localhost"),
    ]
    edits = ResponseEdits({"X-Env": "p"}, ("preview.localhost",), "bl_preview_token=t")
    out = shape_response(101, upstream, edits, upgrade=True)
    assert out == [*upstream[:4], ("Set-Cookie", "s=1"), ("Server", policy.SERVER)]
    # Not a 101: an ordinary response, hop-by-hop dropped.
    out = shape_response(400, upstream, edits, upgrade=True)
    assert ("Upgrade", "websocket") not in out and ("X-Env", "p") in out


def test_first_header() -> None:
    assert first_header([("A", "1"), ("accept", "x"), ("Accept", "y")], "accept") == "x"
    assert first_header([], "accept") is None


# ── the planner equals the old policy for any header list ────────────────────────────────────
NAMES = st.sampled_from(
    [
        "Accept",
        "Cookie",
        "cookie",
        "Connection",
        "Keep-Alive",
        "X-Forwarded-For",
        "Forwarded",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "Referer",
        "X-A",
        "x-a",
        "TE",
        "Upgrade",
        "X-Blaxel-Preview-Token",
        "X-Request-Id",
        "Proxy-Authorization",
        "Expect",
        "Authorization",
    ]
)
VALUES = st.sampled_from(
    [
        "1",
        "keep-alive",
        "x-a",
        "X-A, Authorization",
        "a=1; bl_preview_token=t; b=2",
        "bl_preview_token=t",
        "http://h/?bl_preview_token=t&x=1",
        "http://h/?",
        "http://h/?#f",
        "   ",
        "a=1;bl_preview_token=t",
        "198.51.100.7",
        "",
        " v ",
    ]
)


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(st.tuples(NAMES, VALUES), max_size=12), trusted=st.booleans())
def test_any_header_list_is_forwarded_as_the_old_edge_did(
    pairs: list[tuple[str, str]], trusted: bool
) -> None:
    h = head(*pairs, peer=LB if trusted else "203.0.113.5")
    r = route(request_headers={"X-A": "cfg"})
    result = planned(h, r)
    assert isinstance(result, Forward)
    assert parse_head(result.head)[1] == old_upstream(h, r, trusted=trusted)


def test_admission_facts_of_an_inspected_head() -> None:
    h = head(
        ("Origin", "https://a.test"),
        ("x-blaxel-preview-token", "t1"),
        ("Cookie", "bl_preview_token=c1; x=1"),
        ("Cookie", '__Host-bl_preview_token="c2"'),
        ("Sec-Fetch-Mode", "navigate"),
        target="/p?q=1",
        host=f"{HOST.upper()}.:8080",
        scheme="https",
    )
    facts = inspect(h, config()).admission
    assert (facts.raw_path, facts.raw_query, facts.scheme) == ("/p", "q=1", "https")
    assert facts.host_header == f"{HOST}.:8080" and facts.origin == "https://a.test"
    assert facts.token_header == "t1" and list(facts.cookie_tokens) == ["c1", "c2"]
    assert facts.sec_fetch_mode == "navigate" and not facts.preflight and not facts.websocket
