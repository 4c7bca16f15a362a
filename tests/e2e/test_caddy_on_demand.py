"""The shipped ``deploy/caddy/Caddyfile`` with Debian's caddy and its internal CA (no internet):
a routable host (a preview's hostname, a verified custom domain) gets a certificate issued on
demand and reaches the preview; Caddy asks ``/v0/tls/ask`` first, so a host the gateway does not
route (unregistered, unverified, deleted) gets no certificate at all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.dns_server import DnsServer, dns_server
from tests.helpers.gateway import ROOT, Gateway, run_gateway
from tests.helpers.polling import eventually
from tests.helpers.ports import unused_ports
from tests.helpers.raw_http import read_response, request_bytes
from tests.helpers.tls import served_names, tls_connect

pytestmark = pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed")
CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
STARTUP_S = 30.0


class Caddy:
    def __init__(self, proc: subprocess.Popen[bytes], https_port: int, data: Path) -> None:
        self.proc = proc
        self.https_port = https_port
        self.root = data / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.root))


@contextlib.contextmanager
def caddy(tmp_path: Path, gw: Gateway) -> Iterator[Caddy]:
    http_port, https_port, admin_port = unused_ports(3)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "CADDY_ISSUER": "internal",
        "CADDY_HTTP_PORT": str(http_port),
        "CADDY_HTTPS_PORT": str(https_port),
        "CADDY_ADMIN": f"127.0.0.1:{admin_port}",
        "CADDY_ASK_URL": f"http://127.0.0.1:{gw.api_port}/v0/tls/ask",
        "CADDY_UPSTREAMS": f"127.0.0.1:{gw.edge_port}",
        "CADDY_HEALTH_PORT": str(gw.api_port),
    }
    log = open(tmp_path / "caddy.log", "wb")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen(
        ["caddy", "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        yield Caddy(proc, https_port, tmp_path / "data")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
async def dns() -> AsyncIterator[DnsServer]:
    async with dns_server() as server:
        yield server


@pytest.fixture
async def behind_caddy(tmp_path: Path, dns: DnsServer) -> AsyncIterator[tuple[Gateway, Caddy]]:
    async with run_gateway(
        trusted_proxies="127.0.0.1/32",
        public_scheme="https",
        dns_nameservers=dns.address,
        dns_timeout_s=0.3,
    ) as gw:
        with caddy(tmp_path, gw) as front:

            async def listening() -> bool:
                assert front.proc.poll() is None, (tmp_path / "caddy.log").read_text()
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", front.https_port)
                    writer.close()
                    return front.root.exists()
                return False

            await eventually(listening, STARTUP_S)
            yield gw, front


async def get_through_caddy(front: Caddy, host: str) -> dict[str, Any]:
    """A request for ``host`` through Caddy, verified against Caddy's CA; what the app saw."""
    async with tls_connect(front.https_port, host, front.client_context()) as (reader, writer):
        assert served_names(writer) == {host}  # issued for this name, by the internal CA
        writer.write(request_bytes(host, "/through-caddy"))
        response = await read_response(reader)
    assert response.status == 200
    echoed: dict[str, Any] = json.loads(response.body)
    assert echoed["path"] == "/through-caddy"
    headers = {k.lower(): v for k, v in echoed["headers"]}
    assert headers["x-forwarded-proto"] == "https"
    assert headers["host"] == host
    return echoed


async def assert_no_certificate(front: Caddy, host: str) -> None:
    context = front.client_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # any certificate at all would be a failure
    with pytest.raises((ssl.SSLError, ConnectionError)):
        async with tls_connect(front.https_port, host, context):
            pass


async def test_a_routable_host_gets_a_certificate_on_demand_and_reaches_the_preview(
    behind_caddy: tuple[Gateway, Caddy], upstream: int
) -> None:
    gw, front = behind_caddy
    host = await gw.public_preview(upstream)
    await get_through_caddy(front, host)


async def test_a_custom_domain_gets_a_certificate_only_once_verified(
    behind_caddy: tuple[Gateway, Caddy], dns: DnsServer, upstream: int
) -> None:
    gw, front = behind_caddy
    status, domain = await gw.call(
        "POST", "/customdomains", json={"metadata": {"name": "acme.test"}, "spec": {}}
    )
    assert status == 200, domain
    await gw.sandbox()
    await gw.preview(upstream, customDomain="app.acme.test")
    await assert_no_certificate(front, "app.acme.test")  # registered, not verified
    txt = domain["spec"]["txtRecords"][0]
    dns.txt[txt["name"]] = [txt["value"]]
    status, body = await gw.call("POST", "/customdomains/acme.test/verify")
    assert status == 200 and body["spec"]["status"] == "verified", body
    await get_through_caddy(front, "app.acme.test")
    await assert_no_certificate(front, "other.acme.test")  # no preview there, no fallback


@pytest.mark.parametrize("host", ["nope.local.preview.localhost", "unregistered.example"])
async def test_an_unroutable_host_gets_no_certificate(
    behind_caddy: tuple[Gateway, Caddy], host: str
) -> None:
    await assert_no_certificate(behind_caddy[1], host)


async def test_a_deleted_previews_host_gets_no_certificate(
    behind_caddy: tuple[Gateway, Caddy], upstream: int
) -> None:
    """The same shape of name as a routable one: only the gateway's answer tells them apart."""
    gw, front = behind_caddy
    host = await gw.public_preview(upstream)
    status, _ = await gw.call("DELETE", "/sandboxes/sb/previews/web")
    assert status == 200
    await assert_no_certificate(front, host)
