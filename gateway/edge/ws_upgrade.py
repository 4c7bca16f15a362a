"""The WebSocket handshake at the edge: the upgrade goes upstream on a fresh connection, and a
101 turns both connections into a ``WsTunnel`` attached to the hub (no task per open socket).

The caps on WebSockets per preview and per client IP (``EdgeGuard``) are taken before the
upstream is dialled and given back when the handshake fails or the tunnel ends; the tunnel
also frees the client connection's slot, since the connection became the tunnel's.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from gateway.core import admission
from gateway.core.errors import GatewayError
from gateway.core.planner import Inspected, Upgrade, first_header, shape_response
from gateway.core.records import Route
from gateway.edge.config import RelayLimits
from gateway.edge.exchange import Relay
from gateway.edge.guard import EdgeGuard, preview_key
from gateway.edge.pages import head_bytes
from gateway.edge.pool import UpstreamConnection, UpstreamPool
from gateway.edge.upstream_errors import not_upgraded
from gateway.edge.ws_hub import WebSocketHub, WsLimits
from gateway.edge.ws_tunnel import WsTunnel
from gateway.ops import log

if TYPE_CHECKING:
    from gateway.edge.connection import ClientConnection


class WsUpgrade:
    def __init__(
        self,
        limits: RelayLimits,
        ws: tuple[UpstreamPool, WsLimits, WebSocketHub],
        guard: EdgeGuard,
        write_record: Callable[[log.AccessRecord, float], None],
    ) -> None:
        self._limits = limits
        self.ws_pool, self.ws_limits, self.hub = ws
        self.guard = guard
        self._write_record = write_record

    async def upgrade(
        self,
        client: ClientConnection,
        inspected: Inspected,
        up: Upgrade,
        route: Route,
        record: log.AccessRecord,
        started: float,
        dial: Callable[[], Awaitable[UpstreamConnection]],
    ) -> Relay:
        """The handshake goes upstream; a 101 turns both connections into a ``WsTunnel``, any
        other answer is relayed as an ordinary response. The tunnel is attached to the hub and
        this task ends: an open WebSocket holds no task (issue 9's memory per idle socket).
        ``dial`` gets the fresh upstream connection (a refused port may hold it, issue 14)."""
        self.hub.refuse_if_draining()
        key, peer, trusted = preview_key(route), inspected.head.peer, inspected.trusted_peer
        self.guard.enter_websocket(key, peer, trusted_peer=trusted)
        try:
            conn = await dial()
        except BaseException:
            self.guard.leave_websocket(key, peer, trusted_peer=trusted)
            raise
        relay: Relay | None = None
        try:
            relay = Relay(
                client,
                conn,
                method="GET",
                body=0,
                chunked=False,
                limits=self._limits,
                edits=up.edits,
                close_after=True,
                upgrade=True,
            )
            conn.attach(relay)
            conn.write(up.head)
            client.attach(relay, expect_continue=False)
            relay.arm()
            await relay.done
            if relay.error is not None:
                raise closing_error(relay)
            if relay.switched is None or conn.transport is None:
                record.extra["upstream_refused"] = relay.status
                return relay
            self._open_tunnel(client, conn, relay, inspected, up, route, record, started)
            return relay
        finally:
            if relay is None or not relay.tunneled:
                self.ws_pool.release(conn, reusable=False)
                self.guard.leave_websocket(key, peer, trusted_peer=trusted)

    def _open_tunnel(
        self,
        client: ClientConnection,
        conn: UpstreamConnection,
        relay: Relay,
        inspected: Inspected,
        up: Upgrade,
        route: Route,
        record: log.AccessRecord,
        started: float,
    ) -> None:
        """The upstream answered 101: the client gets it, and the hub both connections."""
        assert relay.switched is not None and conn.transport is not None
        resp, rest = relay.switched
        key = first_header(inspected.head.headers, "sec-websocket-key") or ""
        if first_header(resp.headers, "sec-websocket-accept") != _accept_key(key):
            raise not_upgraded()
        relay.status = record.status = 101
        headers = shape_response(101, resp.headers, up.edits, upgrade=True)
        client.transport.write(head_bytes(101, headers))
        extensions = first_header(resp.headers, "sec-websocket-extensions") or ""
        conn.detach()
        tunnel = WsTunnel(
            client.transport,
            conn.transport,
            self.ws_limits,
            client_buffered=client.hand_over(),
            upstream_buffered=rest,
            compressed="permessage-deflate" in extensions.lower(),
        )
        self.hub.attach(tunnel, route, inspected.host, record, _credentials(inspected))
        relay.tunneled = True

        def ended(_: object) -> None:
            # After the hub's own callback, which noted the tunnel's end in the record.
            self.ws_pool.release(conn, reusable=False)
            # The client connection became the tunnel's: its slots are freed here, not in
            # ``ClientConnection.connection_lost``, which no longer runs for it.
            self.guard.leave_websocket(
                preview_key(route), inspected.head.peer, trusted_peer=inspected.trusted_peer
            )
            self.guard.connection_closed(inspected.head.peer)
            self._write_record(record, started)

        tunnel.done.add_done_callback(ended)


def closing_error(relay: Relay) -> GatewayError:
    """The relay's error, with the client connection marked to close when the request body was
    cut off part way: the rest of it must never be read as the next request, and the page
    says ``Connection: close``."""
    assert relay.error is not None
    if relay.close_client:
        relay.client.keep_alive = False
    return relay.error


def _accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept that proves the upstream read this handshake (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1((key.strip() + _WS_GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _credentials(inspected: Inspected) -> admission.Inbound:
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
