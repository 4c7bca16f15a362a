"""HTTP framing as tables: where a chunked body ends (fed whole, and split at every byte), what
is refused, and how a response head says its body is framed."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.http_framing import (
    MAX_LINE_BYTES,
    BodyKind,
    ChunkedScanner,
    FramingError,
    HeadTooLarge,
    find_head_end,
    parse_response_head,
)


def chunked(*pieces: bytes, trailers: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n" + trailers + b"\r\n"


def scan_whole(body: bytes) -> int:
    return ChunkedScanner().feed(body)


def scan_bytewise(body: bytes) -> int:
    """The end offset in the whole body, feeding one byte at a time."""
    scanner = ChunkedScanner()
    for i in range(len(body)):
        end = scanner.feed(body[i : i + 1])
        if end >= 0:
            assert end == 1 and scanner.done
            return i + 1
    return -1


ENDS: list[tuple[str, bytes]] = [
    ("empty", chunked()),
    ("one", chunked(b"hello")),
    ("two", chunked(b"hello", b" world")),
    ("binary-crlf-inside", chunked(b"\r\n0\r\n\r\n", b"\x00\xff")),
    ("big-chunk", chunked(b"x" * 70000)),
    ("upper-hex", b"A\r\n0123456789\r\n0\r\n\r\n"),
    ("leading-zeros", b"0005\r\nhello\r\n000\r\n\r\n"),
    ("sixteen-digits", b"0000000000000003\r\nabc\r\n0\r\n\r\n"),
    ("extension", b"5;name=value\r\nhello\r\n0;last\r\n\r\n"),
    ("trailers", chunked(b"hi", trailers=b"Expires: never\r\nX-Sum: 1\r\n")),
]


@pytest.mark.parametrize(("name", "body"), ENDS, ids=[e[0] for e in ENDS])
def test_chunked_end_is_found(name: str, body: bytes) -> None:
    assert scan_whole(body) == len(body)
    assert scan_whole(body + b"GET /next HTTP/1.1\r\n") == len(body)
    assert scan_bytewise(body) == len(body)


def test_chunked_not_done_until_the_last_crlf() -> None:
    body = chunked(b"abc")
    scanner = ChunkedScanner()
    assert scanner.feed(body[:-1]) == -1 and not scanner.done
    assert scanner.feed(body[-1:]) == 1 and scanner.done


def test_chunked_refuses_bytes_after_its_end() -> None:
    scanner = ChunkedScanner()
    scanner.feed(chunked())
    with pytest.raises(FramingError):
        scanner.feed(b"x")


REFUSED: list[tuple[str, bytes]] = [
    ("no-digits", b"\r\nabc"),
    ("not-hex", b"zz\r\n"),
    ("seventeen-digits", b"00000000000000001\r\nx\r\n0\r\n\r\n"),
    ("huge", b"ffffffffffffffffff\r\n"),
    ("space-after-size", b"5 \r\nhello\r\n"),
    ("sign", b"+5\r\nhello\r\n"),
    ("bare-lf-size", b"5\nhello\r\n"),
    ("cr-no-lf", b"5\rhello"),
    ("data-too-long", b"3\r\nabcd\r\n"),
    ("data-no-crlf", b"3\r\nabcXY"),
    ("data-bare-lf", b"3\r\nabc\n0\r\n\r\n"),
    ("ext-bare-lf", b"3;a\nabc\r\n"),
    ("ext-nul", b"3;a\x00b\r\nabc\r\n"),
    ("ext-too-long", b"3;" + b"a" * (MAX_LINE_BYTES + 1)),
    ("trailer-bare-lf", b"0\r\nX-A: 1\n\r\n"),
    ("trailer-too-long", b"0\r\nX-A: " + b"a" * (MAX_LINE_BYTES + 1)),
    ("trailers-too-many", b"0\r\n" + b"X-A: 1234567\r\n" * 6000),
    ("final-not-lf", b"0\r\n\rX"),
    ("trailer-content-length", b"3\r\nabc\r\n0\r\nContent-Length: 50\r\n\r\n"),
    ("trailer-te", b"0\r\nX-A: 1\r\ntransfer-encoding: chunked\r\n\r\n"),
    ("trailer-host-spaced", b"0\r\nHOST : other.test\r\n\r\n"),
]


@pytest.mark.parametrize(("name", "body"), REFUSED, ids=[r[0] for r in REFUSED])
def test_chunked_refuses(name: str, body: bytes) -> None:
    with pytest.raises(FramingError):
        ChunkedScanner().feed(body)
    with pytest.raises(FramingError):
        scan_bytewise(body)


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=300), max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=8),
    tail=st.binary(max_size=20),
)
def test_chunked_end_wherever_the_body_is_split(
    pieces: list[bytes], cuts: list[int], tail: bytes
) -> None:
    body = chunked(*pieces)
    data = body + tail
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    scanner, consumed = ChunkedScanner(), -1
    for start, stop in itertools.pairwise(bounds):
        end = scanner.feed(data[start:stop])
        if end >= 0:
            consumed = start + end
            break
    assert consumed == len(body)


# ── response heads ─────────────────────────────────────────────────────────────────────────
def head(status_line: bytes, *fields: bytes) -> bytes:
    return status_line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


FRAMED: list[tuple[str, bytes, str, BodyKind, int, bool]] = [
    ("length", head(b"HTTP/1.1 200 OK", b"Content-Length: 5"), "GET", BodyKind.LENGTH, 5, True),
    (
        "length-list",
        head(b"HTTP/1.1 200 OK", b"Content-Length: 5, 5"),
        "GET",
        BodyKind.LENGTH,
        5,
        True,
    ),
    ("length-zero", head(b"HTTP/1.1 200 OK", b"Content-Length: 0"), "GET", BodyKind.NONE, 0, True),
    (
        "chunked",
        head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked"),
        "GET",
        BodyKind.CHUNKED,
        0,
        True,
    ),
    (
        "gzip-chunked",
        head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip, Chunked"),
        "GET",
        BodyKind.CHUNKED,
        0,
        True,
    ),
    (
        "te-not-chunked-last",
        head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip"),
        "GET",
        BodyKind.CLOSE,
        0,
        False,
    ),
    ("close-delimited", head(b"HTTP/1.1 200 OK"), "GET", BodyKind.CLOSE, 0, False),
    ("head", head(b"HTTP/1.1 200 OK", b"Content-Length: 5"), "HEAD", BodyKind.NONE, 0, True),
    (
        "head-chunked",
        head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked"),
        "HEAD",
        BodyKind.NONE,
        0,
        True,
    ),
    ("204", head(b"HTTP/1.1 204 No Content"), "GET", BodyKind.NONE, 0, True),
    (
        "304",
        head(b"HTTP/1.1 304 Not Modified", b"Content-Length: 9"),
        "GET",
        BodyKind.NONE,
        0,
        True,
    ),
    ("100", head(b"HTTP/1.1 100 Continue"), "POST", BodyKind.NONE, 0, True),
    (
        "101",
        head(b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket"),
        "GET",
        BodyKind.NONE,
        0,
        True,
    ),
    (
        "close",
        head(b"HTTP/1.1 200 OK", b"Content-Length: 1", b"Connection: close"),
        "GET",
        BodyKind.LENGTH,
        1,
        False,
    ),
    ("http10", head(b"HTTP/1.0 200 OK", b"Content-Length: 1"), "GET", BodyKind.LENGTH, 1, False),
    (
        "http10-keep-alive",
        head(b"HTTP/1.0 200 OK", b"Content-Length: 1", b"Connection: Keep-Alive"),
        "GET",
        BodyKind.LENGTH,
        1,
        True,
    ),
    ("no-reason", head(b"HTTP/1.1 200", b"Content-Length: 1"), "GET", BodyKind.LENGTH, 1, True),
    ("empty-reason", head(b"HTTP/1.1 404 ", b"Content-Length: 1"), "GET", BodyKind.LENGTH, 1, True),
]


@pytest.mark.parametrize(
    ("name", "data", "method", "body", "length", "keep_alive"), FRAMED, ids=[f[0] for f in FRAMED]
)
def test_response_head_framing(
    name: str, data: bytes, method: str, body: BodyKind, length: int, keep_alive: bool
) -> None:
    parsed = parse_response_head(data + b"body bytes", request_method=method)
    assert (parsed.body, parsed.content_length, parsed.keep_alive) == (body, length, keep_alive)
    assert parsed.size == len(data)


def test_response_head_fields_as_received() -> None:
    data = head(
        b"HTTP/1.1 201 Created",
        b"X-App:  padded value \t",
        b"set-cookie: a=1",
        b"Set-Cookie: b=2",
        b"X-Latin: caf\xe9",
        b"X-Empty:",
    )
    parsed = parse_response_head(data, request_method="POST")
    assert parsed.status == 201 and parsed.version == (1, 1)
    assert parsed.headers == [
        ("X-App", "padded value"),
        ("set-cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("X-Latin", "caf\xe9"),
        ("X-Empty", ""),
    ]


GARBAGE: list[tuple[str, bytes, type[FramingError]]] = [
    ("not-http", head(b"SSH-2.0-OpenSSH"), FramingError),
    ("http2", head(b"HTTP/2 200 OK"), FramingError),
    ("http09ish", head(b"HTTP/1.1"), FramingError),
    ("bad-code", head(b"HTTP/1.1 2x0 OK"), FramingError),
    ("code-600", head(b"HTTP/1.1 600 X"), FramingError),
    ("code-4-digits", head(b"HTTP/1.1 2000 OK"), FramingError),
    ("ctl-in-reason", head(b"HTTP/1.1 200 O\x00K"), FramingError),
    ("obs-fold", head(b"HTTP/1.1 200 OK", b"X-A: 1", b" folded"), FramingError),
    ("space-before-colon", head(b"HTTP/1.1 200 OK", b"X-A : 1"), FramingError),
    ("no-colon", head(b"HTTP/1.1 200 OK", b"X-A"), FramingError),
    ("empty-name", head(b"HTTP/1.1 200 OK", b": 1"), FramingError),
    ("ctl-in-value", head(b"HTTP/1.1 200 OK", b"X-A: 1\x01"), FramingError),
    ("bare-cr-in-value", head(b"HTTP/1.1 200 OK", b"X-A: 1\r2"), FramingError),
    ("bare-lf", b"HTTP/1.1 200 OK\r\nX-A: 1\nX-B: 2\r\n\r\n", FramingError),
    (
        "cl-and-te",
        head(b"HTTP/1.1 200 OK", b"Content-Length: 3", b"Transfer-Encoding: chunked"),
        FramingError,
    ),
    (
        "cl-conflict",
        head(b"HTTP/1.1 200 OK", b"Content-Length: 3", b"Content-Length: 4"),
        FramingError,
    ),
    ("cl-negative", head(b"HTTP/1.1 200 OK", b"Content-Length: -1"), FramingError),
    ("cl-hex", head(b"HTTP/1.1 200 OK", b"Content-Length: 0x10"), FramingError),
    ("incomplete", b"HTTP/1.1 200 OK\r\nX-A: 1\r\n", FramingError),
    ("long-line", head(b"HTTP/1.1 200 OK", b"X-A: " + b"a" * MAX_LINE_BYTES), HeadTooLarge),
    ("many-fields", head(b"HTTP/1.1 200 OK", *[b"X-A: 1"] * 129), HeadTooLarge),
    ("too-large", head(b"HTTP/1.1 200 OK", *[b"X-A: " + b"a" * 8000] * 9), HeadTooLarge),
    ("too-large-unterminated", b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 9000, HeadTooLarge),
]


@pytest.mark.parametrize(("name", "data", "error"), GARBAGE, ids=[g[0] for g in GARBAGE])
def test_response_head_refuses(name: str, data: bytes, error: type[FramingError]) -> None:
    with pytest.raises(error):
        parse_response_head(data, request_method="GET")


def test_find_head_end_resumes() -> None:
    data = b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\nbody"
    assert find_head_end(data) == len(data) - 4
    assert find_head_end(data[:-5]) == -1
    assert find_head_end(data, start=len(data) - 10) == len(data) - 4
    assert find_head_end(bytearray(data), start=-3) == len(data) - 4


_LINE_BYTES = st.binary(min_size=1, max_size=24).filter(
    lambda b: b"\r\n" not in b
) | st.sampled_from(
    [
        b"X-A: 1",
        b"X-A:1",
        b"X-A: \t v \t",
        b"X-A:",
        b" X-A: 1",
        b"X_A: 1",
        b"X A: 1",
        b": v",
        b"X-A: a\rb",
        b"X-A: a\x7f",
        b"X-A: \xe9t\xe9",
        b"X-A: \x00",
        b"X-A: a\tb",
        b"X-A; 1",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINE_BYTES, max_size=6))
def test_response_head_fields_match_a_line_by_line_parse(lines: list[bytes]) -> None:
    """The whole-head fast path accepts and reads exactly what the line-by-line check does."""
    data = head(b"HTTP/1.1 200 OK", *lines, b"Content-Length: 0")
    expected: list[tuple[str, str]] | None = []
    for line in data[:-4].split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if (
            not colon
            or not name
            or any(chr(c) not in _TCHAR_TEXT for c in name)
            or any((c < 0x20 and c != 0x09) or c == 0x7F for c in value)
        ):
            expected = None
            break
        assert expected is not None
        expected.append((name.decode("ascii"), value.decode("latin-1")))
    if expected is None:
        with pytest.raises(FramingError):
            parse_response_head(data, request_method="GET")
        return
    assert parse_response_head(data, request_method="GET").headers == expected


_TCHAR_TEXT = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
