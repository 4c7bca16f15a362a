"""The raw WebSocket tunnel on real loopback sockets, without the HTTP listener: the test does
the listener's part (accepts the client, dials the upstream, relays the handshake by hand) and
hands both transports to ``WsTunnel`` through the hub, as the new edge does after a 101."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import cast

import pytest
import uvloop

from gateway.core.records import Route
from gateway.core.tokens import LEEWAY_S
from gateway.edge.ws_hub import TunnelEnd, WebSocketHub, WsLimits
from gateway.edge.ws_tunnel import WsTunnel
from gateway.ops import log
from tests.helpers.polling import WAIT_S, eventually
from tests.helpers.ws_raw import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Frame,
    RawWebSocket,
    close_payload,
    encode_frame,
)

pytestmark = pytest.mark.integration

HOST = "app.preview.localhost"
LIMITS = WsLimits(
    idle_timeout_s=0,
    max_lifetime_s=0,
    ping_interval_s=30,
    max_message_bytes=16 * 1024 * 1024,
    handshake_timeout_s=5,
    close_timeout_s=1.0,
)
ROUTE = Route(
    hostname=HOST,
    workspace="ws",
    sandbox="sb",
    preview="web",
    target_host="127.0.0.1",
    port=1,
    public=True,
)
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: not-checked-here\r\n\r\n"
)


class _Head(asyncio.Protocol):
    """Collects bytes until a whole HTTP head has arrived, as a listener would."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.head = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.data += data
        if b"\r\n\r\n" in self.data and not self.head.done():
            self.transport.pause_reading()  # type: ignore[union-attr]
            head, _, rest = bytes(self.data).partition(b"\r\n\r\n")
            self.head.set_result((head + b"\r\n\r\n", rest))


class Upstream:
    """The app's end, raw: frames from the gateway arrive masked, its own go out unmasked."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.sent = 0

    async def recv_frame(self) -> tuple[Frame, bytes]:
        """The next frame, unmasked, and the bytes it arrived as."""
        raw = await self.reader.readexactly(2)
        n = raw[1] & 0x7F
        if n == 126:
            raw += await self.reader.readexactly(2)
            (n,) = struct.unpack("!H", raw[2:4])
        elif n == 127:
            raw += await self.reader.readexactly(8)
            (n,) = struct.unpack("!Q", raw[2:10])
        assert raw[1] & 0x80, "a client (the gateway) must mask its frames"
        key = await self.reader.readexactly(4)
        body = await self.reader.readexactly(n)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(body)) if n < 4096 else b""
        return Frame(bool(raw[0] & 0x80), raw[0] & 0x0F, payload), raw + key + body

    async def recv_close(self, *, answer: bool = True) -> Frame:
        """Skip to the close frame, answering pings on the way; echo the close."""
        while True:
            frame, _ = await self.recv_frame()
            if frame.opcode == OP_PING:
                await self.send(OP_PONG, frame.payload)
            elif frame.opcode == OP_CLOSE:
                if answer:
                    with contextlib.suppress(ConnectionError):
                        await self.send(OP_CLOSE, frame.payload[:2])
                return frame

    async def send(self, opcode: int, payload: bytes = b"", *, fin: bool = True) -> None:
        self.writer.write(encode_frame(opcode, payload, fin=fin, mask=False))
        await self.writer.drain()

    async def at_eof(self) -> bool:
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        return True


@dataclass
class Pair:
    client: RawWebSocket
    upstream: Upstream
    tunnel: WsTunnel
    hub: WebSocketHub
    run: asyncio.Future[TunnelEnd | None]
    record: log.AccessRecord

    async def end(self) -> TunnelEnd:
        async with asyncio.timeout(WAIT_S):
            end = await self.run
        assert end is not None
        return end


class Revocable:
    """A re-admission callback with a switch: the route's tokens were revoked, or not."""

    policy = None

    def __init__(self) -> None:
        self.revoked = False
        self.asked = 0

    async def __call__(self, host: str, admitted: Route, credentials: object) -> str | Route:
        self.asked += 1
        return "access revoked" if self.revoked else admitted


