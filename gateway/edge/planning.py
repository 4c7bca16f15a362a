"""What to do with one parsed request on the protocol edge: answer it, or forward it with the
upstream head as bytes and a function that shapes the response headers.

A stop-gap for H1b's pure ``gateway/core/planner.py`` (not merged when this was written): it
composes the same core functions the aiohttp edge calls (``check_request``, ``admission.decide``,
``upstream_request_headers``), so both data paths decide alike until the planner replaces it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from multidict import CIMultiDict
from yarl import URL

from gateway.core import admission, netpolicy
from gateway.core import header_policy as policy
from gateway.core.errors import BadRequest, InvalidHost
from gateway.core.hostnames import normalize_host
from gateway.core.records import Route
from gateway.edge.server import EdgeConfig

HeaderList = list[tuple[str, str]]


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str
    """The request target exactly as sent."""
    version: tuple[int, int]
    headers: CIMultiDict[str]
    peer: str
    scheme: str
    chunked: bool
    content_length: int | None

    @property
    def path_and_query(self) -> tuple[str, str]:
        target = self.target
        if not target.startswith("/"):
            url = URL(target)
            return url.raw_path, url.raw_query_string
        path, _, query = target.partition("?")
        return path, query


@dataclass(frozen=True, slots=True)
class Respond:
    status: int
    headers: HeaderList
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Forward:
    head: bytes
    shape: Callable[[HeaderList], HeaderList]
    websocket: bool


def canonical_host(head: RequestHead) -> str:
    values = head.headers.getall("Host", [])
    if len(values) != 1:
        raise InvalidHost("Exactly one Host header is required.")
    host = normalize_host(values[0])
    if not head.target.startswith("/"):
        # Absolute-form target: never routed on; refused when it names another host (H07).
        try:
            authority = URL(head.target).raw_host or ""
        except ValueError as exc:
            raise BadRequest("Invalid request target.") from exc
        if normalize_host(authority) != host:
            raise BadRequest("The request target and the Host header name different hosts.")
    return host


def plan(
    head: RequestHead, route: Route, config: EdgeConfig, now: datetime, request_id: str
) -> Respond | Forward:
    headers = head.headers
    websocket = policy.is_websocket_upgrade(head.method, headers)
    path, query = head.path_and_query
    decision = admission.decide(
        admission.Inbound(
            method=head.method,
            headers=headers,
            raw_path=path,
            raw_query=query,
            host_header=headers.get("Host", "").lower().rstrip("."),
            scheme=head.scheme,
            websocket=websocket,
        ),
        route,
        config.admission,
        now,
    )
    if isinstance(decision, admission.Preflight):
        return Respond(204, [*decision.headers.items(), ("Server", policy.SERVER)], "preflight")
    if isinstance(decision, admission.Redirect):
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
    # The WebSocket handshake headers go through: the upstream answers this very handshake.
    upstream = policy.upstream_request_headers(
        headers,
        peer_ip=head.peer,
        proto=head.scheme,
        trusted_peer=netpolicy.is_trusted(head.peer, config.trusted_proxies),
        preview_headers=route.request_headers,
    )
    upstream["X-Request-Id"] = request_id
    query = policy.strip_token_param(query)
    target = (path if path.startswith("/") else "/" + path) + ("?" + query if query else "")
    lines = [f"{head.method} {target} HTTP/1.1\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in upstream.items()]
    if websocket:
        lines.append("Connection: Upgrade\r\nUpgrade: websocket\r\n")
    elif head.chunked:
        lines.append("Transfer-Encoding: chunked\r\n")
    lines.append("\r\n")
    set_cookie = decision.set_cookie

    def shape(response: HeaderList) -> HeaderList:
        shaped = policy.downstream_response_headers(
            CIMultiDict(response),
            preview_headers=route.response_headers,
            protected_domains=(config.preview_domain,),
            set_cookie=set_cookie,
        )
        return list(shaped.items())

    return Forward("".join(lines).encode("latin-1"), shape, websocket)
