"""The raw upstream pool against real listeners on 127.0.0.1: reuse (LIFO), fresh sockets for a
retry, idle expiry, stale connections, the per-target and global limits, the target checks and
the error mapping of failed dials."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from gateway.core.errors import (
    GatewayError,
    TargetNotAllowed,
    UpstreamRefused,
    UpstreamTimedOut,
    UpstreamUnreachable,
)
from gateway.edge.pool import UpstreamConnection, UpstreamPool
from gateway.edge.upstream_errors import dial_error
from tests.helpers.polling import eventually

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


@dataclass
class Listener:
    """A TCP server that accepts, keeps each connection and tells what it saw."""

    port: int = 0
    peers: list[asyncio.StreamWriter] = field(default_factory=list)
    received: bytearray = field(default_factory=bytearray)
    closed: int = 0
    read: bool = True

    @property
    def accepted(self) -> int:
        return len(self.peers)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.append(writer)
        try:
            while self.read and (data := await reader.read(65536)):
                self.received += data
            if not self.read:
                await asyncio.Event().wait()  # hold the connection, read nothing
        finally:
            self.closed += 1
            writer.close()


@contextlib.asynccontextmanager
async def listening(**options: bool) -> AsyncIterator[Listener]:
    listener = Listener(**options)
    server = await asyncio.start_server(listener.handle, "127.0.0.1", 0)
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        for writer in listener.peers:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    async with listening() as it:
        yield it


def make_pool(**overrides: float) -> UpstreamPool:
    options: dict[str, float] = {
        "max_connections": 16,
        "max_per_target": 4,
        "connect_timeout_s": 2.0,
        "idle_timeout_s": 30.0,
    }
    options.update(overrides)
    return UpstreamPool(
        allowed=LOOPBACK,
        max_connections=int(options["max_connections"]),
        max_per_target=int(options["max_per_target"]),
        connect_timeout_s=options["connect_timeout_s"],
        idle_timeout_s=options["idle_timeout_s"],
    )


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    it = make_pool()
    yield it
    it.close()


class Recorder:
    """A consumer that records what the connection reports."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False
        self.lost: list[BaseException | None] = []
        self.paused = 0
        self.resumed = 0

    def upstream_data(self, data: bytes) -> None:
        self.data += data

    def upstream_eof(self) -> None:
        self.eof = True

    def upstream_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)

    def upstream_pause_writing(self) -> None:
        self.paused += 1

    def upstream_resume_writing(self) -> None:
        self.resumed += 1


async def acquire(pool: UpstreamPool, port: int, **kwargs: bool) -> UpstreamConnection:
    async with asyncio.timeout(5):
        return await pool.acquire("127.0.0.1", port, **kwargs)


# ── reuse ───────────────────────────────────────────────────────────────────────────────────
async def test_a_released_connection_is_reused(pool: UpstreamPool, listener: Listener) -> None:
    first = await acquire(pool, listener.port)
    assert not first.reused and pool.in_use == 1
    pool.release(first, reusable=True)
    assert pool.in_use == 0 and pool.idle == 1
    again = await acquire(pool, listener.port)
    assert again is first and again.reused
    await eventually(lambda: listener.accepted == 1)
    pool.release(again, reusable=True)
    assert listener.accepted == 1


async def test_reuse_is_newest_first(pool: UpstreamPool, listener: Listener) -> None:
    a = await acquire(pool, listener.port)
    b = await acquire(pool, listener.port)
    pool.release(a, reusable=True)
    pool.release(b, reusable=True)
    assert await acquire(pool, listener.port) is b
    assert await acquire(pool, listener.port) is a


async def test_not_reusable_is_closed(pool: UpstreamPool, listener: Listener) -> None:
    conn = await acquire(pool, listener.port)
    pool.release(conn, reusable=False)
    assert pool.idle == 0 and pool.in_use == 0
    await eventually(lambda: listener.closed == 1)
    assert (await acquire(pool, listener.port)) is not conn


async def test_fresh_never_takes_a_pooled_connection(
    pool: UpstreamPool, listener: Listener
) -> None:
    """The retry after a stale pooled connection goes out on a new socket."""
    stale = await acquire(pool, listener.port)
    pool.release(stale, reusable=True)
    fresh = await acquire(pool, listener.port, fresh=True)
    assert fresh is not stale and not fresh.reused
    await eventually(lambda: listener.accepted == 2)