@contextlib.asynccontextmanager
async def tunnel_pair(
    limits: WsLimits = LIMITS,
    *,
    client_extra: bytes = b"",
    upstream_extra: bytes = b"",
    rcvbuf: int | None = None,
    compressed: bool = False,
    readmit: Revocable | None = None,
    route: Route = ROUTE,
) -> AsyncIterator[Pair]:
    loop = asyncio.get_running_loop()
    apps: asyncio.Queue[Upstream] = asyncio.Queue()

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(SWITCHING + upstream_extra)
        await writer.drain()
        await apps.put(Upstream(reader, writer))

    app_server = await asyncio.start_server(app, "127.0.0.1", 0, limit=1 << 20)
    accepted: asyncio.Queue[_Head] = asyncio.Queue()

    def listener_protocol() -> _Head:
        head = _Head()
        accepted.put_nowait(head)
        return head

    listener = await loop.create_server(listener_protocol, "127.0.0.1", 0)
    hub = WebSocketHub(readmit, close_timeout_s=limits.close_timeout_s)
    readmitting = asyncio.create_task(hub.run(), name="re-admission")
    client_task = asyncio.create_task(
        RawWebSocket.connect(listener.sockets[0].getsockname()[1], HOST, rcvbuf=rcvbuf)
    )
    try:
        async with asyncio.timeout(WAIT_S):
            down = await accepted.get()
            request, early_client = await down.head
            _, up = await loop.create_connection(
                _Head, "127.0.0.1", app_server.sockets[0].getsockname()[1]
            )
            up.transport.write(request)  # type: ignore[union-attr]
            response, early_upstream = await up.head
            down.transport.write(response)  # type: ignore[union-attr]
            client = await client_task
            upstream = await apps.get()
        assert client.status == 101
        if client_extra:
            # Frames the client sent right behind its upgrade request, which the listener read.
            early_client += client_extra
        assert down.transport is not None and up.transport is not None
        tunnel = WsTunnel(
            down.transport,
            up.transport,
            limits,
            client_buffered=early_client,
            upstream_buffered=early_upstream,
            compressed=compressed,
        )
        record = log.AccessRecord("r1", "GET", HOST, "/ws", "127.0.0.1", kind="websocket")
        # As the edge does it: from a protocol callback, no task of its own.
        hub.attach(tunnel, route, HOST, record)
        run = cast("asyncio.Future[TunnelEnd | None]", tunnel.done)
        await eventually(lambda: hub.open_count == 1)
        yield Pair(client, upstream, tunnel, hub, run, record)
    finally:
        client_task.cancel()
        with contextlib.suppress(BaseException):
            await client_task
        if "run" in locals():
            tunnel.abort()
            with contextlib.suppress(BaseException):
                await run
        with contextlib.suppress(BaseException):
            client.writer.transport.abort()
        with contextlib.suppress(BaseException):
            upstream.writer.transport.abort()
        readmitting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await readmitting
        listener.close()
        app_server.close()


# ── bytes pass unmodified ───────────────────────────────────────────────────────────────────
async def test_frames_pass_both_ways_byte_for_byte() -> None:
    async with tunnel_pair() as p:
        sent_up = [
            encode_frame(OP_TEXT, b"hello"),
            encode_frame(OP_BINARY, b"a" * 3, fin=False),
            encode_frame(OP_CONT, b"b" * 70_000),
            encode_frame(OP_BINARY, bytes(range(256)) * 4096),  # 1 MiB
        ]
        for frame in sent_up:
            p.client.writer.write(frame)
        await p.client.writer.drain()
        for frame in sent_up:
            _, raw = await p.upstream.recv_frame()
            assert raw == frame  # the same mask key and masked bytes: nothing re-framed
        await p.upstream.send(OP_TEXT, "✓ down".encode())
        await p.upstream.send(OP_BINARY, b"x" * 200_000)
        assert (await p.client.recv_message()).payload == "✓ down".encode()
        assert (await p.client.recv_message()).payload == b"x" * 200_000


async def test_bytes_read_past_the_handshake_are_relayed_first() -> None:
    hello_up = encode_frame(OP_TEXT, b"early from client")
    async with tunnel_pair(
        client_extra=hello_up, upstream_extra=encode_frame(OP_TEXT, b"early", mask=False)
    ) as p:
        _, raw = await p.upstream.recv_frame()
        assert raw == hello_up
        assert (await p.client.recv_message()).payload == b"early"


async def test_compressed_frames_pass_untouched_when_deflate_was_negotiated() -> None:
    deflated = bytearray(encode_frame(OP_TEXT, b"\xf2\x48\xcd\xc9\xc9\x07\x00"))
    deflated[0] |= 0x40  # RSV1: the message is compressed
    async with tunnel_pair(compressed=True) as p:
        p.client.writer.write(bytes(deflated))
        _, raw = await p.upstream.recv_frame()
        assert raw == bytes(deflated)


