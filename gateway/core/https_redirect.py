"""The edge port's answers while the edge serves TLS: a redirect to https, except ACME HTTP-01
challenges. Pure: no I/O."""

from __future__ import annotations

from gateway.core.hostnames import normalize_host

ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


def origin_path(target: str) -> str:
    """The path and query of a request target: origin-form as is, absolute-form without its
    scheme and authority, anything else (``*``) as ``/``."""
    if target.startswith("/"):
        return target
    scheme_end = target.find("://")
    if scheme_end > 0:
        rest = target[scheme_end + 3 :]
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    return "/"


def is_acme_challenge(target: str) -> bool:
    return origin_path(target).startswith(ACME_CHALLENGE_PREFIX)


def redirect_location(host_header: str | None, target: str, https_port: int) -> str:
    """Where a plain-http request is sent: the same host and path over https. Raises
    ``InvalidHost`` for a missing or invalid Host (400, as nginx and Caddy answer)."""
    host = normalize_host(host_header or "")
    authority = host if https_port == 443 else f"{host}:{https_port}"
    return f"https://{authority}{origin_path(target)}"
