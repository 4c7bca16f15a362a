"""Gateway error pages (threat model L04, O03): escaped, no active content, both formats."""

from __future__ import annotations

import json

import pytest

from gateway.core.errors import GatewayError, RoutingUnavailable, TokenRejected, UnknownPreview
from gateway.edge.pages import render_bytes


class Page:
    """One rendered response, parsed back: status, headers and body."""

    def __init__(self, raw: bytes) -> None:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ", 2)[1])
        self.headers = dict(line.split(": ", 1) for line in lines[1:])
        self.text = body.decode()
        assert int(self.headers["Content-Length"]) == len(body)


def render(exc: GatewayError, accept: str, *, head: bool = False) -> Page:
    return Page(render_bytes(exc, accept, head=head))


def test_html_page_escapes_everything_it_shows() -> None:
    response = render(UnknownPreview('"><script>alert(1)</script>'), "text/html")
    assert "<script>" not in response.text
    assert "&lt;script&gt;" in response.text
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (UnknownPreview("x"), "preview_not_found", 404),
        (TokenRejected("token_expired", "expired"), "token_expired", 401),
        (RoutingUnavailable("down", retry_after_s=2), "routing_unavailable", 503),
    ],
    ids=["404", "401-reason", "503"],
)
def test_json_for_clients_with_the_machine_code(
    error: GatewayError, code: str, status: int
) -> None:
    response = render(error, "application/json")
    assert response.status == status
    assert response.headers["X-Blaxel-Error-Code"] == code
    assert response.headers["X-Blaxel-Source"] == "gateway"
    assert response.headers["Cache-Control"] == "no-store"
    assert json.loads(response.text)["code"] == code
    if status == 503:
        assert response.headers["Retry-After"] == "2"
    if status == 401:
        assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_head_answers_carry_the_headers_without_the_body() -> None:
    raw = render_bytes(UnknownPreview("x"), "application/json", head=True)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == b"" and b"Content-Length: " in head and head.startswith(b"HTTP/1.1 404 ")
