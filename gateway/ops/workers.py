"""A worker process's place among its siblings (``GATEWAY_WORKERS`` > 1).

Scrapes of ``/metrics`` land on whichever worker the kernel hands the connection to, so each
worker also serves its own exposition on a Unix socket in a directory the supervisor made; the
worker that takes the scrape reads its siblings' there and answers with the sum. A sibling that
does not answer within ``PEER_TIMEOUT_S`` (dead, being restarted) is left out of that scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.ops.metrics import CONTENT_TYPE
from gateway.ops.metrics_merge import merge_expositions

PEER_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class WorkerSlot:
    index: int
    count: int
    directory: Path
    """Private to this gateway's workers (the supervisor creates it mode 0700)."""

    def socket_path(self, index: int) -> Path:
        return self.directory / f"metrics-{index}.sock"


async def serve_own_metrics(slot: WorkerSlot, render: Callable[[], bytes]) -> asyncio.Server:
    """Answer every connection on this worker's socket with its exposition, then close."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(render())
            await writer.drain()
        finally:
            writer.close()

    path = slot.socket_path(slot.index)
    # A worker that died left its socket behind; its replacement takes the same slot.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return await asyncio.start_unix_server(answer, path=str(path))


async def gather_metrics(slot: WorkerSlot, render: Callable[[], bytes]) -> bytes:
    """The sum of every worker's metrics that answers in time, this one's included."""
    others = [i for i in range(slot.count) if i != slot.index]
    answers = await asyncio.gather(*(_read_peer(slot.socket_path(i)) for i in others))
    texts = {slot.index: render().decode()}
    texts.update({i: text for i, text in zip(others, answers, strict=True) if text is not None})
    return merge_expositions(texts)


async def _read_peer(path: Path) -> str | None:
    try:
        async with asyncio.timeout(PEER_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                return (await reader.read()).decode()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None


def metrics_endpoint(
    render: Callable[[], bytes], worker: WorkerSlot | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``/metrics``: this process's metrics, or with ``GATEWAY_WORKERS`` > 1 all workers' sum."""

    async def serve_metrics(request: web.Request) -> web.Response:
        body = render() if worker is None else await gather_metrics(worker, render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return serve_metrics


async def join_workers(
    stack: contextlib.AsyncExitStack, worker: WorkerSlot | None, render: Callable[[], bytes]
) -> None:
    """A worker serves its own metrics to the sibling that takes a scrape, until ``stack``
    closes."""
    if worker is None:
        return
    server = await serve_own_metrics(worker, render)
    stack.callback(server.close)
