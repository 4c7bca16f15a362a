"""The payload of a chunked body, for HTTP/1.0 clients: a table of bodies, fed whole and byte by
byte (pieces may split any line)."""

from __future__ import annotations

import pytest

from gateway.edge.dechunk import Dechunker

CASES = [
    (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    (b"A\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n", b"0123456789"),
    (b"000000000000001\r\nx\r\n0\r\n\r\n", b"x"),
    (b"4\r\n\r\n\r\n\r\n0\r\n\r\n", b"\r\n\r\n"),  # data that looks like framing
    (b"0\r\n\r\n", b""),
]


@pytest.mark.parametrize(("body", "payload"), CASES)
def test_whole(body: bytes, payload: bytes) -> None:
    assert Dechunker().payload(body) == payload


@pytest.mark.parametrize(("body", "payload"), CASES)
def test_byte_by_byte(body: bytes, payload: bytes) -> None:
    d = Dechunker()
    assert b"".join(d.payload(body[i : i + 1]) for i in range(len(body))) == payload
