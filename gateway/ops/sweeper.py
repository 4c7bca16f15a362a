"""The expiry sweeper: deletes sandboxes and previews whose ``ttl``/``expires`` has passed.

Reads already ignore expired objects; the sweep only reclaims their storage and hostnames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.core.records import utcnow
from gateway.store.base import Registry

logger = logging.getLogger("gateway.sweeper")


Expired = tuple[str, str, str | None]
"""(workspace, sandbox, preview or None for the sandbox itself)."""


async def sweep_expired(store: Registry, now: Callable[[], datetime] = utcnow) -> list[Expired]:
    """Delete what has expired; return what this call deleted.

    Deletes are transactions, so when several replicas sweep at once each object is deleted by
    exactly one of them; the others find nothing to do. The expiry is checked again inside the
    delete's transaction, so an object recreated or renewed (a PUT) since the listing is left
    alone.
    """
    moment = now()
    deleted: list[Expired] = []
    for workspace, sandbox, preview in await store.expired(moment):
        if preview is None:
            gone = (
                await store.delete_sandbox(workspace, sandbox, only_expired_at=moment) is not None
            )
        else:
            gone = (
                await store.delete_preview(workspace, sandbox, preview, only_expired_at=moment)
                is not None
            )
        if gone:
            deleted.append((workspace, sandbox, preview))
    return deleted


@dataclass
class Sweeper:
    """Runs ``sweep_expired`` every ``interval_s`` on one replica."""

    store: Registry
    interval_s: float
    deleted: int = 0
    """Objects this replica deleted (a metric; the multi-replica test adds them up)."""
    rounds: int = 0
    """Sweeps finished, failed ones included: a round counted here has counted its deletions."""

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                swept = await sweep_expired(self.store)
            except Exception as exc:  # the store may be down; try again next round
                logger.warning("expiry sweep failed: %s", type(exc).__name__)
                self.rounds += 1
                continue
            self.deleted += len(swept)
            self.rounds += 1
            if swept:
                logger.info("deleted %d expired sandboxes/previews", len(swept))
