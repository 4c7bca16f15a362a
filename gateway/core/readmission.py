"""Whether an open WebSocket may stay open after its route changed or one of its tokens ran out.

The upgrade that opened a tunnel was admitted once; every route change (a token revoked, the
preview turned private, moved or deleted) and every token expiry asks the same question again.
Pure: the caller looks the route up and hands over what the upgrade was admitted with.
"""

from __future__ import annotations

from datetime import datetime

from gateway.core import admission
from gateway.core.errors import GatewayError, TokenRejected
from gateway.core.records import Route
from gateway.core.tokens import LEEWAY_S

REVOKED = "access revoked"
EXPIRED = "token expired"
DELETED = "preview deleted"
CHANGED = "preview changed"


def _target(route: Route) -> tuple[object, ...]:
    return (
        route.hostname,
        route.target_host,
        route.port,
        route.workspace,
        route.sandbox,
        route.preview,
        route.preview_uid,
    )


def next_token_expiry(route: Route, after: float) -> float | None:
    """The next wall-clock moment (past the verifier's leeway) after ``after`` at which one of
    the route's tokens expires; None for public previews or when none is left."""
    if route.public:
        return None
    upcoming = [exp + LEEWAY_S for exp in route.tokens.values() if exp + LEEWAY_S > after]
    return min(upcoming) if upcoming else None


def verdict(
    admitted: Route,
    current: Route | None,
    inbound: admission.Inbound | None,
    policy: admission.AdmissionConfig | None,
    now: datetime,
) -> str | Route:
    """Why the tunnel admitted on ``admitted`` must close now, or the route it stays on.

    Creating another token re-checks every socket of the preview; only a revoked one, or the
    preview turning private, closes some."""
    if current is None:
        return DELETED
    if _target(current) != _target(admitted):
        return CHANGED  # the preview now leads elsewhere: this tunnel goes to the old target
    if policy is None or inbound is None:
        # Tokens cannot be checked: a socket admitted as public fails closed when its preview
        # turns private; one admitted by token lives on.
        return current if current.public or not admitted.public else REVOKED
    try:
        admission.decide(inbound, current, policy, now)
    except TokenRejected as exc:
        return EXPIRED if exc.reason == "token_expired" else REVOKED
    except GatewayError:
        return REVOKED
    return current