async def test_events_go_to_the_attached_consumer(pool: UpstreamPool, listener: Listener) -> None:
    conn = await acquire(pool, listener.port)
    first = Recorder()
    conn.attach(first)
    conn.write(b"ping")
    await eventually(lambda: listener.received == b"ping")
    listener.peers[0].write(b"one")
    await eventually(lambda: first.data == b"one")
    pool.release(conn, reusable=True)

    conn = await acquire(pool, listener.port)
    second = Recorder()
    conn.attach(second)
    listener.peers[0].write(b"two")
    await eventually(lambda: second.data == b"two")
    listener.peers[0].close()
    await eventually(lambda: second.eof and len(second.lost) == 1)
    assert first.data == b"one" and not first.eof and not first.lost
    pool.release(conn, reusable=True)  # lost meanwhile: not pooled
    assert pool.idle == 0


async def test_write_backpressure_reaches_the_consumer(pool: UpstreamPool) -> None:
    async with listening(read=False) as quiet:
        conn = await acquire(pool, quiet.port)
        recorder = Recorder()
        conn.attach(recorder)
        assert conn.transport is not None
        conn.transport.set_write_buffer_limits(high=64 * 1024)
        chunk = b"x" * (1024 * 1024)
        async with asyncio.timeout(10):
            while not recorder.paused:
                conn.write(chunk)
                await asyncio.sleep(0)
        assert recorder.resumed == 0
        pool.release(conn, reusable=False)


# ── idle connections ─────────────────────────────────────────────────────────────────────────
async def test_idle_connections_expire(listener: Listener) -> None:
    pool = make_pool(idle_timeout_s=0.2)
    try:
        conn = await acquire(pool, listener.port)
        pool.release(conn, reusable=True)
        await eventually(lambda: listener.closed == 1)
        assert pool.idle == 0
        assert (await acquire(pool, listener.port)) is not conn
    finally:
        pool.close()


async def test_an_idle_connection_the_sandbox_closed_is_dropped(
    pool: UpstreamPool, listener: Listener
) -> None:
    conn = await acquire(pool, listener.port)
    pool.release(conn, reusable=True)
    await eventually(lambda: listener.accepted == 1)
    listener.peers[0].close()
    await eventually(lambda: pool.idle == 0)
    assert (await acquire(pool, listener.port)) is not conn


async def test_bytes_on_an_idle_connection_drop_it(pool: UpstreamPool, listener: Listener) -> None:
    conn = await acquire(pool, listener.port)
    pool.release(conn, reusable=True)
    await eventually(lambda: listener.accepted == 1)
    listener.peers[0].write(b"HTTP/1.1 200 OK\r\n\r\n")  # answers no request
    await eventually(lambda: pool.idle == 0 and listener.closed == 1)


async def test_close_ends_idle_connections_and_refuses_more(listener: Listener) -> None:
    pool = make_pool()
    conn = await acquire(pool, listener.port)
    pool.release(conn, reusable=True)
    pool.close()
    await eventually(lambda: listener.closed == 1)
    with pytest.raises(UpstreamUnreachable):
        await acquire(pool, listener.port)


# ── limits ──────────────────────────────────────────────────────────────────────────────────
async def test_per_target_limit_waits_for_a_slot(listener: Listener) -> None:
    pool = make_pool(max_per_target=1)
    try:
        held = await acquire(pool, listener.port)
        waiting = asyncio.create_task(pool.acquire("127.0.0.1", listener.port))
        done, _ = await asyncio.wait({waiting}, timeout=0.3)
        assert not done, "a second connection to a full target must wait"
        async with listening() as other:
            # Another target is not held up by the full one.
            pool.release(await acquire(pool, other.port), reusable=False)
        pool.release(held, reusable=True)
        async with asyncio.timeout(5):
            assert await waiting is held
        assert listener.accepted == 1
    finally:
        pool.close()


