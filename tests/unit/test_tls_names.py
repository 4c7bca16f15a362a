"""Which certificate a handshake gets, as a table."""

from __future__ import annotations

import pytest

from gateway.core.tls_names import PREVIEW, certificate_for, key_of_file_stem

AVAILABLE = {PREVIEW, "app.acme.dev", "_wildcard.acme.dev", "_wildcard.x.preview.test"}


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [
        ("app.acme.dev", "app.acme.dev"),  # exact beats the wildcard
        ("APP.acme.dev.", "app.acme.dev"),
        ("web.acme.dev", "_wildcard.acme.dev"),
        ("a.web.acme.dev", None),  # a wildcard covers one label
        ("acme.dev", None),
        ("abc.local.preview.test", PREVIEW),
        ("preview.test", PREVIEW),
        ("a.x.preview.test", "_wildcard.x.preview.test"),  # a file beats the preview default
        ("evilpreview.test", None),
        ("unknown.example", None),
        (None, None),
        ("", None),
    ],
)
def test_certificate_for(server_name: str | None, expected: str | None) -> None:
    assert certificate_for(server_name, "preview.test", AVAILABLE) == expected


def test_without_a_preview_certificate_names_under_the_domain_get_the_default() -> None:
    assert certificate_for("abc.local.preview.test", "preview.test", {"app.acme.dev"}) is None


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("app.acme.dev", "app.acme.dev"),
        ("App.Acme.dev", "app.acme.dev"),
        ("_wildcard.acme.dev", "_wildcard.acme.dev"),
        ("_wildcard.", None),
        ("backup copy", None),
        ("a..b", None),
        (".hidden", None),
        ("x" * 64 + ".dev", None),
    ],
)
def test_key_of_file_stem(stem: str, expected: str | None) -> None:
    assert key_of_file_stem(stem) == expected
