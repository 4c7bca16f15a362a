"""Messages through the relay: text, binary, fragmented and large messages both ways, the size
cap (1009), and backpressure from a client that does not read (proxy-anchors L14, L16)."""

from __future__ import annotations

import asyncio
import hashlib
import os

import aiohttp

from tests.helpers.gateway import Gateway, run_gateway
from tests.helpers.polling import WAIT_S, eventually
from tests.helpers.ws_client import connect, receive, receive_close
from tests.helpers.ws_raw import OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWebSocket
from tests.helpers.ws_upstreams import WsUpstream

MiB = 1024 * 1024


async def test_text_and_binary_keep_their_type_both_ways(
    gateway: Gateway, wsup: WsUpstream
) -> None:
    host = await gateway.public_preview(wsup.port)
    async with connect(gateway, host) as ws:
        await ws.send_str("héllo ✓")
        msg = await receive(ws)
        assert msg.type is aiohttp.WSMsgType.TEXT and msg.data == "héllo ✓"
        blob = bytes(range(256)) * 4
        await ws.send_bytes(blob)
        msg = await receive(ws)
        assert msg.type is aiohttp.WSMsgType.BINARY and msg.data == blob
        await ws.send_str("")
        msg = await receive(ws)
        assert msg.type is aiohttp.WSMsgType.TEXT and msg.data == ""


async def test_fragmented_messages_with_a_ping_in_between(
    gateway: Gateway, wsup: WsUpstream
) -> None:
    host = await gateway.public_preview(wsup.port)
    raw = await RawWebSocket.connect(gateway.edge_port, host, "/echo")
    try:
        assert raw.status == 101
        async with asyncio.timeout(WAIT_S):
            # A text message in three fragments, split inside a multi-byte character, with a
            # ping between fragments (control frames may interleave, RFC 6455 §5.4).
            text = "fragmented ✓ message".encode()
            await raw.send_frame(OP_TEXT, text[:12], fin=False)
            await raw.send_frame(OP_PING, b"between")
            await raw.send_frame(OP_CONT, text[12:13], fin=False)
            await raw.send_frame(OP_CONT, text[13:], fin=True)
            pong = await raw.recv_frame()
            assert (pong.opcode, pong.payload) == (OP_PONG, b"between")
            echoed = await raw.recv_message()
            assert (echoed.opcode, echoed.payload) == (OP_TEXT, text)

            blob = os.urandom(200_000)
            for i in range(0, len(blob), 70_000):
                first, last = i == 0, i + 70_000 >= len(blob)
                await raw.send_frame(
                    OP_BINARY if first else OP_CONT, blob[i : i + 70_000], fin=last
                )
            echoed = await raw.recv_message()
            assert echoed.opcode == OP_BINARY and echoed.payload == blob
    finally:
        await raw.aclose()


async def test_large_messages_both_ways(gateway: Gateway, wsup: WsUpstream) -> None:
    host = await gateway.public_preview(wsup.port)
    async with connect(gateway, host, max_msg_size=64 * MiB) as ws:
        blob = os.urandom(12 * MiB)
        await ws.send_bytes(blob)
        msg = await receive(ws)
        assert hashlib.sha256(msg.data).digest() == hashlib.sha256(blob).digest()
        text = "ü" * (3 * MiB)  # 6 MiB of UTF-8
        await ws.send_str(text)
        msg = await receive(ws)
        assert msg.type is aiohttp.WSMsgType.TEXT and msg.data == text
        await ws.send_str(f"big:{15 * MiB}")
        msg = await receive(ws)
        assert msg.type is aiohttp.WSMsgType.BINARY and len(msg.data) == 15 * MiB


async def test_a_client_message_over_the_cap_closes_both_sides_with_1009(
    wsup: WsUpstream,
) -> None:
    async with run_gateway(ws_max_message_bytes=64 * 1024) as gw:
        host = await gw.public_preview(wsup.port)
        async with connect(gw, host) as ws:
            await ws.send_bytes(b"a" * 60_000)  # under the cap: relayed
            assert len((await receive(ws)).data) == 60_000
            await ws.send_bytes(b"a" * 70_000)
            msg = await receive_close(ws)
            assert msg.data == 1009
        closed = await wsup.next_close()
        assert closed.code == 1009


async def test_an_upstream_message_over_the_cap_closes_both_sides_with_1009(
    wsup: WsUpstream,
) -> None:
    async with run_gateway(ws_max_message_bytes=64 * 1024) as gw:
        host = await gw.public_preview(wsup.port)
        async with connect(gw, host) as ws:
            await ws.send_str("big:70000")
            msg = await receive_close(ws)
            assert msg.data == 1009
            assert msg.extra == "message too big"
        closed = await wsup.next_close()
        assert closed.code == 1009


async def test_a_client_that_does_not_read_slows_the_upstream_down(wsup: WsUpstream) -> None:
    """The app pours 256 MiB at a client that reads nothing. The gateway must stop taking
    data from the app once the client's socket is full, instead of buffering it: the app's
    writes stall after a bounded amount, and the gateway holds about one message."""
    total = 256 * MiB
    async with run_gateway() as gw:
        host = await gw.public_preview(wsup.port)
        hub = gw.running.hub if gw.running else None
        assert hub is not None
        raw = await RawWebSocket.connect(
            gw.edge_port, host, f"/flood?total={total}&size={256 * 1024}", rcvbuf=64 * 1024
        )
        try:
            assert raw.status == 101

            # Wait until the app's writes have stopped making progress (upper-bounded wait).
            previous, still = -1, 0
            async with asyncio.timeout(30):
                while still < 10:
                    await asyncio.sleep(0.05)
                    still = still + 1 if wsup.sent == previous else 0
                    previous = wsup.sent
            # What left the app but did not reach the client sits in socket buffers and in the
            # gateway. Without backpressure the gateway would have read all 256 MiB.
            assert wsup.sent < 64 * MiB, wsup.sent
            assert hub.buffered_bytes() < 2 * MiB, hub.buffered_bytes()

            # Then the client reads, and every byte arrives.
            received = 0
            async with asyncio.timeout(60):
                while received < total:
                    frame = await raw.recv_message()
                    assert frame.opcode == OP_BINARY
                    received += len(frame.payload)
            assert received == total
        finally:
            raw.reset()
        await eventually(lambda: hub.open_count == 0)
