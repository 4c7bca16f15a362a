"""The fuzz targets: each takes arbitrary bytes, drives one parser path and checks its
invariants. A target fails by raising anything but the parser's own refusal (a crash) or by an
``AssertionError`` (an invariant broken). Plain functions, so seeds replay without atheris."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gateway.core import header_policy as policy
from gateway.core.admission import AdmissionConfig, query_param
from gateway.core.errors import GatewayError, InvalidHost, TokenRejected
from gateway.core.header_names import TOKEN_COOKIE_NAMES, TOKEN_QUERY_PARAM
from gateway.core.hostnames import MAX_HOST_LENGTH, normalize_host
from gateway.core.http_framing import find_head_end
from gateway.core.planner import Forward, PlannerConfig, inspect, plan
from gateway.core.records import Route
from gateway.core.tokens import SigningKey, TokenSigner
from gateway.edge.connection import parse_head

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SIGNER = TokenSigner([SigningKey("k1", b"k" * 40)])
TOKEN = SIGNER.issue(
    preview_uid="uid-p", jti="live", expires_at=NOW + timedelta(hours=1), issued_at=NOW
)
HOST = "abc.preview.localhost"
CONFIG = PlannerConfig(
    preview_domain="preview.localhost",
    trusted_proxies=[],
    admission=AdmissionConfig(signer=SIGNER, cookie_samesite="lax", allowed_origins=[]),
    max_body_bytes=1 << 20,
)
ROUTES = [
    Route(
        hostname=HOST,
        workspace="ws",
        sandbox="sb",
        preview="web",
        target_host="10.0.0.7",
        port=3000,
        public=public,
        preview_uid="uid-p",
        tokens={"live": (NOW + timedelta(hours=1)).timestamp()},
    )
    for public in (True, False)
]
_PARSE_HOST = normalize_host.__wrapped__
"""Past the cache: every run parses (the cache keeps only accepted names anyway)."""
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def http_head(data: bytes) -> None:
    """Raw bytes as a client's head: the listener's parse (httptools plus its own limits), then
    ``inspect`` and ``plan`` for a public and a private route. Only ``GatewayError`` may stop it;
    a planned upstream head is well formed and never carries the token."""
    end = find_head_end(data)
    raw = data[:end] if end >= 0 else data + b"\r\n\r\n"
    try:
        head, _ = parse_head(raw, "203.0.113.5")
        inspected = inspect(head, CONFIG)
    except GatewayError:
        return
    for route in ROUTES:
        try:
            fresh = inspect(head, CONFIG)  # plan consumes its Inspected
            result = plan(fresh, route, NOW.timestamp(), CONFIG, request_id="r" * 16)
        except GatewayError:
            continue
        if isinstance(result, Forward):
            _check_forward(result.head)
    assert inspected.host == normalize_host(inspected.host)


def _check_forward(out: bytes) -> None:
    """The upstream head is well formed and none of the gateway's credentials travel in it (a
    token under another cookie name is the app's own and goes on)."""
    assert out.endswith(b"\r\n\r\n")
    lines = out[:-4].decode("latin-1").split("\r\n")
    assert all("\n" not in line and "\r" not in line for line in lines)
    fields = [line.partition(":")[::2] for line in lines[1:]]
    names = [name.lower() for name, _ in fields]
    assert names.count("host") == 1
    assert names.count("content-length") + names.count("transfer-encoding") <= 1
    assert "x-blaxel-preview-token" not in names
    for name, value in fields:
        if name.lower() == "cookie":
            pairs = (pair.split("=", 1)[0].strip() for pair in value.split(";"))
            assert not any(pair in TOKEN_COOKIE_NAMES for pair in pairs)
    query = lines[0].split(" ")[1].partition("?")[2]
    assert policy.strip_token_param(query) == query


def host(data: bytes) -> None:
    """A Host header value (as the listener decodes it, latin-1): refused, or a canonical name."""
    raw = data.decode("latin-1")
    try:
        name = _PARSE_HOST(raw)
    except InvalidHost:
        return
    assert name.isascii() and name == name.lower() and len(name) <= MAX_HOST_LENGTH
    assert all(_LABEL.fullmatch(label) for label in name.split("."))
    assert normalize_host(name) == name and name in raw.lower()
    _, sep, port = raw.rpartition(":")
    if sep and not raw.endswith("]"):
        assert port.isascii() and port.isdigit() and 0 < int(port) <= 65535


def token(data: bytes) -> None:
    """A token, a Cookie header and a query as a client sends them: verification refuses with
    ``TokenRejected`` only, and extraction finds what is there and leaves nothing behind."""
    text = data.decode("latin-1")
    for candidate in (text, TOKEN[: len(text)] + text, _spliced(text)):
        try:
            SIGNER.verified(candidate, preview_uid="uid-p", now=NOW)
        except TokenRejected:
            pass
    kept, found = policy.split_token_cookies(text)
    assert not any(pair.split("=", 1)[0].strip() in TOKEN_COOKIE_NAMES for pair in kept.split(";"))
    assert all(value in text for value in found)
    stripped = policy.strip_token_param(text)
    assert query_param(stripped, TOKEN_QUERY_PARAM) is None
    assert len(stripped) <= len(text)


def _spliced(text: str) -> str:
    """The real token with one part replaced, so the verifier's later branches are reached."""
    parts = TOKEN.split(".")
    parts[len(text) % 3] = text
    return ".".join(parts)


TARGETS: dict[str, Callable[[bytes], None]] = {"http_head": http_head, "host": host, "token": token}

SEEDS: dict[str, list[bytes]] = {
    "http_head": [
        f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode(),
        f"POST /u?bl_preview_token={TOKEN} HTTP/1.1\r\nHost: {HOST}\r\n"
        "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n".encode(),
        f"GET /ws HTTP/1.1\r\nHost: {HOST}:80\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Cookie: a=1; bl_preview_token={TOKEN}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode(),
        f"PUT http://{HOST}/x HTTP/1.0\r\nHost: {HOST}\r\nX-Blaxel-Preview-Token: {TOKEN}\r\n"
        "Content-Length: 10\r\nX-A: a\r\n b\r\n\r\n".encode(),
    ],
    "host": [HOST.encode(), b"A.B.:8080", b"[::1]:80", b"a.example:+80", b"x\xe9.test", b"1.2.3.4"],
    "token": [
        TOKEN.encode(),
        f'a=1; bl_preview_token={TOKEN}; __Host-bl_preview_token="x"'.encode(),
        f"x=1&bl_preview_token={TOKEN}&bl_preview_token&y".encode(),
        b"eyJhbGciOiJub25lIn0.eyJhdWQiOiJwcmV2aWV3OnVpZC1wIn0.",
    ],
}