async def test_global_limit_across_targets(listener: Listener) -> None:
    pool = make_pool(max_connections=1)
    try:
        async with listening() as other:
            held = await acquire(pool, listener.port)
            waiting = asyncio.create_task(pool.acquire("127.0.0.1", other.port))
            done, _ = await asyncio.wait({waiting}, timeout=0.3)
            assert not done
            pool.release(held, reusable=True)
            async with asyncio.timeout(5):
                conn = await waiting
            assert conn.target == ("127.0.0.1", other.port) and pool.in_use == 1
            pool.release(conn, reusable=False)
    finally:
        pool.close()


async def test_a_cancelled_waiter_leaks_no_slot(listener: Listener) -> None:
    pool = make_pool(max_per_target=1)
    try:
        held = await acquire(pool, listener.port)
        waiting = asyncio.create_task(pool.acquire("127.0.0.1", listener.port))
        await asyncio.wait({waiting}, timeout=0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        pool.release(held, reusable=False)
        assert pool.in_use == 0
        pool.release(await acquire(pool, listener.port), reusable=False)
    finally:
        pool.close()


async def test_a_failed_dial_frees_its_slot() -> None:
    pool = make_pool(max_per_target=1)
    port = closed_port()
    try:
        for _ in range(3):
            with pytest.raises(UpstreamRefused):
                await acquire(pool, port)
        assert pool.in_use == 0
    finally:
        pool.close()


# ── dialling: targets and errors ─────────────────────────────────────────────────────────────
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_refused_is_upstream_refused(pool: UpstreamPool) -> None:
    port = closed_port()
    with pytest.raises(UpstreamRefused) as caught:
        await acquire(pool, port)
    assert caught.value.code == "upstream_refused" and f"port {port}" in caught.value.message
    assert "127.0.0.1" not in caught.value.message


async def test_connect_deadline_is_upstream_timeout() -> None:
    """A listener whose accept queue is full drops further SYNs: the connect hangs."""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
                fillers.append(filler)
            pool = make_pool(connect_timeout_s=0.3)
            try:
                with pytest.raises(UpstreamTimedOut) as caught:
                    async with asyncio.timeout(10):
                        await pool.acquire("127.0.0.1", port)
                assert caught.value.code == "upstream_timeout" and pool.in_use == 0
            finally:
                pool.close()
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.parametrize(
    "host", ["10.0.0.7", "169.254.169.254", "::ffff:169.254.169.254", "0.0.0.0"]
)
async def test_ip_literals_outside_the_allow_list_are_never_dialled(
    pool: UpstreamPool, host: str
) -> None:
    with pytest.raises(TargetNotAllowed):
        await pool.acquire(host, 80)
    with pytest.raises(TargetNotAllowed):
        pool.check_target(host)
    assert pool.in_use == 0


async def test_a_name_is_checked_after_dns(listener: Listener) -> None:
    allowed = UpstreamPool(
        allowed=LOOPBACK, max_connections=4, max_per_target=4, connect_timeout_s=2
    )
    elsewhere = UpstreamPool(
        allowed=[ipaddress.ip_network("10.0.0.0/8")],
        max_connections=4,
        max_per_target=4,
        connect_timeout_s=2,
    )
    try:
        conn = await allowed.acquire("localhost", listener.port)
        assert conn.transport is not None
        assert conn.transport.get_extra_info("peername")[0] in ("127.0.0.1", "::1")
        allowed.release(conn, reusable=False)
        elsewhere.check_target("localhost")  # a name passes the literal check
        with pytest.raises(TargetNotAllowed):
            await elsewhere.acquire("localhost", listener.port)
        assert elsewhere.in_use == 0 and listener.accepted == 1
    finally:
        allowed.close()
        elsewhere.close()


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConnectionRefusedError(), "upstream_refused"),
        (TimeoutError(), "upstream_timeout"),
        (socket.gaierror(socket.EAI_NONAME, "unknown"), "upstream_unreachable"),
        (ConnectionResetError(), "upstream_unreachable"),
        (OSError(113, "No route to host"), "upstream_unreachable"),
        (TargetNotAllowed(), "target_not_allowed"),
    ],
)
def test_dial_errors_map_to_todays_codes(exc: BaseException, code: str) -> None:
    error = dial_error(exc, 3000)
    assert isinstance(error, GatewayError) and error.code == code
