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
``header_policy``), which stay the reference until that edge is deleted (``tests/unit/
test_planner.py`` compares the two). Where it differs, on purpose: the body is relayed as the
client framed it, so only ``Transfer-Encoding: chunked`` and a single plain ``Content-Length``
are accepted (aiohttp's parser refused the rest before); and a WebSocket handshake goes upstream
with the client's own ``Sec-WebSocket-*`` headers (the raw relay does not build its own).

A token is verified once per preview and then found in ``PlannerConfig.tokens`` until it
expires; revocation is read from the route on every request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.core import admission
from gateway.core import header_policy as policy
from gateway.core.header_policy import Header
from gateway.core.records import Route
from gateway.core.request_head import BodyFraming as BodyFraming
from gateway.core.request_head import Inspected as Inspected
from gateway.core.request_head import PlannerConfig as PlannerConfig
from gateway.core.request_head import RequestHead as RequestHead
from gateway.core.request_head import first_header as first_header
from gateway.core.request_head import inspect as inspect
from gateway.core.request_head import is_preflight as is_preflight


@dataclass(slots=True)  # not frozen: built per request (frozen costs ~1 µs); never mutated
class ResponseEdits:
    """What ``shape_response`` does to the upstream's response headers."""

    preview_headers: Mapping[str, str]
    protected_domains: tuple[str, ...]
    set_cookie: str | None = None
    """The token cookie to add (a token that came in the query of a non-navigation)."""


@dataclass(slots=True)
class Respond:
    """An answer the gateway writes itself: a CORS preflight (204) or the token redirect (303)."""

    status: int
    headers: list[Header]
    body: bytes = b""
    error_code: str | None = None
    """For the access log ('preflight' for a preflight answer)."""


@dataclass(slots=True)
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


@dataclass(slots=True)
class Upgrade:
    """A WebSocket handshake to send upstream; the upstream's status decides (101: relay)."""

    head: bytes
    edits: ResponseEdits
    target_host: str
    port: int


Plan = Respond | Forward | Upgrade

_PUBLIC = admission.Forward()

IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _upstream_request(
    inspected: Inspected, route: Route, request_id: str
) -> tuple[str, list[Header]]:
    """The request line and the header lines that go upstream (credentials and hop-by-hop
    removed, X-Forwarded-* and the preview's ``requestHeaders`` added)."""
    head, scan = inspected.head, inspected.scan
    headers = policy.upstream_header_list(
        scan,
        peer_ip=head.peer,
        proto="https" if head.scheme == "https" else "http",
        trusted_peer=inspected.trusted_peer,
        preview_headers=route.request_headers,
    )
    if "x-request-id" in scan.first:
        policy.set_header(headers, "X-Request-Id", request_id)
    else:
        headers.append(("X-Request-Id", request_id))
    query = policy.strip_token_param(inspected.raw_query)
    path = inspected.raw_path
    line = (
        f"{head.method} {path}?{query} HTTP/1.1\r\n"
        if query
        else f"{head.method} {path} HTTP/1.1\r\n"
    )
    return line, headers


def plan(
    inspected: Inspected, route: Route, now: float, config: PlannerConfig, *, request_id: str
) -> Plan:
    """Admission and the upstream head. ``now`` is epoch seconds (``time.time()``).

    Raises ``TokenRequired``, ``TokenRejected``, ``OriginRejected``; the caller renders them.
    The target check (``allowed_targets``) is the pool's, at dial time.
    """
    if route.public and not is_preflight(inspected):
        # What decide_facts answers for a public route, without building its facts.
        decision: admission.Decision = _PUBLIC
    else:
        facts = inspected.admission
        decision = admission.decide_facts(facts, route, config.admission, now, config.tokens)
    if not isinstance(decision, admission.Forward):
        return _answer(decision)
    head, scan = inspected.head, inspected.scan
    line, headers = _upstream_request(inspected, route, request_id)
    if inspected.websocket:
        headers.append(("Connection", "Upgrade"))
        headers.append(("Upgrade", "websocket"))
        return Upgrade(
            _encode(line, headers),
            ResponseEdits(route.response_headers, config.protected_domains),
            route.target_host,
            route.port,
        )
    framing = inspected.framing
    if framing is BodyFraming.CHUNKED:
        # Transfer-Encoding is hop-by-hop and was dropped; the body goes on as it was framed.
        headers.append(("Transfer-Encoding", "chunked"))
    return Forward(
        head=_encode(line, headers),
        edits=ResponseEdits(
            route.response_headers, config.protected_domains, set_cookie=decision.set_cookie
        ),
        framing=framing,
        content_length=inspected.content_length,
        idempotent=head.method in IDEMPOTENT_METHODS and framing is BodyFraming.NONE,
        expect_continue=inspected.expect_continue and framing is not BodyFraming.NONE,
        response_bodyless=head.method == "HEAD",
        close_after=bool(scan.upgrade),
        target_host=route.target_host,
        port=route.port,
    )


def _answer(decision: admission.Preflight | admission.Redirect) -> Respond:
    # Answers the gateway writes itself name it as their server, as error pages do.
    if isinstance(decision, admission.Preflight):
        headers = [*decision.headers.items(), ("Server", policy.SERVER)]
        return Respond(204, headers, error_code="preflight")
    return Respond(
        303,
        [
            ("Location", decision.location),
            ("Set-Cookie", decision.set_cookie),
            ("Cache-Control", "no-store"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Blaxel-Source", "gateway"),
            ("Server", policy.SERVER),
        ],
    )


def _encode(line: str, headers: list[Header]) -> bytes:
    text = line + "".join([f"{name}: {value}\r\n" for name, value in headers]) + "\r\n"
    try:
        # Headers arrive decoded as latin-1 (lossless for any byte), so this restores them.
        return text.encode("latin-1")
    except UnicodeEncodeError:
        # Only a preview's configured header can hold a character beyond latin-1: UTF-8 for
        # those lines (as the aiohttp client sent them), the client's bytes unchanged.
        lines = [_encode_line(f"{name}: {value}\r\n") for name, value in headers]
        return _encode_line(line) + b"".join(lines) + b"\r\n"


def _encode_line(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def shape_response(
    status: int,
    headers: Sequence[Header],
    edits: ResponseEdits,
    *,
    upgrade: bool = False,
    chunked: bool = False,
) -> list[Header]:
    """The response headers for the client, from the upstream's (see
    ``header_policy.downstream_header_list``). ``upgrade``: a 101 that opens a WebSocket relay
    keeps its Upgrade, Connection and Sec-WebSocket-* headers. ``chunked``: the body is relayed
    in the upstream's chunked framing, so the client is told so (Transfer-Encoding is
    hop-by-hop and the policy drops the upstream's)."""
    out = policy.downstream_header_list(
        headers,
        preview_headers=edits.preview_headers,
        protected_domains=edits.protected_domains,
        set_cookie=edits.set_cookie,
        upgrade=upgrade and status == 101,
    )
    if chunked:
        out.append(("Transfer-Encoding", "chunked"))
    return out
