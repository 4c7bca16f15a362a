"""Preview token verification as a table (threat model T04, T06, T08-T12, T16): every token that is
not genuine, current and for this very preview is ``TokenRejected`` with a reason, never an
unhandled pyjwt exception."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.core.errors import TokenRejected
from gateway.core.tokens import (
    LEEWAY_S,
    MAX_TOKEN_LENGTH,
    SigningKey,
    TokenSigner,
    audience,
    generate_key,
    parse_keys,
)

UID = "u1a2b3"
SECRET = b"s" * 40
KEY = SigningKey("k1", SECRET)
NOW = datetime.now(UTC).replace(microsecond=0)
EXP = int((NOW + timedelta(hours=1)).timestamp())
HEADER = {"alg": "HS256", "typ": "JWT", "kid": "k1"}
CLAIMS = {"aud": audience(UID), "jti": "jti-1", "exp": EXP}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: object, payload: object, secret: bytes = SECRET) -> str:
    """An HS256-signed token with any header and payload (pyjwt refuses to build some)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def rs256_token() -> tuple[str, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return jwt.encode(CLAIMS, private, algorithm="RS256", headers={"kid": "k1"}), pem


def signer() -> TokenSigner:
    return TokenSigner([KEY])


def test_issued_token_verifies_to_its_id() -> None:
    token = signer().issue(
        preview_uid=UID, jti="jti-1", expires_at=NOW + timedelta(hours=1), issued_at=NOW
    )
    assert signer().verify(token, preview_uid=UID, now=NOW) == "jti-1"
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT", "kid": "k1"}


def test_issue_is_deterministic() -> None:
    kwargs: dict[str, Any] = {
        "preview_uid": UID,
        "jti": "j",
        "expires_at": NOW + timedelta(hours=1),
        "issued_at": NOW,
    }
    assert signer().issue(**kwargs) == signer().issue(**kwargs)


def _rsa_pem_as_hmac_secret() -> str:
    _, pem = rs256_token()
    return forge(HEADER, CLAIMS, secret=pem)


REJECTED: list[tuple[str, Any, str]] = [
    ("garbage", "garbage", "token_malformed"),
    ("empty", "", "token_malformed"),
    ("two-segments", "a.b", "token_malformed"),
    ("three-junk-segments", "a.b.c", "token_malformed"),
    ("bad-base64", "!!!.@@@.###", "token_malformed"),
    ("non-ascii", forge(HEADER, CLAIMS) + "\u00e9", "token_malformed"),
    ("too-long", forge(HEADER, {**CLAIMS, "pad": "x" * MAX_TOKEN_LENGTH}), "token_malformed"),
    ("header-not-json", f"{b64(b'not json')}.{b64(b'{}')}.{b64(b'sig')}", "token_malformed"),
    ("payload-not-object", forge(HEADER, [1, 2]), "token_malformed"),
    ("alg-none", b64(b'{"alg":"none","kid":"k1"}') + "." + b64(b"{}") + ".", "token_invalid"),
    ("alg-none-no-kid", "eyJhbGciOiJub25lIn0.eyJqdGkiOiJ4In0.", "token_invalid"),
    ("alg-hs512", forge({**HEADER, "alg": "HS512"}, CLAIMS), "token_invalid"),
    ("alg-rs256", rs256_token()[0], "token_invalid"),
    ("hs256-signed-with-rsa-pem", _rsa_pem_as_hmac_secret(), "token_invalid"),
    ("unknown-kid", forge({**HEADER, "kid": "k9"}, CLAIMS), "token_invalid"),
    ("no-kid", forge({"alg": "HS256", "typ": "JWT"}, CLAIMS), "token_invalid"),
    ("kid-path", forge({**HEADER, "kid": "../../dev/null"}, CLAIMS), "token_invalid"),
    ("kid-not-a-string", forge({**HEADER, "kid": 1}, CLAIMS), "token_malformed"),
    ("wrong-secret", forge(HEADER, CLAIMS, secret=b"t" * 40), "token_invalid"),
    (
        "payload-changed-under-old-signature",
        forge(HEADER, CLAIMS).split(".")[0]
        + "."
        + b64(json.dumps({**CLAIMS, "jti": "other"}).encode())
        + "."
        + forge(HEADER, CLAIMS).split(".")[2],
        "token_invalid",
    ),
    (
        "zeroed-signature",
        forge(HEADER, CLAIMS).rsplit(".", 1)[0] + "." + b64(bytes(32)),
        "token_invalid",
    ),
    ("signature-not-base64", forge(HEADER, CLAIMS)[:-6], "token_malformed"),
    ("crit-unknown", forge({**HEADER, "crit": ["x-unknown"]}, CLAIMS), "token_malformed"),
    ("crit-b64", forge({**HEADER, "b64": False, "crit": ["b64"]}, CLAIMS), "token_malformed"),
    (
        "jku-header-foreign-key",
        forge({**HEADER, "jku": "http://127.0.0.1:1/keys"}, CLAIMS, secret=b"t" * 40),
        "token_invalid",
    ),
    (
        "x5u-header-foreign-key",
        forge({**HEADER, "x5u": "http://127.0.0.1:1/cert"}, CLAIMS, secret=b"t" * 40),
        "token_invalid",
    ),
    ("expired", forge(HEADER, {**CLAIMS, "exp": int(NOW.timestamp()) - 60}), "token_expired"),
    (
        "expired-beyond-leeway",
        forge(HEADER, {**CLAIMS, "exp": int(NOW.timestamp()) - LEEWAY_S - 2}),
        "token_expired",
    ),
    ("exp-not-a-number", forge(HEADER, {**CLAIMS, "exp": "soon"}), "token_malformed"),
    ("no-exp", forge(HEADER, {"aud": audience(UID), "jti": "j"}), "token_invalid"),
    ("no-aud", forge(HEADER, {"jti": "j", "exp": EXP}), "token_invalid"),
    ("no-jti", forge(HEADER, {"aud": audience(UID), "exp": EXP}), "token_invalid"),
    ("jti-not-a-string", forge(HEADER, {**CLAIMS, "jti": 5}), "token_invalid"),
    (
        "not-yet-valid",
        forge(HEADER, {**CLAIMS, "nbf": int(NOW.timestamp()) + 600}),
        "token_invalid",
    ),
    ("other-preview", forge(HEADER, {**CLAIMS, "aud": audience("other")}), "token_wrong_preview"),
    ("audience-prefix", forge(HEADER, {**CLAIMS, "aud": "preview:u1a2"}), "token_wrong_preview"),
    (
        "audience-superstring",
        forge(HEADER, {**CLAIMS, "aud": audience(UID) + "x"}),
        "token_wrong_preview",
    ),
    ("audience-bare-uid", forge(HEADER, {**CLAIMS, "aud": UID}), "token_wrong_preview"),
    (
        "audience-list-containing-ours",
        forge(HEADER, {**CLAIMS, "aud": [audience(UID), "x"]}),
        "token_wrong_preview",
    ),
]


@pytest.mark.parametrize(
    ("token", "reason"), [(t, r) for _, t, r in REJECTED], ids=[i for i, _, _ in REJECTED]
)
def test_rejected(token: str, reason: str) -> None:
    with pytest.raises(TokenRejected) as caught:
        signer().verify(token, preview_uid=UID, now=NOW)
    assert caught.value.reason == reason
    assert caught.value.status == 401
    assert token not in caught.value.message or not token


def test_expiry_is_judged_against_the_injected_clock() -> None:
    token = forge(HEADER, CLAIMS)
    assert signer().verify(token, preview_uid=UID, now=NOW) == "jti-1"
    later = datetime.fromtimestamp(EXP + LEEWAY_S + 1, UTC)
    with pytest.raises(TokenRejected) as caught:
        signer().verify(token, preview_uid=UID, now=later)
    assert caught.value.reason == "token_expired"


def test_expiry_within_leeway_is_accepted() -> None:
    # Relative to the wall clock at this moment: pyjwt checks ``exp`` against it too.
    now = datetime.now(UTC)
    token = forge(HEADER, {**CLAIMS, "exp": int(now.timestamp()) - 1})
    assert signer().verify(token, preview_uid=UID, now=now) == "jti-1"


def test_key_rotation() -> None:
    """The first key signs; every listed key verifies. An old token keeps working while its key
    is listed, and stops once it is removed."""
    old, new = SigningKey("old", b"o" * 40), SigningKey("new", b"n" * 40)
    expires = NOW + timedelta(hours=1)
    old_token = TokenSigner([old]).issue(
        preview_uid=UID, jti="a", expires_at=expires, issued_at=NOW
    )
    rotated = TokenSigner([new, old])
    assert rotated.verify(old_token, preview_uid=UID, now=NOW) == "a"
    new_token = rotated.issue(preview_uid=UID, jti="b", expires_at=expires, issued_at=NOW)
    assert jwt.get_unverified_header(new_token)["kid"] == "new"
    assert TokenSigner([new]).verify(new_token, preview_uid=UID, now=NOW) == "b"
    with pytest.raises(TokenRejected) as caught:
        TokenSigner([new]).verify(old_token, preview_uid=UID, now=NOW)
    assert caught.value.reason == "token_invalid"
    with pytest.raises(TokenRejected):
        TokenSigner([old]).verify(new_token, preview_uid=UID, now=NOW)


def test_same_kid_other_secret_is_rejected() -> None:
    token = TokenSigner([SigningKey("k1", b"z" * 40)]).issue(
        preview_uid=UID, jti="a", expires_at=NOW + timedelta(hours=1), issued_at=NOW
    )
    with pytest.raises(TokenRejected) as caught:
        signer().verify(token, preview_uid=UID, now=NOW)
    assert caught.value.reason == "token_invalid"


@pytest.mark.parametrize(
    ("pairs", "kids"),
    [
        (["k1:" + "a" * 32], ["k1"]),
        (["k1:" + "a" * 32, "k2:" + "b:c" * 11], ["k1", "k2"]),
    ],
    ids=["one", "secret-with-colon"],
)
def test_parse_keys(pairs: list[str], kids: list[str]) -> None:
    assert [k.kid for k in parse_keys(pairs)] == kids


@pytest.mark.parametrize(
    "pair",
    ["k1", "k1:short", ":" + "a" * 32, "k1:" + "a" * 31],
    ids=["no-sep", "short", "no-kid", "31"],
)
def test_parse_keys_rejects(pair: str) -> None:
    with pytest.raises(ValueError, match="32"):
        parse_keys([pair])


def test_signer_needs_a_key() -> None:
    with pytest.raises(ValueError, match="key"):
        TokenSigner([])


def test_generated_keys_are_distinct_and_long() -> None:
    a, b = generate_key(), generate_key()
    assert a.kid != b.kid and a.secret != b.secret and len(a.secret) >= 32


def test_expiry_and_not_before_follow_the_injected_clock_not_the_wall_clock() -> None:
    """The suite may run long after this module was imported: decisions must not drift."""
    past = NOW - timedelta(hours=3)
    token = signer().issue(
        preview_uid=UID, jti="then", expires_at=past + timedelta(hours=1), issued_at=past
    )
    assert signer().verify(token, preview_uid=UID, now=past) == "then"
    with pytest.raises(TokenRejected) as caught:
        signer().verify(token, preview_uid=UID, now=NOW)
    assert caught.value.reason == "token_expired"
    later = forge(HEADER, {**CLAIMS, "nbf": int(NOW.timestamp()) + 3600, "exp": EXP + 7200})
    assert signer().verify(later, preview_uid=UID, now=NOW + timedelta(hours=1, minutes=1))
    with pytest.raises(TokenRejected):
        signer().verify(later, preview_uid=UID, now=NOW)


@pytest.mark.parametrize("claim", ["exp", "nbf"])
def test_non_numeric_time_claims_are_malformed(claim: str) -> None:
    forged = forge(HEADER, {**CLAIMS, claim: "soon"})
    with pytest.raises(TokenRejected) as caught:
        signer().verify(forged, preview_uid=UID, now=NOW)
    assert caught.value.reason == "token_malformed"
