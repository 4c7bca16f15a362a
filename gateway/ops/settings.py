"""Typed settings, read once from the environment (prefix ``GATEWAY_``).

Only ``app.py`` and ``cli.py`` read the root object; every component receives the values it needs.
Each field's docstring is the user manual: ``python -m gateway --print-settings`` and the README
table are both generated from it.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.core.netpolicy import IPNetwork

# Private address space where container and VM sandboxes normally live. Loopback, link-local
# (cloud metadata at 169.254.169.254) and everything public stay out unless an operator adds them.
DEFAULT_ALLOWED_TARGETS = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7"
# Link-local, where cloud metadata lives (169.254.169.254), in each spelling: denied even when an
# operator widens allowed_targets to cover it.
DEFAULT_DENIED_TARGETS = "169.254.0.0/16,fe80::/10,::ffff:169.254.0.0/112"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        populate_by_name=True,
    )

    # ── listeners ───────────────────────────────────────────────────────────────────────────
    bind: str = "0.0.0.0"  # noqa: S104 - a gateway in a container must listen on every interface
    """Listen address of both listeners."""
    edge_port: int = Field(8080, ge=0, le=65535)
    """Edge listener: preview traffic (HTTP and WebSocket)."""
    api_port: int = Field(8081, ge=0, le=65535)
    """Control API, `/healthz`, `/readyz` and `/metrics`."""
    workers: int = Field(1, ge=1, le=256)
    """Processes sharing both ports (`SO_REUSEPORT`), one per core; `auto` means the CPUs this
    process may run on. Above 1 a supervisor restarts a worker that dies and forwards SIGTERM and
    SIGHUP to all; it needs Redis and fixed ports. Each worker has its own route cache."""

    # ── naming ──────────────────────────────────────────────────────────────────────────────
    preview_domain: str = "preview.localhost"
    """Parent domain of preview hostnames (`<id>.<region>.<preview_domain>`)."""
    region: str = "local"
    """Region label in random hostnames; empty omits the label."""
    public_scheme: Literal["http", "https"] | None = None
    """Scheme used to build `spec.url`; unset means `https` when the edge serves TLS, else
    `http`. Set `https` behind a proxy that terminates TLS (Caddy)."""
    public_port: int | None = Field(None, ge=1, le=65535)
    """Port used to build `spec.url` and the https redirect; unset means the TLS port when the
    edge serves TLS, else the edge port. Omitted when it is the scheme's default port."""

    # ── TLS at the edge (docs/domains.md) ───────────────────────────────────────────────────
    tls_port: int = Field(8443, ge=0, le=65535)
    """HTTPS listener, served when certificates are configured. The edge port then redirects
    to it (308), except ACME HTTP-01 challenges."""
    tls_cert: str | None = None
    """PEM certificate chain for the preview domain (a wildcard), with `tls_key`."""
    tls_key: str | None = None
    """PEM private key of `tls_cert`."""
    tls_cert_dir: str | None = None
    """Directory of per-domain certificates: `<name>.pem` + `<name>.key`, a wildcard
    `*.<name>` as `_wildcard.<name>.pem`. Chosen by SNI before the preview certificate."""
    tls_reload_interval_s: float = Field(5.0, gt=0)
    """How often certificate files are checked for changes (also reloaded on SIGHUP)."""
    acme_http_upstream: str | None = None
    """`host:port` that `/.well-known/acme-challenge/` requests on the edge port are passed
    to while TLS is on (an ACME client's HTTP-01 responder); unset: they get 404."""

    # ── store ───────────────────────────────────────────────────────────────────────────────
    redis_url: SecretStr | None = None
    """Routing table in Redis (`redis://host:6379/0`); unset means the embedded in-memory store
    (single node). With `GATEWAY_REDIS_CLUSTER`, or as `redis+cluster://host:port`, any one
    node of a Redis Cluster."""
    redis_cluster: bool = False
    """The URL is a node of a Redis Cluster: keys get per-workspace hash tags (docs/redis.md)."""
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated `host:port` of Redis Sentinels (instead of a URL): the gateway asks them
    for the primary and follows failovers without a restart."""
    redis_master: str = "mymaster"
    """With Sentinels: the name of the monitored primary."""
    redis_password: SecretStr | None = None
    """Password of the Redis data nodes (Sentinel's primary and replicas, or Cluster nodes),
    when it is not in the URL."""
    redis_sentinel_password: SecretStr | None = None
    """Password of the Sentinels themselves (their `requirepass`), if they have one."""
    redis_prefix: str = "pgw:"
    """Prefix of every Redis key and channel the gateway uses."""
    redis_timeout_s: float = Field(0.3, gt=0)
    """Longest a request waits on Redis before it is served from cache or fails closed."""

    # ── control API ─────────────────────────────────────────────────────────────────────────
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated `workspace:key` pairs allowed on the control API. Unset: one key for
    workspace `default` is generated and printed at start."""
    api_keys_file: str | None = None
    """File of `workspace:key` lines (one a line, `#` comments), re-read when it changes, so keys
    rotate without a restart. Used together with `api_keys`."""
    sweep_interval_s: float = Field(15.0, gt=0)
    """How often each replica deletes expired sandboxes and previews (`spec.ttl`/`spec.expires`).
    Expired objects are never served or listed in between: reads check the expiry."""
    reserved_ports: Annotated[list[int], NoDecode] = Field(default_factory=list)
    """Comma-separated ports that previews may not use, in addition to 80."""
    allowed_targets: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=lambda: [
            ipaddress.ip_network(n) for n in DEFAULT_ALLOWED_TARGETS.split(",")
        ]
    )
    """Comma-separated CIDRs that sandbox targets may be in. The gateway dials nothing else, even
    when a hostname resolves elsewhere."""
    deny_target_nets: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=lambda: [ipaddress.ip_network(n) for n in DEFAULT_DENIED_TARGETS.split(",")]
    )
    """Comma-separated CIDRs never dialled, even inside `allowed_targets`: refused when a sandbox
    is registered and again at dial time, after DNS resolution (IPv4-mapped IPv6 addresses are
    judged as the IPv4 address they carry)."""

    # ── private previews ────────────────────────────────────────────────────────────────────
    token_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Comma-separated `kid:secret` pairs (secret 32+ characters) that sign preview tokens. The
    first signs; all verify, so a key is rotated by putting a new one first and removing the old
    one later. Unset: a key is generated (and with Redis, shared through it by all replicas)."""
    token_max_lifetime_s: int = Field(30 * 86400, ge=60)
    """Longest life a preview token may have; a later `expiresAt` is capped to this."""
    cookie_samesite: Literal["lax", "none"] = "lax"
    """SameSite of the token cookie. `none` (sent with `Partitioned`) is for previews embedded
    in another site's iframe, such as an IDE."""
    ws_allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Extra origins (e.g. `https://ide.example.com`) allowed to open cookie-authenticated
    WebSockets to private previews, besides the preview's own origin."""
    private_stale_grace_s: float = Field(60.0, ge=0)
    """While the store is unreachable, a private preview keeps serving on cached revocation state
    for at most this long; after that it gets 503 (fail closed)."""

    # ── edge behaviour ──────────────────────────────────────────────────────────────────────
    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = Field(default_factory=list)
    """Comma-separated CIDRs of load balancers whose `X-Forwarded-*`/`Forwarded` headers are
    kept and appended to. From anyone else they are replaced."""
    max_header_line_bytes: int = Field(8 * 1024, ge=1024)
    """Longest request line or header line (431 over it)."""
    max_header_fields: int = Field(128, ge=8)
    """Most header fields in one request head (431 over it)."""
    max_header_bytes: int = Field(64 * 1024, ge=4096)
    """Largest request head in all, request line included (431 over it)."""
    max_body_bytes: int = Field(100 * 1024 * 1024, ge=0)
    """Largest request body streamed to a sandbox; larger ones get 413. 0 means no limit."""
    header_read_timeout_s: float = Field(10.0, gt=0)
    """A client must finish sending request headers this long after it starts (slowloris)."""
    keepalive_timeout_s: float = Field(75.0, gt=0)
    """Idle time before a client keep-alive connection is closed."""
    body_idle_timeout_s: float = Field(60.0, gt=0)
    """Longest pause between two pieces of a request body from the client (408 after)."""
    upstream_connect_timeout_s: float = Field(5.0, gt=0)
    """Time to open a TCP connection to a sandbox port before answering 504."""
    upstream_response_timeout_s: float = Field(60.0, gt=0)
    """Time from sending the request to receiving the sandbox's response headers (504 after)."""
    upstream_idle_timeout_s: float = Field(300.0, ge=0)
    """Longest pause between two pieces of a response body from a sandbox; 0 disables it."""
    upstream_startup_wait_s: float = Field(10.0, ge=0)
    """How long an idempotent request without a body is held while a running sandbox's port
    refuses connections (its dev server still starting), before 502; 0 turns holding off."""
    wake_secret: SecretStr | None = None
    """HMAC-SHA256 key that signs wake calls to a sandbox's `spec.lifecycle.wakeUrl`
    (docs/api.md); unset: no wake call is made."""
    upstream_max_connections: int = Field(4096, ge=1)
    """Upstream connections of one replica, all sandboxes together."""
    upstream_max_connections_per_target: int = Field(128, ge=1)
    """Upstream connections to one sandbox port, so a slow sandbox cannot starve the others."""
    upstream_queue_per_target: int = Field(256, ge=0)
    """Requests that may wait for a connection to one busy sandbox port; more get 503
    `upstream_busy` at once."""
    upstream_queue_timeout_s: float = Field(10.0, gt=0)
    """Longest a request waits for a connection to a busy sandbox port (503 `upstream_busy`)."""

    # ── abuse limits ────────────────────────────────────────────────────────────────────────
    max_connections: int = Field(10_000, ge=0)
    """Client connections of one replica (HTTP and WebSocket); a new one over it gets 503
    `overloaded` and is closed at once. 0 means no cap."""
    max_connections_per_client_ip: int = Field(256, ge=0)
    """Client connections from one IP address (429 `too_many_connections` over it). Peers in
    `trusted_proxies` are exempt: a load balancer multiplexes many clients. 0 means no cap."""
    max_connections_per_preview: int = Field(1024, ge=0)
    """Requests in flight to one preview (429 `too_many_connections` over it). 0 means no cap."""
    max_websockets_per_client_ip: int = Field(256, ge=0)
    """Open WebSockets from one IP address (429 over it; trusted proxies exempt). 0: no cap."""
    max_websockets_per_preview: int = Field(4096, ge=0)
    """Open WebSockets to one preview (429 over it). 0 means no cap."""
    preview_rate_limit: float = Field(0.0, ge=0)
    """Requests a second to one preview, as a token bucket (429 `rate_limited` with
    `Retry-After` over it). 0 means no limit."""
    preview_rate_burst: int = Field(200, ge=1)
    """Requests one preview may make at once above `preview_rate_limit` (the bucket's size)."""
    min_upload_rate: int = Field(1024, ge=0)
    """A request body must bring at least this many bytes a second, averaged over
    `min_upload_rate_window_s`, or it is closed (408; 504 when it is the app that stopped
    reading). 0 disables it."""
    min_upload_rate_window_s: float = Field(30.0, gt=0)
    """The window over which `min_upload_rate` is averaged."""
    memory_limit_mib: int = Field(0, ge=0)
    """Memory budget of one replica (resident set, read every second): at 90 % new WebSockets
    get 503 `overloaded`, at 95 % new requests too. 0 means no budget."""

    # ── route cache ─────────────────────────────────────────────────────────────────────────
    cache_ttl_s: float = Field(30.0, ge=0)
    """How long a route is served from memory before it is read again (a backstop for lost
    invalidations)."""
    cache_negative_ttl_s: float = Field(2.0, ge=0)
    """How long "no such host" is remembered."""
    cache_stale_grace_s: float = Field(600.0, ge=0)
    """While the store is unreachable, cached routes keep serving for this long."""
    cache_max_entries: int = Field(100_000, ge=1)
    """Routes kept in memory; least recently used ones go first."""

    # ── custom domains ──────────────────────────────────────────────────────────────────────
    dns_nameservers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated `host` or `host:port` DNS servers for the TXT ownership check of custom
    domains; unset means the system's resolver."""
    dns_timeout_s: float = Field(3.0, gt=0)
    """How long one TXT lookup may take; longer counts as a failed check (`timeout`)."""
    domain_recheck_interval_s: float = Field(300.0, gt=0)
    """Every replica re-checks the TXT record of every verified domain this often."""
    domain_grace_s: float = Field(3600.0, ge=0)
    """A verified domain whose record has gone keeps serving this long, then turns `failed`
    and is no longer served."""

    # ── WebSockets and shutdown ─────────────────────────────────────────────────────────────
    ws_idle_timeout_s: float = Field(900.0, ge=0)
    """A relayed WebSocket with no data frames in either direction this long is closed (1001).
    0 disables it."""
    ws_max_lifetime_s: float = Field(0.0, ge=0)
    """Absolute cap on a relayed WebSocket's life (1001 at the end; each socket up to 10 % early,
    so sockets opened together do not all reconnect at once); 0 means no cap."""
    ws_ping_interval_s: float = Field(20.0, gt=0)
    """The gateway pings both peers this often; a peer that does not pong in time is closed."""
    ws_max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Largest WebSocket message relayed; a larger one closes the socket with 1009."""
    shutdown_grace_s: float = Field(10.0, ge=0)
    """On SIGTERM, in-flight requests get this long to finish before the process exits."""

    # ── logging ─────────────────────────────────────────────────────────────────────────────
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Level of the `gateway.*` loggers."""
    access_log: bool = True
    """One JSON line per request on stdout (logger `gateway.access`)."""

    @field_validator(
        "api_keys",
        "reserved_ports",
        "allowed_targets",
        "deny_target_nets",
        "trusted_proxies",
        "token_keys",
        "ws_allowed_origins",
        "redis_sentinels",
        "dns_nameservers",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("allowed_targets", "deny_target_nets", "trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        # "before" validators run last-declared first, so this one sees the raw env string
        # before _csv has split it: split it here, or strict=False below never applies.
        value = _split_csv(value)
        if isinstance(value, list):
            return [
                ipaddress.ip_network(v, strict=False) if isinstance(v, str) else v for v in value
            ]
        return value

    @field_validator("api_keys")
    @classmethod
    def _key_pairs(cls, value: list[str]) -> list[str]:
        for pair in value:
            workspace, sep, key = pair.partition(":")
            if not sep or not workspace or len(key) < 16:
                raise ValueError(
                    "each API key must be `workspace:key` with a key of 16+ characters"
                )
        return value

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return (
                len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity")
                else (os.cpu_count() or 1)
            )
        return value

    @field_validator("preview_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip().lower().rstrip(".")
        if not value or " " in value:
            raise ValueError("preview_domain must be a DNS name")
        return value

    @field_validator("acme_http_upstream")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError("acme_http_upstream must be host:port")
        return value

    @model_validator(mode="after")
    def _one_redis(self) -> Settings:
        if self.redis_sentinels and self.redis_url is not None:
            raise ValueError("set either redis_url or redis_sentinels, not both")
        if self.redis_cluster and self.redis_url is None:
            raise ValueError("redis_cluster needs redis_url (any one node of the cluster)")
        return self

    @model_validator(mode="after")
    def _ports_differ(self) -> Settings:
        if self.edge_port and self.edge_port == self.api_port:
            raise ValueError("edge_port and api_port must differ")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_enabled and self.tls_port and self.tls_port in (self.edge_port, self.api_port):
            raise ValueError("tls_port must differ from edge_port and api_port")
        return self

    @model_validator(mode="after")
    def _workers_share(self) -> Settings:
        # Workers share one routing table and one port each: an in-memory table per process
        # would disagree, and port 0 would give every worker a different port.
        if self.workers > 1 and self.redis_url is None and not self.redis_sentinels:
            raise ValueError(
                "workers > 1 needs redis_url or redis_sentinels (one routing table for all workers)"
            )
        if self.workers > 1 and 0 in (self.edge_port, self.api_port):
            raise ValueError("workers > 1 needs fixed edge_port and api_port (not 0)")
        return self

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert or self.tls_cert_dir)

    @property
    def effective_public_scheme(self) -> str:
        if self.public_scheme is not None:
            return self.public_scheme
        return "https" if self.tls_enabled else "http"

    @property
    def effective_public_port(self) -> int:
        if self.public_port is not None:
            return self.public_port
        return self.tls_port if self.tls_enabled else self.edge_port

    def blocked_ports(self) -> frozenset[int]:
        return frozenset({80, *self.reserved_ports})


def markdown_table() -> str:
    """The README's settings table, generated from the field docstrings above."""
    rows = ["| env | meaning | default |", "| --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        default = info.default_factory() if info.default_factory else info.default  # type: ignore[call-arg]
        if isinstance(default, list):
            shown = ",".join(map(str, default)) if default else "(empty)"
        elif default is None:
            shown = "unset"
        else:
            shown = str(default).lower() if isinstance(default, bool) else str(default)
        meaning = " ".join((info.description or "").split())
        rows.append(f"| `GATEWAY_{name.upper()}` | {meaning} | `{shown}` |")
    return "\n".join(rows)
