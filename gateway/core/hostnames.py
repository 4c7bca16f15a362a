"""Host header parsing and preview hostname naming. Pure: no I/O.

Rule: every value used for routing, auth, CORS and logging comes from ``normalize_host``. No other
module reads the Host header for a decision, so there is exactly one canonical host per request.
"""

from __future__ import annotations

import functools
import re
import secrets
import string

from gateway.core.errors import InvalidHost

MAX_HOST_LENGTH = 253
"""RFC 1035: a name is at most 255 octets on the wire, 253 characters in text form."""
MAX_LABEL_LENGTH = 63

# Used with fullmatch: ``$`` would also match before a trailing newline, so ``"abc\n"`` would pass
# as a label and become a second routing key for the same name.
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ID_ALPHABET = string.ascii_lowercase + string.digits
RANDOM_ID_LENGTH = 22
"""22 characters of [a-z0-9] carry about 113 bits, so ids cannot be guessed or enumerated."""


# Every request normalises its Host, nearly always one of a few names, and the checks (a regex
# per label) have a measurable cost (docs/benchmarks.md). Only valid names are remembered: an
# exception is never cached.
@functools.lru_cache(maxsize=4096)
def normalize_host(raw: str) -> str:
    """Return the canonical routing name for a Host header value.

    Lower-cases, drops a port and one trailing dot. Anything that is not a plain DNS name
    (userinfo, spaces, paths, raw non-ASCII, IP literals, over-long labels) raises ``InvalidHost``
    so that it never reaches the routing table.
    """
    if not raw or len(raw) > MAX_HOST_LENGTH + 7:
        raise InvalidHost("The Host header is missing or too long.")
    if not raw.isascii():
        raise InvalidHost("The Host header must be ASCII (use the xn-- form of the name).")
    host = raw
    if host.startswith("["):
        raise InvalidHost("Previews are not served on IP addresses.")
    name, sep, port = host.rpartition(":")
    if sep:
        # int() would read "+80", "8_0" and "٨٠"; only plain ASCII digits are a port.
        if not (port.isdigit() and 0 < int(port) <= 65535):
            raise InvalidHost("The Host header has an invalid port.")
        host = name
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host or len(host) > MAX_HOST_LENGTH:
        raise InvalidHost("The Host header is missing or too long.")
    labels = host.split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise InvalidHost("The Host header is not a valid DNS name.")
    if labels[-1].isdigit():
        raise InvalidHost("Previews are not served on IP addresses.")
    return host


def is_valid_dns_name(name: str) -> bool:
    try:
        return normalize_host(name) == name
    except InvalidHost:
        return False


def random_preview_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(RANDOM_ID_LENGTH))


def random_hostname(preview_id: str, region: str, preview_domain: str) -> str:
    """``<id>.<region>.<domain>``, or ``<id>.<domain>`` when the region is empty."""
    return ".".join(part for part in (preview_id, region, preview_domain) if part)


def prefix_hostname(prefix: str, workspace: str, preview_domain: str) -> str:
    """``<prefix>-<workspace>.<domain>``, Blaxel's prefixUrl form."""
    return f"{prefix}-{workspace}.{preview_domain}"


def wildcard_candidates(host: str) -> list[str]:
    """Keys to try, most specific first: the host itself, then ``*.<parent>`` (one label only).

    An exact name always beats a wildcard, and a wildcard covers exactly one label, so
    ``*.cust.test`` matches ``a.cust.test`` but neither ``cust.test`` nor ``a.b.cust.test``.
    """
    _, dot, parent = host.partition(".")
    if not dot or "." not in parent:
        return [host]
    return [host, f"*.{parent}"]


def public_url(host: str, scheme: str, port: int) -> str:
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}/" if port == default else f"{scheme}://{host}:{port}/"
