"""The header names the policy acts on, as data, and the small parsers of header syntax it
shares. Pure: no I/O. ``header_policy`` re-exports these; read them there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def names(*names: str) -> frozenset[str]:
    """Lower-cased header names. Every membership test below lower-cases the name it checks:
    names are case-insensitive, clients such as fetch/undici and Go send them in lower case, and
    neither ``str`` nor ``istr`` hashing is case-insensitive (``"upgrade" in {istr("Upgrade")}``
    is False), so a mixed-case set would let ``transfer-encoding`` or ``x-blaxel-preview-token``
    through."""
    return frozenset(name.lower() for name in names)


# RFC 9110 §7.6.1 connection-specific fields, plus the non-standard ones proxies have always
# treated the same way. TE is dropped too: the gateway writes its own framing on each hop.
HOP_BY_HOP: frozenset[str] = names(
    "Connection",
    "Proxy-Connection",
    "Keep-Alive",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
    "Proxy-Authenticate",
    "Proxy-Authorization",
)

# Client-supplied identity headers are believed only from a trusted proxy (Caddy 2.5,
# CVE-2024-21499): anyone else could claim any address or scheme.
FORWARDING: frozenset[str] = names(
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "X-Real-IP",
    "Forwarded",
    "X-Original-URL",
    "X-Rewrite-URL",
)

# Names the gateway owns. A client never gets to set them on the upstream request
# (Blaxel strips X-Blaxel-Fallback-*; our own credentials must never reach a sandbox).
GATEWAY_OWNED: frozenset[str] = names(
    "X-Blaxel-Preview-Token",
    "X-Blaxel-Fallback",
    "X-Blaxel-Fallback-Preview",
    "X-Blaxel-Fallback-Domain",
    "X-Blaxel-Authorization",
)

# Sent by aiohttp's client on the handshake it builds itself; the client's values are for the
# client's own hop only.
WEBSOCKET_HANDSHAKE: frozenset[str] = names(
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Protocol",
)

# What upstream_request_headers drops by name, by (trusted_peer, websocket): one set lookup per
# header instead of five. Expect: the gateway answers 100-continue itself (http_relay).
UPSTREAM_DROP: dict[tuple[bool, bool], frozenset[str]] = {
    (trusted, websocket): HOP_BY_HOP
    | GATEWAY_OWNED
    | {"expect"}
    | (frozenset() if trusted else FORWARDING)
    | (WEBSOCKET_HANDSHAKE if websocket else frozenset())
    for trusted in (False, True)
    for websocket in (False, True)
}

TOKEN_COOKIE_NAMES: frozenset[str] = frozenset({"bl_preview_token", "__Host-bl_preview_token"})
TOKEN_QUERY_PARAM = "bl_preview_token"  # noqa: S105 - a parameter name, not a secret
TOKEN_COOKIE_MARK = "bl_preview_token"  # noqa: S105 - in each of TOKEN_COOKIE_NAMES (case kept)
HOST_PREFIX = "__Host-"


def is_token_cookie_name(name: str) -> bool:
    """One of the gateway's cookie names: ``bl_preview_token`` or a per-preview
    ``bl_preview_token_<suffix>``, each bare or ``__Host-`` prefixed. Never passed upstream,
    never set by an app."""
    if name.startswith(HOST_PREFIX):
        name = name[len(HOST_PREFIX) :]
    return name == TOKEN_COOKIE_MARK or name.startswith(TOKEN_COOKIE_MARK + "_")


# Blaxel's documented CORS defaults (shared/design/blaxel-api.md §5), added where neither the app
# nor the preview's responseHeaders set a value. `*` is never turned into reflection of the
# request's Origin, which with credentials would open the preview to every site.
CORS_DEFAULTS: Mapping[str, str] = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS, PATCH",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Blaxel-Preview-Token",
    "Access-Control-Allow-Credentials": "true",
    "Access-Control-Max-Age": "86400",
    "Access-Control-Expose-Headers": (
        "X-Blaxel-Source, X-Blaxel-Error-Code, X-Blaxel-Dispatch-State, Retry-After"
    ),
}

SERVER = "preview-gateway"
"""Sent when the app names no server itself; aiohttp would otherwise announce its version."""

REJECTED_METHODS: frozenset[str] = frozenset({"TRACE", "TRACK", "CONNECT"})

UNSETTABLE_RESPONSE_HEADERS: frozenset[str] = (
    names("Set-Cookie", "Content-Length", "Content-Encoding", "Content-Type", "Location")
    | HOP_BY_HOP
)


def token_set(values: Iterable[str]) -> set[str]:
    """The lower-cased comma-separated tokens of header values (``Connection``, ``Upgrade``)."""
    tokens: set[str] = set()
    for value in values:
        for token in value.split(","):
            token = token.strip()
            if token:
                tokens.add(token.lower())
    return tokens


def forwarded_for_value(ip: str) -> str:
    """RFC 7239 node: IPv6 addresses are quoted and bracketed."""
    return f'"[{ip}]"' if ":" in ip else ip


def quote_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
