"""Raw upstream connections to sandboxes, pooled per ``(host, port)``.

Each connection is an ``asyncio.Protocol`` whose callbacks (data, EOF, loss, pause/resume
writing) go to whichever consumer the exchange attaches for the current request; between
requests the pool itself is attached, and a pooled connection that the sandbox closes or writes
to is dropped at once.

Limits as today's aiohttp connector had them: at most ``max_connections`` in use in all, and
``max_per_target`` per sandbox port, so one slow sandbox cannot take every slot (threat model
D02b); a request over a limit waits for a slot (its own deadline bounds the wait). Idle
connections are reused newest first (LIFO: the warm ones, and the cold ones age out) and closed
after ``idle_timeout_s``.

Only addresses inside ``allowed_targets`` are dialled: IP literals are checked before the
connect, DNS names after resolution, keeping only allowed addresses (threat model R01, R02,
R08). Dial failures become the gateway's error classes here and nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from gateway.core.errors import GatewayError
from gateway.core.netpolicy import IPNetwork

Target = tuple[str, int]


class Consumer(Protocol):
    """What the exchange attaches to a connection for one request."""

    def upstream_data(self, data: bytes) -> None: ...

    def upstream_eof(self) -> None: ...

    def upstream_lost(self, exc: BaseException | None) -> None: ...

    def upstream_pause_writing(self) -> None: ...

    def upstream_resume_writing(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to a sandbox port."""

    target: Target
    reused: bool
    """Taken from the idle pool: the sandbox may have closed it meanwhile (stale), so an
    idempotent request that gets no response byte on it may be retried on ``fresh=True``."""
    transport: asyncio.Transport | None

    def attach(self, consumer: Consumer) -> None:
        """Send this connection's events to ``consumer`` until released."""
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def pause_reading(self) -> None:
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Abort the connection (it is never reused)."""
        raise NotImplementedError

    @property
    def is_closing(self) -> bool:
        raise NotImplementedError


class UpstreamPool:
    def __init__(
        self,
        *,
        allowed: Sequence[IPNetwork],
        max_connections: int,
        max_per_target: int,
        connect_timeout_s: float,
        idle_timeout_s: float = 30.0,
        dns_ttl_s: float = 10.0,
    ) -> None:
        raise NotImplementedError

    def check_target(self, host: str) -> None:
        """Raise ``TargetNotAllowed`` for an IP literal outside ``allowed_targets`` (cached per
        host). DNS names are checked after resolution, in ``acquire``."""
        raise NotImplementedError

    async def acquire(self, host: str, port: int, *, fresh: bool = False) -> UpstreamConnection:
        """A connection to ``host:port``: an idle one (newest first) unless ``fresh``, else a new
        one, waiting for a slot when a limit is reached.

        Raises ``TargetNotAllowed``, ``UpstreamRefused``, ``UpstreamTimedOut`` (connect
        deadline), ``UpstreamUnreachable`` (DNS failure and other socket errors).
        """
        raise NotImplementedError

    def release(self, conn: UpstreamConnection, *, reusable: bool) -> None:
        """Give the connection back after its response ended. ``reusable``: the response was
        complete and both sides allowed keep-alive; otherwise it is closed. Frees its slot."""
        raise NotImplementedError

    def close(self) -> None:
        """Close every idle connection and refuse new acquisitions (shutdown)."""
        raise NotImplementedError

    @property
    def in_use(self) -> int:
        raise NotImplementedError

    @property
    def idle(self) -> int:
        raise NotImplementedError


def dial_error(exc: BaseException, port: int) -> GatewayError:
    """The client-facing error for a failed dial (cf. ``upstream.translate_errors``)."""
    raise NotImplementedError
