"""The edge listener: Host → route → admission → HTTP or WebSocket relay.

It runs on aiohttp's low-level ``web.Server`` (there is one catch-all handler, so a router would
only add work) with a request handler that adds what aiohttp lacks for an internet-facing proxy:
a deadline for request headers (slowloris) and error pages that neither echo the offending bytes
nor log a traceback per malformed request.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.core import admission, header_policy, netpolicy
from gateway.core.errors import (
    BadRequest,
    GatewayError,
    InvalidHost,
    TargetNotAllowed,
    UnknownPreview,
    error_code,
)
from gateway.core.hostnames import normalize_host
from gateway.core.netpolicy import IPNetwork, address_allowed, is_ip_literal
from gateway.core.records import Route, utcnow
from gateway.edge.http_relay import Outcome, RelayTimeouts, StreamAborted, relay
from gateway.edge.pages import render
from gateway.edge.upstream import target_url
from gateway.ops import log
from gateway.store.lookup import RouteLookup

WebSocketRelay = Callable[
    [web.BaseRequest, Route, URL, CIMultiDict[str], log.AccessRecord, admission.Inbound],
    Awaitable[web.StreamResponse],
]
"""Relays an admitted upgrade; the ``Inbound`` it was admitted with is kept for re-admission."""


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    preview_domain: str
    trusted_proxies: Sequence[IPNetwork]
    allowed_targets: Sequence[IPNetwork]
    timeouts: RelayTimeouts
    admission: admission.AdmissionConfig
    public_scheme: str = "http"


class Edge:
    def __init__(
        self,
        config: EdgeConfig,
        lookup: RouteLookup,
        session: aiohttp.ClientSession,
        websocket_relay: WebSocketRelay | None = None,
        observe: Callable[[log.AccessRecord], None] | None = None,
    ) -> None:
        self._config = config
        self._lookup = lookup
        self._session = session
        self._ws = websocket_relay
        self._observe = observe
        self._next_id = _random_ids().__next__
        self._target_allowed: dict[str, bool] = {}
        """``_check_target``'s verdicts by sandbox address, so ``ipaddress`` does not parse it on
        every request (docs/benchmarks.md). Pure in the address and the frozen config."""

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        record = log.AccessRecord(
            request_id=_request_id(request, self._config.trusted_proxies, self._next_id),
            method=request.method,
            host="",
            path=request.rel_url.raw_path[:512],
            remote=request.remote or "",
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = Outcome()
        try:
            response = await self._handle(request, record, outcome, loop, started)
            record.status = response.status
            return response
        except GatewayError as exc:
            record.status, record.error_code = exc.status, error_code(exc)
            return render(exc, request.headers.get("Accept", ""), head=request.method == "HEAD")
        except StreamAborted:
            record.status, record.error_code = outcome.status, "upstream_aborted"
            log.edge.warning("upstream aborted mid-response (preview %s)", record.preview)
            raise
        except asyncio.CancelledError:
            # The client went away; nobody is left to answer (Caddy's 499). A WebSocket whose
            # 101 was sent keeps that status: aiohttp cancels its handler when the socket ends.
            if record.status != 101:
                record.status = 499
            raise
        except Exception:
            log.edge.exception("unexpected error while handling a preview request")
            record.status, record.error_code = 500, "internal_error"
            return render(GatewayError(), request.headers.get("Accept", ""))
        finally:
            record.bytes_in, record.bytes_out = outcome.bytes_in, outcome.bytes_out
            if outcome.upstream_s:
                record.upstream_ms = round(outcome.upstream_s * 1000, 2)
            record.duration_ms = round((loop.time() - started) * 1000, 2)
            log.write_access(record)
            if self._observe is not None:
                self._observe(record)

    async def _handle(
        self,
        request: web.BaseRequest,
        record: log.AccessRecord,
        outcome: Outcome,
        loop: asyncio.AbstractEventLoop,
        started: float,
    ) -> web.StreamResponse:
        host = self._canonical_host(request)
        record.host = host
        header_policy.check_request(
            request.method,
            (request.version.major, request.version.minor),
            request.headers,
            max_body_bytes=self._config.timeouts.max_body_bytes,
        )
        route = await self._lookup.find(host)
        if route is None:
            raise UnknownPreview(f"No preview is registered for {host}.")
        record.workspace, record.sandbox, record.preview = (
            route.workspace,
            route.sandbox,
            route.preview,
        )
        websocket = header_policy.is_websocket_upgrade(request.method, request.headers)
        inbound = admission.Inbound(
            method=request.method,
            headers=request.headers,
            raw_path=request.rel_url.raw_path,
            raw_query=request.rel_url.raw_query_string,
            host_header=request.headers.get("Host", "").lower().rstrip("."),
            scheme="https" if request.secure else self._config.public_scheme,
            websocket=websocket,
        )
        decision = admission.decide(inbound, route, self._config.admission, utcnow())
        # Answers the gateway writes itself name it as their server (as error pages do), or
        # aiohttp would announce "Python/3.x aiohttp/3.y".
        if isinstance(decision, admission.Preflight):
            record.error_code = "preflight"
            headers = {**decision.headers, "Server": header_policy.SERVER}
            return web.Response(status=204, headers=headers)
        if isinstance(decision, admission.Redirect):
            return web.Response(
                status=303,
                headers={
                    "Location": decision.location,
                    "Set-Cookie": decision.set_cookie,
                    "Cache-Control": "no-store",
                    "Referrer-Policy": "no-referrer",
                    "X-Blaxel-Source": "gateway",
                    "Server": header_policy.SERVER,
                },
            )
        self._check_target(route)
        record.upstream = f"{route.sandbox}:{route.port}"
        peer = request.remote or ""
        upstream_headers = header_policy.upstream_request_headers(
            request.headers,
            peer_ip=peer,
            proto="https" if request.secure else "http",
            trusted_peer=netpolicy.is_trusted(peer, self._config.trusted_proxies),
            preview_headers=route.request_headers,
            websocket=websocket,
        )
        upstream_headers["X-Request-Id"] = record.request_id
        url = target_url(
            route.target_host,
            route.port,
            request.rel_url.raw_path,
            header_policy.strip_token_param(request.rel_url.raw_query_string),
            websocket=websocket,
        )
        record.overhead_ms = round((loop.time() - started) * 1000, 3)
        if websocket and self._ws is not None:
            record.kind = "websocket"
            return await self._ws(request, route, url, upstream_headers, record, inbound)

        # Any other Upgrade (h2c, ...) was dropped as hop-by-hop: served as plain HTTP/1.1.
        def shape(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
            return header_policy.downstream_response_headers(
                upstream,
                preview_headers=route.response_headers,
                protected_domains=(self._config.preview_domain,),
                set_cookie=decision.set_cookie,
            )

        return await relay(
            request,
            self._session,
            url,
            upstream_headers,
            port=route.port,
            timeouts=self._config.timeouts,
            shape_headers=shape,
            outcome=outcome,
        )

    def _canonical_host(self, request: web.BaseRequest) -> str:
        values = request.headers.getall("Host", [])
        if len(values) != 1:
            raise InvalidHost("Exactly one Host header is required.")
        host = normalize_host(values[0])
        raw = request.raw_path
        if not raw.startswith("/"):
            # Absolute-form target: aiohttp would route on its authority; we never do, and
            # refuse the request when the two disagree (threat model H07).
            try:
                authority = URL(raw).raw_host or ""
            except ValueError as exc:
                raise BadRequest("Invalid request target.") from exc
            if normalize_host(authority) != host:
                raise BadRequest("The request target and the Host header name different hosts.")
        return host

    def _check_target(self, route: Route) -> None:
        host = route.target_host
        allowed = self._target_allowed.get(host)
        if allowed is None:
            allowed = not is_ip_literal(host) or address_allowed(host, self._config.allowed_targets)
            if len(self._target_allowed) >= _TARGET_CACHE_MAX:
                self._target_allowed.clear()  # bounded; refilled by the next requests
            self._target_allowed[host] = allowed
        if not allowed:
            log.edge.error(
                "refusing to dial a target outside allowed_targets (preview %s)", route.preview
            )
            raise TargetNotAllowed("This preview's sandbox address is not allowed.")


_TARGET_CACHE_MAX = 4096


def _random_ids() -> Iterator[str]:
    """16-hex-digit request ids from a block of 512 drawn at once, rather than one ``secrets``
    call (a getrandom syscall) per request (docs/benchmarks.md). Each id is still 8 bytes from
    the CSPRNG, used once."""
    while True:
        block = secrets.token_hex(8 * 512)
        for start in range(0, len(block), 16):
            yield block[start : start + 16]


def _request_id(
    request: web.BaseRequest, trusted: Sequence[IPNetwork], generate: Callable[[], str]
) -> str:
    supplied = request.headers.get("X-Request-Id", "")
    if (
        supplied
        and len(supplied) <= 128
        and supplied.isascii()
        and supplied.isprintable()
        and netpolicy.is_trusted(request.remote, trusted)
    ):
        return supplied
    return generate()


# ── the server shell ────────────────────────────────────────────────────────────────────────
class EdgeRequestHandler(RequestHandler):
    """aiohttp's connection handler plus a header-read deadline and quiet error pages."""

    header_timeout_s: float = 10.0

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_started: float | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if self._close and not self._force_close and self._request_in_progress:
            # Graceful shutdown marks every connection closing, and aiohttp then drops each byte
            # that arrives, which would cut an upload in flight. Keep feeding the current
            # request; the connection still closes once its response is done.
            self._close = False
            try:
                super().data_received(data)
            finally:
                self._close = True
            return
        before = self._request_count
        super().data_received(data)
        if self._upgraded or self._payload_parser is not None:
            self._head_started = None  # a WebSocket now: no more request heads on it
            return
        if not data:
            return
        if self._request_count != before:
            # Heads completed. Bytes after the last one, in the same packet, would be the start
            # of a pipelined head that the parser keeps out of sight; a packet that does not end
            # where a head ends may hold one, so its deadline starts now. (When those bytes were
            # the end of a body instead, the cost is an idle keep-alive connection closed after
            # header_timeout_s rather than keepalive_timeout_s.)
            partial = not data.endswith(b"\r\n\r\n")
            self._head_started = self._loop.time() if partial else None
        elif self._head_started is None:
            # The first bytes of a request head: it must be complete within the deadline
            # (nginx client_header_timeout, HAProxy timeout http-request). Bytes that arrive
            # while a request is in progress are body or a pipelined head; either way the
            # deadline runs only once the connection is idle again (see _check_head).
            self._head_started = self._loop.time()
        if self._head_started is not None and self._head_timer is None:
            self._head_timer = self._loop.call_at(
                self._head_started + self.header_timeout_s, self._check_head
            )

    def _check_head(self) -> None:
        self._head_timer = None
        started = self._head_started
        if started is None or self.transport is None:
            return
        now = self._loop.time()
        if self._request_in_progress or self._messages:
            # Busy with earlier requests: a head pipelined behind them gets its full deadline
            # once they are answered.
            started = self._head_started = now
        elif now - started >= self.header_timeout_s - 0.001:
            log.edge.info("closing a connection that did not finish its request headers in time")
            self.force_close()
            return
        self._head_timer = self._loop.call_at(started + self.header_timeout_s, self._check_head)

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 - aiohttp API
        # aiohttp's shutdown marks the connection force-closed before it waits for the handler,
        # and a force-closed connection drops every byte that arrives: an upload in flight
        # could never finish. So wait for the handler first, within the same grace period.
        if self._request_in_progress and timeout:
            started = self._loop.time()
            self._handler_waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._handler_waiter
            except TimeoutError:
                pass
            finally:
                self._handler_waiter = None
            timeout = max(0.01, timeout - (self._loop.time() - started))
        await super().shutdown(timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cutting the connection")
        if status >= 500:
            log.edge.error("unhandled error on the edge: %s", type(exc).__name__)
            error: GatewayError = GatewayError()
        else:
            # One line, no traceback and no echo of the bytes: malformed requests are routine
            # on the internet (threat model D11, L05).
            log.edge.debug("malformed request from %s: %s", request.remote, type(exc).__name__)
            error = BadRequest("The request could not be parsed.")
        return render(error, request.headers.get("Accept", ""))


class EdgeServer(web.Server):
    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        header_timeout_s: float,
        **kwargs: Any,
    ) -> None:
        # auto_decompress=False: the body is relayed as the client framed it. aiohttp would
        # otherwise inflate a gzip/deflate/br request body while the forwarded Content-Length
        # still counts the compressed bytes, so the sandbox would read the rest of the inflated
        # body as further requests (smuggling), and the gateway would inflate zip bombs.
        super().__init__(handler, handler_cancellation=True, auto_decompress=False, **kwargs)
        self._header_timeout_s = header_timeout_s

    def __call__(self) -> RequestHandler:
        handler = EdgeRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.header_timeout_s = self._header_timeout_s
        return handler
