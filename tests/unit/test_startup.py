"""Which requests are held while a sandbox starts, and the wake call's signature (tables)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.core.request_head import BodyFraming
from gateway.core.startup import Wait, how_to_wait, is_navigation, retryable
from gateway.core.wake_signature import sign, verify

NAV = [("Sec-Fetch-Mode", "navigate"), ("Accept", "text/html,*/*")]


@pytest.mark.parametrize(
    ("idempotent", "framing", "length", "expected"),
    [
        (True, BodyFraming.NONE, 0, True),
        (True, BodyFraming.LENGTH, 5, False),
        (True, BodyFraming.CHUNKED, 0, False),
        (False, BodyFraming.NONE, 0, False),
    ],
)
def test_retryable(idempotent: bool, framing: BodyFraming, length: int, expected: bool) -> None:
    assert retryable(idempotent, framing, length) is expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (NAV, True),
        ([("sec-fetch-mode", "NAVIGATE"), ("accept", "TEXT/HTML")], True),
        ([("Sec-Fetch-Mode", "cors"), ("Accept", "text/html")], False),
        ([("Sec-Fetch-Mode", "navigate"), ("Accept", "application/json")], False),
        ([("Accept", "text/html")], False),
        ([], False),
    ],
)
def test_is_navigation(headers: list[tuple[str, str]], expected: bool) -> None:
    assert is_navigation(headers) is expected


@pytest.mark.parametrize(
    ("method", "can_retry", "headers", "standby", "expected"),
    [
        ("GET", True, NAV, False, Wait.PAGE),
        ("GET", True, NAV, True, Wait.PAGE),
        ("POST", False, NAV, False, Wait.NONE),  # a form post is not shown a page it reloads
        ("POST", False, NAV, True, Wait.SILENT),  # standby: nothing was sent yet
        ("GET", True, [], False, Wait.SILENT),
        ("POST", False, [], False, Wait.NONE),
        ("POST", False, [], True, Wait.SILENT),
        ("HEAD", True, [], False, Wait.SILENT),
    ],
)
def test_how_to_wait(
    method: str, can_retry: bool, headers: list[tuple[str, str]], standby: bool, expected: Wait
) -> None:
    assert (
        how_to_wait(method=method, retryable=can_retry, headers=headers, standby=standby)
        is expected
    )


SECRET = b"secret"
BODY = b'{"workspace":"default","sandbox":"sb"}'


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    # What docs/api.md tells orchestrators to compute, pinned so the format cannot drift.
    expected = hmac.new(SECRET, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, BODY) == "sha256=" + expected


@pytest.mark.parametrize(
    ("stamp", "signature", "body", "now", "expected"),
    [
        ("1700000000", sign(SECRET, 1700000000, BODY), BODY, 1700000010, True),
        ("1700000000", sign(SECRET, 1700000000, BODY), BODY, 1700000301, False),  # replayed
        ("1700000000", sign(SECRET, 1700000000, BODY), BODY, 1699999699, False),  # future
        ("1700000000", sign(b"other", 1700000000, BODY), BODY, 1700000000, False),  # forged
        ("1700000000", sign(SECRET, 1700000000, BODY), BODY + b" ", 1700000000, False),
        ("1700000001", sign(SECRET, 1700000000, BODY), BODY, 1700000000, False),  # new stamp
        ("", sign(SECRET, 1700000000, BODY), BODY, 1700000000, False),
        ("-5", "sha256=00", BODY, 0, False),
    ],
)
def test_verify(stamp: str, signature: str, body: bytes, now: float, expected: bool) -> None:
    assert verify(SECRET, stamp, signature, body, now) is expected