# ── pings and pongs ─────────────────────────────────────────────────────────────────────────
async def test_the_gateway_pings_both_sides_and_consumes_their_pongs() -> None:
    async with tunnel_pair(replace(LIMITS, ping_interval_s=0.05)) as p:
        # The client sees unmasked pings and answers them while it waits for a message.
        message = asyncio.create_task(p.client.recv_message())
        # The upstream sees masked pings from the gateway (recv_frame checks the mask).
        for _ in range(3):
            frame, _ = await p.upstream.recv_frame()
            assert frame.opcode == OP_PING
            await p.upstream.send(OP_PONG, frame.payload)
        await eventually(lambda: len(p.client.pings_seen) >= 3)
        await p.upstream.send(OP_TEXT, b"after pings")
        assert (await message).payload == b"after pings"
        # None of the client's pongs reached the upstream: the next frame is the marker.
        await p.client.send_text("marker")
        while True:
            frame, _ = await p.upstream.recv_frame()
            assert frame.opcode != OP_PONG, "a pong to the gateway's ping was relayed"
            if frame.opcode == OP_PING:
                await p.upstream.send(OP_PONG, frame.payload)
                continue
            assert frame.payload == b"marker"
            break


async def test_the_peers_pings_and_pongs_pass_through() -> None:
    async with tunnel_pair() as p:
        await p.client.send_frame(OP_PING, b"from client")
        frame, _ = await p.upstream.recv_frame()
        assert (frame.opcode, frame.payload) == (OP_PING, b"from client")
        await p.upstream.send(OP_PONG, b"from client")
        assert await p.client.recv_frame() == Frame(True, OP_PONG, b"from client")
        await p.upstream.send(OP_PING, b"from app")
        assert await p.client.recv_frame() == Frame(True, OP_PING, b"from app")


async def test_a_client_that_answers_no_ping_is_closed_and_so_is_its_upstream() -> None:
    async with tunnel_pair(replace(LIMITS, ping_interval_s=0.1)) as p:
        reading = asyncio.create_task(p.client.at_eof())  # reads, never answers
        closed = await asyncio.wait_for(p.upstream.recv_close(), WAIT_S)
        assert (closed.close_code, closed.close_reason) == (1011, "client did not answer ping")
        end = await p.end()
        assert (end.closed_by, end.code) == ("client", 1006)
        assert await asyncio.wait_for(reading, WAIT_S)


async def test_an_upstream_that_answers_no_ping_is_closed_and_so_is_its_client() -> None:
    async with tunnel_pair(replace(LIMITS, ping_interval_s=0.1)) as p:
        reading = asyncio.create_task(p.upstream.at_eof())
        closed = await asyncio.wait_for(p.client.recv_close(), WAIT_S)
        assert (closed.close_code, closed.close_reason) == (1011, "upstream did not answer ping")
        assert (await p.end()).closed_by == "upstream"
        assert await asyncio.wait_for(reading, WAIT_S)


# ── closing ─────────────────────────────────────────────────────────────────────────────────
async def test_a_close_code_passes_through_and_is_echoed() -> None:
    async with tunnel_pair() as p:
        await p.client.send_close(4001, "bye")
        closed = await p.upstream.recv_close()
        assert (closed.close_code, closed.close_reason) == (4001, "bye")
        echo = await p.client.recv_frame()
        assert (echo.opcode, echo.close_code) == (OP_CLOSE, 4001)
        end = await p.end()
        assert (end.closed_by, end.code, end.reason) == ("client", 4001, "bye")
        assert await asyncio.wait_for(p.client.at_eof(), WAIT_S)
        assert p.hub.open_count == 0


async def test_an_attached_tunnel_needs_no_task_and_notes_its_end() -> None:
    async with tunnel_pair() as p:
        # An open tunnel costs no task (the hub's one worker aside), and carries no __dict__.
        others = asyncio.all_tasks() - {asyncio.current_task()}
        assert {t.get_name() for t in others} == {"re-admission"}
        for part in (p.tunnel, p.tunnel.client, p.tunnel.upstream, p.tunnel.client.scanner):
            assert not hasattr(part, "__dict__"), part
        await p.client.send_text("hi")
        assert (await p.upstream.recv_frame())[0].payload == b"hi"
        await p.upstream.send(OP_CLOSE, close_payload(4002, "done"))
        assert (await p.client.recv_close()).close_code == 4002
        await p.end()
        await eventually(lambda: p.hub.open_count == 0)
        assert p.record.status == 101
        extra = p.record.extra
        assert (extra["close_code"], extra["close_reason"], extra["closed_by"]) == (
            4002,
            "done",
            "upstream",
        )
        # Bytes as read from the client: its text frame and its answer to the close (8 each).
        assert extra["messages"] == 1 and extra["ws_bytes_up"] == 16


