"""The edge's request flow: Host → route → plan → pooled connection → relay.

The common case (route cached, an idle pooled connection) runs from the connection's callbacks
without a task: a task and its coroutine chain cost more per request than all the rest of the
gateway's Python did (docs/benchmarks.md, issue 9). A step that must wait (a store read, a dial
or a slot, a WebSocket handshake) goes on in a task (``client.spawn``), which the connection
cancels if the client goes away meanwhile. A standby route and the waiting page's readiness
poll detour through a task too (issue 14, ``starting.Starting``), and a dial goes through its
startup wait; the common request pays a flag and a path comparison for them. The access record,
metrics and request ids are kept as the aiohttp edge kept them.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

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
)
from gateway.core.records import Route
from gateway.core.startup import retryable
from gateway.edge.config import EdgeConfig
from gateway.edge.exchange import Relay
from gateway.edge.guard import EdgeGuard, preview_key
from gateway.edge.pages import closes_connection, head_bytes, json_bytes, render_bytes
from gateway.edge.pool import UpstreamConnection, UpstreamPool
from gateway.edge.starting import Starting
from gateway.edge.upstream_conn import Target
from gateway.edge.upstream_errors import closed_without_answer
from gateway.edge.ws_hub import WebSocketHub, WsLimits
from gateway.edge.ws_upgrade import WsUpgrade, closing_error
from gateway.ops import log
from gateway.store.lookup import Miss

if TYPE_CHECKING:
    from gateway.edge.connection import ClientConnection


_T = TypeVar("_T")


class RouteFinder(Protocol):
    """The route of a host: ``store.lookup.RouteLookup``, or a fixed one (the ACME responder)."""

    def cached(self, host: str) -> Route | Miss | None:
        """The route if it can be answered without waiting, else ``Miss``."""

    async def find(self, host: str) -> Route | None: ...


@dataclass(slots=True)
class _Request:
    """One request on its way through the steps below."""

    client: ClientConnection
    head: RequestHead
    record: log.AccessRecord
    started: float
    inspected: Inspected | None = None
    route: Route | None = None
    guard_key: str | None = None
    """Set while the request counts against its preview's caps (``EdgeGuard.enter_request``)."""


