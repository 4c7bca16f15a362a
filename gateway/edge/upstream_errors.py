"""What the client is told when the upstream path fails: the one place socket errors and
timeouts become the gateway's error classes. Messages never carry an address.
"""

from __future__ import annotations

from gateway.core.errors import (
    GatewayError,
    UpstreamBadResponse,
    UpstreamRefused,
    UpstreamTimedOut,
    UpstreamUnreachable,
)


def dial_error(exc: BaseException, port: int) -> GatewayError:
    """The client-facing error for a failed dial (as ``upstream.translate_errors`` maps them)."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, ConnectionRefusedError):
        # No address in the text, not even as advice: error pages never show one.
        return UpstreamRefused(
            f"Nothing is listening on port {port} of the sandbox. The app must listen on "
            f"0.0.0.0:{port} (all interfaces), not only on localhost."
        )
    if isinstance(exc, TimeoutError):
        return UpstreamTimedOut("The sandbox did not accept the connection in time.")
    return UpstreamUnreachable("The sandbox could not be reached.")


def response_timeout() -> UpstreamTimedOut:
    """The app accepted the request but sent no response head in time."""
    return UpstreamTimedOut("The app did not answer in time.")


def stopped_reading() -> UpstreamTimedOut:
    """The app stopped reading the request body before it had all of it."""
    return UpstreamTimedOut("The app stopped reading the request body.")


def closed_without_answer() -> UpstreamUnreachable:
    """The upstream connection ended before a complete response head."""
    return UpstreamUnreachable("The app closed the connection without answering.")


def not_upgraded() -> UpstreamBadResponse:
    """A page, or a 101 with a wrong accept key, for a WebSocket handshake: not the app's
    status to pass on."""
    return UpstreamBadResponse("The app did not accept the WebSocket upgrade on this path.")


def bad_response() -> UpstreamBadResponse:
    """The response head was not valid HTTP/1.1 (see ``http_framing``)."""
    return UpstreamBadResponse("The app sent an invalid HTTP response.")
