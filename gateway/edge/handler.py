"""The edge's request task: Host → route → plan → pooled connection → relay.

One task per request, spawned by the client connection once a head is parsed; the access
record, metrics and request ids are kept as ``server.Edge.handle`` keeps them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from gateway.core import admission
from gateway.core.errors import (
    BadRequest,
    GatewayError,
    TargetNotAllowed,
    UnknownPreview,
    error_code,
)
from gateway.core.http_framing import ChunkedScanner, FramingError
from gateway.core.planner import (
    BodyFraming,
    Forward,
    Inspected,
    PlannerConfig,
    RequestHead,
    Respond,
    Upgrade,
    first_header,
    inspect,
    plan,
    shape_response,
)
from gateway.core.records import Route
from gateway.core.startup import retryable
from gateway.edge.config import EdgeConfig
from gateway.edge.exchange import Relay, not_upgraded
from gateway.edge.pages import closes_connection, render_bytes, status_phrase
from gateway.edge.pool import UpstreamConnection, UpstreamPool
from gateway.edge.starting import Starting
from gateway.edge.upstream_errors import closed_without_answer
from gateway.edge.ws_hub import WebSocketHub, WsLimits
from gateway.edge.ws_tunnel import WsTunnel
from gateway.ops import log
from gateway.store.lookup import RouteLookup

if TYPE_CHECKING:
    from gateway.edge.connection import ClientConnection


class EdgeHandler:
    def __init__(
        self,
        config: EdgeConfig,
        planner: PlannerConfig,
        lookup: RouteLookup,
        pool: UpstreamPool,
        ws: tuple[UpstreamPool, WsLimits, WebSocketHub],
        observe: Callable[[log.AccessRecord], None] | None = None,
        starting: Starting | None = None,
    ) -> None:
        self.config = config
        self.ws_pool, self.ws_limits, self.hub = ws
        self._planner = planner
        self._lookup = lookup
        self.pool = pool
        self._observe = observe
        self.starting = starting
        """Wake calls, holds and the waiting page (issue 14); None: refused is 502 at once."""
        self._next_id = random_ids().__next__

    async def handle(self, client: ClientConnection, head: RequestHead) -> None:
        record = log.AccessRecord(
            request_id="",
            method=head.method,
            host="",
            path=head.target.partition("?")[0][:512],
            remote=head.peer,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        relay: Relay | None = None
        try:
            relay = await self._handle(client, head, record, started)
            if relay is not None:
                # The client that went before its answer: nobody is left to answer (Caddy's 499).
                record.status = record.status or relay.status or 499
                if relay.head_at:
                    record.upstream_ms = round((relay.head_at - relay.sent_at) * 1000, 2)
                if relay.aborted:
                    record.error_code = "upstream_aborted"
                    log.edge.warning("upstream aborted mid-response (preview %s)", record.preview)
        except GatewayError as exc:
            if isinstance(exc, TargetNotAllowed):
                log.edge.error(
                    "refusing to dial a target outside allowed_targets (preview %s)",
                    record.preview,
                )
            record.status, record.error_code = exc.status, error_code(exc)
            client.respond(self._page(client, head, exc), close=closes_connection(exc))
        except asyncio.CancelledError:
            record.status = 499
            raise
        except Exception:
            log.edge.exception("unexpected error while handling a preview request")
            record.status, record.error_code = 500, "internal_error"
            client.respond(self._page(client, head, GatewayError()), close=True)
        finally:
            if relay is not None:
                record.bytes_in, record.bytes_out = relay.bytes_in, relay.bytes_out
            record.request_id = record.request_id or self._next_id()
            if relay is None or not relay.tunneled:
                self._write_record(record, started)  # a tunnel's is written when it ends
            try:
                client.finished(relay)
            except Exception:
                # Raised into the listener's TaskGroup, it would stop the whole edge.
                log.edge.exception("unexpected error after a preview request")
                client.transport.abort()

    def _write_record(self, record: log.AccessRecord, started: float) -> None:
        record.duration_ms = round((asyncio.get_running_loop().time() - started) * 1000, 2)
        log.write_access(record)
        if self._observe is not None:
            self._observe(record)

    async def _handle(
        self, client: ClientConnection, head: RequestHead, record: log.AccessRecord, started: float
    ) -> Relay | None:
        loop = asyncio.get_running_loop()
        inspected = inspect(head, self._planner)
        record.request_id = inspected.request_id or self._next_id()
        record.host = host = inspected.host
        client.body_framing(inspected.framing, inspected.content_length)
        if inspected.framing is BodyFraming.CHUNKED:
            _check_visible_chunks(client.buffered)
        route = await self._lookup.find(host)
        if route is None:
            raise UnknownPreview(f"No preview is registered for {host}.")
        record.workspace, record.sandbox = route.workspace, route.sandbox
        record.preview = route.preview
        decision = plan(inspected, route, time.time(), self._planner, request_id=record.request_id)
        if isinstance(decision, Respond):
            record.status, record.error_code = decision.status, decision.error_code
            client.respond(self._answer(client, decision), close=False)
            return None
        record.upstream = f"{route.sandbox}:{route.port}"
        record.overhead_ms = round((loop.time() - started) * 1000, 3)
        if self.starting is not None:
            target = (decision.target_host, decision.port)
            if isinstance(decision, Forward) and self.starting.is_ready_poll(inspected):
                status, body = await self.starting.ready_answer(route, target)
                record.status = status
                client.respond(self._ready_json(client, status, body), close=False)
                return None
            await self.starting.before_dial(inspected, route, target, record)
        if not isinstance(decision, Forward):
            record.kind = "websocket"
            return await self._upgrade(client, inspected, decision, route, record, started)
        return await self._relay(client, inspected, decision, route, record)

    async def _acquire(
        self,
        pool: UpstreamPool,
        inspected: Inspected,
        route: Route,
        target: tuple[str, int],
        record: log.AccessRecord,
        *,
        retryable: bool,
        fresh: bool,
    ) -> UpstreamConnection:
        if self.starting is None:
            return await pool.acquire(*target, fresh=fresh)
        return await self.starting.acquire(
            pool, inspected, route, target, retryable=retryable, record=record, fresh=fresh
        )

    async def _relay(
        self,
        client: ClientConnection,
        inspected: Inspected,
        fwd: Forward,
        route: Route,
        record: log.AccessRecord,
    ) -> Relay:
        retry = fwd.idempotent
        fresh = False
        held = retryable(fwd.idempotent, fwd.framing, fwd.content_length)
        while True:
            conn = await self._acquire(
                self.pool,
                inspected,
                route,
                (fwd.target_host, fwd.port),
                record,
                retryable=held,
                fresh=fresh,
            )
            relay = self._start(client, conn, inspected, fwd)
            await relay.done
            # A pooled connection the app had closed: once more on a fresh socket.
            error = relay.error
            stale = conn.reused and error is not None and error.code == _UNANSWERED
            self.pool.release(conn, reusable=relay.error is None and relay.reusable)
            if retry and stale and not relay.body_seen:
                retry, fresh = False, True
                continue
            if relay.error is not None:
                raise relay.error
            return relay

    async def _upgrade(
        self,
        client: ClientConnection,
        inspected: Inspected,
        up: Upgrade,
        route: Route,
        record: log.AccessRecord,
        started: float,
    ) -> Relay:
        """The handshake goes upstream; a 101 turns both connections into a ``WsTunnel``, any
        other answer is relayed as an ordinary response. The tunnel is attached to the hub and
        this task ends: an open WebSocket holds no task (issue 9's memory per idle socket)."""
        self.hub.refuse_if_draining()
        conn = await self._acquire(
            self.ws_pool,
            inspected,
            route,
            (up.target_host, up.port),
            record,
            retryable=True,
            fresh=True,
        )
        relay: Relay | None = None
        try:
            relay = Relay(
                client,
                conn,
                method="GET",
                body=0,
                chunked=False,
                limits=self.config.limits,
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
                raise relay.error
            if relay.switched is None or conn.transport is None:
                record.extra["upstream_refused"] = relay.status
                return relay
            self._open_tunnel(client, conn, relay, inspected, up, route, record, started)
            return relay
        finally:
            if relay is None or not relay.tunneled:
                self.ws_pool.release(conn, reusable=False)

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
        client.transport.write(_head_bytes(101, headers))
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
            self._write_record(record, started)

        tunnel.done.add_done_callback(ended)

    def _start(
        self, client: ClientConnection, conn: UpstreamConnection, inspected: Inspected, fwd: Forward
    ) -> Relay:
        relay = Relay(
            client,
            conn,
            method=inspected.head.method,
            body=fwd.content_length,
            chunked=fwd.framing is BodyFraming.CHUNKED,
            limits=self.config.limits,
            edits=fwd.edits,
            close_after=fwd.close_after,
        )
        conn.attach(relay)
        conn.write(fwd.head)
        client.attach(relay, expect_continue=fwd.expect_continue)
        relay.arm()
        return relay

    def _page(self, client: ClientConnection, head: RequestHead, exc: GatewayError) -> bytes:
        close = closes_connection(exc) or not client.keep_alive
        extra = client.date_header() + ("Connection: close\r\n" if close else "")
        accept = first_header(head.headers, "accept") or ""
        return render_bytes(exc, accept, head=head.method == "HEAD", extra=extra)

    def _ready_json(self, client: ClientConnection, status: int, body: bytes) -> bytes:
        extra = client.date_header() + f"Content-Length: {len(body)}\r\n"
        if not client.keep_alive:
            extra += "Connection: close\r\n"
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        return _head_bytes(status, headers, extra) + body

    def _answer(self, client: ClientConnection, answer: Respond) -> bytes:
        extra = client.date_header() + "Content-Length: 0\r\n"
        if not client.keep_alive:
            extra += "Connection: close\r\n"
        return _head_bytes(answer.status, answer.headers, extra)


def _head_bytes(status: int, headers: list[tuple[str, str]], extra: str = "") -> bytes:
    lines = [f"HTTP/1.1 {status} {status_phrase(status)}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    lines.append(extra)
    lines.append("\r\n")
    return "".join(lines).encode("latin-1", "replace")


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


_UNANSWERED = closed_without_answer().code


def _check_visible_chunks(buffered: bytes | bytearray) -> None:
    """Chunked framing that already arrived is checked before anything is dialled."""
    if buffered:
        try:
            ChunkedScanner().feed(buffered)
        except FramingError as exc:
            raise BadRequest("The request could not be parsed.") from exc


def random_ids() -> Iterator[str]:
    """16-hex-digit request ids from a block of 512 drawn at once, rather than one ``secrets``
    call (a getrandom syscall) per request (docs/benchmarks.md). Each id is still 8 bytes from
    the CSPRNG, used once."""
    while True:
        block = secrets.token_hex(8 * 512)
        for start in range(0, len(block), 16):
            yield block[start : start + 16]
