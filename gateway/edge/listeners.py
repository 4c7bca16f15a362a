"""The edge's listeners: plain http alone, or HTTPS with the plain port redirecting to it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gateway.edge.handler import EdgeHandler
from gateway.edge.pool import UpstreamPool
from gateway.edge.redirect import AcmeResponder, HttpsRedirect
from gateway.edge.server import EdgeServer
from gateway.edge.tls import CertificateStore, files_from
from gateway.ops.settings import Settings


@dataclass(frozen=True, slots=True)
class ListenerPorts:
    bind: str
    edge_port: int
    tls_port: int
    public_port: int | None
    """The https port clients see (redirects name it); None: the TLS port itself."""
    acme_upstream: str | None
    """``host:port`` of the ACME HTTP-01 responder."""
    connect_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ListenerPorts:
        return cls(
            bind=settings.bind,
            edge_port=settings.edge_port,
            tls_port=settings.tls_port,
            public_port=settings.public_port,
            acme_upstream=settings.acme_http_upstream,
            connect_timeout_s=settings.upstream_connect_timeout_s,
        )


def certificate_store(settings: Settings) -> CertificateStore | None:
    """The edge's certificates, not loaded yet; None when TLS is off."""
    paths = (settings.tls_cert, settings.tls_key, settings.tls_cert_dir)
    files = files_from(settings.preview_domain, *paths)
    return CertificateStore(files, settings.tls_reload_interval_s) if files else None


async def start_listeners(
    ports: ListenerPorts,
    edge: EdgeServer,
    certs: CertificateStore | None,
    *,
    reuse_port: bool = False,
) -> tuple[int, int | None]:
    """The bound edge port, and the TLS port when certificates are configured: the edge port
    then only redirects to https (and passes ACME challenges on). ``reuse_port``: workers."""
    if certs is None:
        return await edge.start(ports.bind, ports.edge_port, reuse_port=reuse_port), None
    certs.load()  # CertificateError: no start without a usable certificate
    tls_port = await edge.start(
        ports.bind, ports.tls_port, tls=certs.listening, reuse_port=reuse_port
    )
    acme = acme_handler(ports, edge.edge)
    if acme is not None:
        edge.pools.append(acme.pool)
    redirect = HttpsRedirect(ports.public_port or tls_port, acme)
    edge_port = await edge.start(
        ports.bind, ports.edge_port, handler=redirect, reuse_port=reuse_port
    )
    return edge_port, tls_port


def acme_handler(ports: ListenerPorts, edge: EdgeHandler) -> EdgeHandler | None:
    """The edge, with every host routed to the ACME responder: an operator's own address, so
    it may be anywhere (allowed_targets is for sandboxes)."""
    if ports.acme_upstream is None:
        return None
    host, _, port = ports.acme_upstream.rpartition(":")
    anywhere = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    pool = UpstreamPool(
        allowed=anywhere,
        max_connections=64,
        max_per_target=64,
        connect_timeout_s=ports.connect_timeout_s,
    )
    finder = AcmeResponder(host.strip("[]"), int(port))
    return EdgeHandler(edge.config, edge.planner, finder, pool, (pool, edge.ws_limits, edge.hub))
