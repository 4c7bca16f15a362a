"""Private previews end to end through the in-process gateway: every token transport and
failure, the cookie exchange, CORS preflight, and credential hygiene (threat model T, L, CK, C)."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.helpers.gateway import Gateway, host_of

COOKIE = "bl_preview_token"


async def private_preview(gw: Gateway, port: int, name: str = "web", sandbox: str = "sb") -> str:
    status, _ = await gw.call("GET", f"/sandboxes/{sandbox}")
    if status == 404:
        await gw.sandbox(sandbox)
    body = await gw.preview(port, sandbox=sandbox, name=name, public=False)
    return host_of(body)


async def get(
    gw: Gateway, host: str, path: str = "/", **headers: str
) -> tuple[int, dict[str, str], bytes, aiohttp.ClientResponse]:
    async with gw.session.get(
        gw.edge(path), headers={"Host": host, **headers}, allow_redirects=False
    ) as r:
        return r.status, dict(r.headers), await r.read(), r


def echoed(body: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body)
    data["header_map"] = {k.lower(): v for k, v in data["headers"]}
    return data


async def test_missing_token_is_401_and_never_reaches_the_app(
    gateway: Gateway, upstream: int
) -> None:
    host = await private_preview(gateway, upstream)
    status, headers, body, _ = await get(gateway, host)
    assert status == 401
    assert headers["X-Blaxel-Error-Code"] == "token_required"
    assert headers["X-Blaxel-Source"] == "gateway"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert b"127.0.0.1" not in body and str(upstream).encode() not in body
    status, headers, body, _ = await get(gateway, host, Accept="text/html")
    assert status == 401 and headers["Content-Type"].startswith("text/html")
    assert b"private" in body


async def test_header_token_is_forwarded_without_the_token(gateway: Gateway, upstream: int) -> None:
    host = await private_preview(gateway, upstream)
    token = (await gateway.mint())["spec"]["token"]
    status, _, body, _ = await get(
        gateway,
        host,
        "/x?keep=1",
        **{"X-Blaxel-Preview-Token": token, "Authorization": "Bearer app"},
    )
    assert status == 200
    seen = echoed(body)
    assert "x-blaxel-preview-token" not in seen["header_map"]
    assert seen["header_map"]["authorization"] == "Bearer app"
    assert token not in json.dumps(seen)


async def test_query_token_sets_cookie_and_is_stripped(gateway: Gateway, upstream: int) -> None:
    host = await private_preview(gateway, upstream)
    token = (await gateway.mint())["spec"]["token"]
    status, _, body, response = await get(
        gateway, host, f"/a?x=1&bl_preview_token={token}&y=2", Cookie="app=1; other=2"
    )
    assert status == 200
    seen = echoed(body)
    assert seen["query"] == "x=1&y=2"
    assert seen["header_map"]["cookie"] == "app=1; other=2"
    cookie = response.headers.getall("Set-Cookie")[-1]
    # Named per preview, so a sibling's planted copies are ignored (test_cookie_names.py).
    assert re.match(rf"{COOKIE}_[0-9a-f]{{16}}={re.escape(token)};", cookie), cookie
    for attribute in ("Path=/", "HttpOnly", "Secure", "SameSite=Lax"):
        assert attribute in cookie
    assert "Domain" not in cookie
    # The browser sends it back, behind planted copies under the shared name: it opens.
    planted = "; ".join([f"{COOKIE}=planted"] * 8)
    status, _, _, _ = await get(gateway, host, Cookie=f"{planted}; {cookie.split(';')[0]}")
    assert status == 200


async def test_navigation_with_query_token_redirects_without_it(
    gateway: Gateway, upstream: int
) -> None:
    host = await private_preview(gateway, upstream)
    token = (await gateway.mint())["spec"]["token"]
    status, headers, _, _ = await get(
        gateway,
        host,
        f"//evil.test/p?bl_preview_token={token}&q=1",
        **{"Sec-Fetch-Mode": "navigate"},
    )
    assert status == 303
    assert headers["Location"] == "/evil.test/p?q=1"
    assert headers["Cache-Control"] == "no-store"
    assert token in headers["Set-Cookie"]


async def test_cookie_admits_and_is_stripped(gateway: Gateway, upstream: int) -> None:
    host = await private_preview(gateway, upstream)
    token = (await gateway.mint())["spec"]["token"]
    status, _, body, _ = await get(gateway, host, Cookie=f"a=1; {COOKIE}={token}; b=2")
    assert status == 200
    assert echoed(body)["header_map"]["cookie"] == "a=1; b=2"


async def test_token_of_one_preview_never_opens_another(gateway: Gateway, upstream: int) -> None:
    host_a = await private_preview(gateway, upstream, name="a")
    host_b = await private_preview(gateway, upstream, name="b")
    token_a = (await gateway.mint("a"))["spec"]["token"]
    assert (await get(gateway, host_a, **{"X-Blaxel-Preview-Token": token_a}))[0] == 200
    status, headers, _, _ = await get(gateway, host_b, **{"X-Blaxel-Preview-Token": token_a})
    assert status == 401 and headers["X-Blaxel-Error-Code"] == "token_wrong_preview"


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("garbage", "token_malformed"),
        ("eyJhbGciOiJub25lIn0.eyJqdGkiOiJ4In0.", "token_invalid"),
    ],
)
async def test_bad_tokens_are_told_apart(
    gateway: Gateway, upstream: int, token: str, code: str
) -> None:
    host = await private_preview(gateway, upstream)
    status, headers, _, _ = await get(gateway, host, **{"X-Blaxel-Preview-Token": token})
    assert status == 401 and headers["X-Blaxel-Error-Code"] == code


async def test_revoked_token_stops_working_at_once(gateway: Gateway, upstream: int) -> None:
    host = await private_preview(gateway, upstream)
    minted = await gateway.mint()
    token = minted["spec"]["token"]
    assert (await get(gateway, host, **{"X-Blaxel-Preview-Token": token}))[0] == 200
    status, body = await gateway.call(
        "DELETE", f"/sandboxes/sb/previews/web/tokens/{minted['metadata']['name']}"
    )
    assert status == 200 and body == {"message": "Preview token deleted successfully"}
    status, headers, _, _ = await get(gateway, host, **{"X-Blaxel-Preview-Token": token})
    assert status == 401 and headers["X-Blaxel-Error-Code"] == "token_revoked"


async def test_preflight_is_answered_without_a_token(gateway: Gateway, upstream: int) -> None:
    host = await private_preview(gateway, upstream)
    async with gateway.session.options(
        gateway.edge("/api"),
        headers={
            "Host": host,
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
        },
    ) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "PATCH" in r.headers["Access-Control-Allow-Methods"]
    # Not a preflight (no Access-Control-Request-Method): no free pass.
    async with gateway.session.options(
        gateway.edge("/api"), headers={"Host": host, "Origin": "https://x"}
    ) as r:
        assert r.status == 401


async def test_websocket_upgrade_needs_a_token_before_the_upgrade(
    gateway: Gateway, upstream: int
) -> None:
    host = await private_preview(gateway, upstream)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gateway.session.ws_connect(gateway.edge("/ws"), headers={"Host": host})
    assert refused.value.status == 401
    token = (await gateway.mint())["spec"]["token"]
    async with gateway.session.ws_connect(
        gateway.edge(f"/ws?hello=1&bl_preview_token={token}&v=1"), headers={"Host": host}
    ) as ws:
        hello = json.loads((await ws.receive()).data)
        assert hello["query"] == "hello=1&v=1"
        assert token not in json.dumps(hello)


async def test_cookie_websocket_needs_the_preview_origin(gateway: Gateway, upstream: int) -> None:
    host = await private_preview(gateway, upstream)
    token = (await gateway.mint())["spec"]["token"]
    cookie = f"{COOKIE}={token}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gateway.session.ws_connect(
            gateway.edge("/ws"),
            headers={"Host": host, "Cookie": cookie, "Origin": "https://evil.test"},
        )
    assert refused.value.status == 403
    own_origin = f"http://{host}:{gateway.edge_port}"
    async with gateway.session.ws_connect(
        gateway.edge("/ws"),
        headers={"Host": f"{host}:{gateway.edge_port}", "Cookie": cookie, "Origin": own_origin},
    ) as ws:
        await ws.send_str("ok")
        assert (await ws.receive()).data == "ok"
    # A header token needs no Origin check (non-browser clients).
    async with gateway.session.ws_connect(
        gateway.edge("/ws"),
        headers={"Host": host, "X-Blaxel-Preview-Token": token, "Origin": "https://evil.test"},
    ) as ws:
        await ws.send_str("ok")
        assert (await ws.receive()).data == "ok"


async def test_upstream_cookie_for_the_preview_domain_becomes_host_only(
    gateway: Gateway, upstream: int
) -> None:
    host = await gateway.public_preview(upstream)
    cookies_to_set = [
        "sid=1; Domain=preview.localhost; Path=/",
        "own=2; Domain=example.org",
        "bl_preview_token=forged",
    ]
    path = "/set-cookie?" + "&".join("c=" + quote(c, safe="") for c in cookies_to_set)
    async with gateway.session.get(gateway.edge(path), headers={"Host": host}) as r:
        cookies = r.headers.getall("Set-Cookie")
    assert "sid=1; Path=/" in cookies
    assert "own=2; Domain=example.org" in cookies
    assert not any(c.startswith("bl_preview_token") for c in cookies)


async def test_expired_token_is_told_apart(gateway: Gateway, upstream: int) -> None:
    from gateway.core.records import TokenRecord
    from gateway.core.tokens import new_token_id

    host = await private_preview(gateway, upstream)
    assert gateway.running is not None
    store = gateway.running.store
    preview = await store.get_preview("default", "sb", "web")
    assert preview is not None
    past = datetime.now(UTC) - timedelta(minutes=5)
    record = TokenRecord(
        name="old", jti=new_token_id(), expires_at=past, created_at=past - timedelta(hours=1)
    )
    await store.put_preview(
        preview.model_copy(update={"tokens": {"old": record}}), create=False, force=False
    )
    status, listed = await gateway.call("GET", "/sandboxes/sb/previews/web/tokens")
    assert status == 200 and listed[0]["spec"]["expired"] is True
    token = listed[0]["spec"]["token"]
    status, headers, body, _ = await get(
        gateway, host, Accept="text/html", **{"X-Blaxel-Preview-Token": token}
    )
    assert status == 401 and headers["X-Blaxel-Error-Code"] == "token_expired"
    assert b"expired" in body


async def test_token_api_refuses_a_past_expiry(gateway: Gateway, upstream: int) -> None:
    await private_preview(gateway, upstream)
    status, body = await gateway.call(
        "POST",
        "/sandboxes/sb/previews/web/tokens",
        json={"metadata": {"name": ""}, "spec": {"expiresAt": "2001-01-01T00:00:00Z"}},
    )
    assert status == 400 and body["code"] == 400 and "expiresAt" in body["error"]


async def test_public_preview_still_strips_credentials(gateway: Gateway, upstream: int) -> None:
    host = await gateway.public_preview(upstream)
    status, _, body, _ = await get(
        gateway,
        host,
        "/?bl_preview_token=abc&z=1",
        Cookie=f"{COOKIE}=abc; keep=1",
        **{"X-Blaxel-Preview-Token": "abc"},
    )
    assert status == 200
    seen = echoed(body)
    assert seen["query"] == "z=1"
    assert seen["header_map"]["cookie"] == "keep=1"
    assert "x-blaxel-preview-token" not in seen["header_map"]


async def test_sibling_token_cookie_does_not_block_the_right_one(
    gateway: Gateway, upstream: int
) -> None:
    host_a = await private_preview(gateway, upstream, name="a")
    await private_preview(gateway, upstream, name="b")
    token_a = (await gateway.mint("a"))["spec"]["token"]
    token_b = (await gateway.mint("b"))["spec"]["token"]
    status, _, _, _ = await get(gateway, host_a, Cookie=f"{COOKIE}={token_b}; {COOKIE}={token_a}")
    assert status == 200


async def test_revocation_reaches_every_replica(
    redis_server: Any, redis_prefix: str, upstream: int
) -> None:
    from tests.helpers.gateway import run_gateway

    async with (
        run_gateway(redis_url=redis_server.url, redis_prefix=redis_prefix) as a,
        run_gateway(redis_url=redis_server.url, redis_prefix=redis_prefix) as b,
    ):
        host = await private_preview(a, upstream)
        minted = await a.mint()
        token = minted["spec"]["token"]
        assert (await get(b, host, **{"X-Blaxel-Preview-Token": token}))[
            0
        ] == 200  # now cached on B
        status, _ = await a.call(
            "DELETE", f"/sandboxes/sb/previews/web/tokens/{minted['metadata']['name']}"
        )
        assert status == 200
        # B learns of it through the invalidation, not its cache TTL (30 s): bounded wait, no sleep.
        async with asyncio.timeout(10):
            while True:
                status, headers, _, _ = await get(b, host, **{"X-Blaxel-Preview-Token": token})
                if status == 401:
                    break
                await asyncio.sleep(0.02)
        assert headers["X-Blaxel-Error-Code"] == "token_revoked"


async def test_a_websocket_closes_when_its_token_runs_out(gateway: Gateway, upstream: int) -> None:
    host = await private_preview(gateway, upstream)
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    status, short = await gateway.call(
        "POST",
        "/sandboxes/sb/previews/web/tokens",
        json={"metadata": {"name": "short"}, "spec": {"expiresAt": soon}},
    )
    assert status == 200
    long_lived = (await gateway.mint())["spec"]["token"]
    async with (
        gateway.session.ws_connect(
            gateway.edge("/ws"),
            headers={"Host": host, "X-Blaxel-Preview-Token": short["spec"]["token"]},
        ) as expiring,
        gateway.session.ws_connect(
            gateway.edge("/ws"), headers={"Host": host, "X-Blaxel-Preview-Token": long_lived}
        ) as lasting,
    ):
        # Past the expiry plus the verifier's 5 s leeway, the socket is admitted again and closed.
        async with asyncio.timeout(20):
            closed = await expiring.receive()
        assert closed.type is aiohttp.WSMsgType.CLOSE
        assert (closed.data, closed.extra) == (1008, "token expired")
        await lasting.send_str("still here")
        assert (await lasting.receive()).data == "still here"
