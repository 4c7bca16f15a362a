"""Header policy: every header that crosses the gateway is decided here. Pure: no I/O.

No other module adds, drops or edits a forwarded header. The policy is data (the frozensets
below) plus small functions, in the manner of Caddy's ``hopHeaders`` and Traefik's
``forwarded_header.go``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.core.errors import BadRequest, MethodNotAllowed, PayloadTooLarge

Headers = CIMultiDict[str] | CIMultiDictProxy[str]


def _names(*names: str) -> frozenset[str]:
    """Lower-cased header names. Every membership test below lower-cases the name it checks:
    names are case-insensitive, clients such as fetch/undici and Go send them in lower case, and
    neither ``str`` nor ``istr`` hashing is case-insensitive (``"upgrade" in {istr("Upgrade")}``
    is False), so a mixed-case set would let ``transfer-encoding`` or ``x-blaxel-preview-token``
    through."""
    return frozenset(name.lower() for name in names)


# RFC 9110 §7.6.1 connection-specific fields, plus the non-standard ones proxies have always
# treated the same way. TE is dropped too: the gateway writes its own framing on each hop.
HOP_BY_HOP: frozenset[str] = _names(
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
FORWARDING: frozenset[str] = _names(
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
GATEWAY_OWNED: frozenset[str] = _names(
    "X-Blaxel-Preview-Token",
    "X-Blaxel-Fallback",
    "X-Blaxel-Fallback-Preview",
    "X-Blaxel-Fallback-Domain",
    "X-Blaxel-Authorization",
)

# Sent by aiohttp's client on the handshake it builds itself; the client's values are for the
# client's own hop only.
WEBSOCKET_HANDSHAKE: frozenset[str] = _names(
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Protocol",
)

# What upstream_request_headers drops by name, by (trusted_peer, websocket): one set lookup per
# header instead of five. Expect: the gateway answers 100-continue itself (http_relay).
_UPSTREAM_DROP: dict[tuple[bool, bool], frozenset[str]] = {
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
_TOKEN_COOKIE_MARK = "bl_preview_token"  # noqa: S105 - in each of TOKEN_COOKIE_NAMES (case kept)

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

_TOKEN_CHARS = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def check_request(
    method: str,
    version: tuple[int, int],
    headers: Headers,
    *,
    max_body_bytes: int,
) -> None:
    """Refuse requests whose framing or shape is ambiguous before anything is forwarded.

    aiohttp's C parser already rejects CL+TE, duplicate CL and obs-fold; these are the cases it
    accepts that an upstream parser might read differently (threat model S07, S08, L06).
    """
    if method in REJECTED_METHODS:
        raise MethodNotAllowed(f"{method} is not forwarded to previews.")
    if "Transfer-Encoding" in headers and version < (1, 1):
        raise BadRequest("Transfer-Encoding is not allowed on HTTP/1.0.")
    if "Transfer-Encoding" in headers and "Content-Length" in headers:
        raise BadRequest("Content-Length and Transfer-Encoding must not both be sent.")
    for name in headers:
        if "_" in name:
            # WSGI/CGI servers read X_Forwarded_For and X-Forwarded-For as one variable.
            raise BadRequest("Header names with underscores are not accepted.")
    if len(headers.getall("Host", ())) > 1:
        raise BadRequest("Exactly one Host header is allowed.")
    length = headers.get("Content-Length")
    if max_body_bytes and length is not None and length.isdigit() and int(length) > max_body_bytes:
        raise PayloadTooLarge(f"The request body is larger than {max_body_bytes} bytes.")


def connection_tokens(headers: Headers) -> set[str]:
    """Lower-cased header names listed in every ``Connection`` header."""
    tokens: set[str] = set()
    for value in headers.getall("Connection", ()):
        for token in value.split(","):
            token = token.strip()
            if token:
                tokens.add(token.lower())
    return tokens


def is_websocket_upgrade(method: str, headers: Headers) -> bool:
    """An upgrade is recognised by token, so Firefox's ``Connection: keep-alive, Upgrade`` works."""
    if method != "GET":
        return False
    upgrade = {t.strip().lower() for v in headers.getall("Upgrade", ()) for t in v.split(",")}
    return "websocket" in upgrade and "upgrade" in connection_tokens(headers)


def forwarded_for_value(ip: str) -> str:
    """RFC 7239 node: IPv6 addresses are quoted and bracketed."""
    return f'"[{ip}]"' if ":" in ip else ip


