"""Raw upstream connections to sandboxes, pooled per ``(host, port)``.

Each connection is an ``asyncio.Protocol`` whose callbacks (data, EOF, loss, pause/resume
writing) go to whichever consumer the exchange attaches for the current request; between
requests the pool holds it, and a pooled connection that the sandbox closes or writes to is
dropped at once.

Limits as today's aiohttp connector had them: at most ``max_connections`` in use in all, and
``max_per_target`` per sandbox port, so one slow sandbox cannot take every slot (threat model
D02b); a request over a limit waits for a slot in a bounded queue per target, for at most
``queue_timeout_s`` (503 ``upstream_busy`` when the queue is full or the wait runs out). Idle
connections are reused newest first (LIFO: the warm ones serve, the cold ones age out) and
closed after ``idle_timeout_s``.

Only addresses inside ``allowed_targets`` and outside ``deny_target_nets`` are dialled: IP
literals are checked before the connect, DNS names after resolution, keeping only allowed
addresses (threat model R01, R02, R08). Dial failures become the gateway's error classes in
``upstream_errors``.

A request that meets a stale pooled connection (closed before any response byte) may be sent
once more if idempotent: ``release(reusable=False)``, then ``acquire(fresh=True)`` (never pooled).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

from gateway.core.errors import TargetNotAllowed, UpstreamUnreachable
from gateway.core.netpolicy import IPNetwork, address_allowed, is_ip_literal
from gateway.edge.slots import Slots, Target
from gateway.edge.upstream_conn import Consumer as Consumer
from gateway.edge.upstream_conn import UpstreamConnection as UpstreamConnection
from gateway.edge.upstream_errors import dial_error

_TARGET_CACHE_MAX = 4096


class UpstreamPool:
    def __init__(
        self,
        *,
        allowed: Sequence[IPNetwork],
        denied: Sequence[IPNetwork] = (),
        max_connections: int,
        max_per_target: int,
        connect_timeout_s: float,
        queue_per_target: int = 0,
        queue_timeout_s: float = 0.0,
        idle_timeout_s: float = 30.0,
        dns_ttl_s: float = 10.0,
    ) -> None:
        self._allowed = allowed
        self._denied = denied
        self._max = max_connections
        self._per_target = max_per_target
        self._slots = Slots(max_connections, max_per_target, queue_per_target, queue_timeout_s)
        self._connect_timeout_s = connect_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._dns_ttl_s = dns_ttl_s
        self._idle: dict[Target, list[UpstreamConnection]] = {}
        self._idle_count = 0
        self._literal_allowed: dict[str, bool] = {}
        self._dns: dict[Target, tuple[float, list[str]]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False
        self._running: asyncio.AbstractEventLoop | None = None

    def _loop(self) -> asyncio.AbstractEventLoop:
        # Looked up once: asyncio.get_running_loop() is a getpid() syscall on Python 3.11.
        loop = self._running
        if loop is None:
            loop = self._running = asyncio.get_running_loop()
        return loop

    @property
    def in_use(self) -> int:
        return self._slots.in_use

    def queued(self, target: Target) -> int:
        """Requests waiting for a slot to ``target``."""
        return self._slots.queued(target)

    @property
    def idle(self) -> int:
        return self._idle_count

    def check_target(self, host: str) -> None:
        """Raise ``TargetNotAllowed`` for an IP literal outside ``allowed_targets`` (cached per
        host: parsing it costs microseconds). DNS names are checked after resolution."""
        allowed = self._literal_allowed.get(host)
        if allowed is None:
            allowed = not is_ip_literal(host) or address_allowed(host, self._allowed, self._denied)
            if len(self._literal_allowed) >= _TARGET_CACHE_MAX:
                self._literal_allowed.clear()  # bounded; refilled by the next requests
            self._literal_allowed[host] = allowed
        if not allowed:
            raise TargetNotAllowed("This preview's sandbox address is not allowed.")

    async def acquire(self, host: str, port: int, *, fresh: bool = False) -> UpstreamConnection:
        """A connection to ``host:port``: an idle one (newest first) unless ``fresh``, else a new
        one, waiting for a slot when a limit is reached.

        Raises ``TargetNotAllowed``, ``UpstreamRefused``, ``UpstreamTimedOut`` (connect
        deadline), ``UpstreamUnreachable`` (DNS failure, other socket errors, pool closed).
        """
        self.check_target(host)
        target = (host, port)
        if self._closed:
            raise UpstreamUnreachable("The gateway is shutting down.")
        await self._slots.take(target)
        try:
            conn = None if fresh else self._pop_idle(target)
            if conn is None:
                conn = await self._dial(target)
            return conn
        except BaseException:
            self._slots.free(target)
            raise

    def take_idle(self, host: str, port: int) -> UpstreamConnection | None:
        """An idle connection with its slot taken, without waiting (so the common request needs
        no task), or ``None``: then ``acquire``. Raises as ``acquire`` would before waiting."""
        self.check_target(host)
        if self._closed:
            raise UpstreamUnreachable("The gateway is shutting down.")
        target = (host, port)
        if target not in self._idle or not self._slots.free_now(target):
            return None
        conn = self._pop_idle(target)
        if conn is not None:
            self._slots.hold(target)
        return conn

    def release(self, conn: UpstreamConnection, *, reusable: bool) -> None:
        """Give the connection back after its exchange ended. ``reusable``: the response was
        complete and both sides allowed keep-alive; otherwise it is closed. Frees its slot."""
        conn.detach()
        if reusable and not self._closed and not conn.is_closing:
            self._park(conn)
        else:
            conn.close()
        self._slots.free(conn.target)

    def close(self) -> None:
        """Close every idle connection and refuse new acquisitions (shutdown). Connections in
        use are closed when they are released."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for stack in list(self._idle.values()):
            for conn in list(stack):
                conn.close()
        self._idle.clear()
        self._idle_count = 0
        self._slots.fail_waiters(UpstreamUnreachable("The gateway is shutting down."))

    # ── idle connections ──
    def _pop_idle(self, target: Target) -> UpstreamConnection | None:
        stack = self._idle.get(target)
        deadline = self._loop().time() - self._idle_timeout_s
        while stack:
            conn = stack.pop()
            self._idle_count -= 1
            if conn.idle_since < deadline:
                # The newest is too old, so every one below it is: all go.
                self._idle_count -= len(stack)
                for older in stack:
                    older.close()
                stack.clear()
            elif not conn.is_closing:
                if not stack:
                    del self._idle[target]
                conn.reused = True
                return conn
            conn.close()
        self._idle.pop(target, None)
        return None

    def _park(self, conn: UpstreamConnection) -> None:
        stack = self._idle.setdefault(conn.target, [])
        if len(stack) >= self._per_target or self._idle_count >= self._max:
            conn.close()
            if not stack:
                del self._idle[conn.target]
            return
        loop = self._loop()
        conn.idle_since = loop.time()
        # An exchange may have paused it for backpressure; idle, its EOF must be seen.
        conn.resume_reading()
        stack.append(conn)
        self._idle_count += 1
        if self._sweep is None:
            self._sweep = loop.call_later(self._idle_timeout_s, self._sweep_idle)

    def _forget_idle(self, conn: UpstreamConnection) -> None:
        stack = self._idle.get(conn.target)
        if stack is not None and conn in stack:
            stack.remove(conn)
            self._idle_count -= 1
            if not stack:
                del self._idle[conn.target]

    def _sweep_idle(self) -> None:
        self._sweep = None
        loop = self._loop()
        deadline = loop.time() - self._idle_timeout_s
        for target, stack in list(self._idle.items()):
            # Oldest first: the first one young enough ends the sweep of its stack.
            while stack and stack[0].idle_since <= deadline:
                self._idle_count -= 1
                stack.pop(0).close()
            if not stack:
                del self._idle[target]
        if self._idle_count:
            self._sweep = loop.call_later(self._idle_timeout_s / 2, self._sweep_idle)

    # ── dialling ──
    async def _dial(self, target: Target) -> UpstreamConnection:
        host, port = target
        loop = self._loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                addresses = [host] if is_ip_literal(host) else await self._resolve(target)
                last: OSError | None = None
                for address in addresses:
                    try:
                        _, conn = await loop.create_connection(
                            lambda: UpstreamConnection(self, target), address, port
                        )
                    except OSError as exc:
                        last = exc
                        continue
                    return conn
                assert last is not None
                raise last
        except (OSError, TimeoutError) as exc:
            raise dial_error(exc, port) from exc

    async def _resolve(self, target: Target) -> list[str]:
        """The allowed addresses of a DNS name, remembered for ``dns_ttl_s``."""
        loop = self._loop()
        now = loop.time()
        cached = self._dns.get(target)
        if cached is not None and cached[0] > now:
            return cached[1]
        host, port = target
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        kept = [a for a in addresses if address_allowed(a, self._allowed, self._denied)]
        if not kept:
            # The same refusal as an IP literal outside allowed_targets, not an unreachable
            # sandbox: a name that resolves to the metadata service is never dialled.
            raise TargetNotAllowed("This preview's sandbox address is not allowed.")
        if len(self._dns) >= _TARGET_CACHE_MAX:
            self._dns.clear()
        self._dns[target] = (now + self._dns_ttl_s, kept)
        return kept
