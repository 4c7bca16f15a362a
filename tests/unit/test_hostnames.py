"""Host header resolution (threat model H01-H04, H09, H13, H15): one canonical routing name per
request, and everything that is not a plain DNS name is ``InvalidHost`` (400)."""

from __future__ import annotations

import re

import pytest

from gateway.core.errors import InvalidHost
from gateway.core.hostnames import (
    RANDOM_ID_LENGTH,
    is_valid_dns_name,
    normalize_host,
    prefix_hostname,
    public_url,
    random_hostname,
    random_preview_id,
    wildcard_candidates,
)

HOST = "abc123.eu.preview.localhost"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (HOST, HOST),
        ("ABC123.EU.PREVIEW.LOCALHOST", HOST),
        ("Abc123.Eu.Preview.Localhost", HOST),
        (f"{HOST}.", HOST),
        (f"{HOST}:8080", HOST),
        (f"{HOST}.:8443", HOST),
        (f"{HOST}:443", HOST),
        (f"{HOST}:1", HOST),
        (f"{HOST}:65535", HOST),
        ("ABC123.EU.PREVIEW.LOCALHOST.:80", HOST),
        ("xn--bcher-kva.example.com", "xn--bcher-kva.example.com"),
        ("a-b.c-d.example", "a-b.c-d.example"),
        ("localhost", "localhost"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
        ("1abc.example", "1abc.example"),
    ],
    ids=[
        "plain",
        "upper",
        "mixed-case",
        "trailing-dot",
        "port",
        "trailing-dot-and-port",
        "port-443",
        "port-1",
        "port-65535",
        "upper-dot-port",
        "a-label",
        "hyphens",
        "single-label",
        "label-63",
        "digit-first-label",
    ],
)
def test_normalizes(raw: str, expected: str) -> None:
    assert normalize_host(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        f"{HOST} ",
        f" {HOST}",
        "a b.example",
        f"x@{HOST}",
        f"{HOST}@evil.example",
        f"{HOST}/x",
        f"{HOST}/../b",
        f"{HOST}\\x",
        f"{HOST}?x",
        f"{HOST}#x",
        f"{HOST}\x00",
        f"{HOST}\t",
        f"{HOST}\n",
        f"{HOST}\r\n",
        f"abc\n.{HOST}",
        f"{HOST}..",
        f".{HOST}",
        "a..b.example",
        ".",
        ":80",
        f"{HOST}:",
        f"{HOST}:+80",
        f"{HOST}:8_0",
        f"{HOST}:\u0668\u0660",
        f"{HOST}:\uff18\uff10",
        f"{HOST}: 80",
        f"{HOST}:80 ",
        f"{HOST}:0",
        f"{HOST}:00",
        f"{HOST}:65536",
        f"{HOST}:99999",
        f"{HOST}:-1",
        f"{HOST}:0x50",
        f"{HOST}:80:80",
        "b\u00fccher.example.com",
        "\u0430pple.example",
        "a\u200db.example",
        "stra\u00dfe.example",
        "127.0.0.1",
        "127.0.0.1:8080",
        "10.0.0.7.",
        "127.1",
        "2130706433",
        "0177.0.0.1",
        "0x7f.0.0.1",
        "[::1]",
        "[::1]:8080",
        "::1",
        "[fe80::1%25eth0]",
        "a" * 64 + ".example",
        "-abc.example",
        "abc-.example",
        "a_b.example",
        "*.example",
        "ab*.example",
        ("a" * 60 + ".") * 5 + "example",
        "a." * 127 + "b",
        "x" * 300,
    ],
    ids=[
        "empty",
        "space",
        "trailing-space",
        "leading-space",
        "inner-space",
        "userinfo",
        "at-suffix",
        "slash",
        "path-traversal",
        "backslash",
        "question-mark",
        "hash",
        "nul",
        "tab",
        "trailing-newline",
        "trailing-crlf",
        "newline-in-label",
        "double-trailing-dot",
        "leading-dot",
        "empty-label",
        "dot-only",
        "port-only",
        "empty-port",
        "port-plus",
        "port-underscore",
        "port-arabic-indic",
        "port-fullwidth",
        "port-leading-space",
        "port-trailing-space",
        "port-zero",
        "port-double-zero",
        "port-65536",
        "port-99999",
        "port-negative",
        "port-hex",
        "two-ports",
        "raw-utf8",
        "cyrillic-confusable",
        "zero-width-joiner",
        "sharp-s",
        "ipv4",
        "ipv4-port",
        "ipv4-trailing-dot",
        "ipv4-short",
        "ipv4-integer",
        "ipv4-octal",
        "ipv4-hex",
        "ipv6-bracketed",
        "ipv6-bracketed-port",
        "ipv6-bare",
        "ipv6-zone",
        "label-64",
        "leading-hyphen",
        "trailing-hyphen",
        "underscore",
        "wildcard",
        "glob",
        "name-over-253",
        "128-labels",
        "300-chars",
    ],
)
def test_rejects(raw: str) -> None:
    with pytest.raises(InvalidHost) as caught:
        normalize_host(raw)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_host"


