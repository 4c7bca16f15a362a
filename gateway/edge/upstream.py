"""Dialling sandboxes: the upstream client session and the one place its errors are translated.

Only registered sandbox targets are dialled, and only at addresses inside ``allowed_targets``:
IP literals are checked before the connect, DNS names by a resolver that drops every address
outside the allow-list, so a name that resolves to the metadata service or to loopback is never
reached (threat model R01, R02, R08).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Sequence

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from gateway.core.errors import (
    GatewayError,
    TargetNotAllowed,
    UpstreamBadResponse,
    UpstreamRefused,
    UpstreamTimedOut,
    UpstreamUnreachable,
)
from gateway.core.netpolicy import IPNetwork, address_allowed, is_ip_literal


class AddressNotAllowed(OSError):
    """Raised instead of connecting: every address of the target is outside the allow-list.
    An OSError so that aiohttp's connector carries it out as the connection error."""


class GuardedResolver(AbstractResolver):
    """Resolves sandbox names, keeping only addresses inside the allow-list."""

    def __init__(self, allowed: Sequence[IPNetwork]) -> None:
        self._inner = DefaultResolver()
        self._allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept = [r for r in results if address_allowed(r["host"], self._allowed)]
        if not kept:
            raise AddressNotAllowed(f"{host} resolves to no allowed sandbox address")
        return kept

    async def close(self) -> None:
        await self._inner.close()


class GuardedConnector(aiohttp.TCPConnector):
    """Checks every address before connecting, IP literals included: aiohttp's connector hands
    IP literals straight to ``connect()`` without asking the resolver."""

    def __init__(self, allowed: Sequence[IPNetwork], **kwargs: object) -> None:
        super().__init__(resolver=GuardedResolver(allowed), **kwargs)  # type: ignore[arg-type]
        self._allowed = allowed

    async def _resolve_host(
        self, host: str, port: int, traces: object = None
    ) -> list[ResolveResult]:
        if is_ip_literal(host) and not address_allowed(host, self._allowed):
            raise AddressNotAllowed(f"{host} is not an allowed sandbox address")
        return await super()._resolve_host(host, port, traces)  # type: ignore[arg-type]


class RedirectRefused(Exception):
    """An upstream answered a WebSocket handshake with a redirect. aiohttp's ``ws_connect``
    follows redirects and has no switch to stop it; following one would let a sandbox send the
    gateway to another sandbox, so the handshake is stopped and the status passed back."""

    def __init__(self, status: int, location: str | None) -> None:
        super().__init__(status)
        self.status = status
        self.location = location


async def _refuse_redirect(
    session: aiohttp.ClientSession, context: object, params: aiohttp.TraceRequestRedirectParams
) -> None:
    params.response.release()
    raise RedirectRefused(params.response.status, params.response.headers.get("Location"))


def create_session(
    *,
    allowed: Sequence[IPNetwork],
    max_connections: int,
    max_per_target: int,
    connect_timeout_s: float,
    websocket: bool = False,
) -> aiohttp.ClientSession:
    """One session for HTTP and one for WebSockets per replica. ``limit_per_host`` keys the
    pool by (host, port), so every sandbox port has its own bounded pool and one slow sandbox
    cannot take all the slots (threat model D02b)."""
    connector = GuardedConnector(
        allowed,
        limit=max_connections,
        limit_per_host=max_per_target,
        ttl_dns_cache=10,
        enable_cleanup_closed=False,
        keepalive_timeout=30,
    )
    # HTTP requests pass allow_redirects=False; ws_connect has no such switch, so only the
    # WebSocket session pays for the trace hook (its cost: docs/benchmarks.md).
    traces = []
    if websocket:
        trace = aiohttp.TraceConfig()
        trace.on_request_redirect.append(_refuse_redirect)
        traces.append(trace)
    return aiohttp.ClientSession(
        connector=connector,
        trace_configs=traces,
        # Total timeouts kill long downloads and streams; each phase has its own deadline instead.
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s),
        auto_decompress=False,
        trust_env=False,  # HTTP_PROXY in the environment must never redirect sandbox traffic
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        raise_for_status=False,
    )


@contextlib.contextmanager
def translate_errors(port: int) -> Iterator[None]:
    """Map aiohttp/OS failures to what the client sees (cf. httpx's map_httpcore_exceptions)."""
    try:
        yield
    except (GatewayError, RedirectRefused):
        raise
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, AddressNotAllowed):
            # A DNS target that resolves outside allowed_targets is the same refusal as an IP
            # literal outside it (edge._check_target), not an unreachable sandbox.
            raise TargetNotAllowed("This preview's sandbox address is not allowed.") from exc
        if isinstance(exc.os_error, ConnectionRefusedError):
            # No address in the text, not even as advice: error pages never show one.
            raise UpstreamRefused(
                f"Nothing is listening on port {port} of the sandbox. The app must listen on "
                f"0.0.0.0:{port} (all interfaces), not only on localhost."
            ) from exc
        if isinstance(exc.os_error, TimeoutError):
            raise UpstreamTimedOut("The sandbox did not accept the connection in time.") from exc
        raise UpstreamUnreachable("The sandbox could not be reached.") from exc
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise UpstreamTimedOut("The app did not answer in time.") from exc
    except (aiohttp.ClientResponseError, aiohttp.ClientPayloadError) as exc:
        raise UpstreamBadResponse("The app sent an invalid HTTP response.") from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError) as exc:
        raise UpstreamUnreachable("The app closed the connection without answering.") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamBadResponse("The app sent an invalid HTTP response.") from exc


def target_url(host: str, port: int, path: str, query: str, *, websocket: bool = False) -> URL:
    """The upstream URL, built from the registered target and the raw path and query.

    Never ``URL.join``: it turns a path of ``//evil/x`` into another host (threat model H16).
    ``encoded=True`` keeps the path byte for byte, so ``/%2e%2e/`` is not normalised away.
    """
    if not path.startswith("/"):
        path = "/" + path
    return URL.build(
        scheme="ws" if websocket else "http",
        host=host,
        port=port,
        path=path,
        query_string=query,
        encoded=True,
    )
