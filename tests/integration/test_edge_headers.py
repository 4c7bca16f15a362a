"""The edge over real loopback sockets: headers added, replaced and dropped on the way to
the app and back (threat model P). See
``tests/helpers/edge_client.py`` for how these tests observe the gateway."""

from __future__ import annotations

import json
import urllib.parse

from tests.helpers.edge_client import echoed, get, one
from tests.helpers.gateway import Gateway, host_of, run_gateway
from tests.helpers.probes import Probe
from tests.helpers.raw_http import exchange, request_bytes


# ── headers through the edge (P) ────────────────────────────────────────────────────────────
async def test_preview_headers_are_added_and_the_app_wins(gateway: Gateway, probe: Probe) -> None:
    await gateway.sandbox()
    body = await gateway.preview(
        probe.port,
        requestHeaders={"X-Env": "preview", "X-Tenant": "t1"},
        responseHeaders={
            "X-Upstream": "preview",
            "X-Frame-Options": "DENY",
            "Access-Control-Allow-Origin": "https://preview.example",
        },
    )
    host = host_of(body)
    response, raw = await get(gateway, host, **{"X-Env": "client"})
    seen = echoed(raw)
    assert seen["header_map"]["x-env"] == ["preview"]
    assert one(seen, "X-Tenant") == "t1"
    assert response.headers.getall("X-Upstream") == ["echo"], "the app's own header wins"
    assert response.headers.getall("X-Frame-Options") == ["DENY"]
    assert response.headers.getall("Access-Control-Allow-Origin") == ["https://preview.example"]
    assert response.headers["Access-Control-Allow-Credentials"] == "true", "CORS default"

    response, _ = await get(
        gateway, host, "/headers?h=Access-Control-Allow-Origin:https://app.example"
    )
    assert response.headers.getall("Access-Control-Allow-Origin") == ["https://app.example"]


async def test_forwarding_headers_replace_what_the_client_claims(
    gateway: Gateway, site: str
) -> None:
    response = await exchange(
        gateway.edge_port,
        request_bytes(
            site,
            headers=[
                ("x-forwarded-for", "1.2.3.4"),
                ("X-Forwarded-Proto", "https"),
                ("x-forwarded-host", "evil.example"),
                ("Forwarded", "for=1.2.3.4;host=evil.example"),
                ("x-real-ip", "1.2.3.4"),
                ("X-Forwarded-Port", "1"),
                ("Connection", "X-Forwarded-For, x-forwarded-proto, Host"),
            ],
        ),
    )
    seen = echoed(response.body)
    assert one(seen, "X-Forwarded-For") == "127.0.0.1"
    assert one(seen, "X-Forwarded-Proto") == "http"
    assert one(seen, "X-Forwarded-Host") == site
    assert one(seen, "Forwarded") == f'for=127.0.0.1;host="{site}";proto=http'
    assert one(seen, "Host") == site
    assert "x-real-ip" not in seen["header_map"] and "x-forwarded-port" not in seen["header_map"]
    assert "1.2.3.4" not in json.dumps(seen["headers"])


async def test_trusted_proxy_forwarding_is_appended_to(probe: Probe) -> None:
    async with run_gateway(trusted_proxies="127.0.0.0/8") as gw:
        host = await gw.public_preview(probe.port)
        _, body = await get(
            gw,
            host,
            **{
                "X-Forwarded-For": "198.51.100.7",
                "X-Forwarded-Proto": "https",
                "X-Request-Id": "lb-request-1",
            },
        )
    seen = echoed(body)
    assert one(seen, "X-Forwarded-For") == "198.51.100.7, 127.0.0.1"
    assert one(seen, "X-Forwarded-Proto") == "https"
    assert one(seen, "X-Request-Id") == "lb-request-1"


async def test_hop_by_hop_and_credentials_never_reach_the_app(gateway: Gateway, site: str) -> None:
    """Sent in lower case, as fetch/undici and Go send them."""
    response = await exchange(
        gateway.edge_port,
        request_bytes(
            site,
            "/x?a=1&bl_preview_token=tok-123&b=2",
            headers=[
                ("connection", "keep-alive, x-secret"),
                ("keep-alive", "timeout=5"),
                ("x-secret", "1"),
                ("te", "trailers"),
                ("upgrade", "h2c"),
                ("proxy-authorization", "Basic eDp5"),
                ("x-blaxel-preview-token", "tok-123"),
                ("x-blaxel-authorization", "Bearer key-123"),
                ("cookie", "a=1; bl_preview_token=tok-123; b=2"),
                ("authorization", "Bearer app-token"),
            ],
            close=False,
        ),
    )
    assert response.status == 200
    seen = echoed(response.body)
    for name in (
        "keep-alive",
        "x-secret",
        "te",
        "upgrade",
        "proxy-authorization",
        "x-blaxel-preview-token",
        "x-blaxel-authorization",
    ):
        assert name not in seen["header_map"], name
    assert one(seen, "Cookie") == "a=1; b=2"
    assert one(seen, "Authorization") == "Bearer app-token"
    assert seen["query"] == "a=1&b=2"
    assert "123" not in json.dumps(seen["headers"])


async def test_hop_by_hop_response_headers_are_not_relayed(
    gateway: Gateway, site: str, probe: Probe
) -> None:
    path = (
        "/headers?h=keep-alive:timeout%3D5&h=x-internal:1&h=connection:x-internal"
        "&h=upgrade:h2c&h=proxy-authenticate:Basic&h=x-app:1"
    )
    direct = await exchange(probe.port, request_bytes(site, path))
    assert direct.header("keep-alive") and direct.header("x-internal"), "the app sends them"
    response = await exchange(gateway.edge_port, request_bytes(site, path))
    assert response.status == 200 and response.header("X-App") == "1"
    for name in ("Keep-Alive", "X-Internal", "Upgrade", "Proxy-Authenticate"):
        assert response.header(name) is None, name


async def test_set_cookie_for_sibling_previews_becomes_host_only(
    gateway: Gateway, site: str
) -> None:
    cookies = [
        "sid=1; Domain=preview.localhost; Path=/",
        "tossed=2; Domain=.local.preview.localhost",
        "bl_preview_token=forged; Path=/",
        "plain=3; HttpOnly",
    ]
    query = "&".join(f"c={urllib.parse.quote(c, safe='')}" for c in cookies)
    response, _ = await get(gateway, site, f"/set-cookie?{query}")
    assert response.headers.getall("Set-Cookie") == [
        "sid=1; Path=/",
        "tossed=2",
        "plain=3; HttpOnly",
    ]


async def test_request_id_goes_upstream(gateway: Gateway, site: str) -> None:
    ids = set()
    for _ in range(3):
        _, body = await get(gateway, site, **{"X-Request-Id": "client-chosen"})
        request_id = one(echoed(body), "X-Request-Id")
        assert request_id != "client-chosen", "an untrusted client does not pick the id"
        assert len(request_id) == 16 and int(request_id, 16) >= 0
        ids.add(request_id)
    assert len(ids) == 3


async def test_nothing_is_invented_upstream(gateway: Gateway, site: str) -> None:
    response = await exchange(gateway.edge_port, request_bytes(site, "/plain"))
    names = set(echoed(response.body)["header_map"])
    assert "user-agent" not in names and "accept-encoding" not in names
