"""The edge port while the edge serves TLS: every request is redirected to https (308, which
keeps the method and body for the retry), except ACME HTTP-01 challenges, which go to the
configured ACME responder or get 404. Nothing is routed to a preview over plain http."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from gateway.core.errors import GatewayError, NotFound
from gateway.core.https_redirect import is_acme_challenge, redirect_location
from gateway.core.planner import RequestHead, first_header
from gateway.core.records import Route
from gateway.edge.handler import EdgeHandler
from gateway.edge.pages import render_bytes
from gateway.ops import log

if TYPE_CHECKING:
    from gateway.edge.connection import ClientConnection


class AcmeResponder:
    """A route finder that sends every host to the ACME client's HTTP-01 responder."""

    def __init__(self, host: str, port: int) -> None:
        self._route = Route(
            hostname="",
            workspace="",
            sandbox="acme",
            preview="acme-http-01",
            target_host=host,
            port=port,
            public=True,
        )

    def cached(self, host: str) -> Route:
        return self._route

    async def find(self, host: str) -> Route | None:
        return self._route


class HttpsRedirect:
    def __init__(self, https_port: int, acme: EdgeHandler | None) -> None:
        self._https_port = https_port
        self._acme = acme
        self._next_id = log.random_ids().__next__

    def start(self, client: ClientConnection, head: RequestHead) -> None:
        if is_acme_challenge(head.target) and self._acme is not None:
            self._acme.start(client, head)
            return
        record = log.AccessRecord(
            request_id=self._next_id(),
            method=head.method,
            host=first_header(head.headers, "host") or "",
            path=head.target.partition("?")[0][:512],
            remote=head.peer,
            kind="redirect",
        )
        started = asyncio.get_running_loop().time()
        # A body is never read here: the connection closes after the answer instead.
        close = _has_body(head) or not client.keep_alive
        try:
            if is_acme_challenge(head.target):
                raise NotFound("No ACME challenge responder is configured.")
            location = redirect_location(
                first_header(head.headers, "host"), head.target, self._https_port
            )
            record.status = 308
            extra = f"Location: {location}\r\nContent-Length: 0\r\n"
            answer = f"HTTP/1.1 308 Permanent Redirect\r\n{client.date_header()}{extra}"
            answer += "Connection: close\r\n\r\n" if close else "\r\n"
            client.respond(answer.encode("latin-1"), close=close)
        except GatewayError as exc:
            record.status, record.error_code = exc.status, exc.code
            extra = client.date_header() + ("Connection: close\r\n" if close else "")
            accept = first_header(head.headers, "accept") or ""
            page = render_bytes(exc, accept, head=head.method == "HEAD", extra=extra)
            client.respond(page, close=close)
        finally:
            record.duration_ms = round((asyncio.get_running_loop().time() - started) * 1000, 2)
            log.write_access(record)
            client.finished(None)


def _has_body(head: RequestHead) -> bool:
    length = first_header(head.headers, "content-length")
    chunked = first_header(head.headers, "transfer-encoding") is not None
    return chunked or (length is not None and length.strip() != "0")
