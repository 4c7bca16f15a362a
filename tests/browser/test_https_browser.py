"""A private preview over HTTPS in headless Chromium: the gateway serves TLS itself with a
certificate from a test CA (trustme) that the browser trusts by its key
(``--ignore-certificate-errors-spki-list``), and the token link ends with a ``__Host-`` cookie
(Secure, Path=/, host-only), which a browser accepts only over https."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.browser.conftest import Api, Driver
from tests.browser.private_app import PrivateApp
from tests.browser.test_private_browser import (
    APP_PROBE,
    APP_READY,
    TIMEOUT_MS,
    TOKEN_PARAM,
    evidence,
    is_own_cookie,
    leaks_to_the_app,
    mint,
)
from tests.helpers.ports import unused_port
from tests.helpers.process import GatewayProcess
from tests.helpers.tls import PREVIEW_WILDCARD, TestCA

pytestmark = pytest.mark.browser
HOST_COOKIE = f"__Host-{TOKEN_PARAM}_<16 hex digits of the preview>"


def is_host_cookie(name: str) -> bool:
    """The gateway's per-preview ``__Host-`` cookie name (``gateway.core.admission``)."""
    return is_own_cookie(name.removeprefix("__Host-")) and name.startswith("__Host-")


def spki_hash(pem: Path) -> str:
    """What --ignore-certificate-errors-spki-list takes: base64(sha256(SubjectPublicKeyInfo))."""
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def https_gateway(
    gateway_process: Callable[..., GatewayProcess], tmp_path: Path
) -> tuple[GatewayProcess, str]:
    """A gateway process serving TLS with a wildcard certificate for the preview hostnames;
    returns it and the certificate's SPKI hash for Chromium."""
    ca = TestCA(tmp_path)
    cert, key = ca.issue(tmp_path / "tls", "wildcard", PREVIEW_WILDCARD)
    env = {
        "GATEWAY_TLS_PORT": str(unused_port()),
        "GATEWAY_TLS_CERT": str(cert),
        "GATEWAY_TLS_KEY": str(key),
    }
    return gateway_process(env=env), spki_hash(cert)


@pytest.fixture
def https_driver(
    browser_prerequisites: None, https_gateway: tuple[GatewayProcess, str], tmp_path: Path
) -> Iterator[Driver]:
    flags = [f"--ignore-certificate-errors-spki-list={https_gateway[1]}"]
    driver = Driver(tmp_path / "driver.log", "private.mjs", chromium_args=flags)
    try:
        yield driver
    finally:
        driver.stop()


def check_https_session(result: dict[str, Any], url: str, app: PrivateApp) -> list[str]:
    problems = []
    chain = result["navigation"]["chain"]
    if [c["status"] for c in chain] != [303, 200]:
        return [f"expected 303 (token link) then 200 (clean URL); chain: {chain}"]
    set_cookie = chain[0]["setCookie"] or ""
    name, _, rest = set_cookie.partition("=")
    if not is_host_cookie(name) or not rest.startswith("<TOKEN>;") or "Secure" not in set_cookie:
        problems.append(f"the 303 should set a Secure {HOST_COOKIE}: {set_cookie!r}")
    if result["url"] != url or result["tokenInAddressBar"]:
        problems.append(f"the address bar shows {result['url']}, not {url}")
    cookies = result["cookies"]
    wanted = {"domain": urlsplit(url).hostname, "path": "/", "secure": True}
    if (
        len(cookies) != 1
        or not is_host_cookie(cookies[0]["name"])
        or any(cookies[0][k] != v for k, v in wanted.items())
    ):
        problems.append(f"expected exactly one cookie {wanted}: {cookies}")
    elif not cookies[0]["isToken"] or not cookies[0]["httpOnly"]:
        problems.append(f"the cookie should hold the token, HttpOnly: {cookies[0]}")
    probe = result["probe"] or {}
    if probe.get("script") != "app.js ran" or probe.get("data") in (None, "no data yet"):
        problems.append(f"the page's script and fetch did not complete: {probe}")
    for r in result["requests"][1:]:
        if not r["viaGateway"] or not r["tokenCookie"] or r["tokenParamInUrl"]:
            problems.append(f"a request after the token link went without the cookie: {r}")
    seen = app.records()
    for r in seen:
        proto = next((v for k, v in r["headers"] if k.lower() == "x-forwarded-proto"), None)
        if proto != "https":
            problems.append(f"{r['path']} reached the app with X-Forwarded-Proto {proto!r}")
    return problems


def test_a_token_link_over_https_ends_with_a_host_prefixed_cookie(
    https_gateway: tuple[GatewayProcess, str], https_driver: Driver, private_app: PrivateApp
) -> None:
    gp, _ = https_gateway
    api = Api(gp)
    api.sandbox("sb")
    url = api.preview("web", private_app.port, public=False)
    assert url.startswith("https://") and url.endswith(".preview.localhost:" + url.split(":")[-1])
    _, token = mint(api, seconds=3600)
    session = "https"
    try:
        opened = https_driver.call(
            "open",
            timeout_ms=TIMEOUT_MS,
            session=session,
            url=url,
            token=token,
            ready=APP_READY,
            probe=APP_PROBE,
        )
        problems = check_https_session(opened, url, private_app)
        problems += leaks_to_the_app(private_app, token)
        assert not problems, f"{problems}\n\n{evidence(opened, gp, private_app)}"
    finally:
        https_driver.close_session(session)
