"""Error responses of the edge listener: a short HTML page for browsers, JSON for everything else.

Every one carries ``X-Blaxel-Error-Code`` and ``X-Blaxel-Source: gateway`` so that clients
written against Blaxel can tell a gateway error from the app's. Pages are served on the preview's
own origin, which the sandbox can script, so they hold nothing secret and escape everything.
"""

from __future__ import annotations

import html
import json
from http import HTTPStatus

from gateway.core.errors import GatewayError, SandboxStarting, error_code
from gateway.core.header_policy import SERVER
from gateway.core.startup import READY_PATH

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{status} {title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;
color:#222}}h1{{font-size:1.4rem}}code{{background:#f3f3f3;padding:.1rem .3rem}}
small{{color:#777}}</style></head>
<body><h1>{title}</h1><p>{message}</p><p><small>{status} &middot; {code} &middot;
preview gateway</small></p></body></html>
"""


_WAITING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Starting {preview}…</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;
color:#222}}h1{{font-size:1.4rem}}code{{background:#f3f3f3;padding:.1rem .3rem}}
small{{color:#777}}</style></head>
<body><h1 id="gateway-starting">Starting {preview}…</h1>
<p>Waiting for the app on port <code>{port}</code>. It must listen on <code>0.0.0.0:{port}</code>
(all interfaces), not only on localhost. This page reloads itself as soon as the app answers.</p>
<p><small>503 &middot; sandbox_starting &middot; preview gateway</small></p>
<script>(function poll(){{fetch("{ready}",{{cache:"no-store",credentials:"same-origin"}})
.then(function(r){{if(r.ok){{location.reload();}}else{{setTimeout(poll,500);}}}},
function(){{setTimeout(poll,1000);}});}})();</script></body></html>
"""
_WAITING_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'"
)


def wants_html(accept: str) -> bool:
    return "text/html" in accept.lower()


def error_headers(exc: GatewayError) -> dict[str, str]:
    headers: dict[str, str] = {}
    headers["X-Blaxel-Error-Code"] = error_code(exc)
    headers["X-Blaxel-Source"] = "gateway"
    headers["Cache-Control"] = "no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Server"] = SERVER
    if exc.status == 401:
        # Blaxel answers failed auth with this, so a cross-origin fetch can read the reason.
        headers["Access-Control-Allow-Origin"] = "*"
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    return headers


def _page(exc: GatewayError, accept: str) -> tuple[str, str, dict[str, str]]:
    """The body, its content type and the headers."""
    headers = error_headers(exc)
    if isinstance(exc, SandboxStarting) and exc.waiting and wants_html(accept):
        # Served on the preview's own origin: it polls the gateway there, then reloads.
        headers["Content-Security-Policy"] = _WAITING_CSP
        body = _WAITING.format(preview=html.escape(exc.preview), port=exc.port, ready=READY_PATH)
        return body, "text/html", headers
    if wants_html(accept):
        body = _PAGE.format(
            status=exc.status,
            title=html.escape(exc.title),
            message=html.escape(exc.message),
            code=html.escape(error_code(exc)),
        )
        content_type = "text/html"
    else:
        body = json.dumps({"error": exc.message, "code": error_code(exc), "status": exc.status})
        content_type = "application/json"
    if exc.status == 405:
        headers["Allow"] = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
    return body, content_type, headers


def closes_connection(exc: GatewayError) -> bool:
    """After these the request's framing or body cannot be trusted to have ended cleanly."""
    return exc.status in _CLOSING


_CLOSING = frozenset({400, 405, 408, 413, 431})


def render_bytes(exc: GatewayError, accept: str, *, head: bool = False, extra: str = "") -> bytes:
    """The error as one HTTP/1.1 response. ``extra`` holds further header lines (``Date``,
    ``Connection``), each ending in CRLF."""
    body, content_type, headers = _page(exc, accept)
    payload = body.encode()
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    start = (
        f"HTTP/1.1 {exc.status} {status_phrase(exc.status)}\r\n{lines}"
        f"Content-Type: {content_type}; charset=utf-8\r\nContent-Length: {len(payload)}\r\n"
        f"{extra}\r\n"
    )
    return start.encode("latin-1") + (b"" if head else payload)


def status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def head_bytes(status: int, headers: list[tuple[str, str]], extra: str = "") -> bytes:
    """A response head the gateway writes itself, ``extra`` (CRLF-ended lines) last."""
    lines = [f"HTTP/1.1 {status} {status_phrase(status)}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    lines.append(extra)
    lines.append("\r\n")
    return "".join(lines).encode("latin-1", "replace")


def json_bytes(status: int, body: bytes, extra: str = "") -> bytes:
    """A small JSON answer of the gateway's own (the waiting page's readiness poll)."""
    headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
    return head_bytes(status, headers, f"{extra}Content-Length: {len(body)}\r\n") + body
