"""The plain port's redirect decisions while TLS is on, as tables."""

from __future__ import annotations

import pytest

from gateway.core.errors import InvalidHost
from gateway.core.https_redirect import is_acme_challenge, redirect_location


@pytest.mark.parametrize(
    ("host", "target", "port", "expected"),
    [
        ("a.preview.test", "/", 443, "https://a.preview.test/"),
        ("A.Preview.test:80", "/x?y=1", 443, "https://a.preview.test/x?y=1"),
        ("a.preview.test:8080", "/x", 8443, "https://a.preview.test:8443/x"),
        ("a.preview.test", "http://other.test/p?q", 443, "https://a.preview.test/p?q"),
        ("a.preview.test", "http://other.test", 443, "https://a.preview.test/"),
        ("a.preview.test", "*", 443, "https://a.preview.test/"),
    ],
)
def test_redirect_location(host: str, target: str, port: int, expected: str) -> None:
    assert redirect_location(host, target, port) == expected


@pytest.mark.parametrize("host", [None, "", "evil.test/x", "1.2.3.4", "a b"])
def test_no_redirect_without_a_valid_host(host: str | None) -> None:
    with pytest.raises(InvalidHost):
        redirect_location(host, "/", 443)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/.well-known/acme-challenge/tok", True),
        ("http://a.test/.well-known/acme-challenge/tok", True),
        ("/.well-known/acme-challenge", False),
        ("/.well-known/other", False),
        ("/x/.well-known/acme-challenge/tok", False),
    ],
)
def test_is_acme_challenge(target: str, expected: bool) -> None:
    assert is_acme_challenge(target) is expected
