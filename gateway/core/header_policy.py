"""Header policy: every header that crosses the gateway is decided here. Pure: no I/O.

No module outside this one and the three it re-exports (``header_names``: the data,
``header_values``: edits of one value, ``request_headers``: the request side over header lists)
adds, drops or edits a forwarded header. The policy is data (the frozensets of ``header_names``)
plus small functions, in the manner of Caddy's ``hopHeaders`` and Traefik's
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
from gateway.core.header_names import TOKEN_COOKIE_NAMES as TOKEN_COOKIE_NAMES
from gateway.core.header_names import TOKEN_QUERY_PARAM as TOKEN_QUERY_PARAM
from gateway.core.header_names import UNSETTABLE_RESPONSE_HEADERS as UNSETTABLE_RESPONSE_HEADERS
from gateway.core.header_names import WEBSOCKET_HANDSHAKE as WEBSOCKET_HANDSHAKE
from gateway.core.header_names import forwarded_for_value as forwarded_for_value
from gateway.core.header_names import names as _names
from gateway.core.header_names import token_set as token_set
from gateway.core.header_values import scope_set_cookie as scope_set_cookie
from gateway.core.header_values import split_token_cookie_pairs as split_token_cookie_pairs
from gateway.core.header_values import split_token_cookies as split_token_cookies
from gateway.core.header_values import strip_token_cookies as strip_token_cookies
from gateway.core.header_values import strip_token_param as strip_token_param
from gateway.core.header_values import strip_token_param_from_url as strip_token_param_from_url
from gateway.core.header_values import token_cookie_values as token_cookie_values
from gateway.core.request_headers import SCAN_FIRST as SCAN_FIRST
from gateway.core.request_headers import Header as Header
from gateway.core.request_headers import RequestScan as RequestScan
from gateway.core.request_headers import scan_request as scan_request
from gateway.core.request_headers import set_header as set_header
from gateway.core.request_headers import upstream_header_list as upstream_header_list

Headers = CIMultiDict[str] | CIMultiDictProxy[str]


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
    # fullmatch: "$" would also match before a final newline, and "X\n" split the head.
    if not _TOKEN_CHARS.fullmatch(name) or "_" in name:
        return False
    return not any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value)
