"""Custom domains: names, claims, the TXT challenge and the verification state machine. Pure: no
I/O (the resolver is ``ops.dns_check``, the records ``core.records.Domain``).

Routing keys of a domain live in the one routing table, next to preview hostnames:

- a custom-domain preview's route is keyed by its hostname (custom domains are never under the
  preview domain, so the two kinds of names cannot collide);
- a domain's fallback route is keyed ``_fallback.<domain>``: ``_`` is not allowed in a Host, so
  no request can name that key directly.

So a request costs, per label of its host, one key lookup: never a scan.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.core.errors import BadRequest
from gateway.core.hostnames import is_valid_dns_name
from gateway.core.records import Domain

CHALLENGE_LABEL = "_preview-gateway-challenge"
FALLBACK_LABEL = "_fallback"
FALLBACK_HEADER = "X-Blaxel-Fallback"
FALLBACK_PREVIEW_HEADER = "X-Blaxel-Fallback-Preview"
FALLBACK_DOMAIN_HEADER = "X-Blaxel-Fallback-Domain"
MIN_LABELS = 2
"""A domain has at least two labels: nobody may claim a whole top-level domain."""


def challenge_name(domain: str) -> str:
    return f"{CHALLENGE_LABEL}.{domain}"


def new_challenge() -> str:
    return "pgw-" + secrets.token_urlsafe(24)


def fallback_key(domain: str) -> str:
    return f"{FALLBACK_LABEL}.{domain}"


def under(name: str, parent: str) -> bool:
    return name == parent or name.endswith("." + parent)


def ancestors(name: str) -> list[str]:
    """``name`` and its parents that could be domains, nearest first:
    ``a.b.acme.dev`` -> ``[a.b.acme.dev, b.acme.dev, acme.dev]``."""
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - MIN_LABELS + 1)]


def fallback_candidates(host: str, preview_domain: str) -> list[str]:
    """Fallback keys for a host that no route names, nearest registered parent first. Names
    under the preview domain have no fallback (they cannot be custom domains)."""
    if under(host, preview_domain):
        return []
    return [fallback_key(name) for name in ancestors(host)]


def check_domain_name(name: str, preview_domain: str) -> None:
    """Raises ``BadRequest`` for what can never be a custom domain."""
    if not is_valid_dns_name(name) or name.count(".") < MIN_LABELS - 1:
        raise BadRequest("metadata.name: must be a lower-case DNS name with at least two labels")
    if under(name, preview_domain) or under(preview_domain, name):
        raise BadRequest("metadata.name: the preview domain and names around it are reserved")


def claim_conflict(workspace: str, parents: dict[str, str], tree: set[str]) -> bool:
    """Whether a new domain would reach into another workspace's tree. ``parents``: owners of
    the registered domains among its ancestors; ``tree``: workspaces with a domain at or under
    it."""
    return any(ws != workspace for ws in parents.values()) or bool(tree - {workspace})


@dataclass(frozen=True)
class Lookup:
    """What the resolver found for the challenge name."""

    values: tuple[str, ...] = ()
    error: str | None = None
    """``timeout`` or another resolver failure, described; None when the answer came back
    (with or without records)."""


def verify(domain: Domain, found: Lookup, now: datetime) -> Domain:
    """The outcome of an explicit verify: ``verified``, or ``failed`` with the reason."""
    error = _problem(domain, found)
    if error is None:
        return domain.model_copy(
            update={
                "status": "verified",
                "verification_error": None,
                "last_verified_at": now,
                "missing_since": None,
                "updated_at": now,
            }
        )
    return domain.model_copy(
        update={"status": "failed", "verification_error": error, "updated_at": now}
    )


def recheck(domain: Domain, found: Lookup, now: datetime, grace: timedelta) -> Domain:
    """A periodic re-check of a verified domain. A record that went missing keeps the domain
    served for ``grace`` (DNS edits and flaky resolvers should not cut traffic at once); after
    that the domain is ``failed`` and unserved."""
    if not domain.served:
        return domain
    error = _problem(domain, found)
    if error is None:
        if domain.missing_since is None and domain.last_verified_at is not None:
            return domain  # nothing changed: no write
        return verify(domain, found, now)
    since = domain.missing_since or now
    if now - since >= grace:
        return domain.model_copy(
            update={"status": "failed", "verification_error": error, "updated_at": now}
        )
    if domain.missing_since is None:
        return domain.model_copy(update={"missing_since": now, "verification_error": error})
    return domain


def _problem(domain: Domain, found: Lookup) -> str | None:
    if found.error is not None:
        return f"DNS lookup of {challenge_name(domain.name)} failed: {found.error}"
    if not found.values:
        return f"No TXT record at {challenge_name(domain.name)}"
    if domain.txt_value not in found.values:
        return f"The TXT record at {challenge_name(domain.name)} has another value"
    return None


def fallback_headers(domain: str, sandbox: str, preview: str) -> dict[str, str]:
    return {
        FALLBACK_HEADER: "true",
        FALLBACK_PREVIEW_HEADER: f"{sandbox}/{preview}",
        FALLBACK_DOMAIN_HEADER: domain,
    }