class EdgeHandler:
    def __init__(
        self,
        config: EdgeConfig,
        planner: PlannerConfig,
        lookup: RouteFinder,
        pool: UpstreamPool,
        ws: tuple[UpstreamPool, WsLimits, WebSocketHub],
        observe: Callable[[log.AccessRecord], None] | None = None,
        guard: EdgeGuard | None = None,
        starting: Starting | None = None,
    ) -> None:
        self.config = config
        self.guard = guard or EdgeGuard(config.guard, config.trusted_proxies)
        self.ws_pool, self.ws_limits, self.hub = ws
        self.planner = planner
        self._lookup = lookup
        self.pool = pool
        self._observe = observe
        self.starting = starting
        """Wake calls, holds and the waiting page (issue 14); None: refused is 502 at once."""
        self._next_id = log.random_ids().__next__
        self._loop_time = asyncio.get_running_loop().time
        self.ws = WsUpgrade(config.limits, ws, self.guard, self._write_record)

    def start(self, client: ClientConnection, head: RequestHead) -> None:
        """Handle one parsed request head (called from the connection's callback)."""
        record = log.AccessRecord(
            request_id="",
            method=head.method,
            host="",
            path=head.target.partition("?")[0][:512],
            remote=head.peer,
        )
        req = _Request(client, head, record, self._loop_time())
        self._guard(req, self._begin, req)

    def _begin(self, req: _Request) -> None:
        head, record, client = req.head, req.record, req.client
        inspected = req.inspected = inspect(head, self.planner)
        record.request_id = inspected.request_id or self._next_id()
        record.host = host = inspected.host
        client.body_framing(inspected.framing, inspected.content_length)
        if inspected.framing is BodyFraming.CHUNKED:
            _check_visible_chunks(client.buffered)
        self.guard.check_memory(websocket=inspected.websocket)
        route = self._lookup.cached(host)
        if isinstance(route, Miss):
            client.spawn(self._then(req, functools.partial(self._lookup.find, host), self._routed))
            return
        self._routed(req, route)

    def _routed(self, req: _Request, route: Route | None) -> None:
        record, client, inspected = req.record, req.client, req.inspected
        assert inspected is not None
        if route is None:
            raise UnknownPreview(f"No preview is registered for {inspected.host}.")
        record.workspace, record.sandbox = route.workspace, route.sandbox
        record.preview, req.route = route.preview, route
        decision = plan(inspected, route, time.time(), self.planner, request_id=record.request_id)
        if isinstance(decision, Respond):
            record.status, record.error_code = decision.status, decision.error_code
            client.respond(self._answer(client, decision), close=False)
            self._conclude(req, None)
            return
        record.upstream = f"{route.sandbox}:{route.port}"
        now = self._loop_time()
        record.overhead_ms = round((now - req.started) * 1000, 3)
        # Counted once admitted: a client without a token cannot spend a private preview's
        # rate or its slots, and answers that never reach the sandbox cost next to nothing.
        # Left in ``_conclude``, which every admitted request reaches once (a held one too).
        key = preview_key(route)
        self.guard.enter_request(key, now)
        req.guard_key = key
        starting = self.starting
        if starting is not None and (route.standby or starting.is_ready_poll(inspected)):
            waking = functools.partial(self._wake_first, req, starting, decision)
            client.spawn(self._then(req, waking, self._woken))
            return
        self._dispatch(req, decision)

    def _dispatch(self, req: _Request, decision: Forward | Upgrade) -> None:
        if not isinstance(decision, Forward):
            req.record.kind = "websocket"
            upgrading = functools.partial(self._upgrade, req, decision)
            req.client.spawn(self._then(req, upgrading, self._conclude))
            return
        self._forward(req, decision, fresh=False, retry=decision.idempotent)

    def _forward(self, req: _Request, fwd: Forward, *, fresh: bool, retry: bool) -> None:
        conn = None if fresh else self.pool.take_idle(fwd.target_host, fwd.port)
        if conn is None:
            held = retryable(fwd.idempotent, fwd.framing, fwd.content_length)
            target = (fwd.target_host, fwd.port)
            dialling = functools.partial(
                self._acquire, self.pool, req, target, retryable=held, fresh=fresh
            )
            then = functools.partial(self._launch, fwd=fwd, retry=retry)
            req.client.spawn(self._then(req, dialling, then))
            return
        self._launch(req, conn, fwd=fwd, retry=retry)

    def _launch(
        self, req: _Request, conn: UpstreamConnection, *, fwd: Forward, retry: bool
    ) -> None:
        assert req.inspected is not None
        relay = self._start(req.client, conn, req.inspected, fwd)
        relay.done.add_done_callback(functools.partial(self._relayed, req, conn, relay, fwd, retry))

    def _relayed(
        self,
        req: _Request,
        conn: UpstreamConnection,
        relay: Relay,
        fwd: Forward,
        retry: bool,
        _: object,
    ) -> None:
        # A pooled connection the app had closed: once more on a fresh socket.
        error = relay.error
        stale = conn.reused and error is not None and error.code == _UNANSWERED
        self.pool.release(conn, reusable=error is None and relay.reusable)
        if retry and stale and not relay.body_seen:
            self._guard(req, self._forward, req, fwd, fresh=True, retry=False)
        elif error is not None:
            self._fail(req, closing_error(relay))
        else:
            self._conclude(req, relay)

    async def _wake_first(
        self, req: _Request, starting: Starting, decision: Forward | Upgrade
    ) -> Forward | Upgrade | None:
        """Standby: wake and hold (or the waiting page); a readiness poll: its answer."""
        inspected, route, record = req.inspected, req.route, req.record
        assert inspected is not None and route is not None
        target = (decision.target_host, decision.port)
        if isinstance(decision, Forward) and starting.is_ready_poll(inspected):
            status, body = await starting.ready_answer(route, target)
            record.status = status
            req.client.respond(self._ready_json(req.client, status, body), close=False)
            return None
        await starting.before_dial(inspected, route, target, record)
        return decision

    def _woken(self, req: _Request, decision: Forward | Upgrade | None) -> None:
        if decision is None:
            self._conclude(req, None)
        else:
            self._dispatch(req, decision)

    async def _acquire(
        self, pool: UpstreamPool, req: _Request, target: Target, *, retryable: bool, fresh: bool
    ) -> UpstreamConnection:
        """A connection; with ``starting``, a refused port holds a retryable request."""
        if self.starting is None:
            return await pool.acquire(*target, fresh=fresh)
        assert req.inspected is not None and req.route is not None
        return await self.starting.acquire(
            pool,
            req.inspected,
            req.route,
            target,
            retryable=retryable,
            record=req.record,
            fresh=fresh,
        )

    async def _then(
        self,
        req: _Request,
        waiting: Callable[[], Awaitable[_T]],
        then: Callable[[_Request, _T], None],
    ) -> None:
        """The task of a step that waits: ``then(req, result)`` once it is there. (A callable,
        not a coroutine, so a task cancelled before it starts leaves none unawaited.)"""
        try:
            value = await waiting()
        except asyncio.CancelledError:
            req.record.status = 499
            self._conclude(req, None)
            raise
        except Exception as exc:
            self._fail(req, exc)
            return
        self._guard(req, then, req, value)

    def _guard(self, req: _Request, step: Callable[..., None], *args: Any, **kw: Any) -> None:
        try:
            step(*args, **kw)
        except Exception as exc:
            self._fail(req, exc)

    def _fail(self, req: _Request, exc: Exception) -> None:
        """The request failed before a response went out: its page, then the end."""
        record, client, head = req.record, req.client, req.head
        if isinstance(exc, GatewayError):
            if isinstance(exc, TargetNotAllowed):
                log.edge.error(
                    "refusing to dial a target outside allowed_targets (preview %s)",
                    record.preview,
                )
            record.status, record.error_code = exc.status, error_code(exc)
            client.respond(self._page(client, head, exc), close=closes_connection(exc))
        else:
            log.edge.error("unexpected error while handling a preview request", exc_info=exc)
            record.status, record.error_code = 500, "internal_error"
            client.respond(self._page(client, head, GatewayError()), close=True)
        self._conclude(req, None)

    def _conclude(self, req: _Request, relay: Relay | None) -> None:
        """The access record and metrics, and the connection's next request."""
        record, client = req.record, req.client
        if req.guard_key is not None:
            self.guard.leave_request(req.guard_key)
            req.guard_key = None
        if relay is not None:
            # The client that went before its answer: nobody is left to answer (Caddy's 499).
            record.status = record.status or relay.status or 499
            if relay.head_at:
                record.upstream_ms = round((relay.head_at - relay.sent_at) * 1000, 2)
            if relay.aborted:
                record.error_code = "upstream_aborted"
                log.edge.warning("upstream aborted mid-response (preview %s)", record.preview)
            record.bytes_in, record.bytes_out = relay.bytes_in, relay.bytes_out
        record.request_id = record.request_id or self._next_id()
        if relay is None or not relay.tunneled:
            self._write_record(record, req.started)  # a tunnel's is written when it ends
        try:
            client.finished(relay)
        except Exception:
            log.edge.exception("unexpected error after a preview request")
            client.transport.abort()

    def _write_record(self, record: log.AccessRecord, started: float) -> None:
        record.duration_ms = round((self._loop_time() - started) * 1000, 2)
        log.write_access(record)
        if self._observe is not None:
            self._observe(record)

    async def _upgrade(self, req: _Request, up: Upgrade) -> Relay:
        inspected, route = req.inspected, req.route
        assert inspected is not None and route is not None
        target = (up.target_host, up.port)
        dial = functools.partial(
            self._acquire, self.ws_pool, req, target, retryable=True, fresh=True
        )
        client, record = req.client, req.record
        return await self.ws.upgrade(client, inspected, up, route, record, req.started, dial)

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
        extra = client.date_header() + ("" if client.keep_alive else "Connection: close\r\n")
        return json_bytes(status, body, extra)

    def _answer(self, client: ClientConnection, answer: Respond) -> bytes:
        extra = client.date_header() + "Content-Length: 0\r\n"
        if not client.keep_alive:
            extra += "Connection: close\r\n"
        return head_bytes(answer.status, answer.headers, extra)


_UNANSWERED = closed_without_answer().code


def _check_visible_chunks(buffered: bytes | bytearray) -> None:
    """Chunked framing that already arrived is checked before anything is dialled."""
    if buffered:
        try:
            ChunkedScanner().feed(buffered)
        except FramingError as exc:
            raise BadRequest("The request could not be parsed.") from exc
