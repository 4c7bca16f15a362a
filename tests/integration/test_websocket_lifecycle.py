"""How relayed sockets end: close codes both ways (W08), reserved codes never on the wire, the
other side closed whenever one side ends (W10), pings (W04), the idle timeout and the lifetime
cap (W05), and no relay, task or upstream connection left behind (design decision 6; L12-L15)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib

import aiohttp
import pytest

from gateway.core.ws_close import wire_close_code, wire_reason
from tests.helpers.gateway import Gateway, run_gateway
from tests.helpers.polling import WAIT_S, eventually
from tests.helpers.ws_client import connect, receive, receive_close
from tests.helpers.ws_raw import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawWebSocket
from tests.helpers.ws_upstreams import WsUpstream


# ── close codes ─────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("code", [1000, 1001, 1008, 1011, 3000, 4000, 4404, 4999])
async def test_the_upstreams_close_code_and_reason_reach_the_client(
    gateway: Gateway, wsup: WsUpstream, code: int
) -> None:
    host = await gateway.public_preview(wsup.port)
    async with connect(gateway, host) as ws:
        await ws.send_str(f"close:{code}:bye ✓")
        msg = await receive_close(ws)
        assert (msg.data, msg.extra) == (code, "bye ✓")


@pytest.mark.parametrize("code", [1000, 1001, 3001, 4000, 4999])
async def test_the_clients_close_code_and_reason_reach_the_upstream(
    gateway: Gateway, wsup: WsUpstream, code: int
) -> None:
    host = await gateway.public_preview(wsup.port)
    async with connect(gateway, host) as ws:
        await ws.close(code=code, message=b"done")
        # The gateway answers the close with the client's own code.
        assert ws.close_code == code
    closed = await wsup.next_close()
    assert (closed.code, closed.reason) == (code, "done")


async def test_a_close_without_status_reaches_the_upstream_as_1000(
    gateway: Gateway, wsup: WsUpstream
) -> None:
    host = await gateway.public_preview(wsup.port)
    raw = await RawWebSocket.connect(gateway.edge_port, host, "/echo")
    try:
        await raw.send_close(None)  # an empty close frame: "1005, no status received"
        async with asyncio.timeout(WAIT_S):
            reply = await raw.recv_close()
        # 1005 may never be sent in a frame: both sides get 1000 instead.
        assert reply.close_code == 1000
    finally:
        await raw.aclose()
    closed = await wsup.next_close()
    assert closed.code == 1000


async def test_an_upstream_that_vanishes_gives_the_client_1011_never_1006(
    gateway: Gateway, wsup: WsUpstream
) -> None:
    host = await gateway.public_preview(wsup.port)
    raw = await RawWebSocket.connect(gateway.edge_port, host, "/echo")
    try:
        await raw.send_text("drop")  # the app's TCP connection is cut, with no close frame
        async with asyncio.timeout(WAIT_S):
            frame = await raw.recv_close()
        assert frame.opcode == OP_CLOSE
        assert frame.close_code == 1011
        assert await raw.at_eof()  # and the gateway then closes the connection
    finally:
        await raw.aclose()


async def test_a_client_that_vanishes_gets_its_upstream_closed(
    gateway: Gateway, wsup: WsUpstream
) -> None:
    host = await gateway.public_preview(wsup.port)
    raw = await RawWebSocket.connect(gateway.edge_port, host, "/echo")
    await raw.send_text("ping?")
    async with asyncio.timeout(WAIT_S):
        assert (await raw.recv_message()).payload == b"ping?"
    raw.reset()  # TCP RST: no close frame, no FIN
    closed = await wsup.next_close()
    # The upstream gets a proper close frame (1006 mapped to 1011), not a dangling socket.
    assert closed.code == 1011
    hub = gateway.running.hub if gateway.running else None
    assert hub is not None
    await eventually(lambda: hub.open_count == 0)


# ── pings ───────────────────────────────────────────────────────────────────────────────────
async def test_the_upstreams_pings_are_answered_with_their_payload(
    gateway: Gateway, wsup: WsUpstream
) -> None:
    """webpack-dev-server pings every second and terminates a socket whose pong is lost."""
    host = await gateway.public_preview(wsup.port)
    async with connect(gateway, host, "/pinger?count=5") as ws:
        msg = await receive(ws)
        assert msg.data == "pongs:p0,p1,p2,p3,p4"


async def test_the_clients_pings_are_answered_with_their_payload(
    gateway: Gateway, wsup: WsUpstream
) -> None:
    host = await gateway.public_preview(wsup.port)
    raw = await RawWebSocket.connect(gateway.edge_port, host, "/echo")
    try:
        async with asyncio.timeout(WAIT_S):
            for payload in (b"", b"one", b"x" * 125):
                await raw.send_frame(OP_PING, payload)
                frame = await raw.recv_frame()
                assert (frame.opcode, frame.payload) == (OP_PONG, payload)
    finally:
        await raw.aclose()


async def test_a_client_that_stops_answering_pings_is_closed_and_so_is_its_upstream(
    wsup: WsUpstream,
) -> None:
    async with run_gateway(ws_ping_interval_s=0.2) as gw:
        host = await gw.public_preview(wsup.port)
        raw = await RawWebSocket.connect(gw.edge_port, host, "/echo")
        try:
            # Read without ever answering a ping, as a frozen or unplugged client would.
            async with asyncio.timeout(WAIT_S):
                while True:
                    frame = await raw.recv_frame()
                    if frame.opcode == OP_PING:
                        break
            assert await asyncio.wait_for(raw.at_eof(), WAIT_S)
        finally:
            await raw.aclose()
        closed = await wsup.next_close()
        assert closed.code == 1011
        assert closed.reason == "client did not answer ping"


async def test_an_upstream_that_stops_answering_pings_is_closed_and_so_is_its_client() -> None:
    """The app side: a raw TCP server that completes the handshake, then never answers."""
    accepted = asyncio.Event()

    async def frozen_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()  # noqa: S324
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        accepted.set()
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):  # reads the pings, answers nothing
                pass
        writer.close()

    server = await asyncio.start_server(frozen_app, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with run_gateway(ws_ping_interval_s=0.2) as gw:
            host = await gw.public_preview(port)
            async with connect(gw, host, "/") as ws:
                assert accepted.is_set()
                msg = await receive_close(ws)  # answers the gateway's pings (aiohttp autoping)
                assert msg.data == 1011
                assert msg.extra == "upstream did not answer ping"
    finally:
        server.close()
        await server.wait_closed()


# ── idle timeout and lifetime cap ───────────────────────────────────────────────────────────
async def test_an_idle_socket_is_closed_with_1001_and_pings_do_not_keep_it_alive(
    wsup: WsUpstream,
) -> None:
    # Pings every 0.05 s, idle limit 0.5 s: if pings or pongs counted as activity, the socket
    # would never go idle and the wait below would fail at its bound.
    async with run_gateway(ws_ping_interval_s=0.05, ws_idle_timeout_s=0.5) as gw:
        host = await gw.public_preview(wsup.port)
        raw = await RawWebSocket.connect(gw.edge_port, host, "/echo")
        try:
            async with asyncio.timeout(WAIT_S):
                frame = await raw.recv_close()  # answers every ping on the way
            assert (frame.close_code, frame.close_reason) == (1001, "idle timeout")
            assert len(raw.pings_seen) >= 3
        finally:
            await raw.aclose()
        closed = await wsup.next_close()
        assert (closed.code, closed.reason) == (1001, "idle timeout")


async def test_upstream_data_alone_keeps_a_socket_from_going_idle(wsup: WsUpstream) -> None:
    # The app sends 12 ticks 0.08 s apart (~1 s) and the client says nothing: with an idle
    # limit of 0.4 s, traffic in the app's direction alone must keep the socket open.
    async with run_gateway(ws_idle_timeout_s=0.4) as gw:
        host = await gw.public_preview(wsup.port)
        async with connect(gw, host, "/ticker?n=12&gap=0.08") as ws:
            ticks = []
            async with asyncio.timeout(WAIT_S):
                while True:
                    msg = await ws.receive()
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        break
                    ticks.append(msg.data)
            assert ticks == [f"tick {i}" for i in range(12)]
            assert (msg.data, msg.extra) == (1001, "idle timeout")


async def test_client_data_alone_keeps_a_socket_from_going_idle(wsup: WsUpstream) -> None:
    async with run_gateway(ws_idle_timeout_s=0.4) as gw:
        host = await gw.public_preview(wsup.port)
        raw = await RawWebSocket.connect(gw.edge_port, host, "/ticker?n=0")
        try:
            for i in range(12):  # ~1 s of client-only traffic, 0.08 s apart
                await raw.send_text(f"keepalive {i}")
                await asyncio.sleep(0.08)
            # Still open: the gateway still relays, and the app still answers pings for it.
            await raw.send_frame(OP_PING, b"still there?")
            async with asyncio.timeout(WAIT_S):
                frame = await raw.recv_frame()
            assert (frame.opcode, frame.payload) == (OP_PONG, b"still there?")
            async with asyncio.timeout(WAIT_S):
                frame = await raw.recv_close()
            assert (frame.close_code, frame.close_reason) == (1001, "idle timeout")
        finally:
            await raw.aclose()


async def test_the_lifetime_cap_closes_a_busy_socket_with_1001(wsup: WsUpstream) -> None:
    # Ticks every 0.02 s keep the socket busy well past the 0.5 s cap.
    async with run_gateway(ws_max_lifetime_s=0.5, ws_idle_timeout_s=0) as gw:
        host = await gw.public_preview(wsup.port)
        async with connect(gw, host, "/ticker?n=100000&gap=0.02") as ws:
            ticks = 0
            async with asyncio.timeout(WAIT_S):
                while (msg := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
                    ticks += 1
            assert (msg.data, msg.extra) == (1001, "maximum lifetime reached")
            assert ticks > 1
        closed = await wsup.next_close()
        assert (closed.code, closed.reason) == (1001, "maximum lifetime reached")


# ── nothing left behind ─────────────────────────────────────────────────────────────────────
async def test_every_way_of_ending_leaves_no_relay_task_or_upstream_socket(
    gateway: Gateway, wsup: WsUpstream
) -> None:
    host = await gateway.public_preview(wsup.port)
    hub = gateway.running.hub if gateway.running else None
    assert hub is not None
    # Warm up once, so lazily created tasks and pools are part of the baseline.
    async with connect(gateway, host) as ws:
        await ws.send_str("warm")
        await receive(ws)
    await eventually(lambda: hub.open_count == 0 and wsup.open == 0)
    tasks_before = len(asyncio.all_tasks())

    raws = [await RawWebSocket.connect(gateway.edge_port, host, "/echo") for _ in range(40)]
    await eventually(lambda: hub.open_count == 40 and wsup.open == 40)
    for i, raw in enumerate(raws):
        if i % 4 == 0:
            raw.reset()
        elif i % 4 == 1:
            await raw.send_close(4000, "bye")
        elif i % 4 == 2:
            raw.writer.close()  # FIN without a close frame
        else:
            await raw.send_text("drop")  # the app side vanishes
    async with asyncio.timeout(WAIT_S):
        for raw in raws[3::4]:
            assert (await raw.recv_close()).close_code == 1011
    await eventually(lambda: hub.open_count == 0 and wsup.open == 0)
    await eventually(lambda: len(asyncio.all_tasks()) <= tasks_before)
    for raw in raws:
        raw.writer.transport.abort()
    assert wsup.connections == 41


async def test_a_text_frame_with_invalid_utf8_closes_both_sides_with_1007(
    gateway: Gateway, wsup: WsUpstream
) -> None:
    host = await gateway.public_preview(wsup.port)
    raw = await RawWebSocket.connect(gateway.edge_port, host, "/echo")
    try:
        await raw.send_frame(OP_TEXT, b"\xff\xfe")
        async with asyncio.timeout(WAIT_S):
            frame = await raw.recv_close()
        assert frame.close_code == 1007
    finally:
        await raw.aclose()
    closed = await wsup.next_close()
    assert closed.code == 1007


# ── shutdown ────────────────────────────────────────────────────────────────────────────────
async def test_close_all_sends_1001_both_ways_and_refuses_later_upgrades(wsup: WsUpstream) -> None:
    """What SIGTERM does (the process test covers the signal): also for an upgrade that comes
    in on a kept-alive connection after the listener stopped accepting new ones."""
    async with run_gateway() as gw:
        host = await gw.public_preview(wsup.port)
        hub = gw.running.hub if gw.running else None
        assert hub is not None
        async with connect(gw, host) as ws, asyncio.TaskGroup() as tasks:
            # The client reads meanwhile, so it answers the close as a browser would.
            tasks.create_task(hub.close_all(1001, "gateway shutting down"))
            msg = await receive_close(ws)
            assert (msg.data, msg.extra) == (1001, "gateway shutting down")
        closed = await wsup.next_close()
        assert (closed.code, closed.reason) == (1001, "gateway shutting down")
        assert hub.open_count == 0

        raw = await RawWebSocket.connect(gw.edge_port, host, "/echo")
        try:
            assert raw.status == 503
            assert raw.headers["x-blaxel-error-code"] == "shutting_down"
        finally:
            await raw.aclose()
        assert wsup.connections == 1


@pytest.mark.parametrize(
    ("ended_with", "sent"),
    [
        (None, 1000),
        (0, 1000),  # aiohttp's code for a close frame without a status
        (1005, 1000),
        (1006, 1011),
        (1015, 1011),
        (1004, 1011),
        (999, 1011),
        (2999, 1011),
        (5000, 1011),
        (1000, 1000),
        (1014, 1014),
        (4404, 4404),
    ],
)
def test_codes_that_cannot_go_on_the_wire_are_mapped(ended_with: int | None, sent: int) -> None:
    assert wire_close_code(ended_with) == sent


def test_a_long_reason_is_cut_to_a_close_frame_on_a_character_boundary() -> None:
    raw = wire_reason("é" * 100)  # 200 bytes of UTF-8
    assert len(raw) <= 123
    assert raw.decode() == "é" * 61


async def test_a_peers_own_pings_keep_a_socket_alive(wsup: WsUpstream) -> None:
    # webpack-dev-server keeps a quiet page's socket alive with a ping a second. A peer's own
    # pings are its keepalive (unlike the gateway's heartbeat): ~1 s of pings 0.08 s apart must
    # outlive an idle limit of 0.4 s, and once they stop the socket does go idle.
    async with run_gateway(ws_idle_timeout_s=0.4, ws_ping_interval_s=30) as gw:
        host = await gw.public_preview(wsup.port)
        raw = await RawWebSocket.connect(gw.edge_port, host, "/ticker?n=0")
        try:
            for i in range(12):
                await raw.send_frame(OP_PING, f"keepalive {i}".encode())
                async with asyncio.timeout(WAIT_S):
                    frame = await raw.recv_frame()
                assert (frame.opcode, frame.payload) == (OP_PONG, f"keepalive {i}".encode())
                await asyncio.sleep(0.08)
            async with asyncio.timeout(WAIT_S):
                frame = await raw.recv_close()
            assert (frame.close_code, frame.close_reason) == (1001, "idle timeout")
        finally:
            await raw.aclose()
