"""Header policy: every header that crosses the gateway is decided here. Pure: no I/O.

No other module adds, drops or edits a forwarded header. The policy is data (the frozensets of
``header_names``) plus small functions, in the manner of Caddy's ``hopHeaders`` and Traefik's
``forwarded_header.go``. Each decision works over header lists (``scan_request``,
``upstream_header_list``, ``downstream_header_list``), read once per message; the multidict
functions are thin wrappers for the aiohttp edge.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.core.errors import BadRequest, MethodNotAllowed, PayloadTooLarge
from gateway.core.header_names import CORS_DEFAULTS as CORS_DEFAULTS
from gateway.core.header_names import FORWARDING as FORWARDING
from gateway.core.header_names import GATEWAY_OWNED as GATEWAY_OWNED
from gateway.core.header_names import HOP_BY_HOP as HOP_BY_HOP
from gateway.core.header_names import REJECTED_METHODS as REJECTED_METHODS
from gateway.core.header_names import SERVER as SERVER
from gateway.core.header_names import TOKEN_COOKIE_MARK as _TOKEN_COOKIE_MARK
from gateway.core.header_names import TOKEN_COOKIE_NAMES as TOKEN_COOKIE_NAMES
from gateway.core.header_names import TOKEN_QUERY_PARAM as TOKEN_QUERY_PARAM
from gateway.core.header_names import UNSETTABLE_RESPONSE_HEADERS as UNSETTABLE_RESPONSE_HEADERS
from gateway.core.header_names import UPSTREAM_DROP as _UPSTREAM_DROP
from gateway.core.header_names import WEBSOCKET_HANDSHAKE as WEBSOCKET_HANDSHAKE
from gateway.core.header_names import forwarded_for_value as forwarded_for_value
from gateway.core.header_names import names as _names
from gateway.core.header_names import quote_string as _quote
from gateway.core.header_names import token_set as token_set
from gateway.core.header_values import scope_set_cookie as scope_set_cookie
from gateway.core.header_values import split_token_cookies as split_token_cookies
from gateway.core.header_values import strip_token_cookies as strip_token_cookies
from gateway.core.header_values import strip_token_param as strip_token_param
from gateway.core.header_values import strip_token_param_from_url as strip_token_param_from_url
from gateway.core.header_values import token_cookie_values as token_cookie_values

Headers = CIMultiDict[str] | CIMultiDictProxy[str]
Header = tuple[str, str]


_TOKEN_CHARS = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def check_request(
    method: str,
    version: tuple[int, int],
    headers: Headers,
    *,
    max_body_bytes: int,
) -> None:
    """``check_framing`` for a multidict (the aiohttp edge)."""
    check_framing(
        method,
        version,
        transfer_encoding="Transfer-Encoding" in headers,
        content_length=headers.get("Content-Length"),
        underscore=any("_" in name for name in headers),
        host_count=len(headers.getall("Host", ())),
        max_body_bytes=max_body_bytes,
    )


def check_framing(
    method: str,
    version: tuple[int, int],
    *,
    transfer_encoding: bool,
    content_length: str | None,
    underscore: bool,
    host_count: int,
    max_body_bytes: int,
) -> None:
    """Refuse requests whose framing or shape is ambiguous before anything is forwarded.

    The HTTP parser already rejects CL+TE, duplicate CL and obs-fold; these are the cases it
    accepts that an upstream parser might read differently (threat model S07, S08, L06).
    ``content_length`` is the first value; ``underscore``: some header name has one.
    """
    if method in REJECTED_METHODS:
        raise MethodNotAllowed(f"{method} is not forwarded to previews.")
    if transfer_encoding and version < (1, 1):
        raise BadRequest("Transfer-Encoding is not allowed on HTTP/1.0.")
    if transfer_encoding and content_length is not None:
        raise BadRequest("Content-Length and Transfer-Encoding must not both be sent.")
    if underscore:
        # WSGI/CGI servers read X_Forwarded_For and X-Forwarded-For as one variable.
        raise BadRequest("Header names with underscores are not accepted.")
    if host_count > 1:
        raise BadRequest("Exactly one Host header is allowed.")
    length = content_length
    if (
        max_body_bytes
        and length is not None
        # isdigit() alone admits "²", which int() refuses; and a length of more digits than
        # any limit has is over it without int() parsing thousands of them.
        and length.isascii()
        and length.isdigit()
        and (len(length) > 18 or int(length) > max_body_bytes)
    ):
        raise PayloadTooLarge(f"The request body is larger than {max_body_bytes} bytes.")


def connection_tokens(headers: Headers) -> set[str]:
    """Lower-cased header names listed in every ``Connection`` header."""
    return token_set(headers.getall("Connection", ()))


def is_websocket_upgrade(method: str, headers: Headers) -> bool:
    """An upgrade is recognised by token, so Firefox's ``Connection: keep-alive, Upgrade`` works."""
    return websocket_upgrade(
        method, token_set(headers.getall("Upgrade", ())), connection_tokens(headers)
    )


