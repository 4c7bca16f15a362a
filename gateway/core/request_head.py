"""One request head as the listener received it, and ``inspect``: the single pass over its
headers that refuses what the edge refuses before routing and gathers what the planner decides
on. Pure: no I/O. Part of the planner (``planner`` re-exports all of it).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.core import header_policy as policy
from gateway.core import netpolicy
from gateway.core.admission import AdmissionConfig, Facts
from gateway.core.errors import BadRequest, InvalidHost
from gateway.core.header_policy import Header, RequestScan
from gateway.core.hostnames import normalize_host
from gateway.core.netpolicy import IPNetwork
from gateway.core.token_cache import TokenCache


@dataclass(slots=True)
class RequestHead:
    """One request as received, transport-neutral. Built once by the listener."""

    method: str
    """As sent (the parser already refused a lower-case or unknown method)."""
    target: str
    """The raw request target: origin-form ``/path?query`` or absolute-form."""
    version: tuple[int, int]
    headers: list[Header]
    """Names and values as received, in order, duplicates kept."""
    peer: str
    """The client's IP address ('' when unknown)."""
    scheme: str = "http"
    """The scheme of the client's own hop: 'https' when this listener terminated TLS."""


@dataclass(frozen=True, slots=True)
class PlannerConfig:
    preview_domain: str
    trusted_proxies: Sequence[IPNetwork]
    admission: AdmissionConfig
    max_body_bytes: int
    """0: no limit."""
    public_scheme: str = "http"
    """The scheme clients use (the token cookie's name and Secure depend on it)."""
    tokens: TokenCache = field(default_factory=TokenCache)
    """Verified tokens; shared by every request this config plans (mutable, bounded)."""
    trusted_peers: dict[str, bool] = field(default_factory=dict)
    """``is_trusted`` per peer address, remembered (mutable, bounded)."""

    @property
    def protected_domains(self) -> tuple[str, ...]:
        return (self.preview_domain,)


class BodyFraming(enum.Enum):
    """How the client's request body is delimited; relayed as it arrives, never re-framed."""

    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"


@dataclass(slots=True)  # not frozen: built per request (frozen costs ~1 µs); never mutated
class Inspected:
    """The facts of one request head, read in one pass over its headers. ``plan`` consumes it
    (it takes the scan's header list over): plan each ``Inspected`` once."""

    head: RequestHead
    host: str
    """Canonical (``normalize_host``): the key to look the route up by."""
    raw_path: str
    raw_query: str
    framing: BodyFraming
    content_length: int
    """The declared length when ``framing`` is LENGTH, else 0."""
    expect_continue: bool
    """HTTP/1.1 with ``Expect: 100-continue``: the edge answers 100 itself when it wants the
    body (the Expect header is never forwarded)."""
    websocket: bool
    """A WebSocket upgrade (GET, ``Upgrade: websocket`` and ``Connection: upgrade``)."""
    other_upgrade: bool
    """An ``Upgrade`` header that is not relayed (h2c, ...): served as plain HTTP/1.1, and the
    client connection closes after the response."""
    trusted_peer: bool
    request_id: str | None
    """The client's ``X-Request-Id`` when it came from a trusted proxy and is sane, else None
    (the caller generates one)."""
    accept: str
    """The Accept header, for choosing an HTML or JSON error page."""
    scheme: str
    """The scheme the client uses: 'https' on a TLS listener, else the configured one."""
    scan: RequestScan

    @property
    def admission(self) -> Facts:
        """What admission decides on; built on demand (public routes never need it)."""
        first = self.scan.first
        return Facts(
            method=self.head.method,
            raw_path=self.raw_path,
            raw_query=self.raw_query,
            host_header=self.scan.hosts[0].lower().rstrip("."),
            scheme=self.scheme,
            websocket=self.websocket,
            preflight=is_preflight(self),
            token_header=first.get("x-blaxel-preview-token"),
            cookie_tokens=self.scan.token_cookies,
            cookie_names=self.scan.token_cookie_names,
            origin=first.get("origin", ""),
            sec_fetch_mode=first.get("sec-fetch-mode", ""),
        )


def first_header(headers: Sequence[Header], lower_name: str) -> str | None:
    """The first value of a header, for callers that have only the raw list (error pages)."""
    for name, value in headers:
        if name.lower() == lower_name:
            return value
    return None


