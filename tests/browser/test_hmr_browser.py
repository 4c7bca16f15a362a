"""Hot reload in a real browser through the real gateway process: Vite, webpack-dev-server and
Next (``next dev --turbopack``), each on a public and on a private preview, plus a gateway
restart under a live Vite page.

Each test opens the preview URL in headless Chromium, marks the page (``window.__hmrMarker``),
edits the app's source file and waits for the new text. It passes only when the update arrived
without a reload or navigation and every WebSocket and request of the page went through the
gateway's host and port: Vite silently falls back to a direct socket to the dev server when the
proxied one fails, and that must fail here. See shared/design/hmr-dev-servers.md.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import KINDS, Api, DevServer, Driver, DriverError, save_result
from tests.helpers.process import GatewayProcess
from tests.helpers.redis_server import RedisServer

pytestmark = pytest.mark.browser

TOKEN_PARAM = "bl_preview_token"
OPEN_TIMEOUT_MS = {"vite": 30_000, "webpack": 45_000, "next": 90_000}
EDIT_TIMEOUT_MS = 30_000


def evidence(
    result: dict[str, Any] | None,
    gp: GatewayProcess | None = None,
    server: DevServer | None = None,
) -> str:
    parts = []
    if result is not None:
        shown = {k: v for k, v in result.items() if k != "console"}
        parts.append("driver result:\n" + json.dumps(shown, indent=1))
        parts.append("console:\n" + "\n".join(result.get("console", [])))
    if gp is not None:
        parts.append("gateway log (tail):\n" + gp.output()[-3000:])
    if server is not None:
        parts.append(f"{server.kind.name} log (tail):\n" + server.output(2000))
    return "\n\n".join(parts)


def gateway_hostport(url: str, gp: GatewayProcess) -> str:
    parts = urlsplit(url)
    assert parts.port == gp.edge_port, f"{url} is not on the edge port {gp.edge_port}"
    assert parts.hostname is not None and parts.hostname.endswith(".preview.localhost"), url
    return f"{parts.hostname}:{parts.port}"


def problems_with_sockets(result: dict[str, Any], gateway: str) -> list[str]:
    problems = list(result["violations"])
    sockets = result["sockets"]
    if not sockets:
        problems.append("the page opened no WebSocket at all")
    for s in sockets:
        if s["hostPort"] != gateway:
            problems.append(f"WebSocket to {s['hostPort']}, not the gateway {gateway}: {s['url']}")
    if not any(s["hostPort"] == gateway and s["framesIn"] > 0 for s in sockets):
        problems.append("no WebSocket through the gateway delivered a frame")
    return problems


def check_edit(result: dict[str, Any], gateway: str) -> list[str]:
    edit = result["edit"]
    problems = problems_with_sockets(result, gateway)
    if not edit["shown"]:
        problems.append(
            f"the page never showed {edit['to']!r} (it shows {edit['text']!r}): {edit['error']}"
        )
    if not edit["markerKept"]:
        problems.append("window.__hmrMarker is gone: the page was reloaded instead of hot-updated")
    if edit["navigationsDuringEdit"]:
        problems.append(f"main-frame navigations during the edit: {edit['navigationsDuringEdit']}")
    if result["navigationsSinceMark"]:
        problems.append(f"main-frame navigations since the mark: {result['navigationsSinceMark']}")
    return problems


def check_private_entry(result: dict[str, Any], url: str) -> list[str]:
    """The token URL was exchanged for a cookie and a 303 to the same URL without the token."""
    problems = []
    chain = result["firstNavigation"]["chain"]
    final = result["firstNavigation"]["finalUrl"]
    if TOKEN_PARAM in final or TOKEN_PARAM in result["url"]:
        problems.append(f"the token is still in the address bar: {result['url']}")
    if final != url:
        problems.append(f"landed on {final}, not {url}")
    if len(chain) < 2 or chain[0]["status"] != 303 or TOKEN_PARAM not in chain[0]["url"]:
        problems.append(f"expected a 303 from the token URL to the clean URL; chain: {chain}")
    if not result["cookies"]:
        problems.append("no cookie was set by the token exchange")
    return problems


def run_hmr(
    driver: Driver,
    session: str,
    kind: str,
    url: str,
    server: DevServer,
    gp: GatewayProcess,
    token: str | None = None,
) -> dict[str, Any]:
    """Open, check the entry, edit v1→v2; returns the edit result (the session stays open)."""
    gateway = gateway_hostport(url, gp)
    try:
        opened = driver.call(
            "open",
            session=session,
            url=url,
            token=token,
            expect="v1",
            selector="#message",
            readyFrame=KINDS[kind].ready_frame,
            readySent=KINDS[kind].ready_sent,
            timeout_ms=OPEN_TIMEOUT_MS[kind],
        )
    except DriverError as exc:
        pytest.fail(f"{kind}: {exc}\n\n{evidence(None, gp, server)}", pytrace=False)
    save_result(f"{session}-open", opened)
    problems = problems_with_sockets(opened, gateway)
    if token is not None:
        problems += check_private_entry(opened, url)
    assert not problems, f"{kind} on open: {problems}\n\n{evidence(opened, gp, server)}"

    edited = driver.call(
        "edit",
        session=session,
        file=str(server.source),
        to="v2",
        timeout_ms=EDIT_TIMEOUT_MS,
        **{"from": "v1"},
    )
    save_result(f"{session}-edit", edited)
    problems = check_edit(edited, gateway)
    assert not problems, f"{kind} after the edit: {problems}\n\n{evidence(edited, gp, server)}"
    return edited


@pytest.mark.parametrize("kind", ["vite", "webpack", "next"])
@pytest.mark.parametrize("visibility", ["public", "private"])
def test_hmr_through_the_gateway(
    kind: str,
    visibility: str,
    gateway_process: Callable[..., GatewayProcess],
    dev_server: Callable[..., DevServer],
    hmr_driver: Driver,
) -> None:
    gp = gateway_process()
    server = dev_server(kind)
    api = Api(gp)
    api.sandbox("sb")
    url = api.preview(kind, server.port, public=visibility == "public")
    token = api.token(kind) if visibility == "private" else None
    session = f"{kind}-{visibility}"
    try:
        run_hmr(hmr_driver, session, kind, url, server, gp, token)
    finally:
        hmr_driver.close_session(session)


@pytest.mark.parametrize("kind", ["vite", "webpack", "next"])
@pytest.mark.parametrize("visibility", ["public", "private"])
def test_hmr_after_a_gateway_restart(
    kind: str,
    visibility: str,
    gateway_process: Callable[..., GatewayProcess],
    redis_server: RedisServer,
    dev_server: Callable[..., DevServer],
    hmr_driver: Driver,
) -> None:
    """Restarting the gateway cuts the page's HMR socket. Routes (and the token signing key)
    live in Redis, so the new process serves the same hostname and still honours the cookie;
    the client must reconnect through it and the next edit must hot-update with no reload.
    Vite answers a lost socket with a page reload once it reconnects (by design, through its
    `vite-ping` probe socket); webpack-dev-server and Next reconnect without one."""
    env = {
        "GATEWAY_REDIS_URL": redis_server.url,
        "GATEWAY_REDIS_PREFIX": f"hmr{secrets.token_hex(4)}:",
    }
    gp = gateway_process(env=env)
    server = dev_server(kind)
    api = Api(gp)
    api.sandbox("sb")
    url = api.preview(kind, server.port, public=visibility == "public")
    token = api.token(kind) if visibility == "private" else None
    gateway = gateway_hostport(url, gp)
    session = f"{kind}-{visibility}-restart"
    try:
        first = run_hmr(hmr_driver, session, kind, url, server, gp, token)
        before = len(first["sockets"])

        assert gp.terminate() == 0, gp.output()[-3000:]
        gp2 = gateway_process(env=env, ports=(gp.edge_port, gp.api_port))
        try:
            back = hmr_driver.call(
                "reconnect", session=session, sinceSocket=before, timeout_ms=OPEN_TIMEOUT_MS[kind]
            )
        except DriverError as exc:
            pytest.fail(
                f"{kind}: no HMR socket after the restart: {exc}\n\n{evidence(None, gp2, server)}",
                pytrace=False,
            )
        save_result(f"{session}-reconnect", back)
        cut = [s for s in back["sockets"][:before] if s["closedAt"] is None]
        problems = problems_with_sockets(back, gateway)
        if cut:
            problems.append(f"sockets from before the restart were never closed: {cut}")
        if back["reconnect"]["text"] != "v2":
            problems.append(f"after reconnecting the page shows {back['reconnect']['text']!r}")
        if kind != "vite" and back["reconnect"]["reloaded"]:
            problems.append(f"{kind} reloaded the page to reconnect")
        assert not problems, f"after the restart: {problems}\n\n{evidence(back, gp2, server)}"

        again = hmr_driver.call(
            "edit",
            session=session,
            file=str(server.source),
            to="v3",
            timeout_ms=EDIT_TIMEOUT_MS,
            **{"from": "v2"},
        )
        save_result(f"{session}-edit-after-restart", again)
        problems = check_edit(again, gateway)
        assert not problems, f"edit after the restart: {problems}\n\n{evidence(again, gp2, server)}"
    finally:
        hmr_driver.close_session(session)


def test_a_socket_that_bypasses_the_proxy_is_caught(
    dev_server: Callable[..., DevServer],
    http_only_proxy: Callable[[int], int],
    hmr_driver: Driver,
) -> None:
    """The negative control: behind a proxy that drops Upgrade, Vite's client falls back to a
    socket straight to the dev server and hot reload still "works". The checks above must call
    that a failure, or a broken gateway would pass them."""
    server = dev_server("vite")
    proxy_port = http_only_proxy(server.port)
    url = f"http://bypass.local.preview.localhost:{proxy_port}/"
    session = "vite-bypass"
    try:
        opened = hmr_driver.call(
            "open",
            session=session,
            url=url,
            expect="v1",
            # Any frame: the only socket that gets one is the direct fallback, not the proxy's.
            readyFrame=None,
            timeout_ms=OPEN_TIMEOUT_MS["vite"],
            gateway=f"bypass.local.preview.localhost:{proxy_port}",
            requireGateway=False,
        )
        save_result(f"{session}-open", opened)
        direct = f"127.0.0.1:{server.port}"
        assert any(s["hostPort"] == direct and s["framesIn"] > 0 for s in opened["sockets"]), (
            f"expected Vite's direct fallback socket to {direct}\n\n{evidence(opened)}"
        )
        problems = problems_with_sockets(opened, f"bypass.local.preview.localhost:{proxy_port}")
        assert any("bypassed the gateway" in p for p in problems), problems
        assert any(direct in p and "not the gateway" in p for p in problems), problems
    finally:
        hmr_driver.close_session(session)
