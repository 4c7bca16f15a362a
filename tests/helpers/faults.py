"""A small fault-injecting TCP proxy for the upstream fault tests (toxiproxy is not packaged
here), and a listener whose SYNs go unanswered.

``fault_proxy(upstream_port, **faults)`` listens on 127.0.0.1 and relays each connection to the
upstream, with the faults of ``Faults`` applied; the test may change ``proxy.faults`` between
requests. ``black_hole_listener()`` is a port whose accept queue is full, so the kernel drops
further SYNs and a connect hangs until the dialler's own deadline: a black-holed sandbox without
any firewall rule or privileges.

Everything listens on loopback and is closed when its context exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass


@dataclass
class Faults:
    latency_s: float = 0.0
    """Every piece is held this long before it is passed on, both ways."""
    black_hole: bool = False
    """Accept and read the client's bytes, pass nothing on, never answer."""
    stop_reading: bool = False
    """Accept and never read: the client's writes back up once the socket buffers fill."""
    reset_after: int | None = None
    """After this many response bytes (upstream to client), reset both connections."""
    drip: tuple[int, float] | None = None
    """Response bytes are passed on this many at a time, with this pause between."""


class FaultProxy:
    def __init__(self, upstream_port: int, faults: Faults) -> None:
        self.upstream_port = upstream_port
        self.faults = faults
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closed = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Abort every connection and wait for their handlers to end. (Cancelling the handlers
        instead makes asyncio's stream server log each one as an error.)"""
        self._closed.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        faults = self.faults
        try:
            if faults.stop_reading:
                await self._closed.wait()
                return
            if faults.black_hole:
                while await reader.read(65536):
                    pass
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(up_writer)
            try:
                await self._relay((reader, writer), (up_reader, up_writer), faults)
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        except ConnectionError:
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _relay(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        faults: Faults,
    ) -> None:
        reset = False
        try:
            async with asyncio.TaskGroup() as pumps:
                pumps.create_task(self._pump(client[0], upstream[1], faults, response=False))
                pumps.create_task(self._pump(upstream[0], client[1], faults, response=True))
        except* _Reset:
            reset = True
        except* ConnectionError:
            pass
        if reset:
            for writer in (client[1], upstream[1]):
                _reset(writer)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        faults: Faults,
        *,
        response: bool,
    ) -> None:
        sent = 0
        while data := await reader.read(65536):
            if faults.latency_s:
                await asyncio.sleep(faults.latency_s)
            if response and faults.reset_after is not None:
                room = faults.reset_after - sent
                if len(data) >= room:
                    writer.write(data[:room])
                    await writer.drain()
                    raise _Reset
            for piece in _pieces(data, faults.drip if response else None):
                writer.write(piece)
                await writer.drain()
                if faults.drip and response:
                    await asyncio.sleep(faults.drip[1])
            sent += len(data)
        if writer.can_write_eof():
            writer.write_eof()


class _Reset(Exception):
    """The reset fault fired: both connections end with RST."""


def _pieces(data: bytes, drip: tuple[int, float] | None) -> Iterator[bytes]:
    if drip is None:
        yield data
        return
    size = drip[0]
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER 0: close sends RST instead of FIN, as a crashed sandbox's kernel would.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.asynccontextmanager
async def fault_proxy(upstream_port: int, **faults: object) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(upstream_port, Faults(**faults))  # type: ignore[arg-type]
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


@contextlib.contextmanager
def black_hole_listener() -> Iterator[int]:
    """A loopback port that never completes another handshake: its accept queue (backlog 0
    holds one) is filled by a connection of our own and never accepted."""
    listener = socket.socket()
    filler = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler.connect(("127.0.0.1", port))
        yield port
    finally:
        filler.close()
        listener.close()