def inspect(head: RequestHead, config: PlannerConfig) -> Inspected:
    """Read the head's headers once; refuse what the edge refuses before routing.

    Raises (in the old edge's order): ``InvalidHost`` (missing, duplicate or bad Host),
    ``BadRequest`` (absolute-form target naming another host, Transfer-Encoding on HTTP/1.0 or
    with Content-Length or other than ``chunked``, a bad or repeated Content-Length, underscores
    in names), ``MethodNotAllowed`` (TRACE, TRACK, CONNECT), ``PayloadTooLarge``.
    """
    trusted = _trusted(head.peer, config) if config.trusted_proxies else False
    scan = policy.scan_request(head.headers, trusted_peer=trusted)
    hosts, lengths, codings, connection, upgrade = scan.noted
    if len(hosts) != 1:
        raise InvalidHost("Exactly one Host header is required.")
    host = normalize_host(hosts[0])
    target = head.target
    if target[:1] == "/" and "#" not in target:
        raw_path, _, raw_query = target.partition("?")
    else:
        raw_path, raw_query = _split_target(target, host)
    if lengths or codings or scan.underscore or head.method in policy.REJECTED_METHODS:
        policy.check_framing(
            head.method,
            head.version,
            transfer_encoding=bool(codings),
            content_length=lengths[0] if lengths else None,
            underscore=scan.underscore,
            host_count=1,
            max_body_bytes=config.max_body_bytes,
        )
        framing, length = _body_framing(scan)
    else:
        framing, length = BodyFraming.NONE, 0
    first = scan.first
    websocket = bool(upgrade) and policy.websocket_upgrade(
        head.method, policy.token_set(upgrade), policy.token_set(connection)
    )
    return Inspected(
        head=head,
        host=host,
        raw_path=raw_path,
        raw_query=raw_query,
        framing=framing,
        content_length=length,
        expect_continue="expect" in first
        and head.version >= (1, 1)
        and first["expect"].strip().lower() == "100-continue",
        websocket=websocket,
        other_upgrade=bool(upgrade) and not websocket,
        trusted_peer=trusted,
        request_id=_supplied_request_id(first["x-request-id"])
        if trusted and "x-request-id" in first
        else None,
        accept=first.get("accept", ""),
        scheme="https" if head.scheme == "https" else config.public_scheme,
        scan=scan,
    )


def is_preflight(inspected: Inspected) -> bool:
    first = inspected.scan.first
    return (
        inspected.head.method == "OPTIONS"
        and "origin" in first
        and "access-control-request-method" in first
    )


_MAX_LENGTH_DIGITS = 18
"""Content-Length digits: 10**18 bytes is beyond any body, and int() stays cheap."""


def _body_framing(scan: RequestScan) -> tuple[BodyFraming, int]:
    """Only framings every parser reads the same way are relayed (threat model S07, S08)."""
    if scan.transfer_encodings:
        if len(scan.transfer_encodings) > 1 or scan.transfer_encodings[0].strip().lower() != (
            "chunked"
        ):
            raise BadRequest("Only Transfer-Encoding: chunked is accepted.")
        return BodyFraming.CHUNKED, 0
    if not scan.content_lengths:
        return BodyFraming.NONE, 0
    if len(scan.content_lengths) > 1:
        raise BadRequest("Exactly one Content-Length is allowed.")
    value = scan.content_lengths[0]
    if not (value.isascii() and value.isdigit()) or len(value) > _MAX_LENGTH_DIGITS:
        raise BadRequest("The Content-Length is not a number.")
    length = int(value)
    return (BodyFraming.LENGTH, length) if length else (BodyFraming.NONE, 0)


def _split_target(target: str, host: str) -> tuple[str, str]:
    """The raw path and query. An absolute-form target is accepted only when it names the Host's
    own host: the edge never routes on it (threat model H07)."""
    if not target.startswith("/"):
        scheme_end = target.find("://")
        rest = target[scheme_end + 3 :] if scheme_end > 0 else ""
        cut = len(rest)
        for mark in "/?#":
            at = rest.find(mark)
            if 0 <= at < cut:
                cut = at
        authority = rest[:cut].rpartition("@")[2]
        if normalize_host(authority) != host:
            raise BadRequest("The request target and the Host header name different hosts.")
        target = rest[cut:]
        if not target.startswith("/"):
            target = "/" + target
    # A fragment is the client's own; it never travels (aiohttp's URL dropped it too).
    path, _, query = target.partition("#")[0].partition("?")
    return path, query


def _trusted(peer: str, config: PlannerConfig) -> bool:
    if not peer:
        return False
    known = config.trusted_peers.get(peer)
    if known is None:
        # ipaddress parsing costs microseconds; a replica sees few distinct proxy addresses.
        known = netpolicy.is_trusted(peer, config.trusted_proxies)
        if len(config.trusted_peers) >= _PEER_CACHE_MAX:
            config.trusted_peers.clear()
        config.trusted_peers[peer] = known
    return known


_PEER_CACHE_MAX = 4096


def _supplied_request_id(supplied: str) -> str | None:
    """A trusted proxy's request id, if it is one (printable ASCII, at most 128 characters)."""
    if supplied and len(supplied) <= 128 and supplied.isascii() and supplied.isprintable():
        return supplied
    return None
