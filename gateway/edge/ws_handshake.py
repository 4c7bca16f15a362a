"""The WebSocket handshake's end at the edge: the accept key an upstream must answer with, the
credentials the hub re-admits the tunnel with, and the tunnel that replaces both connections."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from gateway.core import admission
from gateway.core.planner import Inspected, Upgrade, first_header, shape_response
from gateway.core.records import Route
from gateway.edge.exchange import Relay, not_upgraded
from gateway.edge.pages import head_bytes
from gateway.edge.pool import UpstreamConnection, UpstreamPool
from gateway.edge.ws_hub import WebSocketHub, WsLimits
from gateway.edge.ws_tunnel import WsTunnel
from gateway.ops import log

if TYPE_CHECKING:
    from gateway.edge.connection import ClientConnection


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept that proves the upstream read this handshake (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1((key.strip() + _WS_GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def credentials(inspected: Inspected) -> admission.Inbound:
    """What the hub re-admits the tunnel with on every invalidation (the aiohttp relay's form)."""
    facts = inspected.admission
    return admission.Inbound(
        method=facts.method,
        headers=CIMultiDict(inspected.head.headers),
        raw_path=facts.raw_path,
        raw_query=facts.raw_query,
        host_header=facts.host_header,
        scheme=facts.scheme,
        websocket=True,
    )


def open_tunnel(
    client: ClientConnection,
    conn: UpstreamConnection,
    relay: Relay,
    inspected: Inspected,
    up: Upgrade,
    route: Route,
    record: log.AccessRecord,
    ws: tuple[WebSocketHub, WsLimits, UpstreamPool],
    write_record: Callable[[], None],
) -> None:
    """The upstream answered 101: the client gets it, and the hub both connections; the access
    record is written when the tunnel ends."""
    assert relay.switched is not None and conn.transport is not None
    hub, limits, ws_pool = ws
    resp, rest = relay.switched
    key = first_header(inspected.head.headers, "sec-websocket-key") or ""
    if first_header(resp.headers, "sec-websocket-accept") != accept_key(key):
        raise not_upgraded()
    relay.status = record.status = 101
    headers = shape_response(101, resp.headers, up.edits, upgrade=True)
    client.transport.write(head_bytes(101, headers))
    extensions = first_header(resp.headers, "sec-websocket-extensions") or ""
    conn.detach()
    tunnel = WsTunnel(
        client.transport,
        conn.transport,
        limits,
        client_buffered=client.hand_over(),
        upstream_buffered=rest,
        compressed="permessage-deflate" in extensions.lower(),
    )
    hub.attach(tunnel, route, inspected.host, record, credentials(inspected))
    relay.tunneled = True

    def ended(_: object) -> None:
        # After the hub's own callback, which noted the tunnel's end in the record.
        ws_pool.release(conn, reusable=False)
        write_record()

    tunnel.done.add_done_callback(ended)
