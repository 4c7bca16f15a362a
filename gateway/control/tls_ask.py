"""``GET /v0/tls/ask?domain=``: Caddy's ``on_demand_tls`` asks it before issuing a certificate.

200 only for a host the edge would route right now (a name under the preview domain with a
live preview, or a custom domain the route lookup serves), 404 otherwise, so nobody can make
Caddy request certificates for arbitrary names pointed at it (ACME rate limits, CT noise).
The answer says no more than the edge itself does for that Host (200 or 404), so it needs no
API key: Caddy calls it without one. A store outage is 503, which Caddy also reads as "no".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.core.errors import InvalidHost
from gateway.core.hostnames import normalize_host
from gateway.core.records import Route

ASK_PATH = "/v0/tls/ask"

Finder = Callable[[str], Awaitable[Route | None]]


def ask_endpoint(find: Finder) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def ask(request: web.Request) -> web.Response:
        try:
            host = normalize_host(request.query.get("domain", ""))
        except InvalidHost:
            return _answer(404, "not a routable host")
        if host != request.query.get("domain", "").lower().rstrip("."):
            # A port or other decoration: Caddy sends the bare SNI name, nothing else is asked.
            return _answer(404, "not a routable host")
        if await find(host) is None:
            return _answer(404, "not a routable host")
        return _answer(200, "ok")

    return ask


def _answer(status: int, message: str) -> web.Response:
    return web.json_response({"status": message}, status=status)
