"""Connection slots of the upstream pool: at most ``max_total`` in use, ``max_per_target`` per
sandbox port, and a bounded queue per target with a deadline for the requests over them.

A request to a sandbox whose slots are all taken waits in that sandbox's queue, never anyone
else's: one sandbox that never answers fills its own queue, whose requests then get 503
``upstream_busy`` (at once when the queue is full, after ``queue_timeout_s`` otherwise), while
requests to other sandboxes find their slots free (threat model D02b).
"""

from __future__ import annotations

import asyncio
from collections import deque

from gateway.core.errors import GatewayError, UpstreamBusy

Target = tuple[str, int]


class Slots:
    def __init__(
        self, max_total: int, max_per_target: int, queue_per_target: int, queue_timeout_s: float
    ) -> None:
        self._max = max_total
        self._per_target = max_per_target
        self._queue_max = queue_per_target
        """0: the queue is unbounded."""
        self._queue_timeout_s = queue_timeout_s
        """0: a queued request waits as long as it takes."""
        self._busy: dict[Target, int] = {}
        """Slots taken per target: connections in use and dials under way."""
        self._busy_total = 0
        self._waiters: dict[Target, deque[asyncio.Future[None]]] = {}

    @property
    def in_use(self) -> int:
        return self._busy_total

    def queued(self, target: Target) -> int:
        return len(self._waiters.get(target, ()))

    async def take(self, target: Target) -> None:
        """A slot for ``target``, now or after a wait in its queue. Raises ``UpstreamBusy``."""
        if self._has_slot(target):
            self.hold(target)
            return
        if not self._queue_timeout_s:
            await self._queue_for_slot(target)
            return
        try:
            async with asyncio.timeout(self._queue_timeout_s):
                await self._queue_for_slot(target)
        except TimeoutError:
            raise UpstreamBusy("The app is busy: no connection to it came free in time.") from None

    def free_now(self, target: Target) -> bool:
        """A slot for ``target`` is free and no queued request is ahead: ``hold`` may take it
        without waiting (the task-free path)."""
        return target not in self._waiters and self._has_slot(target)

    def hold(self, target: Target) -> None:
        """Take a slot that ``free_now`` said is free."""
        self._busy[target] = self._busy.get(target, 0) + 1
        self._busy_total += 1

    def free(self, target: Target) -> None:
        left = self._busy[target] - 1
        if left:
            self._busy[target] = left
        else:
            del self._busy[target]
        self._busy_total -= 1
        self._wake(target)

    def fail_waiters(self, error: GatewayError) -> None:
        """Every queued request gets ``error`` (shutdown)."""
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
        self._waiters.clear()

    def _has_slot(self, target: Target) -> bool:
        return self._busy_total < self._max and self._busy.get(target, 0) < self._per_target

    async def _queue_for_slot(self, target: Target) -> None:
        while not self._has_slot(target):
            queue = self._waiters.setdefault(target, deque())
            if self._queue_max and len(queue) >= self._queue_max:
                raise UpstreamBusy("The app is busy: too many requests are waiting for it.")
            waiter = asyncio.get_running_loop().create_future()
            queue.append(waiter)
            try:
                await waiter
            except BaseException:
                waiters = self._waiters.get(target)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[target]
                elif waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._wake()  # woken, then cancelled: the slot goes to the next waiter
                raise
        self.hold(target)

    def _wake(self, prefer: Target | None = None) -> None:
        """Wake one waiter that the free slot can serve: the same target's first."""
        order = [prefer] if prefer in self._waiters else []
        order += [t for t in self._waiters if t != prefer]
        for target in order:
            if not self._has_slot(target):
                continue
            waiters = self._waiters[target]
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    if not waiters:
                        del self._waiters[target]
                    return
            del self._waiters[target]
