"""Who may reach a preview, decided before anything is forwarded. Pure: no I/O.

Given the request's method, headers and query and the route that was found, ``decide`` returns
what to do (answer a CORS preflight, forward, or redirect after setting the token cookie) or
raises the error to answer with. HTTP requests and WebSocket upgrades go through the same code,
so there is no auth bypass on the upgrade path (jupyter-server-proxy CVE-2024-28179).

Token sources, in order of precedence: the ``X-Blaxel-Preview-Token`` header, the
``bl_preview_token`` query parameter, the gateway's cookie. Only the exact names count. A token
that is present but bad is an error; the gateway never falls back to a weaker source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

from gateway.core import header_policy
from gateway.core.errors import OriginRejected, TokenRejected, TokenRequired
from gateway.core.records import Route
from gateway.core.tokens import TokenSigner

TOKEN_HEADER = "X-Blaxel-Preview-Token"  # noqa: S105 - a header name
MAX_COOKIE_TRIES = 4
"""A sibling preview may have tossed its own cookie in; try a few, never unboundedly many."""


@dataclass(frozen=True, slots=True)
class Inbound:
    method: str
    headers: header_policy.Headers
    raw_path: str
    raw_query: str
    host_header: str
    """The Host header as sent, lower-cased (with its port), for the Origin comparison."""
    scheme: str
    websocket: bool


@dataclass(frozen=True, slots=True)
class Preflight:
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Forward:
    set_cookie: str | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    location: str
    set_cookie: str


Decision = Preflight | Forward | Redirect


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """What admission decides with: the token signer, the cookie it sets, the origins a
    WebSocket may come from."""

    signer: TokenSigner
    cookie_samesite: str
    allowed_origins: Sequence[str]


AdmissionPolicy = AdmissionConfig
"""The old name, kept while the new data path (issue 9) still imports it."""


def is_preflight(inbound: Inbound) -> bool:
    return (
        inbound.method == "OPTIONS"
        and "Origin" in inbound.headers
        and "Access-Control-Request-Method" in inbound.headers
    )


def preflight_headers(route: Route) -> dict[str, str]:
    """The preview's own CORS headers first, then the defaults for whatever it leaves unset."""
    own = route.response_headers.items()
    out = {k: v for k, v in own if k.lower().startswith("access-control-")}
    present = {k.lower() for k in out}
    for name, value in header_policy.CORS_DEFAULTS.items():
        if name.lower() not in present:
            out[name] = value
    return out


def decide(inbound: Inbound, route: Route, config: AdmissionConfig, now: datetime) -> Decision:
    if is_preflight(inbound):
        # Browsers send preflights without credentials, so they cannot carry a token; Blaxel
        # answers them itself, without auth, and so do we. Nothing reaches the sandbox.
        return Preflight(preflight_headers(route))
    if route.public:
        return Forward()

    header_token = inbound.headers.get(TOKEN_HEADER)
    if header_token is not None:
        _check(header_token.strip(), route, config, now)
        return Forward()

    query_token = query_param(inbound.raw_query, header_policy.TOKEN_QUERY_PARAM)
    if query_token is not None:
        expires = _check(query_token, route, config, now)
        cookie = token_cookie(query_token, inbound.scheme, config.cookie_samesite, expires, now)
        if _is_navigation(inbound):
            # The token leaves the address bar, the history and every later Referer.
            return Redirect(clean_location(inbound.raw_path, inbound.raw_query), cookie)
        return Forward(set_cookie=cookie)

    cookies = cookie_tokens(inbound.headers)
    if not cookies:
        raise TokenRequired("This preview is private: open it with a preview token.")
    first_error: TokenRejected | None = None
    for token in cookies[:MAX_COOKIE_TRIES]:
        try:
            _check(token, route, config, now)
        except TokenRejected as exc:
            first_error = first_error or exc
            continue
        if inbound.websocket:
            _check_origin(inbound, config)
        return Forward()
    assert first_error is not None
    raise first_error


def _check(token: str, route: Route, config: AdmissionConfig, now: datetime) -> float:
    """Verify and check revocation; return the token's expiry (epoch seconds)."""
    jti = config.signer.verify(token, preview_uid=route.preview_uid, now=now)
    expires = route.tokens.get(jti)
    if expires is None:
        raise TokenRejected("token_revoked", "The preview token has been revoked.")
    return expires


def _is_navigation(inbound: Inbound) -> bool:
    return (
        not inbound.websocket
        and inbound.method in ("GET", "HEAD")
        and inbound.headers.get("Sec-Fetch-Mode", "").lower() == "navigate"
    )


def _check_origin(inbound: Inbound, config: AdmissionConfig) -> None:
    """A cookie rides along with any site's ``new WebSocket(...)``; only the preview's own
    origin and configured embedders may use it (cross-site WebSocket hijacking)."""
    origin = inbound.headers.get("Origin", "").strip().lower()
    own = {f"http://{inbound.host_header}", f"https://{inbound.host_header}"}
    allowed = own | {o.strip().lower().rstrip("/") for o in config.allowed_origins}
    if origin not in allowed:
        raise OriginRejected("This WebSocket's origin may not use the preview cookie.")


def query_param(raw_query: str, name: str) -> str | None:
    """The first value of exactly ``name`` (no case folding, no decoding of the name)."""
    for part in raw_query.split("&"):
        key, sep, value = part.partition("=")
        if key == name and sep:
            return unquote(value)
    return None


def cookie_tokens(headers: header_policy.Headers) -> list[str]:
    tokens = []
    for header in headers.getall("Cookie", ()):
        for pair in header.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name in header_policy.TOKEN_COOKIE_NAMES and value:
                tokens.append(value.strip('"'))
    return tokens


def cookie_name(scheme: str) -> str:
    # __Host- makes the browser insist on Secure, Path=/ and no Domain (host-only), but browsers
    # honour Secure cookies only over https; plain-http previews use the bare name.
    return "__Host-bl_preview_token" if scheme == "https" else "bl_preview_token"


def token_cookie(token: str, scheme: str, samesite: str, expires: float, now: datetime) -> str:
    max_age = max(0, int(expires - now.timestamp()))
    parts = [f"{cookie_name(scheme)}={token}", "Path=/", f"Max-Age={max_age}", "HttpOnly"]
    # Chromium treats http://*.localhost as a secure context, so Secure works there too.
    parts.append("Secure")
    parts.append("SameSite=None; Partitioned" if samesite == "none" else "SameSite=Lax")
    return "; ".join(parts)


# Browsers drop tab, CR and LF anywhere in a URL before parsing it (WHATWG URL), so "/\t/evil"
# would be read as "//evil": they go before the leading slashes are collapsed.
_URL_IGNORED = str.maketrans("", "", "\t\r\n")


def clean_location(raw_path: str, raw_query: str) -> str:
    """A relative redirect target with the token removed. It starts with exactly one ``/``:
    ``//evil.test`` or ``/\\evil.test`` would send the browser to another host."""
    path = "/" + raw_path.translate(_URL_IGNORED).lstrip("/\\")
    query = header_policy.strip_token_param(raw_query)
    return path + ("?" + query if query else "")