def websocket_upgrade(method: str, upgrade: set[str], connection: set[str]) -> bool:
    """``upgrade`` and ``connection``: the ``token_set`` of those headers."""
    return method == "GET" and "websocket" in upgrade and "upgrade" in connection


def upstream_request_headers(
    incoming: Headers,
    *,
    peer_ip: str,
    proto: str,
    trusted_peer: bool,
    preview_headers: Mapping[str, str],
    websocket: bool = False,
) -> CIMultiDict[str]:
    """``upstream_header_list`` for a multidict (the aiohttp edge)."""
    scan = scan_request(incoming.items(), trusted_peer=trusted_peer, websocket=websocket)
    return CIMultiDict(
        upstream_header_list(
            scan,
            peer_ip=peer_ip,
            proto=proto,
            trusted_peer=trusted_peer,
            preview_headers=preview_headers,
        )
    )


# The names whose values scan_request collects, besides filtering them: each one's index in
# RequestScan.noted.
_NOTED: dict[str, int] = {
    name: index
    for index, name in enumerate(
        ("host", "content-length", "transfer-encoding", "connection", "upgrade")
    )
}
SCAN_FIRST: frozenset[str] = _names(
    "X-Blaxel-Preview-Token",
    "Origin",
    "Access-Control-Request-Method",
    "Sec-Fetch-Mode",
    "Expect",
    "X-Request-Id",
    "Accept",
)
"""Names whose first value ``scan_request`` keeps in ``RequestScan.first`` (lower-cased keys)."""


class RequestScan:
    """One pass over a request's headers: the values the policy and admission decide on, and
    the headers that may go upstream. (A plain class: built per request, it must be cheap.)"""

    __slots__ = ("drop", "first", "kept", "noted", "token_cookies", "underscore")

    def __init__(self, drop: frozenset[str]) -> None:
        self.drop = drop
        self.kept: list[Header] = []
        """Not dropped by name, token cookies and the token in Referer stripped; the names
        listed in Connection are removed later, by ``upstream_header_list``."""
        self.noted: tuple[list[str], ...] = ([], [], [], [], [])
        self.underscore = False
        self.token_cookies: list[str] = []
        """The gateway's cookie values, in order (see ``token_cookie_values``)."""
        self.first: dict[str, str] = {}
        """The first value of each ``SCAN_FIRST`` name present."""

    @property
    def hosts(self) -> list[str]:
        return self.noted[0]

    @property
    def content_lengths(self) -> list[str]:
        return self.noted[1]

    @property
    def transfer_encodings(self) -> list[str]:
        return self.noted[2]

    @property
    def connection(self) -> list[str]:
        return self.noted[3]

    @property
    def upgrade(self) -> list[str]:
        return self.noted[4]


