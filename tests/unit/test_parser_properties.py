"""Properties of the parsers that face the internet (issue 12, threat model H, R, T, S): the
Host and port parser, token extraction from cookies and queries, the header check, and the
request planner on arbitrary heads. Each holds for any input hypothesis can build, not just the
tables in the neighbouring tests. ``fuzz/`` drives the same functions with atheris."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import header_policy as policy
from gateway.core.admission import query_param
from gateway.core.errors import GatewayError, InvalidHost
from gateway.core.header_names import TOKEN_QUERY_PARAM
from gateway.core.hostnames import MAX_HOST_LENGTH, normalize_host
from gateway.core.planner import Forward, RequestHead, inspect, plan
from tests.unit.test_planner import GOOD, HOST, NOW, RID, config, route

LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
HOST_CHARS = string.ascii_letters + string.digits + "-.:[]@_ /\\%\t\n\x00\u00e9\u0660\uff10"

labels = st.from_regex(LABEL, fullmatch=True)
dns_names = (
    st.lists(labels, min_size=1, max_size=5)
    .map(".".join)
    .filter(lambda n: len(n) <= MAX_HOST_LENGTH and not n.rsplit(".", 1)[-1].isdigit())
)


# ── Host and port ────────────────────────────────────────────────────────────────────────────
@settings(max_examples=500)
@given(st.text(HOST_CHARS, max_size=40) | st.text(max_size=40))
def test_any_host_value_is_refused_or_canonical(raw: str) -> None:
    """Whatever the client sends, the routing key is a plain lower-case DNS name, stable under
    a second pass, or the request is refused with InvalidHost (never another exception)."""
    try:
        host = normalize_host(raw)
    except InvalidHost:
        return
    assert host.isascii() and host == host.lower()
    assert len(host) <= MAX_HOST_LENGTH
    assert all(LABEL.fullmatch(label) for label in host.split("."))
    assert normalize_host(host) == host
    assert host in raw.lower()


@given(dns_names, st.booleans(), st.booleans(), st.none() | st.integers(1, 65535))
def test_every_spelling_of_a_name_routes_to_that_name(
    name: str, upper: bool, dot: bool, port: int | None
) -> None:
    raw = (name.upper() if upper else name) + ("." if dot else "")
    raw += f":{port}" if port is not None else ""
    assert normalize_host(raw) == name


@settings(max_examples=500)
@given(st.text(string.digits + "+-_ x\u0660\u0968\uff10\u00b2", max_size=7) | st.text(max_size=7))
def test_a_port_is_plain_ascii_digits_in_range(port: str) -> None:
    """``int()`` reads "+80", "8_0", " 80" and "٨٠"; only 1..65535 in ASCII digits is a port
    (threat model R03)."""
    expected = bool(re.fullmatch(r"[0-9]+", port, re.ASCII)) and 0 < int(port) <= 65535
    try:
        normalize_host(f"a.example:{port}")
    except InvalidHost:
        assert not expected
    else:
        assert expected


# ── token extraction ─────────────────────────────────────────────────────────────────────────
COOKIE_CHARS = string.ascii_letters + string.digits + "-_.~%!#$&'*+^`|"
cookie_names = st.text(COOKIE_CHARS, min_size=1, max_size=8).filter(
    lambda n: "bl_preview_token" not in n
)
cookie_values = st.text(COOKIE_CHARS + '="/', max_size=10)
token_values = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=20)
TOKEN_NAMES = st.sampled_from(["bl_preview_token", "__Host-bl_preview_token"])


@st.composite
def cookie_headers(draw: st.DrawFn) -> tuple[str, list[str], list[str]]:
    """A Cookie header mixing the gateway's cookies among others, the token values in order,
    and the other pairs in order."""
    pairs: list[str] = []
    tokens: list[str] = []
    others: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            value = draw(token_values)
            quoted = draw(st.booleans())
            pairs.append(f"{draw(TOKEN_NAMES)}={chr(34) + value + chr(34) if quoted else value}")
            tokens.append(value)
        else:
            pair = f"{draw(cookie_names)}={draw(cookie_values)}"
            pairs.append(pair)
            others.append(pair)
    sep = draw(st.sampled_from(["; ", ";", " ;  "]))
    return sep.join(pairs), tokens, others


@settings(max_examples=300)
@given(cookie_headers())
def test_token_cookies_are_all_found_and_all_removed(
    case: tuple[str, list[str], list[str]],
) -> None:
    header, tokens, others = case
    kept, found = policy.split_token_cookies(header)
    assert found == tokens
    assert "bl_preview_token" not in kept
    assert [p.strip() for p in kept.split(";") if p.strip()] == others


query_parts = st.text(string.ascii_letters + string.digits + "%+=-_.~", max_size=12)


@settings(max_examples=300)
@given(st.lists(query_parts | token_values.map(f"{TOKEN_QUERY_PARAM}={{}}".format), max_size=6))
def test_the_token_parameter_is_removed_and_nothing_else_changes(parts: list[str]) -> None:
    query = "&".join(parts)
    stripped = policy.strip_token_param(query)
    others = [p for p in parts if p.split("=", 1)[0] != TOKEN_QUERY_PARAM]
    assert stripped == "&".join(others) or (not others and stripped == "")
    assert query_param(stripped, TOKEN_QUERY_PARAM) is None
    firsts = [p.split("=", 1)[1] for p in parts if p.startswith(TOKEN_QUERY_PARAM + "=")]
    if firsts:
        assert query_param(query, TOKEN_QUERY_PARAM) is not None


# ── the header check ─────────────────────────────────────────────────────────────────────────
TCHAR = set(string.ascii_letters + string.digits + "!#$%&'*+-.^`|~")


@settings(max_examples=500)
@given(st.text(max_size=10), st.text(max_size=10))
def test_a_configured_header_is_a_token_name_and_a_clean_value(name: str, value: str) -> None:
    """Preview-configured headers are written onto the wire as they are: a CR, LF or NUL in
    them would split the head (threat model P, S)."""
    expected = (
        bool(name)
        and all(c in TCHAR for c in name)
        and not any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value)
    )
    assert policy.valid_header_pair(name, value) == expected


# ── the planner on arbitrary heads ───────────────────────────────────────────────────────────
FIELD_NAMES = st.sampled_from(
    [
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Upgrade",
        "Cookie",
        "X-Blaxel-Preview-Token",
        "Expect",
        "X-Forwarded-For",
        "Referer",
        "Host",
        "X-A",
    ]
) | st.text(string.ascii_letters + "-_", min_size=1, max_size=8)
FIELD_VALUES = st.sampled_from(
    ["chunked", "0", "5", "+5", "upgrade", "websocket", "100-continue", "gzip, chunked", ""]
) | st.text(string.printable.replace("\r", "").replace("\n", ""), max_size=12)
METHODS = st.sampled_from(["GET", "POST", "PUT", "HEAD", "OPTIONS", "TRACE", "CONNECT", "PATCH"])
TARGETS = st.sampled_from(
    ["/", "/a?x=1", f"/?{TOKEN_QUERY_PARAM}={GOOD}", "*", "http://evil.test/", f"http://{HOST}/p"]
) | st.text(string.printable.replace(" ", ""), max_size=12)


@settings(max_examples=400, deadline=None)
@given(
    METHODS,
    TARGETS,
    st.sampled_from([(1, 0), (1, 1)]),
    st.lists(st.tuples(FIELD_NAMES, FIELD_VALUES), max_size=8),
    st.sampled_from(
        [
            ("X-Blaxel-Preview-Token", GOOD),
            ("Cookie", f"a=1; bl_preview_token={GOOD}"),
            ("Cookie", f'__Host-bl_preview_token="{GOOD}"'),
        ]
    ),
)
def test_any_head_is_refused_or_forwarded_without_the_token(
    method: str,
    target: str,
    version: tuple[int, int],
    fields: list[tuple[str, str]],
    credential: tuple[str, str],
) -> None:
    """Whatever the head, the planner answers with a GatewayError (rendered as a status) or a
    plan whose upstream head is well formed and never carries the token (threat model L01)."""
    headers = [("Host", HOST), credential, *fields]
    request = RequestHead(method, target, version, headers, "203.0.113.5")
    cfg = config()
    try:
        result = plan(inspect(request, cfg), route(public=False), NOW, cfg, request_id=RID)
    except GatewayError as error:
        assert 400 <= error.status < 600
        return
    if not isinstance(result, Forward):
        return  # an answer the gateway writes itself (preflight, redirect) or an Upgrade
    assert GOOD.encode() not in result.head
    lines = result.head[:-4].split(b"\r\n")
    assert result.head.endswith(b"\r\n\r\n") and all(b"\n" not in line for line in lines)
    assert all(b": " in line for line in lines[1:])
    names = [line.split(b":", 1)[0].lower() for line in lines[1:]]
    assert names.count(b"host") == 1
    assert names.count(b"content-length") + names.count(b"transfer-encoding") <= 1


@pytest.mark.parametrize("value", ["8_0", "+80", " 80", "\u0668\u0660", "\uff18\uff10", "65536"])
def test_int_accepts_what_the_port_parser_refuses(value: str) -> None:
    """The reason for the property above: each of these is (nearly) a number to ``int``."""
    with pytest.raises(InvalidHost):
        normalize_host(f"a.example:{value}")