def upstream_request_headers(
    incoming: Headers,
    *,
    peer_ip: str,
    proto: str,
    trusted_peer: bool,
    preview_headers: Mapping[str, str],
    websocket: bool = False,
) -> CIMultiDict[str]:
    """Headers for the request to the sandbox.

    ``Host`` is kept exactly as the client sent it, so apps build correct absolute URLs. Headers
    named in ``Connection`` go before the gateway adds its own, so ``Connection: X-Forwarded-For``
    can never remove the gateway's value (Traefik CVE-2021-32813), and ``Connection: Host`` cannot
    remove the Host the app routes on.
    """
    listed = connection_tokens(incoming) - {"host"}
    drop = _UPSTREAM_DROP[trusted_peer, websocket]
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        if lower in drop or lower in listed:
            continue
        if lower == "cookie":
            value = strip_token_cookies(value)
            if not value:
                continue
        elif lower == "referer":
            value = strip_token_param_from_url(value)
        out.add(name, value)

    # Prior values are read from ``out``, not ``incoming``: they are there only when the peer is
    # trusted and did not name them in Connection. Reading ``incoming`` would let a trusted
    # peer's ``Connection: X-Forwarded-Proto`` leave the upstream with no X-Forwarded-Proto.
    host = incoming.get("Host", "")
    element = f"for={forwarded_for_value(peer_ip)};host={_quote(host)};proto={proto}"
    if not trusted_peer:
        # The loop dropped every FORWARDING name, so there is no prior value to read or replace:
        # the four headers are appended, in the order the branch below would append them.
        out.extend(
            (
                ("X-Forwarded-For", peer_ip),
                ("X-Forwarded-Proto", proto),
                ("X-Forwarded-Host", host),
                ("Forwarded", element),
            )
        )
    else:
        prior_for = out.popall("X-Forwarded-For", [])
        out["X-Forwarded-For"] = ", ".join([*prior_for, peer_ip])
        if "X-Forwarded-Proto" not in out:
            out["X-Forwarded-Proto"] = proto
        if "X-Forwarded-Host" not in out:
            out["X-Forwarded-Host"] = host
        prior = out.popall("Forwarded", [])
        out["Forwarded"] = ", ".join([*prior, element])
    for name, value in preview_headers.items():
        out[name] = value
    return out


def downstream_response_headers(
    upstream: Headers,
    *,
    preview_headers: Mapping[str, str],
    protected_domains: Iterable[str],
    set_cookie: str | None = None,
) -> CIMultiDict[str]:
    """Headers for the response to the client. The sandbox is untrusted: hop-by-hop headers and
    cookies aimed at sibling previews are not passed on."""
    listed = connection_tokens(upstream)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in listed:
            continue
        if lower == "set-cookie":
            rewritten = scope_set_cookie(value, protected_domains)
            if rewritten is None:
                continue
            value = rewritten
        out.add(name, value)
    # The app's own headers win; the preview's configured ones, then the defaults, fill gaps.
    for name, value in (*preview_headers.items(), *CORS_DEFAULTS.items()):
        if name not in out:
            out[name] = value
    if set_cookie is not None:
        out.add("Set-Cookie", set_cookie)
    out.setdefault("Server", SERVER)
    return out


def scope_set_cookie(value: str, protected_domains: Iterable[str]) -> str | None:
    """Make a cookie that would reach sibling previews host-only; drop one that impersonates
    the gateway's token cookie.

    Without the preview domain on the Public Suffix List, ``Domain=preview.example`` set by one
    sandbox would be sent to every other preview (cookie tossing).
    """
    name = value.split("=", 1)[0].strip()
    if name in TOKEN_COOKIE_NAMES:
        return None
    parts = value.split(";")
    kept = [parts[0]]
    for attr in parts[1:]:
        key, _, domain = attr.partition("=")
        if key.strip().lower() == "domain":
            domain = domain.strip().lstrip(".").lower()
            if any(_covers(domain, protected) for protected in protected_domains):
                continue
        kept.append(attr)
    return ";".join(kept)


def _covers(cookie_domain: str, protected: str) -> bool:
    """True when a cookie for ``cookie_domain`` would be sent to hosts under ``protected`` or to
    ``protected`` itself (the domain is the protected one, a parent, or a name under it)."""
    return (
        cookie_domain == protected
        or protected.endswith("." + cookie_domain)
        or cookie_domain.endswith("." + protected)
    )


def strip_token_cookies(cookie_header: str) -> str:
    """Remove the gateway's cookie and keep every other cookie byte for byte, in order."""
    if _TOKEN_COOKIE_MARK not in cookie_header:
        # No token cookie can be in it: splitting on ";" and joining again would give back the
        # same string.
        return cookie_header.strip()
    pairs = [p for p in cookie_header.split(";")]
    kept = [p for p in pairs if p.split("=", 1)[0].strip() not in TOKEN_COOKIE_NAMES]
    return ";".join(kept).strip()


def strip_token_param(query: str) -> str:
    """Remove every ``bl_preview_token`` parameter from a raw query string, leaving the others
    byte-identical (no re-encoding, so Vite's ``?token=`` survives exactly)."""
    if TOKEN_QUERY_PARAM not in query:
        return query
    kept = [p for p in query.split("&") if p.split("=", 1)[0] != TOKEN_QUERY_PARAM]
    return "&".join(kept)


def strip_token_param_from_url(url: str) -> str:
    base, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hash_sep, fragment = rest.partition("#")
    query = strip_token_param(query)
    return base + ("?" + query if query else "") + (hash_sep + fragment)


def valid_header_pair(name: str, value: str) -> bool:
    """A configured header must be a token name and a value without control characters."""
    if not _TOKEN_CHARS.match(name) or "_" in name:
        return False
    return not any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value)


UNSETTABLE_RESPONSE_HEADERS: frozenset[str] = (
    _names("Set-Cookie", "Content-Length", "Content-Encoding", "Content-Type", "Location")
    | HOP_BY_HOP
)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