# What scan_request does with a name beyond filtering it, in one lookup: the index of its list
# in RequestScan.noted (0-4), keep its first value (_FIRST), or edit it (_COOKIE, _REFERER).
_FIRST, _COOKIE, _REFERER = 5, 6, 7
_SPECIAL: dict[str, int] = {
    **_NOTED,
    **dict.fromkeys(SCAN_FIRST, _FIRST),
    "cookie": _COOKIE,
    "referer": _REFERER,
}


def scan_request(
    headers: Iterable[Header], *, trusted_peer: bool, websocket: bool = False
) -> RequestScan:
    """Read a request's headers once. ``websocket``: the aiohttp client builds its own
    handshake, so the client's Sec-WebSocket-* headers are dropped (the raw relay keeps them)."""
    scan = RequestScan(_UPSTREAM_DROP[trusted_peer, websocket])
    drop, kept, noted, first = scan.drop, scan.kept, scan.noted, scan.first
    special = _SPECIAL.get
    for header in headers:
        name, value = header
        if "_" in name:
            scan.underscore = True
        lower = name.lower()
        kind = special(lower)
        if kind is None:
            if lower not in drop:
                kept.append(header)
            continue
        if kind < _FIRST:
            noted[kind].append(value)
        elif kind == _FIRST:
            if lower not in first:
                first[lower] = value
        elif kind == _COOKIE:
            if _TOKEN_COOKIE_MARK in value:
                value, tokens = split_token_cookies(value)
                scan.token_cookies.extend(tokens)
            else:
                value = value.strip()
            if not value:
                continue
            header = (name, value)
        elif "?" in value:  # Referer
            header = (name, strip_token_param_from_url(value))
        if lower not in drop:
            kept.append(header)
    return scan


_PLAIN_CONNECTION = frozenset(
    {"keep-alive", "Keep-Alive", "Upgrade", "upgrade", "keep-alive, Upgrade"}
)
_NOT_LISTABLE = frozenset({"host"})


def upstream_header_list(
    scan: RequestScan,
    *,
    peer_ip: str,
    proto: str,
    trusted_peer: bool,
    preview_headers: Mapping[str, str],
) -> list[Header]:
    """Headers for the request to the sandbox (takes ``scan.kept`` over; do not reuse it).

    ``Host`` is kept exactly as the client sent it, so apps build correct absolute URLs. Headers
    named in ``Connection`` go before the gateway adds its own, so ``Connection: X-Forwarded-For``
    can never remove the gateway's value (Traefik CVE-2021-32813), and ``Connection: Host`` cannot
    remove the Host the app routes on.
    """
    out = scan.kept
    connection = scan.connection
    # The usual Connection values list nothing that is still there (keep-alive and upgrade were
    # dropped by name).
    listed = (
        token_set(connection) - scan.drop - _NOT_LISTABLE
        if connection and (len(connection) > 1 or connection[0] not in _PLAIN_CONNECTION)
        else None
    )
    if listed:
        out = [(name, value) for name, value in out if name.lower() not in listed]
    host = scan.hosts[0] if scan.hosts else ""
    element = f"for={forwarded_for_value(peer_ip)};host={_quote(host)};proto={proto}"
    if not trusted_peer:
        # The scan dropped every FORWARDING name, so there is no prior value to read or
        # replace: the four headers are appended, in the order the branch below appends them.
        out.append(("X-Forwarded-For", peer_ip))
        out.append(("X-Forwarded-Proto", proto))
        out.append(("X-Forwarded-Host", host))
        out.append(("Forwarded", element))
    else:
        # Prior values are read from ``out``: they are there only when the peer is trusted and
        # did not name them in Connection. Reading the request would let a trusted peer's
        # ``Connection: X-Forwarded-Proto`` leave the upstream with no X-Forwarded-Proto.
        prior_for = _pop_all(out, "x-forwarded-for")
        out.append(("X-Forwarded-For", ", ".join([*prior_for, peer_ip])))
        names = {name.lower() for name, _ in out}
        if "x-forwarded-proto" not in names:
            out.append(("X-Forwarded-Proto", proto))
        if "x-forwarded-host" not in names:
            out.append(("X-Forwarded-Host", host))
        prior = _pop_all(out, "forwarded")
        out.append(("Forwarded", ", ".join([*prior, element])))
    for name, value in preview_headers.items():
        set_header(out, name, value)
    return out


