"""Every log line the gateway process writes during token traffic is free of credentials
(threat model L03, A07): no preview token, token cookie or API key, in any form."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp

from tests.helpers.gateway import TEST_KEY
from tests.helpers.polling import WAIT_S


async def test_no_credential_reaches_any_log_line(gateway_process: Any, upstream: int) -> None:
    gp = gateway_process(env={"GATEWAY_LOG_LEVEL": "debug"})
    api = f"http://127.0.0.1:{gp.api_port}/v0"
    auth = {"X-Blaxel-Authorization": f"Bearer {TEST_KEY}"}
    edge = f"http://127.0.0.1:{gp.edge_port}"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{api}/sandboxes",
            headers=auth,
            json={"metadata": {"name": "sb"}, "spec": {"target": {"host": "127.0.0.1"}}},
        ) as r:
            assert r.status == 200
        async with http.post(
            f"{api}/sandboxes/sb/previews",
            headers=auth,
            json={"metadata": {"name": "web"}, "spec": {"port": upstream, "public": False}},
        ) as r:
            preview = await r.json()
        host = preview["spec"]["url"].split("//")[1].split(":")[0]
        expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        async with http.post(
            f"{api}/sandboxes/sb/previews/web/tokens",
            headers=auth,
            json={"metadata": {"name": ""}, "spec": {"expiresAt": expires}},
        ) as r:
            token = (await r.json())["spec"]["token"]
        with_host = {"Host": host}
        # Each transport with the status that proves the gateway took it all the way: admitted
        # and forwarded (200), redirected with the cookie set (303) or refused (401).
        requests: list[tuple[str, dict[str, str], int]] = [
            (f"/q?bl_preview_token={quote(token)}", {}, 200),
            (f"/nav?bl_preview_token={token}", {"Sec-Fetch-Mode": "navigate"}, 303),
            ("/h", {"X-Blaxel-Preview-Token": token}, 200),
            ("/c", {"Cookie": f"bl_preview_token={token}"}, 200),
            (
                "/r",
                {"X-Blaxel-Preview-Token": token, "Referer": f"{edge}/?bl_preview_token={token}"},
                200,
            ),
            ("/bad", {"X-Blaxel-Preview-Token": token + "x"}, 401),
            (f"/bad?bl_preview_token={token}x", {}, 401),
        ]
        for path, headers, status in requests:
            async with http.get(
                edge + path, headers={**with_host, **headers}, allow_redirects=False
            ) as r:
                await r.read()
                assert r.status == status, (path, r.status)
        async with http.ws_connect(f"{edge}/ws?bl_preview_token={token}", headers=with_host) as ws:
            await ws.send_str("x")
            msg = await ws.receive(timeout=WAIT_S)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "x")
        async with http.get(
            f"{api}/sandboxes/sb/previews/web/tokens",
            headers={"Authorization": f"Bearer {TEST_KEY}"},
        ) as r:
            assert r.status == 200
        async with http.get(
            f"{api}/sandboxes", headers={"Authorization": "Bearer wrong-key-that-is-long-enough"}
        ) as r:
            assert r.status == 401
    assert gp.terminate() == 0
    output = gp.output()
    lines = output.splitlines()
    assert any(json.loads(line).get("status") == 303 for line in lines if line.startswith("{"))
    secrets = {
        "token": token,
        "token signature": token.rsplit(".", 1)[-1],
        "encoded token": quote(token, safe=""),
        "api key": TEST_KEY,
    }
    for what, secret in secrets.items():
        leaked = [line for line in lines if secret in line]
        assert not leaked, f"{what} leaked into the log: {leaked[:2]}"
