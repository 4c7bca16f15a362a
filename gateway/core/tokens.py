"""Preview tokens: signing and verification with pyjwt. Pure: no I/O.

A token is an HS256 JWT bound to one preview: ``aud`` is ``preview:<uid>`` where the uid is
random per preview creation, so a token never opens another preview (another workspace's on the
same sandbox port included) nor one created later under the same name. ``kid`` names the key
that signed it, so keys rotate: the first key signs, every listed key verifies. Revocation is
not in the token: the route lists the live token ids (see ``routes.Route.tokens``).

This is the only module that catches ``jwt`` exceptions; they become ``TokenRejected`` with a
reason clients can tell apart.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import jwt

from gateway.core.errors import TokenRejected

ALGORITHM = "HS256"
ALGORITHMS = [ALGORITHM]
"""Pinned: ``none`` and every asymmetric algorithm are refused (threat model T08, T09)."""
LEEWAY_S = 5
MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    jti: str
    usable_until: float
    """The ``exp`` claim plus the leeway (epoch seconds): the token is expired after it."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    secret: bytes


def parse_keys(pairs: Sequence[str]) -> list[SigningKey]:
    keys = []
    for pair in pairs:
        kid, sep, secret = pair.partition(":")
        if not sep or not kid or len(secret) < 32:
            raise ValueError("token keys must be `kid:secret` with a secret of 32+ characters")
        keys.append(SigningKey(kid, secret.encode()))
    return keys


def generate_key() -> SigningKey:
    return SigningKey("k" + secrets.token_hex(4), secrets.token_urlsafe(48).encode())


def audience(preview_uid: str) -> str:
    return f"preview:{preview_uid}"


class TokenSigner:
    def __init__(self, keys: Sequence[SigningKey]) -> None:
        if not keys:
            raise ValueError("at least one signing key is required")
        self._signing = keys[0]
        self._by_kid = {k.kid: k for k in keys}

    def issue(
        self, *, preview_uid: str, jti: str, expires_at: datetime, issued_at: datetime
    ) -> str:
        """Deterministic for given claims, so a listed token re-signs to the same value."""
        payload = {
            "aud": audience(preview_uid),
            "jti": jti,
            "exp": int(expires_at.timestamp()),
            "iat": int(issued_at.timestamp()),
        }
        return jwt.encode(
            payload, self._signing.secret, algorithm=ALGORITHM, headers={"kid": self._signing.kid}
        )

    def verify(self, token: str, *, preview_uid: str, now: datetime) -> str:
        """The token's id if it is genuine, unexpired and for this preview (see ``verified``)."""
        return self.verified(token, preview_uid=preview_uid, now=now).jti

    def verified(self, token: str, *, preview_uid: str, now: datetime) -> VerifiedToken:
        """The token's id and usable-until time if it is genuine, unexpired and for this preview.

        Raises:
            TokenRejected: reason ``token_malformed``, ``token_invalid`` (bad signature or
                unknown key), ``token_expired`` or ``token_wrong_preview``.
        """
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise TokenRejected("token_malformed", "The preview token is malformed.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("token_malformed", "The preview token is malformed.") from None
        key = self._by_kid.get(str(header.get("kid", "")))
        if key is None or header.get("alg") != ALGORITHM:
            raise TokenRejected("token_invalid", "The preview token is not valid.")
        try:
            claims = jwt.decode(
                token,
                key.secret,
                algorithms=ALGORITHMS,
                audience=audience(preview_uid),
                leeway=LEEWAY_S,
                # strict_aud: ``aud`` must be exactly our string. Without it pyjwt also accepts
                # a list that merely contains it (threat model T16, CVE-2024-53861 class).
                # exp and nbf are checked below against the injected ``now``: pyjwt would read the
                # wall clock, which makes the decision depend on when it runs.
                options={
                    "require": ["exp", "aud", "jti"],
                    "verify_iat": False,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "strict_aud": True,
                },
            )
        except jwt.InvalidAudienceError:
            raise TokenRejected(
                "token_wrong_preview", "The preview token is for another preview."
            ) from None
        except jwt.InvalidSignatureError:
            # Before DecodeError, its base class: a forged or tampered token is not malformed.
            raise TokenRejected("token_invalid", "The preview token is not valid.") from None
        except jwt.DecodeError:
            raise TokenRejected("token_malformed", "The preview token is malformed.") from None
        except jwt.PyJWTError:
            raise TokenRejected("token_invalid", "The preview token is not valid.") from None
        exp, nbf = claims["exp"], claims.get("nbf", 0)
        if not _is_number(exp) or not _is_number(nbf):
            raise TokenRejected("token_malformed", "The preview token is malformed.")
        if exp + LEEWAY_S < now.timestamp():
            raise TokenRejected("token_expired", "The preview token has expired.")
        if nbf - LEEWAY_S > now.timestamp():
            raise TokenRejected("token_invalid", "The preview token is not valid yet.")
        jti = claims["jti"]
        if not isinstance(jti, str):
            raise TokenRejected("token_invalid", "The preview token is not valid.")
        return VerifiedToken(jti, float(claims["exp"] + LEEWAY_S))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def new_token_id() -> str:
    return secrets.token_hex(12)
