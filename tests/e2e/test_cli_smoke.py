"""The real thing: ``python -m gateway`` as a process (uvloop, settings from the environment),
driven by curl and aiohttp; the quick-start demo; SIGTERM; and the dependency floors the threat
model pins (§2, VER-1 and VER-2)."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.http_parser
import pytest

from tests.helpers.gateway import host_of
from tests.helpers.process import GatewayProcess

pytestmark = pytest.mark.e2e

SpawnGateway = Callable[..., GatewayProcess]
BOUND_S = 20.0


async def curl(*args: str) -> tuple[int, bytes, bytes]:
    binary = shutil.which("curl")
    assert binary is not None, "curl is required (apt-get install -y curl)"
    proc = await asyncio.create_subprocess_exec(
        binary,
        "--silent",
        "--show-error",
        "--max-time",
        "15",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(BOUND_S):
        stdout, stderr = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, stdout, stderr


async def api(
    gp: GatewayProcess, method: str, path: str, key: str | None = None, **kwargs: Any
) -> tuple[int, Any]:
    async with gp.client() as gw:
        return await gw.call(method, path, key=key, **kwargs)


async def test_register_and_fetch_through_the_process(
    gateway_process: SpawnGateway, upstream: int, tmp_path: Path
) -> None:
    gp = gateway_process()
    status, body = await api(
        gp,
        "POST",
        "/sandboxes",
        json={"metadata": {"name": "sb"}, "spec": {"target": {"host": "127.0.0.1"}}},
    )
    assert status == 200, body
    status, body = await api(
        gp,
        "POST",
        "/sandboxes/sb/previews",
        json={"metadata": {"name": "web"}, "spec": {"port": upstream, "public": True}},
    )
    assert status == 200, body
    host = host_of(body)
    url = body["spec"]["url"]
    assert url == f"http://{host}:{gp.edge_port}/"

    # curl resolving the preview name to loopback, as DNS would.
    code, out, err = await curl(
        "--resolve", f"{host}:{gp.edge_port}:127.0.0.1", f"{url}hello?x=1", "-H", "X-Test: 1"
    )
    assert code == 0, err
    seen = json.loads(out)
    headers = dict(seen["headers"])
    assert seen["raw_path"] == "/hello?x=1"
    assert headers["Host"] == f"{host}:{gp.edge_port}"
    assert headers["X-Test"] == "1" and headers["User-Agent"].startswith("curl/")
    assert headers["X-Forwarded-For"] == "127.0.0.1"

    # curl with the Host header set by hand.
    code, out, err = await curl("-H", f"Host: {host}", f"http://127.0.0.1:{gp.edge_port}/p")
    assert code == 0, err
    assert json.loads(out)["raw_path"] == "/p"

    # An upload big enough that curl sends Expect: 100-continue, told to wait for the 100 far
    # longer than --max-time: it completes only because the gateway answers the 100.
    payload = bytes(range(256)) * 8192
    upload = tmp_path / "upload.bin"
    upload.write_bytes(payload)
    code, out, err = await curl(
        "--expect100-timeout",
        "60",
        "-H",
        f"Host: {host}",
        "--data-binary",
        f"@{upload}",
        f"http://127.0.0.1:{gp.edge_port}/upload",
    )
    assert code == 0, err
    seen = json.loads(out)
    assert seen["body_sha256"] == hashlib.sha256(payload).hexdigest()

    # Unknown host and a malformed one, through curl.
    for bad_host, status in (("nope.local.preview.localhost", b"404"), ("a@b", b"400")):
        code, out, _ = await curl(
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            "-H",
            f"Host: {bad_host}",
            f"http://127.0.0.1:{gp.edge_port}/",
        )
        assert (code, out) == (0, status), bad_host

    # aiohttp's client.
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{gp.edge_port}/aio", headers={"Host": host}) as response,
    ):
        assert response.status == 200
        assert (await response.json())["raw_path"] == "/aio"

    assert gp.terminate() == 0
    log = gp.output()
    assert "Traceback" not in log
    assert '"path":"/hello"' in log and "x=1" not in log, "access log without query strings"


async def test_demo_prints_a_url_curl_can_open_and_a_key(
    gateway_process: SpawnGateway,
) -> None:
    gp = gateway_process("--demo", env={"GATEWAY_API_KEYS": ""})
    async with asyncio.timeout(BOUND_S):
        while "Demo preview:" not in gp.output():
            await asyncio.sleep(0.05)
    output = gp.output()
    url_match = re.search(r"Demo preview:\s+(http://\S+)", output)
    key_match = re.search(r"api key:\s+(\S+)", output)
    assert url_match is not None and key_match is not None, output
    url, key = url_match.group(1), key_match.group(1)
    assert re.fullmatch(rf"http://[a-z0-9]{{22}}\.local\.preview\.localhost:{gp.edge_port}/", url)

    # curl maps *.localhost to loopback by itself: no --resolve, no Host header.
    code, out, err = await curl(url)
    assert code == 0, err
    assert b"It works." in out

    status, sandboxes = await api(gp, "GET", "/sandboxes", key=key)
    assert status == 200
    assert [s["metadata"]["name"] for s in sandboxes] == ["demo"]
    status, _ = await api(gp, "GET", "/sandboxes", key="pgw_not-the-key")
    assert status == 401

    assert gp.terminate() == 0


def _version(package: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", importlib.metadata.version(package))[:3])


@pytest.mark.parametrize(
    ("package", "floor"),
    [("aiohttp", (3, 14, 3)), ("pyjwt", (2, 13, 0)), ("redis", (4, 5, 4))],
)
def test_dependency_floors(package: str, floor: tuple[int, ...]) -> None:
    """Every advisory the threat model lists is fixed at these versions (§2, VER-1)."""
    assert _version(package) >= floor


def test_aiohttp_uses_its_c_parser() -> None:
    """Most aiohttp smuggling advisories lived in the pure-Python parser, which still accepts a
    Content-Length in a chunked trailer (threat model VER-2, S06)."""
    assert aiohttp.http_parser.HttpRequestParser is aiohttp.http_parser.HttpRequestParserC
    assert aiohttp.http_parser.HttpResponseParser is aiohttp.http_parser.HttpResponseParserC
