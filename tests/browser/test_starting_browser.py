"""A preview whose server is still starting, in headless Chromium (``private.mjs``) against the
real gateway process (issue 14): the navigation shows the gateway's waiting page at once, and
that page turns into the app by itself once the server listens, without a click or a reload
by the test."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from tests.browser.conftest import Api, Driver
from tests.browser.private_app import PrivateApp
from tests.helpers.ports import unused_port
from tests.helpers.process import GatewayProcess

pytestmark = pytest.mark.browser

START_DELAY_S = 3.0
APP_READY = "window.__appDone === true"
WAITING = "document.getElementById('gateway-starting') !== null"


@pytest.fixture(scope="module")
def driver(
    browser_prerequisites: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Driver]:
    d = Driver(tmp_path_factory.mktemp("starting-browser") / "driver.log", "private.mjs")
    try:
        yield d
    finally:
        d.stop()


def test_the_waiting_page_turns_into_the_app(
    driver: Driver, gateway_process: Callable[..., GatewayProcess]
) -> None:
    port = unused_port()
    gp = gateway_process(env={"GATEWAY_UPSTREAM_STARTUP_WAIT_S": "10"})
    api = Api(gp)
    api.sandbox("sb")
    url = api.preview("web", port, public=True)
    app = PrivateApp(port)
    # The scenario: the dev server comes up 3 s after the person opens the link.
    timer = threading.Timer(START_DELAY_S, app.start)
    timer.start()
    try:
        first = driver.call("open", session="s", url=url, ready=WAITING, timeoutMs=20_000)
        assert first["navigation"]["status"] == 503, first
        assert first["title"] == "Starting web…", first
        assert f"0.0.0.0:{port}" in first["text"], first
        done = driver.call("wait", session="s", ready=APP_READY, timeoutMs=20_000)
        assert done["title"] != "Starting web…", done
        assert app.nonce in done["text"], done
        # The page reloaded itself once: the waiting page, then the app, same URL.
        assert len(done["navigations"]) == 2, done["navigations"]
    finally:
        timer.cancel()
        timer.join()
        driver.close_session("s")
        app.stop()
