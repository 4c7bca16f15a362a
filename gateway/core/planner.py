"""The request planner: what the edge does with one request head. Pure: no I/O, in the style of
h11.

The listener builds a ``RequestHead`` once per request, from the parser's callbacks. Then:

1. ``inspect(head, config)`` walks the header list **once**. It refuses what the edge refuses
   before routing (Host, framing, methods, underscores, body size) by raising the
   ``GatewayError`` to answer with, and returns an ``Inspected``: the canonical host to look the
   route up by, plus every fact the later decisions need (token sources, Origin, framing, the
   upstream header lines already filtered).
2. The caller looks the route up (I/O) and raises ``UnknownPreview`` when there is none.
3. ``plan(inspected, route, now, config, request_id=...)`` decides admission and returns one of
   ``Respond`` (a CORS preflight answer or the token redirect; errors are raised as
   ``GatewayError``), ``Forward`` (the upstream request head as bytes plus the response-header
   edits) or ``Upgrade`` (the same, for a WebSocket handshake).

It reproduces the decisions of the old edge (``Edge._handle``, ``admission.decide`` and
``header_policy``), which stay the reference until that edge is deleted.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.core.admission import AdmissionPolicy
from gateway.core.netpolicy import IPNetwork
from gateway.core.records import Route
from gateway.core.token_cache import TokenCache

Header = tuple[str, str]


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
    admission: AdmissionPolicy
    max_body_bytes: int
    """0: no limit."""
    public_scheme: str = "http"
    """The scheme clients use (the token cookie's name and Secure depend on it)."""
    tokens: TokenCache = field(default_factory=TokenCache)
    """Verified tokens; shared by every request this config plans (mutable, bounded)."""


class BodyFraming(enum.Enum):
    """How the client's request body is delimited; relayed as it arrives, never re-framed."""

    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"


@dataclass(frozen=True, slots=True)
class Inspected:
    """The facts of one request head, read in one pass over its headers."""

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
    # Admission inputs.
    token_header: str | None
    cookie_tokens: tuple[str, ...]
    origin: str
    preflight: bool
    navigation: bool
    host_header: str
    """Host as sent, lower-cased, trailing dot removed (with its port): for Origin checks."""
    upstream: tuple[Header, ...]
    """The client's headers that go upstream, filtered and with token cookies/Referer
    stripped; the forwarding headers and the preview's are added by ``plan``."""


@dataclass(frozen=True, slots=True)
class ResponseEdits:
    """What ``shape_response`` does to the upstream's response headers."""

    preview_headers: Mapping[str, str]
    protected_domains: tuple[str, ...]
    set_cookie: str | None = None
    """The token cookie to add (a token that came in the query of a non-navigation)."""


@dataclass(frozen=True, slots=True)
class Respond:
    """An answer the gateway writes itself: a CORS preflight (204) or the token redirect (303)."""

    status: int
    headers: list[Header]
    body: bytes = b""
    error_code: str | None = None
    """For the access log ('preflight' for a preflight answer)."""


@dataclass(frozen=True, slots=True)
class Forward:
    """Send ``head`` (request line and headers, ending in a blank line) to the sandbox, then the
    client's body as framed by ``framing``."""

    head: bytes
    edits: ResponseEdits
    framing: BodyFraming
    content_length: int
    idempotent: bool
    """Safe to send again on a fresh connection when a pooled one turns out stale."""
    expect_continue: bool
    response_bodyless: bool
    """HEAD: the response has no body whatever its headers say."""
    close_after: bool
    """End the client connection after this response (an unrelayed Upgrade was sent)."""
    target_host: str
    port: int


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A WebSocket handshake to send upstream; the upstream's status decides (101: relay)."""

    head: bytes
    edits: ResponseEdits
    target_host: str
    port: int


Plan = Respond | Forward | Upgrade

IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def first_header(headers: Sequence[Header], lower_name: str) -> str | None:
    """The first value of a header, for callers that have only the raw list (error pages)."""
    raise NotImplementedError


def inspect(head: RequestHead, config: PlannerConfig) -> Inspected:
    """Read the head's headers once; refuse what the edge refuses before routing.

    Raises (in the old edge's order): ``InvalidHost`` (missing, duplicate or bad Host),
    ``BadRequest`` (absolute-form target naming another host, Transfer-Encoding on HTTP/1.0 or
    with Content-Length or other than ``chunked``, a bad or repeated Content-Length, underscores
    in names), ``MethodNotAllowed`` (TRACE, TRACK, CONNECT), ``PayloadTooLarge``.
    """
    raise NotImplementedError


def plan(
    inspected: Inspected, route: Route, now: float, config: PlannerConfig, *, request_id: str
) -> Plan:
    """Admission and the upstream head. ``now`` is epoch seconds (``time.time()``).

    Raises ``TokenRequired``, ``TokenRejected``, ``OriginRejected``; the caller renders them.
    The target check (``allowed_targets``) is the pool's, at dial time.
    """
    raise NotImplementedError


def shape_response(
    status: int,
    headers: Sequence[Header],
    edits: ResponseEdits,
    *,
    upgrade: bool = False,
) -> list[Header]:
    """The response headers for the client, from the upstream's (see
    ``header_policy.downstream_header_list``). ``upgrade``: a 101 keeps its Upgrade, Connection
    and Sec-WebSocket-* headers."""
    raise NotImplementedError
