"""Custom domains end to end: the operators' CLI as a process, against the gateway as a process
(protocol edge, both stores), with the TXT record served by a real DNS server on loopback."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.e2e.test_api_cli import Cli, SpawnGateway, edge_status, rows
from tests.helpers.dns_server import dns_server

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_operator_registers_verifies_and_serves_a_domain(
    gateway_process: SpawnGateway, upstream: int, store: str, request: pytest.FixtureRequest
) -> None:
    async with dns_server() as dns:
        env = {"GATEWAY_DNS_NAMESERVERS": dns.address}
        if store == "redis":
            redis: Any = request.getfixturevalue("redis_server")
            env |= {"GATEWAY_REDIS_URL": redis.url, "GATEWAY_REDIS_PREFIX": secrets.token_hex(4)}
        gp = gateway_process(env=env)
        cli = Cli(gp)

        out = await cli.ok("domains", "create", "acme.test")
        assert rows(out)[0] == ["NAME", "STATUS", "FALLBACK", "VERIFIED", "AT"]
        assert rows(out)[1][:2] == ["acme.test", "pending"]
        [txt] = [line.split() for line in out.splitlines() if line.startswith("TXT ")]
        assert txt[1] == "_preview-gateway-challenge.acme.test"

        await cli.ok("sandboxes", "create", "sb", "--host", "127.0.0.1")
        await cli.ok("previews", "create", "sb", "fb", "--port", str(upstream), "--public")
        made = await cli.json("previews", "create", "sb", "web", "--port", str(upstream),
                              "--public", "--custom-domain", "app.acme.test")  # fmt: skip
        assert made["spec"]["url"].startswith("http://app.acme.test")
        assert await edge_status(gp, "app.acme.test") == 404  # not verified yet

        out = await cli.ok("domains", "verify", "acme.test")
        assert rows(out)[1][:2] == ["acme.test", "failed"]
        assert "No TXT record" in out
        dns.txt[txt[1]] = [txt[2]]
        verified = await cli.json("domains", "verify", "acme.test")
        assert verified["spec"]["status"] == "verified"
        assert await edge_status(gp, "app.acme.test") == 200

        await cli.ok("domains", "update", "acme.test", "--fallback", "sb/fb")
        assert await edge_status(gp, "unknown.acme.test") == 200
        listed = await cli.json("domains", "list")
        assert [d["spec"]["fallbackPreviewId"] for d in listed] == ["sb/fb"]

        await cli.ok("domains", "delete", "acme.test")
        assert await edge_status(gp, "app.acme.test") == 404
        assert await edge_status(gp, "unknown.acme.test") == 404
        code, _, err = await cli.run("domains", "get", "acme.test")
        assert code == 1 and "not found" in err
