"""Who may reach a preview, decided before anything is forwarded. Pure: no I/O.

Given the request's method, headers and query and the route that was found, ``decide`` returns
what to do (answer a CORS preflight, forward, or redirect after setting the token cookie) or
raises the error to answer with. HTTP requests and WebSocket upgrades go through the same code,
so there is no auth bypass on the upgrade path (jupyter-server-proxy CVE-2024-28179).

Token sources, in order of precedence: the ``X-Blaxel-Preview-Token`` header, the
``bl_preview_token`` query parameter, the gateway's cookie. Only the exact names count. A token
that is present but bad is an error; the gateway never falls back to a weaker source.

The cookie is named per preview (``bl_preview_token_<suffix of the preview's uid>``), so the
copies a sibling preview plants with ``Domain=<preview domain>`` under the old shared name, or
another preview's, are ignored rather than counted against ``MAX_COOKIE_TRIES``: they cannot
lock the owner out. Over https only ``__Host-`` names count, which a browser never accepts with
a ``Domain``, so no sibling can plant one. Cookies under the old shared name are still tried
after this preview's own, so sessions from before the change keep working.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote

from gateway.core import header_policy
from gateway.core.errors import OriginRejected, TokenRejected, TokenRequired
from gateway.core.header_names import HOST_PREFIX, TOKEN_COOKIE_MARK
from gateway.core.records import Route
from gateway.core.token_cache import TokenCache
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


@dataclass(slots=True)  # not frozen: built per request (frozen costs ~1 µs); never mutated
class Facts:
    """What admission decides on, read from the request once: by ``facts_of`` from an
    ``Inbound`` (the aiohttp edge), by the planner from its header scan (the new edge)."""

    method: str
    raw_path: str
    raw_query: str
    host_header: str
    scheme: str
    websocket: bool
    preflight: bool
    """OPTIONS with both Origin and Access-Control-Request-Method."""
    token_header: str | None
    """The first ``X-Blaxel-Preview-Token``, as sent."""
    cookie_tokens: Sequence[str]
    origin: str
    """The first Origin header, '' without one."""
    sec_fetch_mode: str
    cookie_names: Sequence[str] = ()
    """The name of each of ``cookie_tokens``; empty: all under the old shared name."""


def facts_of(inbound: Inbound) -> Facts:
    headers = inbound.headers
    pairs = cookie_token_pairs(headers)
    return Facts(
        method=inbound.method,
        raw_path=inbound.raw_path,
        raw_query=inbound.raw_query,
        host_header=inbound.host_header,
        scheme=inbound.scheme,
        websocket=inbound.websocket,
        preflight=inbound.method == "OPTIONS"
        and "Origin" in headers
        and "Access-Control-Request-Method" in headers,
        token_header=headers.get(TOKEN_HEADER),
        cookie_tokens=[token for _, token in pairs],
        origin=headers.get("Origin", ""),
        sec_fetch_mode=headers.get("Sec-Fetch-Mode", ""),
        cookie_names=[name for name, _ in pairs],
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
    return decide_facts(facts_of(inbound), route, config, now.timestamp())


def decide_facts(
    facts: Facts,
    route: Route,
    config: AdmissionConfig,
    now: float,
    cache: TokenCache | None = None,
) -> Decision:
    """``now``: epoch seconds. ``cache``: tokens verified before (see ``token_cache``)."""
    if facts.preflight:
        # Browsers send preflights without credentials, so they cannot carry a token; Blaxel
        # answers them itself, without auth, and so do we. Nothing reaches the sandbox.
        return Preflight(preflight_headers(route))
    if route.public:
        return Forward()

    if facts.token_header is not None:
        _check(facts.token_header.strip(), route, config, now, cache)
        return Forward()

    query_token = query_param(facts.raw_query, header_policy.TOKEN_QUERY_PARAM)
    if query_token is not None:
        expires = _check(query_token, route, config, now, cache)
        cookie = token_cookie_at(
            query_token, facts.scheme, config.cookie_samesite, expires, now, route.preview_uid
        )
        if _is_navigation(facts):
            # The token leaves the address bar, the history and every later Referer.
            return Redirect(clean_location(facts.raw_path, facts.raw_query), cookie)
        return Forward(set_cookie=cookie)

    candidates = cookie_candidates(facts, route.preview_uid)
    if not candidates:
        raise TokenRequired("This preview is private: open it with a preview token.")
    first_error: TokenRejected | None = None
    for token in candidates[:MAX_COOKIE_TRIES]:
        try:
            _check(token, route, config, now, cache)
        except TokenRejected as exc:
            first_error = first_error or exc
            continue
        if facts.websocket:
            _check_origin(facts, config)
        return Forward()
    assert first_error is not None
    raise first_error


def _check(
    token: str, route: Route, config: AdmissionConfig, now: float, cache: TokenCache | None
) -> float:
    """Verify (or find verified) and check revocation; return the token's expiry (epoch s)."""
    verified = cache.get(route.preview_uid, token, now) if cache is not None else None
    if verified is None:
        verified = config.signer.verified(
            token, preview_uid=route.preview_uid, now=datetime.fromtimestamp(now, UTC)
        )
        if cache is not None:
            cache.put(route.preview_uid, token, verified)
    expires = route.tokens.get(verified.jti)
    if expires is None:
        raise TokenRejected("token_revoked", "The preview token has been revoked.")
    return expires


