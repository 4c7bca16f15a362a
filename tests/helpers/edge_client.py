"""Client-side helpers of the edge tests: GET through the edge, read the echo app's answer,
and recognise a page the gateway wrote.

How the edge tests (``tests/integration/test_edge_*.py``) observe the gateway: where framing or
the exact bytes matter they speak raw HTTP (``tests.helpers.raw_http``); otherwise aiohttp's
client. "The upstream saw nothing" is a request counter on the probe app
(``tests.helpers.probes``); "never dialled" is a TCP listener that counts accepts. No assertion is
about time: waits are bounded only so that a hang fails instead of stalling the suite. The
``probe`` and ``site`` fixtures are in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.helpers.gateway import Gateway
from tests.helpers.raw_http import RawResponse

MIB = 1024 * 1024
BIG = 24 * MIB


def echoed(body: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body)
    data["header_map"] = {}
    for name, value in data["headers"]:
        data["header_map"].setdefault(name.lower(), []).append(value)
    return data


def one(seen: dict[str, Any], name: str) -> str:
    values: list[str] = seen["header_map"].get(name.lower(), [])
    assert len(values) == 1, f"{name}: {values}"
    return values[0]


async def get(
    gw: Gateway, host: str, path: str = "/", **headers: str
) -> tuple[aiohttp.ClientResponse, bytes]:
    async with asyncio.timeout(20):
        async with gw.session.get(
            gw.edge(path), headers={"Host": host, **headers}, allow_redirects=False
        ) as response:
            return response, await response.read()


def assert_gateway_error(response: RawResponse | aiohttp.ClientResponse, code: str) -> None:
    """A page the gateway wrote: its code and source headers, and no stack in ``Server``."""
    if isinstance(response, RawResponse):
        values = [response.header(n) for n in ("X-Blaxel-Error-Code", "X-Blaxel-Source", "Server")]
    else:
        values = [
            response.headers.get(n) for n in ("X-Blaxel-Error-Code", "X-Blaxel-Source", "Server")
        ]
    error_code, source, server = values
    assert error_code == code
    assert source == "gateway"
    assert server is None or "aiohttp" not in server.lower(), "the gateway announces its stack"


NO_LEAK = (b"Traceback", b"aiohttp", b"Python/", b'File "')
