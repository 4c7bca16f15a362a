"""TLS in the real gateway process (uvloop): SNI from the certificate directory, SIGHUP reloads
a replaced certificate, and a gateway whose certificates cannot load does not start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers.gateway import ROOT
from tests.helpers.polling import eventually
from tests.helpers.ports import unused_port
from tests.helpers.process import gateway_env, spawn_gateway
from tests.helpers.tls import PREVIEW_WILDCARD, TestCA, served_serial, tls_connect, tls_get


async def test_sighup_reloads_a_replaced_certificate(tmp_path: Path, upstream: int) -> None:
    ca = TestCA(tmp_path)
    certs = tmp_path / "certs"
    ca.issue(certs, "_wildcard.local.preview.localhost", PREVIEW_WILDCARD)
    ca.issue(certs, "app.acme.test", "app.acme.test")
    tls_port = unused_port()
    env = {
        "GATEWAY_TLS_PORT": str(tls_port),
        "GATEWAY_TLS_CERT_DIR": str(certs),
        "GATEWAY_TLS_RELOAD_INTERVAL_S": "3600",  # only SIGHUP reloads within this test
    }
    gp = spawn_gateway(tmp_path, env=env)
    try:
        async with gp.client() as gw:
            host = await gw.public_preview(upstream)
        names, response = await tls_get(tls_port, host, ca.client_context())
        assert (names, response.status) == ({PREVIEW_WILDCARD}, 200)
        async with tls_connect(tls_port, "app.acme.test", ca.client_context()) as (_, writer):
            old = served_serial(writer)
        ca.issue(certs, "app.acme.test", "app.acme.test")
        os.kill(gp.proc.pid, signal.SIGHUP)

        async def reloaded() -> bool:
            async with tls_connect(tls_port, "app.acme.test", ca.client_context()) as (_, w):
                return served_serial(w) != old

        await eventually(reloaded)
    finally:
        assert gp.terminate() == 0


def test_a_gateway_without_a_loadable_certificate_does_not_start(tmp_path: Path) -> None:
    (tmp_path / "broken.pem").write_text("not a certificate")
    (tmp_path / "broken.key").write_text("not a key")
    env = gateway_env(unused_port(), unused_port(), {"GATEWAY_TLS_CERT_DIR": str(tmp_path)})
    env["GATEWAY_TLS_PORT"] = str(unused_port())
    result = subprocess.run(
        [sys.executable, "-m", "gateway"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot start: no TLS certificate could be loaded" in result.stderr
    assert "Traceback" not in result.stderr