def set_header(headers: list[Header], name: str, value: str) -> None:
    """Replace the first ``name`` in place and remove the others, or append: what
    ``CIMultiDict.__setitem__`` does, over a list."""
    lower = name.lower()
    at = -1
    for i, (existing, _) in enumerate(headers):
        if existing.lower() == lower:
            at = i
            break
    if at < 0:
        headers.append((name, value))
        return
    headers[at] = (name, value)
    rest = [h for h in headers[at + 1 :] if h[0].lower() != lower]
    del headers[at + 1 :]
    headers.extend(rest)


def _pop_all(headers: list[Header], lower: str) -> list[str]:
    values = [v for n, v in headers if n.lower() == lower]
    if values:
        headers[:] = [h for h in headers if h[0].lower() != lower]
    return values


def downstream_response_headers(
    upstream: Headers,
    *,
    preview_headers: Mapping[str, str],
    protected_domains: Iterable[str],
    set_cookie: str | None = None,
) -> CIMultiDict[str]:
    """``downstream_header_list`` for a multidict (the aiohttp edge)."""
    return CIMultiDict(
        downstream_header_list(
            upstream.items(),
            preview_headers=preview_headers,
            protected_domains=tuple(protected_domains),
            set_cookie=set_cookie,
        )
    )


_CORS_FILL = tuple((name.lower(), name, value) for name, value in CORS_DEFAULTS.items())
_UPGRADE_KEPT = _names("Connection", "Upgrade")
_HOP_BY_HOP_101 = HOP_BY_HOP - _UPGRADE_KEPT


def downstream_header_list(
    upstream: Iterable[Header],
    *,
    preview_headers: Mapping[str, str],
    protected_domains: Sequence[str],
    set_cookie: str | None = None,
    upgrade: bool = False,
) -> list[Header]:
    """Headers for the response to the client. The sandbox is untrusted: hop-by-hop headers and
    cookies aimed at sibling previews are not passed on.

    ``upgrade``: the headers of a 101 that opens a WebSocket relay. Its Connection and Upgrade
    stay, and nothing is added but Server (no CORS on a handshake, as the old relay's 101).
    """
    drop = _HOP_BY_HOP_101 if upgrade else HOP_BY_HOP
    out: list[Header] = []
    present: set[str] = set()
    connection: list[str] = []
    for name, value in upstream:
        lower = name.lower()
        if lower == "connection":
            connection.append(value)
        if lower in drop:
            continue
        if lower == "set-cookie":
            rewritten = scope_set_cookie(value, protected_domains)
            if rewritten is None:
                continue
            value = rewritten
        out.append((name, value))
        present.add(lower)
    listed = token_set(connection) - drop if connection else None
    if listed and upgrade:
        listed -= _UPGRADE_KEPT
    if listed and not listed.isdisjoint(present):
        out = [(name, value) for name, value in out if name.lower() not in listed]
        present -= listed
    if not upgrade:
        # The app's own headers win; the preview's configured ones, then the defaults, fill gaps.
        for name, value in preview_headers.items():
            lower = name.lower()
            if lower not in present:
                out.append((name, value))
                present.add(lower)
        for lower, name, value in _CORS_FILL:
            if lower not in present:
                out.append((name, value))
        if set_cookie is not None:
            out.append(("Set-Cookie", set_cookie))
    if "server" not in present:
        out.append(("Server", SERVER))
    return out


def valid_header_pair(name: str, value: str) -> bool:
    """A configured header must be a token name and a value without control characters."""
    if not _TOKEN_CHARS.match(name) or "_" in name:
        return False
    return not any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value)