async def test_a_close_without_status_reaches_the_other_side_as_1000() -> None:
    async with tunnel_pair() as p:
        await p.upstream.send(OP_CLOSE, close_payload(None))
        closed = await p.client.recv_close()
        assert closed.close_code == 1000
        assert (await p.end()).code == 1005


async def test_a_client_that_vanishes_closes_its_upstream_with_1011() -> None:
    async with tunnel_pair() as p:
        p.client.reset()
        closed = await asyncio.wait_for(p.upstream.recv_close(), WAIT_S)
        assert closed.close_code == 1011
        assert ((await p.end()).closed_by, (await p.end()).code) == ("client", 1006)


async def test_a_peer_that_does_not_answer_the_close_is_cut_within_the_bound() -> None:
    async with tunnel_pair(replace(LIMITS, close_timeout_s=0.3)) as p:
        await p.client.send_close(1000)
        await p.upstream.recv_close(answer=False)  # and never answers
        assert await asyncio.wait_for(p.upstream.at_eof(), WAIT_S)
        await p.end()


async def test_a_message_over_the_limit_across_fragments_gets_1009() -> None:
    async with tunnel_pair(replace(LIMITS, max_message_bytes=1024)) as p:
        fragments = [
            encode_frame(OP_BINARY, b"a" * 400, fin=False),
            encode_frame(OP_CONT, b"b" * 400, fin=False),
            encode_frame(OP_CONT, b"c" * 400),
        ]
        p.client.writer.write(b"".join(fragments))
        for expected in fragments[:2]:
            _, raw = await p.upstream.recv_frame()
            assert raw == expected
        closed = await p.upstream.recv_close()
        assert (closed.close_code, closed.close_reason) == (1009, "message too big")
        assert (await p.client.recv_close()).close_code == 1009
        assert (await p.end()).code == 1009


async def test_a_protocol_violation_gets_1002() -> None:
    async with tunnel_pair() as p:
        p.client.writer.write(encode_frame(OP_TEXT, b"not masked", mask=False))
        assert (await p.client.recv_close()).close_code == 1002
        assert (await p.upstream.recv_close()).close_code == 1002


async def test_a_close_waits_for_a_frame_in_passage_to_end() -> None:
    """The close must not split a frame that is half passed: the client gets the whole frame,
    then the close."""
    async with tunnel_pair() as p:
        frame = encode_frame(OP_BINARY, b"z" * 100_000, mask=False)
        p.upstream.writer.write(frame[:50_000])
        await p.upstream.writer.drain()
        await eventually(lambda: p.tunnel.upstream.received >= 50_000)
        p.tunnel.close(1001, "gateway shutting down")
        p.upstream.writer.write(frame[50_000:])
        assert (await p.client.recv_message()).payload == b"z" * 100_000
        assert (await p.client.recv_close()).close_code == 1001


# ── limits ──────────────────────────────────────────────────────────────────────────────────
async def test_idle_tunnels_close_with_1001_and_pings_do_not_keep_them_open() -> None:
    async with tunnel_pair(replace(LIMITS, idle_timeout_s=0.4, ping_interval_s=0.05)) as p:
        closed, _ = await asyncio.gather(p.client.recv_close(), p.upstream.recv_close())
        assert (closed.close_code, closed.close_reason) == (1001, "idle timeout")
        # Pinged (and answering) all along, about 8 times, yet idle.
        assert len(p.client.pings_seen) >= 4, p.client.pings_seen


async def test_data_frames_keep_a_tunnel_open_past_the_idle_limit() -> None:
    async with tunnel_pair(replace(LIMITS, idle_timeout_s=0.3)) as p:
        for i in range(8):
            await p.client.send_text(f"tick {i}")
            frame, _ = await p.upstream.recv_frame()
            assert frame.payload == f"tick {i}".encode()
            await asyncio.sleep(0.1)  # the test's pace, 0.8 s in all: past the idle limit
        assert not p.run.done()


async def test_the_lifetime_cap_closes_a_busy_tunnel_with_1001() -> None:
    async with tunnel_pair(replace(LIMITS, max_lifetime_s=0.3)) as p:
        await p.client.send_text("busy")
        closed = await asyncio.wait_for(p.upstream.recv_close(), WAIT_S)
        assert closed.close_code == 1001 and closed.close_reason == "maximum lifetime reached"


async def test_drain_closes_with_1001_both_ways_and_empties_the_hub() -> None:
    async with tunnel_pair() as p:
        drain = asyncio.create_task(p.hub.close_all(1001, "gateway shutting down"))
        up, down = await asyncio.gather(p.upstream.recv_close(), p.client.recv_close())
        assert up.close_code == down.close_code == 1001
        await asyncio.wait_for(drain, WAIT_S)
        assert p.hub.open_count == 0
        assert (await p.end()).closed_by == "gateway"


