"""Gateway error pages (threat model L04, O03): escaped, no active content, both formats."""

from __future__ import annotations

import json

import pytest

from gateway.core.errors import RoutingUnavailable, TokenRejected, UnknownPreview
from gateway.edge.pages import render


def test_html_page_escapes_everything_it_shows() -> None:
    response = render(UnknownPreview('"><script>alert(1)</script>'), "text/html")
    assert response.text is not None
    assert "<script>" not in response.text
    assert "&lt;script&gt;" in response.text
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.content_type == "text/html"


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (UnknownPreview("x"), "preview_not_found", 404),
        (TokenRejected("token_expired", "expired"), "token_expired", 401),
        (RoutingUnavailable("down", retry_after_s=2), "routing_unavailable", 503),
    ],
    ids=["404", "401-reason", "503"],
)
def test_json_for_clients_with_the_machine_code(error: Exception, code: str, status: int) -> None:
    response = render(error, "application/json")  # type: ignore[arg-type]
    assert response.status == status
    assert response.headers["X-Blaxel-Error-Code"] == code
    assert response.headers["X-Blaxel-Source"] == "gateway"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.text is not None and json.loads(response.text)["code"] == code
    if status == 503:
        assert response.headers["Retry-After"] == "2"
    if status == 401:
        assert response.headers["Access-Control-Allow-Origin"] == "*"
