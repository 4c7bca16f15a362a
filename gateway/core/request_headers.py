"""The request side of the header policy over header lists: one pass over a request's headers
(``scan_request``) and the headers that go upstream (``upstream_header_list``). Pure: no I/O.
``header_policy`` re-exports all of it; read the policy there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.core.header_names import TOKEN_COOKIE_MARK as _TOKEN_COOKIE_MARK
from gateway.core.header_names import UPSTREAM_DROP as _UPSTREAM_DROP
from gateway.core.header_names import forwarded_for_value, token_set
from gateway.core.header_names import names as _names
from gateway.core.header_names import quote_string as _quote
from gateway.core.header_values import split_token_cookie_pairs, strip_token_param_from_url

Header = tuple[str, str]


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

    __slots__ = (
        "drop",
        "first",
        "kept",
        "noted",
        "token_cookie_names",
        "token_cookies",
        "underscore",
    )

    def __init__(self, drop: frozenset[str]) -> None:
        self.drop = drop
        self.kept: list[Header] = []
        """Not dropped by name, token cookies and the token in Referer stripped; the names
        listed in Connection are removed later, by ``upstream_header_list``."""
        self.noted: tuple[list[str], ...] = ([], [], [], [], [])
        self.underscore = False
        self.token_cookies: list[str] = []
        """The gateway's cookie values, in order (see ``token_cookie_values``)."""
        self.token_cookie_names: list[str] = []
        """Their names, in the same order."""
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
                value, pairs = split_token_cookie_pairs(value)
                for cookie_name, token in pairs:
                    scan.token_cookie_names.append(cookie_name)
                    scan.token_cookies.append(token)
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
