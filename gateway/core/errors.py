"""Failures the gateway answers with a response instead of a traceback.

Every leaf declares the status it maps to and a stable machine code. One renderer per listener
turns them into responses (``edge.pages`` for preview traffic, ``control.handlers`` for the
control API's JSON); handlers never build error responses by hand. Messages are written for
the client: they never carry a sandbox address, a token or a library's exception text.
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Gateway error"

    def __init__(self, message: str = "", *, retry_after_s: int | None = None) -> None:
        super().__init__(message or self.title)
        self.message = message or self.title
        self.retry_after_s = retry_after_s


# ── client mistakes ─────────────────────────────────────────────────────────────────────────
class BadRequest(GatewayError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class InvalidHost(BadRequest):
    code = "invalid_host"
    title = "Invalid Host header"


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"


class ApiKeyRequired(GatewayError):
    status = 401
    code = "api_key_required"
    title = "A valid API key is required (Authorization: Bearer <key>)."


class WorkspaceMismatch(GatewayError):
    status = 403
    code = "workspace_mismatch"
    title = "X-Blaxel-Workspace does not match the API key's workspace."


class NotFound(GatewayError):
    """A control-API object (sandbox, preview, token) that does not exist for this key."""

    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(GatewayError):
    """A control-API write that collides with what exists: a name, a hostname, a racing write."""

    status = 409
    code = "conflict"
    title = "Conflict"


class RequestTimedOut(GatewayError):
    status = 408
    code = "request_timeout"
    title = "The request body stopped arriving"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"
    title = "Request body too large"


# ── routing and admission ───────────────────────────────────────────────────────────────────
class UnknownPreview(GatewayError):
    status = 404
    code = "preview_not_found"
    title = "No preview at this address"


class TokenRequired(GatewayError):
    status = 401
    code = "token_required"
    title = "This preview is private"


class TokenRejected(GatewayError):
    """A token was presented but does not open this preview; ``code`` says why."""

    status = 401
    code = "token_invalid"
    title = "This preview link is not valid"

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class OriginRejected(GatewayError):
    status = 403
    code = "origin_not_allowed"
    title = "WebSocket origin not allowed"


class RoutingUnavailable(GatewayError):
    status = 503
    code = "routing_unavailable"
    title = "Preview routing is temporarily unavailable"


class DomainsUnsupported(GatewayError):
    """A custom-domain write on a Redis Cluster routing table: its transactions span domain
    names and workspaces, which a Cluster cannot run in one slot (docs/redis.md)."""

    status = 501
    code = "domains_unsupported"
    title = "Custom domains are not available on a Redis Cluster routing table"


class TooManyConnections(GatewayError):
    """A client IP or a preview is at one of its concurrency caps (``Retry-After`` is set)."""

    status = 429
    code = "too_many_connections"
    title = "Too many connections"


class RateLimited(GatewayError):
    """A preview is over its request rate (``GATEWAY_PREVIEW_RATE_LIMIT``)."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"


class Overloaded(GatewayError):
    """The replica sheds load: its connection cap or memory budget is reached."""

    status = 503
    code = "overloaded"
    title = "The gateway is overloaded"


class ShuttingDown(GatewayError):
    status = 503
    code = "shutting_down"
    title = "The gateway is restarting"


class SandboxStarting(GatewayError):
    """The sandbox is not up yet (issue 14). With ``waiting``, a browser navigation is shown
    the waiting page, which reloads itself once the port answers; without, it is what a held
    request for a sandbox in standby gets once its ``wakeTimeoutS`` has passed."""

    status = 503
    code = "sandbox_starting"
    title = "The sandbox is starting"

    def __init__(
        self, message: str = "", *, port: int = 0, preview: str = "", waiting: bool = False
    ) -> None:
        super().__init__(message, retry_after_s=2)
        self.port = port
        self.preview = preview
        self.waiting = waiting


# ── upstream ────────────────────────────────────────────────────────────────────────────────
class TargetNotAllowed(GatewayError):
    status = 502
    code = "target_not_allowed"
    title = "The sandbox address is not allowed"


class UpstreamRefused(GatewayError):
    status = 502
    code = "upstream_refused"
    title = "Nothing is listening on this port"


class UpstreamUnreachable(GatewayError):
    status = 502
    code = "upstream_unreachable"
    title = "The sandbox could not be reached"


class UpstreamBadResponse(GatewayError):
    status = 502
    code = "upstream_bad_response"
    title = "The app sent an invalid response"


class UpgradeRefused(GatewayError):
    """The app answered a WebSocket upgrade with a status of its own instead of 101. A status
    from 300 to 599 is passed on to the client as the app's answer; any other (a 200 page, a
    101 with a bad accept key) is not the app's to pass on, hence this class's 502."""

    status = 502
    code = "upgrade_refused"
    title = "The app did not accept the WebSocket upgrade"

    def __init__(self, upstream_status: int) -> None:
        super().__init__(f"The app answered the upgrade with {upstream_status}.")
        self.upstream_status = upstream_status

    @property
    def passed_on(self) -> bool:
        """Whether the client gets the app's own status (a refusal or redirect)."""
        return 300 <= self.upstream_status < 600


class UpstreamBusy(GatewayError):
    """Every connection to this sandbox port is in use and the queue for one is full or waited
    out its deadline: one slow sandbox holds its own slots, never the others'."""

    status = 503
    code = "upstream_busy"
    title = "The app is busy"


class UpstreamTimedOut(GatewayError):
    status = 504
    code = "upstream_timeout"
    title = "The app did not answer in time"


def error_code(exc: GatewayError) -> str:
    """The machine code sent in ``X-Blaxel-Error-Code``."""
    if isinstance(exc, TokenRejected):
        return exc.reason
    return exc.code
