"""Verified preview tokens, remembered so no request pays a full JWT verification twice. Pure:
no I/O, no clock (the caller passes ``now``).

An entry binds a token string to the preview uid it was verified for and holds what the
verification found: its id (``jti``) and the time it stops being usable. A hit is good only until
then; revocation is not cached at all: the caller still looks the id up in the route's live
tokens on every request, so a revoked token stops working with the route update that revokes it.
Only successful verifications are remembered; a bad token is verified (and refused) each time.
"""

from __future__ import annotations

from gateway.core.tokens import VerifiedToken

DEFAULT_MAX_ENTRIES = 10_000


class TokenCache:
    """Bounded: when full, the oldest entry goes (insertion order), so a flood of distinct
    tokens costs memory up to the bound and no more."""

    __slots__ = ("_entries", "_max")

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("a token cache holds at least one entry")
        self._max = max_entries
        self._entries: dict[tuple[str, str], VerifiedToken] = {}

    def get(self, preview_uid: str, token: str, now: float) -> VerifiedToken | None:
        """The verified token, or None if unknown or expired (an expired entry is dropped)."""
        key = (preview_uid, token)
        hit = self._entries.get(key)
        if hit is None:
            return None
        if now > hit.usable_until:
            del self._entries[key]
            return None
        return hit

    def put(self, preview_uid: str, token: str, verified: VerifiedToken) -> None:
        key = (preview_uid, token)
        entries = self._entries
        if key not in entries and len(entries) >= self._max:
            del entries[next(iter(entries))]
        entries[key] = verified

    def __len__(self) -> int:
        return len(self._entries)
