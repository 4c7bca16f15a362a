"""Private previews in a real browser: headless Chromium (``private.mjs``) against the real
gateway process and a real upstream app on 127.0.0.1 (``private_app.py``).

The app's page loads a script, an image and ``fetch('/api/data')``; a private preview must serve
all three through the cookie the gateway sets when a ``?bl_preview_token=`` link is opened, with
the token gone from the address bar and never reaching the app. Without a token, or with an
expired or revoked one, the browser gets the gateway's 401 page and the app gets nothing; a
revocation cuts an open cookie session at the next request.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from gateway.core.tokens import LEEWAY_S
from tests.browser.conftest import Api, Driver, DriverError, save_result
from tests.browser.private_app import LOGO_SIZE, PrivateApp
from tests.helpers.gateway import expires_in
from tests.helpers.process import GatewayProcess

pytestmark = pytest.mark.browser

TOKEN_PARAM = "bl_preview_token"
# The per-preview cookie name the gateway sets over http, and any name it reads.
OWN_COOKIE = re.compile(rf"{TOKEN_PARAM}_[0-9a-f]{{16}}")
ANY_TOKEN_COOKIE = re.compile(rf"(__Host-)?{TOKEN_PARAM}(_[0-9a-f]{{16}})?")


def is_own_cookie(name: str) -> bool:
    return OWN_COOKIE.fullmatch(name) is not None


def is_token_cookie(name: str) -> bool:
    return ANY_TOKEN_COOKIE.fullmatch(name) is not None


TOKEN_HEADER = "x-blaxel-preview-token"
TIMEOUT_MS = 20_000
SUBRESOURCES = ("/app.js", "/logo.png", "/api/data")
APP_READY = "window.__appDone === true"
APP_PROBE = """(() => {
  const logo = document.getElementById("logo");
  return {
    script: document.getElementById("script")?.textContent ?? null,
    image: logo && {
      complete: logo.complete,
      naturalWidth: logo.naturalWidth,
      naturalHeight: logo.naturalHeight,
    },
    data: document.getElementById("data")?.textContent ?? null,
    cookieReadableByScript: document.cookie.includes("bl_preview_token"),
  };
})()"""
FETCH_DATA = """fetch("/api/data", { headers: { Accept: "application/json" } }).then(async (r) => ({
  status: r.status,
  code: r.headers.get("x-blaxel-error-code"),
  body: await r.text(),
}))"""


# ── fixtures ────────────────────────────────────────────────────────────────────────────────
@pytest.fixture(scope="module")
def private_driver(
    browser_prerequisites: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Driver]:
    driver = Driver(tmp_path_factory.mktemp("private-browser") / "driver.log", "private.mjs")
    try:
        yield driver
    finally:
        driver.stop()


@pytest.fixture
def preview(
    gateway_process: Callable[..., GatewayProcess], private_app: PrivateApp
) -> tuple[GatewayProcess, Api, str]:
    """A gateway process with sandbox `sb` and a private preview `web` of the app's port."""
    gp = gateway_process()
    api = Api(gp)
    api.sandbox("sb")
    url = api.preview("web", private_app.port, public=False)
    parts = urlsplit(url)
    assert parts.port == gp.edge_port and parts.path == "/", url
    assert parts.hostname is not None and parts.hostname.endswith(".preview.localhost"), url
    return gp, api, url


# ── helpers ─────────────────────────────────────────────────────────────────────────────────
def mint(api: Api, *, seconds: float, preview: str = "web") -> tuple[str, str]:
    """A token through the API; returns (name, token)."""
    status, body = api.call(
        "POST",
        f"/sandboxes/sb/previews/{preview}/tokens",
        {"metadata": {"name": ""}, "spec": {"expiresAt": expires_in(seconds=seconds)}},
    )
    assert status == 200, f"minting a token: {status} {body}"
    return str(body["metadata"]["name"]), str(body["spec"]["token"])


def revoke(api: Api, name: str, preview: str = "web") -> None:
    status, body = api.call("DELETE", f"/sandboxes/sb/previews/{preview}/tokens/{name}")
    assert status == 200, f"deleting token {name}: {status} {body}"


