"""HTTPS at the edge with certificates made in the test: SNI picks the preview domain's
wildcard, a certificate from the directory, or the default; files replaced on disk are served
without a restart; the plain port redirects, except ACME HTTP-01 challenges."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.dns_server import DnsServer, dns_server
from tests.helpers.gateway import Gateway, run_gateway
from tests.helpers.polling import eventually
from tests.helpers.raw_http import exchange, read_response, request_bytes
from tests.helpers.tls import PREVIEW_WILDCARD, TestCA, served_serial, tls_connect, tls_get


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
async def dns() -> AsyncIterator[DnsServer]:
    async with dns_server() as server:
        yield server


@pytest.fixture
async def tls_gateway(ca: TestCA, tmp_path: Path, dns: DnsServer) -> AsyncIterator[Gateway]:
    cert, key = ca.issue(tmp_path / "preview", "wildcard", PREVIEW_WILDCARD)
    certs = tmp_path / "certs"
    ca.issue(certs, "app.acme.test", "app.acme.test")
    ca.issue(certs, "_wildcard.wild.test", "*.wild.test")
    async with run_gateway(
        tls_port=0,
        tls_cert=str(cert),
        tls_key=str(key),
        tls_cert_dir=str(certs),
        tls_reload_interval_s=0.1,
        dns_nameservers=dns.address,
        dns_timeout_s=0.3,
    ) as gw:
        yield gw


def tls_port(gw: Gateway) -> int:
    assert gw.running is not None and gw.running.tls_port is not None
    return gw.running.tls_port


def echoed(body: bytes) -> dict[str, str]:
    return {k.lower(): v for k, v in json.loads(body)["headers"]}


async def test_a_preview_is_served_with_the_preview_domains_wildcard_certificate(
    tls_gateway: Gateway, ca: TestCA, upstream: int
) -> None:
    host = await tls_gateway.public_preview(upstream)
    assert (await tls_gateway.preview(upstream, name="w2"))["spec"]["url"].startswith("https://")
    names, response = await tls_get(tls_port(tls_gateway), host, ca.client_context(), "/p?q=1")
    assert names == {PREVIEW_WILDCARD}
    assert response.status == 200
    headers = echoed(response.body)
    assert headers["x-forwarded-proto"] == "https"
    assert headers["host"] == host


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [("app.acme.test", "app.acme.test"), ("x.wild.test", "*.wild.test")],
)
async def test_a_domain_gets_its_own_certificate_from_the_directory(
    tls_gateway: Gateway, ca: TestCA, server_name: str, expected: str
) -> None:
    # Verified against the name: the handshake would fail on the wildcard's certificate.
    names, response = await tls_get(tls_port(tls_gateway), server_name, ca.client_context())
    assert names == {expected}
    assert response.status == 404  # nothing routes there (yet): the edge's own page


async def test_a_verified_custom_domain_is_served_with_its_own_certificate(
    tls_gateway: Gateway, ca: TestCA, dns: DnsServer, upstream: int
) -> None:
    gw = tls_gateway
    status, domain = await gw.call(
        "POST", "/customdomains", json={"metadata": {"name": "acme.test"}, "spec": {}}
    )
    assert status == 200, domain
    txt = domain["spec"]["txtRecords"][0]
    dns.txt[txt["name"]] = [txt["value"]]
    assert (await gw.call("POST", "/customdomains/acme.test/verify"))[0] == 200
    await gw.sandbox()
    preview = await gw.preview(upstream, customDomain="app.acme.test")
    assert preview["spec"]["url"] == f"https://app.acme.test:{tls_port(gw)}/"
    names, response = await tls_get(tls_port(gw), "app.acme.test", ca.client_context(), "/c")
    assert names == {"app.acme.test"}
    assert response.status == 200
    assert echoed(response.body)["x-forwarded-proto"] == "https"


async def test_an_unknown_name_gets_the_default_certificate_then_404(
    tls_gateway: Gateway, ca: TestCA
) -> None:
    context = ca.client_context(check_hostname=False)
    names, response = await tls_get(tls_port(tls_gateway), "unknown.example", context)
    assert names == {PREVIEW_WILDCARD}
    assert response.status == 404
    assert response.header("X-Blaxel-Error-Code") == "preview_not_found"


async def test_a_replaced_certificate_is_served_without_a_restart_or_dropped_connection(
    tls_gateway: Gateway, ca: TestCA, upstream: int, tmp_path: Path
) -> None:
    host = await tls_gateway.public_preview(upstream)
    port = tls_port(tls_gateway)
    context = ca.client_context()
    async with tls_connect(port, host, context) as (reader, writer):
        old = served_serial(writer)
        writer.write(request_bytes(host, close=False))
        assert (await read_response(reader)).status == 200
        ca.issue(tmp_path / "preview", "wildcard", PREVIEW_WILDCARD)

        async def reloaded() -> bool:
            async with tls_connect(port, host, context) as (_, fresh):
                return served_serial(fresh) != old

        await eventually(reloaded)
        # The connection made before the reload still serves requests.
        writer.write(request_bytes(host))
        assert (await read_response(reader)).status == 200


async def test_a_broken_replacement_keeps_the_certificates_that_worked(
    tls_gateway: Gateway, ca: TestCA, tmp_path: Path
) -> None:
    assert tls_gateway.running is not None and tls_gateway.running.certs is not None
    certs = tls_gateway.running.certs
    before = certs.reloads
    (tmp_path / "preview" / "wildcard.pem").write_text("not a certificate")
    (tmp_path / "certs" / "app.acme.test.pem").write_text("not a certificate")
    ca.issue(tmp_path / "certs", "new.acme.test", "new.acme.test")
    await eventually(lambda: not certs.changed() and certs.reloads > before)
    port = tls_port(tls_gateway)
    for server_name, expected in [
        ("abc.local.preview.localhost", PREVIEW_WILDCARD),
        ("app.acme.test", "app.acme.test"),
        ("new.acme.test", "new.acme.test"),  # the reload did happen
    ]:
        names, _ = await tls_get(port, server_name, ca.client_context())
        assert names == {expected}


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "DELETE"])
async def test_the_plain_port_redirects_to_https(tls_gateway: Gateway, method: str) -> None:
    body = b"abc" if method == "POST" else b""
    headers = [("Content-Length", "3")] if body else []
    data = request_bytes(
        "Web.preview.localhost:80", "/a/b?c=1", method=method, headers=headers, body=body
    )
    response = await exchange(tls_gateway.edge_port, data, head=method == "HEAD")
    assert response.status == 308
    expected = f"https://web.preview.localhost:{tls_port(tls_gateway)}/a/b?c=1"
    assert response.header("Location") == expected


async def test_the_plain_port_refuses_a_request_without_a_host(tls_gateway: Gateway) -> None:
    response = await exchange(tls_gateway.edge_port, request_bytes(None, version="HTTP/1.0"))
    assert response.status == 400


async def test_acme_challenges_without_a_responder_get_404(tls_gateway: Gateway) -> None:
    path = "/.well-known/acme-challenge/abc"
    response = await exchange(tls_gateway.edge_port, request_bytes("app.acme.test", path))
    assert response.status == 404
    assert response.header("Location") is None


async def test_acme_challenges_pass_through_to_the_responder(
    ca: TestCA, tmp_path: Path, upstream: int
) -> None:
    cert, key = ca.issue(tmp_path, "wildcard", PREVIEW_WILDCARD)
    async with run_gateway(
        tls_port=0, tls_cert=str(cert), tls_key=str(key), acme_http_upstream=f"127.0.0.1:{upstream}"
    ) as gw:
        path = "/.well-known/acme-challenge/tok-123"
        response = await exchange(gw.edge_port, request_bytes("app.acme.test", path))
        assert response.status == 200
        assert response.header("X-Upstream") == "echo"
        assert json.loads(response.body)["path"] == path
        # Everything else still redirects.
        other = await exchange(gw.edge_port, request_bytes("app.acme.test", "/x"))
        assert other.status == 308


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_with_resolve_verifies_the_chain_and_follows_the_redirect(
    tls_gateway: Gateway, ca: TestCA, upstream: int
) -> None:
    host = await tls_gateway.public_preview(upstream)
    port = tls_port(tls_gateway)
    args = [
        "curl", "-sS", "--max-time", "10", "--cacert", str(ca.ca_pem),
        "--resolve", f"{host}:{port}:127.0.0.1",
        "--resolve", f"{host}:{tls_gateway.edge_port}:127.0.0.1",
        "-L", "-o", "-", "-w", "\\n%{http_code} %{num_redirects} %{scheme}",
        f"http://{host}:{tls_gateway.edge_port}/from-curl",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    body, _, summary = out.decode().rpartition("\n")
    assert summary == "200 1 HTTPS"
    assert json.loads(body)["path"] == "/from-curl"