async def test_revocation_through_the_hub_closes_with_1008() -> None:
    readmit = Revocable()
    async with tunnel_pair(readmit=readmit) as p:
        p.hub.on_invalidation(HOST)  # a route change that keeps the tunnel
        await eventually(lambda: readmit.asked == 1)
        await p.client.send_text("still open")
        assert (await p.upstream.recv_frame())[0].payload == b"still open"
        readmit.revoked = True
        p.hub.on_invalidation(HOST)
        closed = await p.client.recv_close()
        assert (closed.close_code, closed.close_reason) == (1008, "access revoked")
        assert (await p.upstream.recv_close()).close_code == 1008


class Expiring(Revocable):
    async def __call__(self, host: str, admitted: Route, credentials: object) -> str | Route:
        self.asked += 1
        return "token expired"


async def test_a_token_running_out_re_admits_the_tunnel_and_closes_it_with_1008() -> None:
    """No invalidation: the hub's timer at the token's expiry (plus the verifier's leeway)
    asks again."""
    readmit = Expiring()
    soon = time.time() - LEEWAY_S + 0.3
    private = ROUTE.model_copy(update={"public": False, "tokens": {"t": soon}})
    async with tunnel_pair(readmit=readmit, route=private) as p:
        closed = await p.client.recv_close()
        assert (closed.close_code, closed.close_reason) == (1008, "token expired")
        assert readmit.asked == 1
        assert (await p.upstream.recv_close()).close_code == 1008


# ── backpressure ────────────────────────────────────────────────────────────────────────────
async def test_a_client_that_does_not_read_slows_the_upstream_down() -> None:
    total, size = 128 * 1024 * 1024, 256 * 1024
    async with tunnel_pair(rcvbuf=64 * 1024) as p:
        frame = encode_frame(OP_BINARY, b"f" * size, mask=False)

        async def flood() -> None:
            while p.upstream.sent < total:
                p.upstream.writer.write(frame)
                await p.upstream.writer.drain()
                p.upstream.sent += size

        sock = p.upstream.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        flooding = asyncio.create_task(flood())
        previous, still = -1, 0
        async with asyncio.timeout(30):
            while still < 10:
                await asyncio.sleep(0.05)
                still = still + 1 if p.upstream.sent == previous else 0
                previous = p.upstream.sent
        assert p.upstream.sent < 32 * 1024 * 1024, p.upstream.sent
        assert p.hub.buffered_bytes() < 2 * 1024 * 1024
        received = 0
        async with asyncio.timeout(60):
            while received < total:
                received += len((await p.client.recv_message()).payload)
        assert received == total
        await asyncio.wait_for(flooding, WAIT_S)


async def test_a_tunnel_stalled_by_a_client_that_does_not_read_still_drains_in_time() -> None:
    """The client reads nothing, so the upstream's bytes are held back; drain must still close
    the upstream cleanly (its answer to the close is read) and cut the client at the bound."""
    size = 256 * 1024
    async with tunnel_pair(replace(LIMITS, close_timeout_s=0.5), rcvbuf=64 * 1024) as p:
        frame = encode_frame(OP_BINARY, b"f" * size, mask=False)

        async def flood() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    p.upstream.writer.write(frame)
                    await p.upstream.writer.drain()
                    p.upstream.sent += size

        flooding = asyncio.create_task(flood())
        await eventually(lambda: p.tunnel.client.paused is False and p.upstream.sent > 0)
        await eventually(lambda: p.tunnel.upstream.paused)  # backpressure holds the app back
        drain = asyncio.create_task(p.hub.close_all(1001, "gateway shutting down"))
        closed = await asyncio.wait_for(p.upstream.recv_close(), WAIT_S)
        assert closed.close_code == 1001
        await asyncio.wait_for(drain, WAIT_S)
        assert p.hub.open_count == 0
        end = await p.end()
        assert (end.closed_by, end.code) == ("gateway", 1001)
        assert p.tunnel.upstream.got_close  # its answer was read, though reading was paused
        flooding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flooding


# ── the same on uvloop, the loop the gateway runs on (its transports are its own) ──────────
ON_UVLOOP = {
    name: case
    for name, case in list(globals().items())
    if name.startswith("test_") and asyncio.iscoroutinefunction(case)
}


@pytest.mark.parametrize("name", ON_UVLOOP)
def test_on_uvloop(name: str) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(ON_UVLOOP[name]())