def token_exp(token: str) -> int:
    """The ``exp`` claim (epoch seconds) of a JWT, read without verifying it."""
    payload = token.split(".")[1]
    return int(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


def edge_get(gp: GatewayProcess, url: str, path: str, **headers: str) -> tuple[int, str]:
    """A plain HTTP GET to the edge listener with the preview's Host; (status, error code)."""
    conn = http.client.HTTPConnection("127.0.0.1", gp.edge_port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": urlsplit(url).netloc, **headers})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("X-Blaxel-Error-Code", "")
    finally:
        conn.close()


def evidence(result: dict[str, Any] | None, gp: GatewayProcess, app: PrivateApp) -> str:
    parts = []
    if result is not None:
        parts.append("driver result:\n" + json.dumps(result, indent=1))
    parts.append("what the app received:\n" + json.dumps(app.records(), indent=1))
    parts.append("gateway log (tail):\n" + gp.output()[-3000:])
    return "\n\n".join(parts)


def drive(
    driver: Driver, gp: GatewayProcess, app: PrivateApp, op: str, **args: Any
) -> dict[str, Any]:
    try:
        result = driver.call(op, timeout_ms=TIMEOUT_MS, **args)
    except DriverError as exc:
        pytest.fail(f"{exc}\n\n{evidence(None, gp, app)}", pytrace=False)
    save_result(f"private-{args.get('session', 'x')}-{op}", result)
    return result


def cookie_names(header: str) -> list[str]:
    return [pair.split("=", 1)[0].strip() for pair in header.split(";") if pair.strip()]


def leaks_to_the_app(app: PrivateApp, token: str) -> list[str]:
    """Every way the token (or the gateway's credential names) reached the upstream app."""
    problems = []
    for record in app.records():
        where = f"{record['method']} {record['path']}"
        if token in json.dumps(record):
            problems.append(f"{where}: the token itself reached the app: {record}")
        if any(name == TOKEN_PARAM for name, _ in parse_qsl(record["query"])):
            problems.append(f"{where}: query still has {TOKEN_PARAM}: {record['query']!r}")
        for name, value in record["headers"]:
            lower = name.lower()
            if lower == TOKEN_HEADER:
                problems.append(f"{where}: the {name} header reached the app")
            if lower == "cookie" and any(TOKEN_PARAM in n for n in cookie_names(value)):
                problems.append(f"{where}: the token cookie reached the app: {value!r}")
            if lower == "referer" and TOKEN_PARAM in value:
                problems.append(f"{where}: the Referer names {TOKEN_PARAM}: {value!r}")
    return problems


def header(record: dict[str, Any], name: str) -> str | None:
    return next((v for k, v in record["headers"] if k.lower() == name), None)


def check_app_opened(result: dict[str, Any], url: str, app: PrivateApp, token: str) -> list[str]:
    """The token link became a cookie, and the page, its script, image and fetch all loaded
    through it, with the token nowhere after the first request and never at the app."""
    problems = []
    host = urlsplit(url).hostname
    chain = result["navigation"]["chain"]
    if [c["status"] for c in chain] != [303, 200]:
        problems.append(f"expected 303 (token link) then 200 (clean URL); chain: {chain}")
    else:
        if TOKEN_PARAM not in chain[0]["url"] or chain[0]["location"] != "/":
            problems.append(f"the 303 should go from the token link to `/`: {chain[0]}")
        if chain[1]["url"] != url:
            problems.append(f"the redirect landed on {chain[1]['url']}, not {url}")
        set_cookie = chain[0]["setCookie"] or ""
        expected = ("=<TOKEN>;", "Path=/", "HttpOnly", "Secure", "SameSite=Lax")
        if not is_own_cookie(set_cookie.split("=", 1)[0]) or not all(
            part in set_cookie for part in expected
        ):
            problems.append(f"the 303's Set-Cookie lacks one of {expected}: {set_cookie!r}")
    if result["url"] != url or result["tokenInAddressBar"]:
        problems.append(f"the address bar shows {result['url']}, not {url}")

    probe = result["probe"] or {}
    if probe.get("script") != "app.js ran":
        problems.append(f"/app.js did not run: #script shows {probe.get('script')!r}")
    image = probe.get("image") or {}
    if (image.get("naturalWidth"), image.get("naturalHeight")) != LOGO_SIZE:
        problems.append(f"/logo.png did not load as a {LOGO_SIZE} image: {image}")
    try:
        rendered = json.loads(probe.get("data") or "")
    except ValueError:
        rendered = probe.get("data")
    if rendered != app.data:
        problems.append(f"fetch('/api/data') rendered {rendered!r}, not {app.data!r}")
    if probe.get("cookieReadableByScript") is not False:
        problems.append(f"the token cookie is readable by the page's scripts: {probe}")

    token_cookies = [c for c in result["cookies"] if is_own_cookie(c["name"])]
    wanted = {"domain": host, "path": "/", "httpOnly": True, "secure": True, "sameSite": "Lax"}
    if len(token_cookies) != 1 or not token_cookies[0]["isToken"]:
        problems.append(f"expected one {TOKEN_PARAM} cookie holding the token: {result['cookies']}")
    elif any(token_cookies[0][k] != v for k, v in wanted.items()):
        problems.append(f"the cookie should be {wanted}: {token_cookies[0]}")

    requests = result["requests"]
    for i, r in enumerate(requests):
        if not r["viaGateway"]:
            problems.append(f"a request went around the gateway: {r['url']}")
        if i and (r["tokenInUrl"] or r["tokenParamInUrl"] or r["tokenInReferer"]):
            problems.append(f"the token was sent on after the token link: {r}")
        if r["tokenHeader"]:
            problems.append(f"a request carried {TOKEN_HEADER}: {r}")
    for path in SUBRESOURCES:
        sent = [r for r in requests if urlsplit(r["url"]).path == path]
        if not sent:
            problems.append(f"the page never requested {path}")
        for r in sent:
            if r["status"] != 200 or not r["tokenCookie"] or r["tokenParamInUrl"]:
                problems.append(f"{path} should be a 200 admitted by the cookie alone: {r}")

    seen = app.records()
    paths = [r["path"] for r in seen]
    if sorted(paths) != sorted(["/", *SUBRESOURCES]):
        problems.append(f"the app should receive /, {', '.join(SUBRESOURCES)} once each: {paths}")
    for r in seen:
        if r["path"] in SUBRESOURCES and header(r, "referer") != url:
            # Not vacuous: the Referer does arrive, and it is the clean URL.
            problems.append(f"{r['path']} reached the app with Referer {header(r, 'referer')!r}")
    problems += leaks_to_the_app(app, token)
    return problems


def check_401_page(
    result: dict[str, Any], code: str, words: tuple[str, ...], app: PrivateApp, since: int = 0
) -> list[str]:
    """The browser shows the gateway's 401 HTML page for ``code``, and the app received
    nothing after its first ``since`` requests."""
    problems = []
    nav = result["navigation"]
    headers = nav["headers"]
    if nav["status"] != 401:
        problems.append(f"the page answered {nav['status']}, not 401")
    got = headers.get("x-blaxel-error-code")
    if got != code:
        problems.append(f"X-Blaxel-Error-Code is {got!r}, not {code}")
    if headers.get("x-blaxel-source") != "gateway":
        problems.append(f"X-Blaxel-Source is {headers.get('x-blaxel-source')!r}, not gateway")
    if not headers.get("content-type", "").startswith("text/html"):
        problems.append(f"the 401 is {headers.get('content-type')!r}, not an HTML page")
    title, text = result["title"] or "", (result["text"] or "").lower()
    if not title.startswith("401"):
        problems.append(f"the page title is {title!r}")
    for word in (*words, code):
        if word not in text:
            problems.append(f"the page does not say {word!r}: {result['text']!r}")
    if app.paths()[since:]:
        problems.append(f"the app received {app.paths()[since:]}")
    return problems


def wait_until_expired(token: str) -> None:
    """Bounded wait until the gateway must call the token expired: ``exp`` plus its leeway."""
    due = token_exp(token) + LEEWAY_S + 0.5
    deadline = time.monotonic() + 30
    while time.time() <= due:
        assert time.monotonic() < deadline, "the token's expiry is more than 30 s away"
        time.sleep(min(0.2, max(due - time.time(), 0.01)))


def open_token_link(
    driver: Driver,
    gp: GatewayProcess,
    app: PrivateApp,
    session: str,
    url: str,
    token: str,
    when: str = "",
) -> dict[str, Any]:
    """Opens ``url?bl_preview_token=`` in a fresh context and asserts the app came up through
    the cookie, with the token nowhere it should not be (``check_app_opened``)."""
    opened = drive(
        driver,
        gp,
        app,
        "open",
        session=session,
        url=url,
        token=token,
        ready=APP_READY,
        probe=APP_PROBE,
    )
    problems = check_app_opened(opened, url, app, token)
    prefix = f"{when}: " if when else ""
    assert not problems, f"{prefix}{problems}\n\n{evidence(opened, gp, app)}"
    return opened


# ── tests ───────────────────────────────────────────────────────────────────────────────────
def test_token_link_opens_the_app_through_the_cookie(
    preview: tuple[GatewayProcess, Api, str], private_app: PrivateApp, private_driver: Driver
) -> None:
    gp, api, url = preview
    _, token = mint(api, seconds=3600)
    session = "cookie-session"
    try:
        open_token_link(private_driver, gp, private_app, session, url, token)
    finally:
        private_driver.close_session(session)


def test_without_a_token_the_browser_gets_the_private_page(
    preview: tuple[GatewayProcess, Api, str], private_app: PrivateApp, private_driver: Driver
) -> None:
    gp, _, url = preview
    session = "no-token"
    try:
        page = drive(private_driver, gp, private_app, "open", session=session, url=url)
        problems = check_401_page(page, "token_required", ("private", "token"), private_app)
        if page["cookies"]:
            problems.append(f"cookies were set: {page['cookies']}")
        assert not problems, f"{problems}\n\n{evidence(page, gp, private_app)}"
    finally:
        private_driver.close_session(session)


def test_expired_token_link_gets_the_expired_page(
    preview: tuple[GatewayProcess, Api, str], private_app: PrivateApp, private_driver: Driver
) -> None:
    gp, api, url = preview
    _, token = mint(api, seconds=2)
    # It was a working token (header transport, no browser: its cookie would live 1-2 s).
    assert edge_get(gp, url, "/api/data", **{"X-Blaxel-Preview-Token": token}) == (200, ""), (
        evidence(None, gp, private_app)
    )
    wait_until_expired(token)
    received = len(private_app.records())
    session = "expired"
    try:
        page = drive(private_driver, gp, private_app, "open", session=session, url=url, token=token)
        problems = check_401_page(page, "token_expired", ("expired",), private_app, received)
        if any(is_token_cookie(c["name"]) for c in page["cookies"]):
            problems.append(f"an expired token was turned into a cookie: {page['cookies']}")
        problems += leaks_to_the_app(private_app, token)
        assert not problems, f"{problems}\n\n{evidence(page, gp, private_app)}"
    finally:
        private_driver.close_session(session)


def test_revoked_token_link_gets_the_revoked_page(
    preview: tuple[GatewayProcess, Api, str], private_app: PrivateApp, private_driver: Driver
) -> None:
    gp, api, url = preview
    name, token = mint(api, seconds=3600)
    revoke(api, name)
    session = "revoked"
    try:
        page = drive(private_driver, gp, private_app, "open", session=session, url=url, token=token)
        problems = check_401_page(page, "token_revoked", ("revoked",), private_app)
        if any(is_token_cookie(c["name"]) for c in page["cookies"]):
            problems.append(f"a revoked token was turned into a cookie: {page['cookies']}")
        assert not problems, f"{problems}\n\n{evidence(page, gp, private_app)}"
    finally:
        private_driver.close_session(session)


def test_revoking_the_token_closes_an_open_session_at_once(
    preview: tuple[GatewayProcess, Api, str], private_app: PrivateApp, private_driver: Driver
) -> None:
    gp, api, url = preview
    name, token = mint(api, seconds=3600)
    session = "revoked-live"
    try:
        open_token_link(
            private_driver, gp, private_app, session, url, token, when="before revoking"
        )
        received = len(private_app.records())

        revoke(api, name)

        # The page still open: its next API call is refused, with the reason.
        fetched = drive(
            private_driver, gp, private_app, "evaluate", session=session, expression=FETCH_DATA
        )["value"]
        assert (fetched["status"], fetched["code"]) == (401, "token_revoked"), (
            f"fetch after revoking: {fetched}\n\n{evidence(None, gp, private_app)}"
        )

        reloaded = drive(private_driver, gp, private_app, "reload", session=session)
        problems = check_401_page(reloaded, "token_revoked", ("revoked",), private_app, received)
        navigations = [r for r in reloaded["requests"] if r["navigation"]]
        if not navigations or not navigations[-1]["tokenCookie"]:
            problems.append(f"the reload did not carry the token cookie: {navigations[-1:]}")
        if reloaded["tokenInAddressBar"]:
            problems.append(f"the reload used the token link: {reloaded['url']}")
        assert not problems, f"after revoking: {problems}\n\n{evidence(reloaded, gp, private_app)}"
    finally:
        private_driver.close_session(session)


def test_a_sibling_preview_never_gets_the_cookie(
    preview: tuple[GatewayProcess, Api, str], private_app: PrivateApp, private_driver: Driver
) -> None:
    """CK02: the cookie set on one preview is host-only, so the browser never sends it to a
    sibling preview under the same parent domain. Had it been sent, the sibling would answer
    ``token_wrong_preview``; it answers ``token_required``: no token came at all."""
    gp, api, url = preview
    sibling = api.preview("sibling", private_app.port, public=False)
    assert urlsplit(sibling).hostname != urlsplit(url).hostname
    _, token = mint(api, seconds=3600)
    session = "sibling"
    try:
        open_token_link(private_driver, gp, private_app, session, url, token)
        seen = len(private_app.paths())
        page = drive(private_driver, gp, private_app, "goto", session=session, url=sibling)
        problems = check_401_page(page, "token_required", ("private",), private_app, since=seen)
        assert not problems, f"{problems}\n\n{evidence(page, gp, private_app)}"
    finally:
        private_driver.close_session(session)
