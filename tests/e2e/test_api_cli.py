"""``python -m gateway api ...`` end to end: the operators' CLI as a process, against the
gateway as a process. Tables for people, ``--json`` for scripts, the API's messages on errors,
and what it creates really routes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.helpers.gateway import OTHER_KEY, ROOT, host_of
from tests.helpers.process import GatewayProcess

pytestmark = pytest.mark.e2e

SpawnGateway = Callable[..., GatewayProcess]


class Cli:
    def __init__(self, gp: GatewayProcess) -> None:
        self.gp = gp
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        self.env |= {
            "GATEWAY_API_URL": f"http://127.0.0.1:{gp.api_port}",
            "GATEWAY_API_KEY": gp.key,
        }

    async def run(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "api",
            *args,
            cwd=ROOT,
            env=env if env is not None else self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def ok(self, *args: str) -> str:
        code, out, err = await self.run(*args)
        assert code == 0, err
        return out

    async def json(self, *args: str) -> Any:
        return json.loads(await self.ok("--json", *args))


def rows(table: str) -> list[list[str]]:
    """A printed table as rows of cells (the header row first)."""
    return [line.split() for line in table.strip().splitlines()]


async def edge_status(gp: GatewayProcess, host: str, **headers: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{gp.edge_port}/", headers={"Host": host, **headers}) as r,
    ):
        return r.status


async def test_operator_flow(gateway_process: SpawnGateway, upstream: int) -> None:
    gp = gateway_process()
    cli = Cli(gp)

    out = await cli.ok("sandboxes", "create", "sb", "--host", "127.0.0.1", "--label", "team=a")
    assert rows(out)[0] == ["NAME", "TARGET", "STATUS", "STATE", "EXPIRES", "CREATED"]
    assert rows(out)[1][:5] == ["sb", "127.0.0.1", "DEPLOYED", "running", "-"]
    out = await cli.ok("sandboxes", "state", "sb", "standby")
    assert rows(out)[1][:4] == ["sb", "127.0.0.1", "DEPLOYED", "standby"]
    out = await cli.ok("sandboxes", "state", "sb", "running")
    assert rows(out)[1][3] == "running"
    vm = await cli.json(
        "sandboxes", "create", "vm", "--host", "127.0.0.1",
        "--wake-url", "http://127.0.0.1:9/wake", "--wake-timeout", "5",
    )  # fmt: skip
    assert vm["spec"]["lifecycle"] == {"wakeUrl": "http://127.0.0.1:9/wake", "wakeTimeoutS": 5}
    await cli.ok("sandboxes", "delete", "vm")
    out = await cli.ok("previews", "create", "sb", "web", "--port", str(upstream), "--public")
    name, port, public, url, expires = rows(out)[1]
    assert (name, port, public, expires) == ("web", str(upstream), "true", "-")
    assert await edge_status(gp, host_of({"spec": {"url": url}})) == 200

    private = await cli.json(
        "previews", "create", "sb", "priv", "--port", str(upstream), "--ttl", "1h",
        "--response-header", "Access-Control-Allow-Origin=*",
    )  # fmt: skip
    assert private["metadata"]["resourceName"] == "sb" and private["spec"]["public"] is False
    assert private["spec"]["ttl"] == "1h"
    assert private["spec"]["responseHeaders"] == {"Access-Control-Allow-Origin": "*"}
    host = host_of(private)
    assert await edge_status(gp, host) == 401

    out = await cli.ok("tokens", "create", "sb", "priv", "--ttl", "2h")
    assert rows(out)[0] == ["NAME", "EXPIRES", "AT", "EXPIRED"]
    token_name = rows(out)[1][0]
    value = out.strip().splitlines()[-1].removeprefix("token: ")
    assert await edge_status(gp, host, **{"X-Blaxel-Preview-Token": value}) == 200
    listed = await cli.json("tokens", "list", "sb", "priv")
    assert [(t["metadata"]["name"], t["spec"]["expired"]) for t in listed] == [(token_name, False)]
    assert await cli.ok("tokens", "delete", "sb", "priv", token_name) == (
        "Preview token deleted successfully\n"
    )
    assert await edge_status(gp, host, **{"X-Blaxel-Preview-Token": value}) == 401
    assert await cli.ok("tokens", "list", "sb", "priv") == "no tokens\n"

    assert [r[0] for r in rows(await cli.ok("previews", "list", "sb"))] == ["NAME", "priv", "web"]
    assert [s["metadata"]["name"] for s in await cli.json("sandboxes", "list")] == ["sb"]
    assert (await cli.json("previews", "get", "sb", "web"))["spec"]["url"] == url
    out = await cli.ok("previews", "delete", "sb", "web")
    assert rows(out)[1][0] == "web"
    assert await edge_status(gp, host_of({"spec": {"url": url}})) == 404

    out = await cli.ok("sandboxes", "delete", "sb")
    assert rows(out)[1][:3] == ["sb", "127.0.0.1", "TERMINATED"]
    assert await edge_status(gp, host) == 404  # its previews went with it
    assert await cli.ok("sandboxes", "list") == "no sandboxes\n"
    assert await cli.json("sandboxes", "list") == []


async def test_errors_are_the_apis_messages(gateway_process: SpawnGateway) -> None:
    gp = gateway_process()
    cli = Cli(gp)
    await cli.ok("sandboxes", "create", "sb", "--host", "127.0.0.1")

    code, out, err = await cli.run("sandboxes", "create", "sb", "--host", "127.0.0.1")
    assert (code, out) == (1, "")
    assert err == "error: Sandbox sb already exists (HTTP 409)\n"
    code, _, err = await cli.run("previews", "create", "sb", "web", "--port", "80")
    assert code == 1 and "spec.port" in err and "HTTP 400" in err
    code, _, err = await cli.run("--json", "previews", "get", "sb", "nope")
    assert code == 1
    assert json.loads(err) == {
        "error": "Preview nope not found",
        "code": 404,
        "message": "Preview nope not found",
    }
    # Another workspace's key sees nothing (and --key overrides GATEWAY_API_KEY).
    code, _, err = await cli.run("--key", OTHER_KEY, "sandboxes", "get", "sb")
    assert code == 1 and "HTTP 404" in err
    assert await cli.json("--key", OTHER_KEY, "sandboxes", "list") == []

    code, _, err = await cli.run("--key", "wrong-key-0000000000000", "sandboxes", "list")
    assert code == 1 and "HTTP 401" in err
    no_key = {k: v for k, v in cli.env.items() if k != "GATEWAY_API_KEY"}
    code, _, err = await cli.run("sandboxes", "list", env=no_key)
    assert code == 2 and "API key is required" in err
    # --url overrides GATEWAY_API_URL; nothing listens on port 9 of loopback.
    code, _, err = await cli.run("--url", "http://127.0.0.1:9", "sandboxes", "list")
    assert code == 2 and "cannot reach http://127.0.0.1:9/v0" in err
    code, _, err = await cli.run("previews", "create", "sb", "web")
    assert code == 2 and "--port" in err  # argparse's own usage error