@pytest.mark.parametrize(
    "raw",
    [HOST, f"{HOST.upper()}.:8080", "a" * 63 + ".b", "xn--bcher-kva.example"],
    ids=["plain", "upper-dot-port", "long-label", "a-label"],
)
def test_output_is_canonical(raw: str) -> None:
    """Idempotent, lower-case ASCII without a port or a trailing dot (the fuzzing invariants)."""
    host = normalize_host(raw)
    assert normalize_host(host) == host
    assert host.isascii() and host == host.lower()
    assert not host.endswith(".") and ":" not in host


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("sandbox.internal", True),
        ("Sandbox.internal", False),
        ("sandbox.internal.", False),
        ("sandbox.internal:80", False),
        ("10.0.0.7", False),
        ("bad name", False),
        ("", False),
    ],
    ids=["valid", "upper", "trailing-dot", "port", "ip", "space", "empty"],
)
def test_is_valid_dns_name_accepts_only_canonical_names(name: str, valid: bool) -> None:
    assert is_valid_dns_name(name) is valid


def test_random_ids_are_long_lowercase_and_distinct() -> None:
    ids = {random_preview_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(rf"[a-z0-9]{{{RANDOM_ID_LENGTH}}}", i) for i in ids)


@pytest.mark.parametrize(
    ("region", "expected"),
    [("eu", "abc.eu.preview.localhost"), ("", "abc.preview.localhost")],
    ids=["with-region", "no-region"],
)
def test_random_hostname(region: str, expected: str) -> None:
    assert random_hostname("abc", region, "preview.localhost") == expected


def test_prefix_hostname() -> None:
    assert prefix_hostname("web", "acme", "preview.localhost") == "web-acme.preview.localhost"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("a.cust.test", ["a.cust.test", "*.cust.test"]),
        ("a.b.cust.test", ["a.b.cust.test", "*.b.cust.test"]),
        ("cust.test", ["cust.test"]),
        ("localhost", ["localhost"]),
    ],
    ids=["one-label", "two-labels", "apex", "single-label"],
)
def test_wildcard_candidates(host: str, expected: list[str]) -> None:
    assert wildcard_candidates(host) == expected


@pytest.mark.parametrize(
    ("scheme", "port", "expected"),
    [
        ("http", 80, "http://h.example/"),
        ("https", 443, "https://h.example/"),
        ("http", 8080, "http://h.example:8080/"),
        ("https", 80, "https://h.example:80/"),
    ],
    ids=["http-default", "https-default", "http-port", "https-on-80"],
)
def test_public_url(scheme: str, port: int, expected: str) -> None:
    assert public_url("h.example", scheme, port) == expected
