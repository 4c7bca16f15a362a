"""``edge.holds`` on real loopback sockets: many held requests, one probe loop per target."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from gateway.edge.holds import StartupHolds
from gateway.edge.pool import Target
from tests.helpers.polling import eventually
from tests.helpers.ports import unused_port


class CountingProbe:
    """A real dial, counting how many run at once per target."""

    def __init__(self) -> None:
        self.calls = 0
        self.running = 0
        self.most_at_once = 0

    async def __call__(self, target: Target) -> bool:
        self.calls += 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            _, writer = await asyncio.open_connection(*target)
        except OSError:
            return False
        finally:
            self.running -= 1
        writer.close()
        await writer.wait_closed()
        return True


@contextlib.asynccontextmanager
async def running(holds: StartupHolds) -> AsyncIterator[StartupHolds]:
    task = asyncio.get_running_loop().create_task(holds.run())
    try:
        yield holds
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def accept_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def test_a_thousand_waiters_share_one_probe_loop() -> None:
    port = unused_port()
    probe = CountingProbe()
    async with running(StartupHolds(probe, first_delay_s=0.02, max_delay_s=0.1)) as holds:
        waiters = [asyncio.create_task(holds.wait(("127.0.0.1", port), 20)) for _ in range(1000)]
        await eventually(lambda: holds.held == 1000 and probe.calls >= 3)
        server = await asyncio.start_server(accept_and_close, "127.0.0.1", port)
        async with server:
            results = await asyncio.gather(*waiters)
        assert results == [True] * 1000
        assert probe.most_at_once == 1, "one probe loop for the target, however many wait"
        assert holds.held == 0
        # Backoff: far fewer probes than a fixed 20 ms poll of every waiter would make.
        assert probe.calls < 200


async def test_a_waiter_gives_up_at_its_limit_and_others_go_on() -> None:
    port = unused_port()
    probe = CountingProbe()
    async with running(StartupHolds(probe, first_delay_s=0.02, max_delay_s=0.05)) as holds:
        target = ("127.0.0.1", port)
        patient = asyncio.create_task(holds.wait(target, 20))
        assert await holds.wait(target, 0.2) is False
        assert not patient.done()
        server = await asyncio.start_server(accept_and_close, "127.0.0.1", port)
        async with server:
            assert await patient is True
        calls = probe.calls
        await eventually(lambda: not holds._targets)
        assert probe.calls == calls, "no probing once nobody waits"
