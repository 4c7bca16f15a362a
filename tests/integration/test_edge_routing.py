"""The edge over real loopback sockets: routing by Host, and what the pages the gateway
writes give away (threat model H). See
``tests/helpers/edge_client.py`` for how these tests observe the gateway."""

from __future__ import annotations

import json

import pytest

from tests.helpers.edge_client import assert_gateway_error, echoed, get, one
from tests.helpers.gateway import Gateway, host_of
from tests.helpers.probes import Probe, probe_upstream
from tests.helpers.raw_http import exchange, request_bytes


# ── Host routing (H) ────────────────────────────────────────────────────────────────────────
async def test_unknown_host_is_404(gateway: Gateway, site: str, probe: Probe) -> None:
    response, body = await get(gateway, "nobody.local.preview.localhost")
    assert response.status == 404
    assert_gateway_error(response, "preview_not_found")
    assert json.loads(body)["code"] == "preview_not_found"
    response, body = await get(gateway, "nobody.local.preview.localhost", Accept="text/html")
    assert response.status == 404 and response.content_type == "text/html"
    assert b"<!doctype html>" in body
    assert probe.requests == 0


@pytest.mark.parametrize(
    "spelling",
    ["upper", "trailing-dot", "port", "upper-dot-port"],
)
async def test_host_variants_reach_the_same_preview(
    gateway: Gateway, site: str, probe: Probe, spelling: str
) -> None:
    host = {
        "upper": site.upper(),
        "trailing-dot": f"{site}.",
        "port": f"{site}:{gateway.edge_port}",
        "upper-dot-port": f"{site.upper()}.:8443",
    }[spelling]
    response, body = await get(gateway, host)
    assert response.status == 200
    assert one(echoed(body), "Host") == host, "Host is forwarded exactly as sent"
    assert probe.requests == 1


@pytest.mark.parametrize(
    "host",
    [
        "a b.local.preview.localhost",
        "x@{site}",
        "{site}/x",
        "{site}\\x",
        "{site}:+80",
        "{site}:8_0",
        "{site}:0",
        "{site}:99999",
        "127.0.0.1",
        "127.0.0.1:{port}",
        "[::1]:{port}",
        "{long_label}.local.preview.localhost",
        "",
    ],
    ids=[
        "space",
        "userinfo",
        "slash",
        "backslash",
        "port-plus",
        "port-underscore",
        "port-zero",
        "port-too-big",
        "ip",
        "ip-port",
        "ipv6",
        "long-label",
        "empty",
    ],
)
async def test_invalid_host_is_400_and_never_looked_up(
    gateway: Gateway, site: str, probe: Probe, host: str
) -> None:
    assert gateway.running is not None
    lookups = dict(gateway.running.lookup.stats)
    value = host.format(site=site, port=gateway.edge_port, long_label="a" * 64)
    response = await exchange(gateway.edge_port, request_bytes(value))
    assert response.status == 400
    assert_gateway_error(response, "invalid_host")
    # Every lookup counts as a hit, a miss (a store read) or a failure: none of them moved.
    assert gateway.running.lookup.stats == lookups
    assert probe.requests == 0


async def test_non_ascii_host_is_400(gateway: Gateway, site: str, probe: Probe) -> None:
    data = request_bytes(None, headers=[("X-A", "1")]).replace(
        b"X-A: 1", "Host: b\u00fccher.preview.localhost".encode()
    )
    response = await exchange(gateway.edge_port, data)
    assert response.status == 400
    assert probe.requests == 0


async def test_two_host_headers_are_400(gateway: Gateway, site: str, probe: Probe) -> None:
    for second in (site, "other.local.preview.localhost"):
        response = await exchange(
            gateway.edge_port, request_bytes(site, headers=[("Host", second)])
        )
        assert response.status == 400
    assert probe.requests == 0


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
async def test_missing_host_is_400(gateway: Gateway, site: str, probe: Probe, version: str) -> None:
    response = await exchange(gateway.edge_port, request_bytes(None, version=version))
    assert response.status == 400
    assert probe.requests == 0


async def test_absolute_form_never_routes_by_its_authority(gateway: Gateway, probe: Probe) -> None:
    """``GET http://Q/ HTTP/1.1`` + ``Host: P``: aiohttp's request.host would say Q. The gateway
    answers 400 and neither preview's app sees the request."""
    await gateway.sandbox()
    async with probe_upstream() as other:
        p_host = host_of(await gateway.preview(probe.port, name="p"))
        q_host = host_of(await gateway.preview(other.port, name="q"))
        for target, host in (
            (f"http://{q_host}/x", p_host),
            (f"http://{p_host}/x", q_host),
            ("http://evil.example/x", p_host),
            (f"http://{q_host}:{gateway.edge_port}/x", f"{p_host}:{gateway.edge_port}"),
        ):
            response = await exchange(gateway.edge_port, request_bytes(host, target))
            assert response.status == 400, target
        assert probe.requests == 0 and other.requests == 0

        # The same authority as Host is just another spelling of the request.
        response = await exchange(gateway.edge_port, request_bytes(p_host, f"http://{p_host}/x"))
        assert response.status == 200
        assert echoed(response.body)["raw_path"] == "/x"
        assert (probe.requests, other.requests) == (1, 0)


async def test_forwarded_host_headers_never_route(
    gateway: Gateway, site: str, probe: Probe
) -> None:
    response, _ = await get(
        gateway,
        "nobody.local.preview.localhost",
        **{"X-Forwarded-Host": site, "Forwarded": f"host={site}", "X-Original-URL": "/"},
    )
    assert response.status == 404
    assert probe.requests == 0


async def test_responses_the_gateway_writes_do_not_announce_its_stack(
    gateway: Gateway, probe: Probe
) -> None:
    """Preflight answers, the token-exchange redirect and error pages come from the gateway, not
    the app: none may carry aiohttp's ``Server: Python/3.x aiohttp/3.y``."""
    await gateway.sandbox()
    host = host_of(await gateway.preview(probe.port, public=False))
    expires = "2999-01-01T00:00:00Z"
    status, body = await gateway.call(
        "POST",
        "/sandboxes/sb/previews/web/tokens",
        json={"metadata": {"name": ""}, "spec": {"expiresAt": expires}},
    )
    assert status == 200, body
    token = body["spec"]["token"]
    preflight = await exchange(
        gateway.edge_port,
        request_bytes(
            host,
            method="OPTIONS",
            headers=[("Origin", "https://app.example"), ("Access-Control-Request-Method", "PUT")],
        ),
    )
    redirect = await exchange(
        gateway.edge_port,
        request_bytes(
            host, f"/p?bl_preview_token={token}", headers=[("Sec-Fetch-Mode", "navigate")]
        ),
    )
    unauthorized = await exchange(gateway.edge_port, request_bytes(host))
    parse_error = await exchange(gateway.edge_port, b"BAD\x01 / HTTP/1.1\r\n\r\n")
    assert (preflight.status, redirect.status, unauthorized.status, parse_error.status) == (
        204,
        303,
        401,
        400,
    )
    for response in (preflight, redirect, unauthorized, parse_error):
        server = response.header("Server") or ""
        assert "aiohttp" not in server.lower() and "python" not in server.lower(), response
    assert probe.requests == 0
