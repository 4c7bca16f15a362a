"""Verified preview tokens, remembered so no request pays a full JWT verification twice. Pure:
no I/O, no clock (the caller passes ``now``).

An entry binds a token string to the preview uid it was verified for, its id (``jti``) and its
expiry. A hit is good only until that expiry (with the verifier's leeway); revocation is not
cached at all: the caller still looks the id up in the route's live tokens on every request, so a
revoked token stops working with the route update that revokes it.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    jti: str
    expires_at: float
    """The token's ``exp`` claim plus the verifier's leeway (epoch seconds): unusable after."""


class TokenCache:
    """Bounded: when full, the oldest entry goes (insertion order), so a flood of distinct
    tokens costs memory up to the bound and no more."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._max = max_entries
        self._entries: dict[tuple[str, str], VerifiedToken] = {}

    def get(self, preview_uid: str, token: str, now: float) -> VerifiedToken | None:
        """The verified token, or None if unknown or expired (an expired entry is dropped)."""
        raise NotImplementedError

    def put(self, preview_uid: str, token: str, verified: VerifiedToken) -> None:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._entries)
