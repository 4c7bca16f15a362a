"""Stream one HTTP request to a sandbox and its response back. Knows nothing of routes or tokens:
it receives a URL, ready-made headers and a function that shapes the response headers.

Bodies are never buffered: each piece read from one side is written to the other and awaited
(drain), so a slow reader slows the writer and memory per request stays bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.core.errors import (
    GatewayError,
    PayloadTooLarge,
    RequestTimedOut,
    UpstreamBadResponse,
    UpstreamTimedOut,
)
from gateway.edge.upstream import translate_errors

ShapeHeaders = Callable[[CIMultiDictProxy[str]], CIMultiDict[str]]

# Statuses whose responses have no body whatever their headers say (RFC 9110 §6.4.1).
_BODYLESS = frozenset({204, 304})

# A body up to this size that is complete when the response headers arrive is sent with them in
# one write. It is already in memory then (aiohttp read it with the headers); the bound keeps the
# single write no larger than aiohttp's own drain threshold.
_WHOLE_BODY_MAX = 0x10000


class StreamAborted(Exception):
    """The upstream failed after the response started; the client connection must be cut so
    the truncation is visible (no final chunk, or fewer bytes than Content-Length)."""


@dataclass(frozen=True, slots=True)
class RelayTimeouts:
    body_idle_s: float
    response_s: float
    upstream_idle_s: float
    max_body_bytes: int


@dataclass(slots=True)
class Outcome:
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    upstream_s: float = 0.0


class _Upload:
    """The client's body as an async iterator, enforcing the idle timeout and the size cap.

    Failures are recorded here as well as raised: aiohttp's client wraps anything the body
    iterator raises in its own connection error, and the client must get 408/413, not 502.
    """

    def __init__(
        self, request: web.BaseRequest, timeouts: RelayTimeouts, deadline: asyncio.Timeout
    ) -> None:
        self._request = request
        self._content = request.content
        self._t = timeouts
        self._deadline = deadline
        self.failure: GatewayError | None = None
        self.size = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        if _expects_continue(self._request):
            # aiohttp's low-level server (unlike web.Application's router) never answers
            # ``Expect: 100-continue``, and the Expect header is not forwarded, so without this
            # the client waits for a 100 that never comes (curl for a second, others until the
            # body deadline). It is sent when the body is first wanted: the request has been
            # routed, admitted and connected to the sandbox by then.
            await self._request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._request.writer.output_size = 0  # the response proper has not started
        content = self._content
        while True:
            try:
                # Bytes already buffered are taken without arming the idle timer (see
                # _stream_response); readany() would return the same bytes.
                chunk = content.read_nowait()
                if not chunk and not content.is_eof():
                    async with asyncio.timeout(self._t.body_idle_s):
                        chunk = await content.readany()
            except TimeoutError:
                self.failure = RequestTimedOut("The request body stopped arriving.")
                raise self.failure from None
            if not chunk:
                return
            self.size += len(chunk)
            if self._t.max_body_bytes and self.size > self._t.max_body_bytes:
                self.failure = PayloadTooLarge(
                    f"The request body is larger than {self._t.max_body_bytes} bytes."
                )
                raise self.failure
            # The response deadline counts from the last byte sent, so a long upload is not
            # mistaken for an app that does not answer.
            self._deadline.reschedule(loop.time() + self._t.response_s)
            yield chunk


def _has_body(request: web.BaseRequest) -> bool:
    return request.body_exists or "Transfer-Encoding" in request.headers


def _expects_continue(request: web.BaseRequest) -> bool:
    return (
        request.version >= aiohttp.HttpVersion11
        and request.headers.get("Expect", "").strip().lower() == "100-continue"
    )


async def relay(
    request: web.BaseRequest,
    session: aiohttp.ClientSession,
    url: URL,
    headers: CIMultiDict[str],
    *,
    port: int,
    timeouts: RelayTimeouts,
    shape_headers: ShapeHeaders,
    outcome: Outcome,
) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    started = loop.time()
    upload: _Upload | None = None
    try:
        async with asyncio.timeout(timeouts.response_s) as deadline:
            if _has_body(request):
                upload = _Upload(request, timeouts, deadline)
            with translate_errors(port):
                upstream = await session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=upload.chunks() if upload is not None else None,
                    allow_redirects=False,
                    compress=None,
                    chunked=None,
                )
    except (GatewayError, TimeoutError) as exc:
        if upload is not None and upload.failure is not None:
            raise upload.failure from exc
        if isinstance(exc, TimeoutError):
            raise UpstreamTimedOut("The app did not answer in time.") from exc
        raise
    outcome.upstream_s = loop.time() - started
    if upload is not None:
        outcome.bytes_in = upload.size
    try:
        response = await _stream_response(request, upstream, timeouts, shape_headers, outcome)
    except BaseException:
        upstream.close()  # never return a connection in an unknown state to the pool
        raise
    upstream.release()
    return response


async def _stream_response(
    request: web.BaseRequest,
    upstream: aiohttp.ClientResponse,
    timeouts: RelayTimeouts,
    shape_headers: ShapeHeaders,
    outcome: Outcome,
) -> web.StreamResponse:
    if upstream.status == 101 or upstream.status < 200:
        raise UpstreamBadResponse("The app switched protocols on a plain HTTP request.")
    # The upstream reason phrase is not copied: it is attacker-controlled text (CVE-2026-34519).
    response = web.StreamResponse(status=upstream.status, headers=shape_headers(upstream.headers))
    if "Upgrade" in request.headers:
        # An Upgrade we do not relay (h2c, ...) was dropped as hop-by-hop, but aiohttp's C parser
        # also drops a request pipelined behind it in the same packet: end the connection after
        # this response rather than leave the client waiting for an answer that never comes.
        response.force_close()
    outcome.status = upstream.status
    bodyless = request.method == "HEAD" or upstream.status in _BODYLESS
    if bodyless:
        response.headers.pop("Transfer-Encoding", None)
    content = upstream.content
    if (
        not bodyless
        and content.is_eof()
        and content.exception() is None
        and content.total_bytes <= _WHOLE_BODY_MAX
    ):
        # The app's whole (small) body arrived with its headers, as most small responses do:
        # send headers and body in one write instead of one write each (about a tenth of the CPU
        # of a small proxied GET). Only a body that is already complete: waiting for one would
        # delay the headers of a slow or streamed (SSE) response.
        response._send_headers_immediately = False
        return await _send_whole(request, response, content.read_nowait(), outcome)
    await response.prepare(request)
    if bodyless:
        await response.write_eof()
        return response
    idle = timeouts.upstream_idle_s or None
    try:
        while True:
            # Always through readany(): a loop that took buffered bytes with read_nowait() first
            # relayed a 1 GiB download at a third of the speed (bench/, 1,831 → 602 MiB/s).
            async with asyncio.timeout(idle):
                chunk = await content.readany()
            if not chunk:
                break
            outcome.bytes_out += len(chunk)
            await response.write(chunk)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        # Headers are out, so no error page is possible. Cutting the connection is the only
        # way to tell the client the body is incomplete.
        raise StreamAborted("upstream failed mid-response") from exc
    await response.write_eof()
    return response


async def _send_whole(
    request: web.BaseRequest, response: web.StreamResponse, body: bytes, outcome: Outcome
) -> web.StreamResponse:
    """Send a response whose body is already complete: the headers, held back by prepare(), go
    out in the same transport write as the body (and, when chunked, the last chunk)."""
    writer = await response.prepare(request)
    assert writer is not None
    outcome.bytes_out += len(body)
    try:
        if writer.length is None:
            # No Content-Length to hold the body to (chunked, or HTTP/1.0 close-delimited).
            await response.write_eof(body)
            return response
        # write() clips the body at the Content-Length the client was told, as it always did.
        if body:
            await response.write(body)
    except (aiohttp.ClientError, OSError) as exc:
        raise StreamAborted("upstream failed mid-response") from exc
    await response.write_eof()
    return response