def _is_navigation(facts: Facts) -> bool:
    return (
        not facts.websocket
        and facts.method in ("GET", "HEAD")
        and facts.sec_fetch_mode.lower() == "navigate"
    )


def _check_origin(facts: Facts, config: AdmissionConfig) -> None:
    """A cookie rides along with any site's ``new WebSocket(...)``; only the preview's own
    origin and configured embedders may use it (cross-site WebSocket hijacking)."""
    origin = facts.origin.strip().lower()
    own = {f"http://{facts.host_header}", f"https://{facts.host_header}"}
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
    return [token for _, token in cookie_token_pairs(headers)]


def cookie_token_pairs(headers: header_policy.Headers) -> list[tuple[str, str]]:
    return [
        pair
        for header in headers.getall("Cookie", ())
        for pair in header_policy.split_token_cookie_pairs(header)[1]
    ]


def cookie_candidates(facts: Facts, preview_uid: str) -> list[str]:
    """The cookie values worth trying, best first: this preview's own name, then the old shared
    one. Other previews' names, and bare names over https, are not looked at."""
    names = facts.cookie_names or [TOKEN_COOKIE_MARK] * len(facts.cookie_tokens)
    own = {cookie_name(facts.scheme, preview_uid), HOST_PREFIX + own_cookie_name(preview_uid)}
    legacy = {HOST_PREFIX + TOKEN_COOKIE_MARK}
    if facts.scheme != "https":
        own.add(own_cookie_name(preview_uid))
        legacy.add(TOKEN_COOKIE_MARK)
    pairs = list(zip(names, facts.cookie_tokens, strict=False))
    return [t for n, t in pairs if n in own] + [t for n, t in pairs if n in legacy - own]


def own_cookie_name(preview_uid: str) -> str:
    """``bl_preview_token_<16 hex digits>``, from the preview's uid (never shown to siblings:
    host-only cookies of other hosts are not readable); the old shared name without a uid."""
    if not preview_uid:
        return TOKEN_COOKIE_MARK
    digest = hashlib.sha256(preview_uid.encode(), usedforsecurity=False).hexdigest()
    return f"{TOKEN_COOKIE_MARK}_{digest[:16]}"


def cookie_name(scheme: str, preview_uid: str = "") -> str:
    # __Host- makes the browser insist on Secure, Path=/ and no Domain (host-only), but browsers
    # honour Secure cookies only over https; plain-http previews use the bare name.
    name = own_cookie_name(preview_uid)
    return HOST_PREFIX + name if scheme == "https" else name


def token_cookie(
    token: str, scheme: str, samesite: str, expires: float, now: datetime, preview_uid: str = ""
) -> str:
    return token_cookie_at(token, scheme, samesite, expires, now.timestamp(), preview_uid)


def token_cookie_at(
    token: str, scheme: str, samesite: str, expires: float, now: float, preview_uid: str = ""
) -> str:
    """``token_cookie`` with ``now`` in epoch seconds."""
    max_age = max(0, int(expires - now))
    name = cookie_name(scheme, preview_uid)
    parts = [f"{name}={token}", "Path=/", f"Max-Age={max_age}", "HttpOnly"]
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
