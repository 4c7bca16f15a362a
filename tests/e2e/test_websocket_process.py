"""The WebSocket relay in the real gateway process: no file descriptor survives 1,000 sockets
opened and killed (half by TCP reset), and SIGTERM closes every socket with 1001 and exits
within the grace period (threat model W10, G01; proxy-anchors L12, L24)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable

import aiohttp
import pytest

from tests.helpers.polling import WAIT_S, eventually
from tests.helpers.process import GatewayProcess
from tests.helpers.ws_raw import RawWebSocket
from tests.helpers.ws_upstreams import WsUpstream

pytestmark = pytest.mark.e2e

SpawnGateway = Callable[..., GatewayProcess]


async def public_preview(gp: GatewayProcess, port: int) -> str:
    async with gp.client() as gw:
        return await gw.public_preview(port)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_a_thousand_killed_sockets_leave_no_file_descriptor_behind(
    gateway_process: SpawnGateway, wsup: WsUpstream
) -> None:
    gp = gateway_process(env={"GATEWAY_ACCESS_LOG": "false"})
    pid = gp.proc.pid
    host = await public_preview(gp, wsup.port)

    # Warm up, so lazily opened descriptors (resolver, pools) are part of the baseline.
    warm = await RawWebSocket.connect(gp.edge_port, host, "/echo")
    await warm.send_close(1000)
    async with asyncio.timeout(WAIT_S):
        await warm.recv_close(reply=False)
    await warm.aclose()
    await eventually(lambda: wsup.open == 0)
    baseline = open_fds(pid)

    batch = 100
    for _ in range(10):
        raws = await asyncio.gather(
            *(RawWebSocket.connect(gp.edge_port, host, "/echo") for _ in range(batch))
        )
        assert all(raw.status == 101 for raw in raws)
        await eventually(lambda: wsup.open == batch)
        # Each socket holds two descriptors in the gateway: client and upstream.
        assert open_fds(pid) >= baseline + 2 * batch
        for i, raw in enumerate(raws):
            if i % 2:
                raw.reset()  # abrupt: a TCP RST, no close frame
            else:
                await raw.send_close(1000, "bye")
        async with asyncio.timeout(WAIT_S):
            for raw in raws[::2]:
                assert (await raw.recv_close(reply=False)).close_code == 1000
                await raw.aclose()
        # Every upstream connection was closed by the gateway, whichever way the client went.
        await eventually(lambda: wsup.open == 0)

    await eventually(lambda: open_fds(pid) <= baseline, timeout=20)
    assert wsup.connections == 1 + 10 * batch
    assert gp.proc.poll() is None


async def test_sigterm_closes_every_socket_with_1001_and_exits_within_the_grace(
    gateway_process: SpawnGateway, wsup: WsUpstream
) -> None:
    grace_s = 8
    gp = gateway_process(env={"GATEWAY_SHUTDOWN_GRACE_S": str(grace_s)})
    host = await public_preview(gp, wsup.port)
    async with aiohttp.ClientSession() as http:
        polite = [
            await http.ws_connect(f"http://127.0.0.1:{gp.edge_port}/echo", headers={"Host": host})
            for _ in range(3)
        ]
        # And one client that never reads and never answers a close.
        stubborn = await RawWebSocket.connect(gp.edge_port, host, "/echo")
        assert stubborn.status == 101
        await eventually(lambda: wsup.open == 4)

        gp.proc.send_signal(signal.SIGTERM)
        for ws in polite:
            async with asyncio.timeout(WAIT_S):
                msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.CLOSE
            assert (msg.data, msg.extra) == (1001, "gateway shutting down")
            await ws.close()

        # The listener closed before the sockets were: no new connection is accepted.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", gp.edge_port), timeout=2).close()

        closes = [await wsup.next_close() for _ in range(4)]
        assert {(c.code, c.reason) for c in closes} == {(1001, "gateway shutting down")}

        # The stubborn client holds nothing up: the process exits, cleanly, within its grace.
        returncode = await asyncio.to_thread(gp.proc.wait, grace_s)
        assert returncode == 0, gp.output()
        with contextlib.suppress(OSError):
            stubborn.writer.transport.abort()
