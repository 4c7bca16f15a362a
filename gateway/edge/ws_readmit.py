"""The hub's re-admission callback: look the route up again and run the upgrade's admission.

Kept apart from the hub and the relays so they carry no admission or token code; the app builds
one and hands it to the hub.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from gateway.core import admission, readmission
from gateway.core.records import Route, utcnow

logger = logging.getLogger("gateway.websocket")

RouteFind = Callable[[str], Awaitable[Route | None]]


class Readmission:
    __slots__ = ("_find", "policy")

    def __init__(self, find: RouteFind, policy: admission.AdmissionConfig | None) -> None:
        self._find = find
        self.policy = policy

    async def __call__(self, host: str, admitted: Route, credentials: object) -> str | Route:
        try:
            current = await self._find(host)
        except Exception:
            # The store is down: keep serving on the route the tunnel came in on, as HTTP does
            # within the grace. Its token is still checked against the clock: an expiry needs
            # no store, and a socket must not outlive its token because Redis is away.
            current = admitted
        inbound = credentials if isinstance(credentials, admission.Inbound) else None
        try:
            return readmission.verdict(admitted, current, inbound, self.policy, utcnow())
        except Exception:
            # A new upgrade would get a 500 here, so this tunnel is not let in either.
            logger.exception("re-admitting a WebSocket failed")
            return readmission.REVOKED
