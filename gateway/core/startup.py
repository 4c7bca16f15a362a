"""Which requests the edge holds while a sandbox wakes or its port is not listening yet, and
what each client is shown meanwhile (issue 14). Pure: decisions from the request alone.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from gateway.core.header_policy import Header
from gateway.core.request_head import BodyFraming, first_header

READY_PATH = "/.well-known/preview-gateway/ready"
"""What the waiting page polls, on the preview's own host: answered by the gateway, never by
the app, and only after admission (so a private preview's state stays private)."""


class Wait(enum.Enum):
    PAGE = "page"
    """A browser navigation: the waiting page at once, which reloads itself when ready."""
    SILENT = "silent"
    """Scripts, fetches, assets, WebSocket upgrades: held until ready or the limit."""
    NONE = "none"
    """Not safe to send again (a body, a non-idempotent method): the error at once."""


def retryable(idempotent: bool, framing: BodyFraming, content_length: int) -> bool:
    """A request the gateway may hold and send later: an idempotent method without a body."""
    return idempotent and framing is BodyFraming.NONE and content_length == 0


def is_navigation(headers: Sequence[Header]) -> bool:
    """A top-level page load in a browser (Fetch metadata, and HTML accepted)."""
    mode = (first_header(headers, "sec-fetch-mode") or "").strip().lower()
    accept = (first_header(headers, "accept") or "").lower()
    return mode == "navigate" and "text/html" in accept


def how_to_wait(*, method: str, retryable: bool, headers: Sequence[Header], standby: bool) -> Wait:
    """A sandbox in standby has seen nothing of the request yet, so any request may wait for
    it; a refused connection on a running one is retried only when that is safe."""
    if method in ("GET", "HEAD") and is_navigation(headers):
        return Wait.PAGE
    if standby or retryable:
        return Wait.SILENT
    return Wait.NONE
