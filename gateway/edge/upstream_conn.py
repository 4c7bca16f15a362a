"""One raw upstream connection (an ``asyncio.Protocol``) of ``pool.UpstreamPool``: its events go
to the consumer the exchange attaches for the current request, or to the pool while it is idle.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from gateway.edge.pool import UpstreamPool

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

    __slots__ = ("_consumer", "_pool", "idle_since", "lost", "reused", "target", "transport")

    def __init__(self, pool: UpstreamPool, target: Target) -> None:
        self._pool = pool
        self.target = target
        self.reused = False
        """Taken from the idle pool: the sandbox may have closed it meanwhile (stale)."""
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self._consumer: Consumer | None = None

    # ── for the exchange ──
    def attach(self, consumer: Consumer) -> None:
        """Send this connection's events to ``consumer`` until it is released."""
        self._consumer = consumer

    def detach(self) -> None:
        """Events go to the pool again (``UpstreamPool.release`` does this)."""
        self._consumer = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        """Abort the connection (it is never reused)."""
        if self.transport is not None:
            self.transport.abort()

    @property
    def is_closing(self) -> bool:
        return self.lost or self.transport is None or self.transport.is_closing()

    # ── asyncio.Protocol ──
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, though it is one in all
        # but name: an isinstance assert would refuse every connection under uvloop.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        consumer = self._consumer
        if consumer is not None:
            consumer.upstream_data(data)
        else:
            # Bytes from an idle connection answer no request: the sandbox is out of step.
            self.close()

    def eof_received(self) -> bool | None:
        consumer = self._consumer
        if consumer is not None:
            consumer.upstream_eof()
        return None  # close our side too: a half-closed upstream is never reused

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        consumer = self._consumer
        if consumer is not None:
            consumer.upstream_lost(exc)
        else:
            self._pool._forget_idle(self)

    def pause_writing(self) -> None:
        if self._consumer is not None:
            self._consumer.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self._consumer is not None:
            self._consumer.upstream_resume_writing()
