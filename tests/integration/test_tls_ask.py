"""``GET /v0/tls/ask``: Caddy's on-demand TLS asks the gateway before issuing a certificate.
200 only for hosts the edge would route; no API key needed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.helpers.dns_server import DnsServer, dns_server
from tests.helpers.gateway import Gateway, host_of, run_gateway


async def ask(gw: Gateway, domain: str) -> int:
    url = f"http://127.0.0.1:{gw.api_port}/v0/tls/ask"
    async with gw.session.get(url, params={"domain": domain}) as r:
        await r.read()
        return r.status


async def test_a_routable_preview_host_is_allowed_until_it_is_deleted(
    gateway: Gateway, upstream: int
) -> None:
    host = await gateway.public_preview(upstream)
    private = host_of(await gateway.preview(upstream, name="priv", public=False))
    assert await ask(gateway, host) == 200
    assert await ask(gateway, host.upper() + ".") == 200
    assert await ask(gateway, private) == 200  # admission is the edge's job, after TLS
    status, _ = await gateway.call("DELETE", "/sandboxes/sb/previews/web")
    assert status == 200
    assert await ask(gateway, host) == 404


@pytest.mark.parametrize(
    "domain",
    [
        "nope.local.preview.localhost",
        "preview.localhost",
        "example.com",
        "",
        "127.0.0.1",
        "a b.test",
        "x.preview.localhost:443",
    ],
)
async def test_anything_else_is_refused(gateway: Gateway, domain: str) -> None:
    assert await ask(gateway, domain) == 404


async def test_without_the_domain_parameter_it_is_refused(gateway: Gateway) -> None:
    async with gateway.session.get(f"http://127.0.0.1:{gateway.api_port}/v0/tls/ask") as r:
        assert r.status == 404


@pytest.fixture
async def dns() -> AsyncIterator[DnsServer]:
    async with dns_server() as server:
        yield server


async def test_a_custom_domain_is_allowed_once_verified_and_until_deleted(
    dns: DnsServer, upstream: int
) -> None:
    async with run_gateway(dns_nameservers=dns.address, dns_timeout_s=0.3) as gw:
        status, domain = await gw.call(
            "POST", "/customdomains", json={"metadata": {"name": "acme.test"}, "spec": {}}
        )
        assert status == 200, domain
        await gw.sandbox()
        await gw.preview(upstream, name="app", customDomain="app.acme.test")
        await gw.preview(upstream, name="fb")
        assert await ask(gw, "app.acme.test") == 404  # pending: not served, no certificate
        txt = domain["spec"]["txtRecords"][0]
        dns.txt[txt["name"]] = [txt["value"]]
        status, body = await gw.call("POST", "/customdomains/acme.test/verify")
        assert status == 200 and body["spec"]["status"] == "verified", body
        assert await ask(gw, "app.acme.test") == 200
        assert await ask(gw, "other.acme.test") == 404  # no preview there, no fallback yet
        fallback = {"metadata": {"name": "acme.test"}, "spec": {"fallbackPreviewId": "sb/fb"}}
        assert (await gw.call("PUT", "/customdomains/acme.test", json=fallback))[0] == 200
        assert await ask(gw, "other.acme.test") == 200  # the fallback serves it
        assert (await gw.call("DELETE", "/customdomains/acme.test"))[0] == 200
        assert await ask(gw, "app.acme.test") == 404
        assert await ask(gw, "other.acme.test") == 404
