"""The protocol edge's request task: Host → route → plan → pooled connection → relay.

One task per request, spawned by the client connection once a head is parsed; the access
record, metrics and request ids are kept as ``server.Edge.handle`` keeps them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.core import header_policy as policy
from gateway.core import netpolicy
from gateway.core.errors import GatewayError, UnknownPreview, UpstreamUnreachable, error_code
from gateway.core.records import Route, utcnow
from gateway.edge.exchange import IDEMPOTENT, Relay
from gateway.edge.pages import closes_connection, render_bytes, status_phrase
from gateway.edge.planning import Forward, RequestHead, Respond, canonical_host, plan
from gateway.edge.raw_pool import Connection, RawPool
from gateway.edge.server import EdgeConfig, _random_ids
from gateway.edge.upstream import TargetNotAllowed
from gateway.ops import log
from gateway.store.lookup import RouteLookup

if TYPE_CHECKING:
    from gateway.edge.listener import ClientConnection


class ProtocolEdge:
    def __init__(
        self,
        config: EdgeConfig,
        lookup: RouteLookup,
        pool: RawPool,
        observe: Callable[[log.AccessRecord], None] | None = None,
    ) -> None:
        self.config = config
        self._lookup = lookup
        self.pool = pool
        self._observe = observe
        self._next_id = _random_ids().__next__
        self._target_allowed: dict[str, bool] = {}

    async def handle(self, client: ClientConnection, head: RequestHead) -> None:
        record = log.AccessRecord(
            request_id=self._request_id(head),
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
                record.status = relay.status
                if relay.aborted:
                    record.error_code = "upstream_aborted"
                    log.edge.warning("upstream aborted mid-response (preview %s)", record.preview)
        except GatewayError as exc:
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
            record.duration_ms = round((loop.time() - started) * 1000, 2)
            log.write_access(record)
            if self._observe is not None:
                self._observe(record)
            client.finished(relay)

    async def _handle(
        self, client: ClientConnection, head: RequestHead, record: log.AccessRecord, started: float
    ) -> Relay | None:
        loop = asyncio.get_running_loop()
        host = canonical_host(head)
        record.host = host
        limit = self.config.timeouts.max_body_bytes
        policy.check_request(head.method, head.version, head.headers, max_body_bytes=limit)
        route = await self._lookup.find(host)
        if route is None:
            raise UnknownPreview(f"No preview is registered for {host}.")
        record.workspace, record.sandbox = route.workspace, route.sandbox
        record.preview = route.preview
        decision = plan(head, route, self.config, utcnow(), record.request_id)
        if isinstance(decision, Respond):
            record.status, record.error_code = decision.status, decision.code
            client.respond(self._answer(client, decision), close=False)
            return None
        self._check_target(route)
        record.upstream = f"{route.sandbox}:{route.port}"
        record.overhead_ms = round((loop.time() - started) * 1000, 3)
        if decision.websocket:
            record.kind = "websocket"
        sent = loop.time()
        relay = await self._relay(client, head, route, decision)
        record.upstream_ms = round((loop.time() - sent) * 1000, 2)
        return relay

    async def _relay(
        self, client: ClientConnection, head: RequestHead, route: Route, forward: Forward
    ) -> Relay:
        retry = head.method in IDEMPOTENT and not head.chunked and not head.content_length
        while True:
            conn = await self.pool.acquire(route.target_host, route.port)
            relay = self._start(client, head, conn, forward)
            await relay.done
            # A pooled connection the app had closed: once more on a fresh socket.
            stale = conn.reused and isinstance(relay.error, UpstreamUnreachable)
            if retry and stale and not relay.body_seen:
                retry = False
                continue
            if relay.error is None:
                if relay.reusable:
                    self.pool.release(conn)
                else:
                    self.pool.discard(conn)
            else:
                self.pool.discard(conn)
                raise relay.error
            return relay

    def _start(
        self, client: ClientConnection, head: RequestHead, conn: Connection, forward: Forward
    ) -> Relay:
        relay = Relay(
            client,
            conn,
            method=head.method,
            body=head.content_length,
            chunked=head.chunked,
            timeouts=self.config.timeouts,
            shape=forward.shape,
            close_after="Upgrade" in head.headers,
        )
        conn.owner = relay
        assert conn.transport is not None
        conn.transport.write(forward.head)
        client.attach(relay, expect_continue=_expects_continue(head))
        relay.arm()
        return relay

    def _page(self, client: ClientConnection, head: RequestHead, exc: GatewayError) -> bytes:
        close = closes_connection(exc) or not client.keep_alive
        extra = client.date_header() + ("Connection: close\r\n" if close else "")
        return render_bytes(
            exc, head.headers.get("Accept", ""), head=head.method == "HEAD", extra=extra
        )

    def _answer(self, client: ClientConnection, answer: Respond) -> bytes:
        lines = [f"HTTP/1.1 {answer.status} {status_phrase(answer.status)}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in answer.headers]
        lines.append(client.date_header())
        lines.append("Content-Length: 0\r\n")
        if not client.keep_alive:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1", "replace")

    def _request_id(self, head: RequestHead) -> str:
        supplied = head.headers.get("X-Request-Id", "")
        if (
            supplied
            and len(supplied) <= 128
            and supplied.isascii()
            and supplied.isprintable()
            and netpolicy.is_trusted(head.peer, self.config.trusted_proxies)
        ):
            return supplied
        return self._next_id()

    def _check_target(self, route: Route) -> None:
        host = route.target_host
        allowed = self._target_allowed.get(host)
        if allowed is None:
            allowed = not netpolicy.is_ip_literal(host) or netpolicy.address_allowed(
                host, self.config.allowed_targets
            )
            if len(self._target_allowed) >= 4096:
                self._target_allowed.clear()
            self._target_allowed[host] = allowed
        if not allowed:
            log.edge.error(
                "refusing to dial a target outside allowed_targets (preview %s)", route.preview
            )
            raise TargetNotAllowed("This preview's sandbox address is not allowed.")


def _expects_continue(head: RequestHead) -> bool:
    expect = head.headers.get("Expect", "")
    return head.version >= (1, 1) and expect.strip().lower() == "100-continue"
