"""Edits of single header values: the token taken out of cookies, queries and URLs, and
``Set-Cookie`` scoped to the preview. Pure: no I/O. ``header_policy`` re-exports these.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.core.header_names import TOKEN_COOKIE_MARK, TOKEN_QUERY_PARAM, is_token_cookie_name


def scope_set_cookie(value: str, protected_domains: Iterable[str]) -> str | None:
    """Make a cookie that would reach sibling previews host-only; drop one that impersonates
    the gateway's token cookie.

    Without the preview domain on the Public Suffix List, ``Domain=preview.example`` set by one
    sandbox would be sent to every other preview (cookie tossing).
    """
    name = value.split("=", 1)[0].strip()
    if is_token_cookie_name(name):
        return None
    parts = value.split(";")
    kept = [parts[0]]
    for attr in parts[1:]:
        key, _, domain = attr.partition("=")
        if key.strip().lower() == "domain":
            domain = domain.strip().lstrip(".").lower()
            if any(_covers(domain, protected) for protected in protected_domains):
                continue
        kept.append(attr)
    return ";".join(kept)


def _covers(cookie_domain: str, protected: str) -> bool:
    """True when a cookie for ``cookie_domain`` would be sent to hosts under ``protected`` or to
    ``protected`` itself (the domain is the protected one, a parent, or a name under it)."""
    return (
        cookie_domain == protected
        or protected.endswith("." + cookie_domain)
        or cookie_domain.endswith("." + protected)
    )


def strip_token_cookies(cookie_header: str) -> str:
    """Remove the gateway's cookie and keep every other cookie byte for byte, in order."""
    return split_token_cookies(cookie_header)[0]


def token_cookie_values(cookie_header: str) -> list[str]:
    """The values of the gateway's cookies in one Cookie header, in order, unquoted."""
    return split_token_cookies(cookie_header)[1]


def split_token_cookies(cookie_header: str) -> tuple[str, list[str]]:
    """One Cookie header without the gateway's cookies (every other cookie byte for byte, in
    order), and the values of those cookies (in order, unquoted)."""
    kept, pairs = split_token_cookie_pairs(cookie_header)
    return kept, [value for _, value in pairs]


def split_token_cookie_pairs(cookie_header: str) -> tuple[str, list[tuple[str, str]]]:
    """``split_token_cookies`` with each cookie's name: admission takes only the names that
    are this preview's (a sibling may have planted others)."""
    if TOKEN_COOKIE_MARK not in cookie_header:
        # No token cookie can be in it: splitting on ";" and joining again would give back the
        # same string.
        return cookie_header.strip(), []
    kept: list[str] = []
    tokens: list[tuple[str, str]] = []
    for pair in cookie_header.split(";"):
        if TOKEN_COOKIE_MARK not in pair:
            kept.append(pair)
            continue
        name, sep, value = pair.strip().partition("=")
        if sep and is_token_cookie_name(name) and value:
            tokens.append((name, value.strip('"')))
        if not is_token_cookie_name(pair.split("=", 1)[0].strip()):
            kept.append(pair)
    return ";".join(kept).strip(), tokens


def strip_token_param(query: str) -> str:
    """Remove every ``bl_preview_token`` parameter from a raw query string, leaving the others
    byte-identical (no re-encoding, so Vite's ``?token=`` survives exactly)."""
    if TOKEN_QUERY_PARAM not in query:
        return query
    kept = [p for p in query.split("&") if p.split("=", 1)[0] != TOKEN_QUERY_PARAM]
    return "&".join(kept)


def strip_token_param_from_url(url: str) -> str:
    base, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hash_sep, fragment = rest.partition("#")
    query = strip_token_param(query)
    return base + ("?" + query if query else "") + (hash_sep + fragment)
