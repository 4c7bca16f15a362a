"""Records of the routing table and the names of their keys. Pure: no I/O.

A ``Route`` is what the edge needs for one hostname; it is derived from a ``Sandbox`` (where to
dial) and a ``Preview`` (which port, who may see it, which headers) and written in the same
transaction as they are, so the edge never sees one without the other.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
"""Sandbox, preview and workspace names: DNS labels, as Blaxel's names are."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Expiring(_Record):
    expires_at: datetime | None = None
    """None: never expires."""

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


SandboxState = Literal["running", "standby"]
"""What the orchestrator last said (``POST /v0/sandboxes/{sb}/state``); running by default."""


class Lifecycle(_Record):
    """How the gateway meets a sandbox that is asleep or still starting (issue 14)."""

    wake_url: str | None = None
    """The orchestrator's endpoint that the gateway POSTs a signed wake call to."""
    wake_timeout_s: int = 30
    """How long a request for a sandbox in standby may be held."""


class Sandbox(_Expiring):
    workspace: str
    name: str
    target_host: str
    """IP address or DNS name the gateway dials for this sandbox's ports."""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    ttl: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    state: SandboxState = "running"


class TokenRecord(_Record):
    """A preview token as stored: its claims, never the signed value (which the gateway can
    re-sign from them when the SDK lists tokens)."""

    name: str
    jti: str
    expires_at: datetime
    created_at: datetime = Field(default_factory=utcnow)


def new_uid() -> str:
    return secrets.token_hex(12)


class Preview(_Expiring):
    uid: str = Field(default_factory=new_uid)
    """Random per creation: tokens name it as their audience, so a token never opens a preview
    created later under the same name, nor any other preview."""
    revision: int = 0
    """Bumped by every write; a write that read revision N succeeds only if it is still N."""
    workspace: str
    sandbox: str
    name: str
    port: int
    public: bool
    hostname: str
    prefix_url: str | None = None
    custom_domain: str | None = None
    domain: str | None = None
    """The registered domain that ``custom_domain`` is (or is under), chosen when written."""
    request_headers: dict[str, str] = Field(default_factory=dict)
    response_headers: dict[str, str] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    ttl: str | None = None
    expires: str | None = None
    tokens: dict[str, TokenRecord] = Field(default_factory=dict)


DomainStatus = Literal["pending", "verified", "failed"]


class Domain(_Record):
    """A custom domain a workspace registered. Its previews and its fallback are served only
    while ``status`` is ``verified``; the edge never reads this record, only the routes written
    from it (``store.rules.plan_domain_routes``)."""

    name: str
    workspace: str
    display_name: str | None = None
    status: DomainStatus = "pending"
    txt_value: str
    """The random value the owner publishes at ``_preview-gateway-challenge.<name>``."""
    last_verified_at: datetime | None = None
    verification_error: str | None = None
    missing_since: datetime | None = None
    """When a re-check of a verified domain first missed the record; cleared when it is found.
    The domain keeps serving until ``missing_since + grace``."""
    fallback: str | None = None
    """``<sandbox>/<preview>`` taking every unknown name under the domain."""
    region: str = ""
    revision: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def served(self) -> bool:
        return self.status == "verified"


class CustomHost(_Record):
    """Who holds a custom hostname (``Preview.custom_domain``), verified or not: two previews
    can never take the same one, and a domain finds its previews through these entries."""

    domain: str
    workspace: str
    sandbox: str
    preview: str


class Route(_Expiring):
    hostname: str
    workspace: str
    sandbox: str
    preview: str
    target_host: str
    port: int
    public: bool
    request_headers: dict[str, str] = Field(default_factory=dict)
    response_headers: dict[str, str] = Field(default_factory=dict)
    preview_uid: str = ""
    tokens: dict[str, float] = Field(default_factory=dict)
    """Live token ids (jti) and their expiry (epoch seconds). A signed token whose id is not here
    has been revoked: revocation travels with the route, through the same invalidation."""
    expires_at: datetime | None = None
    """The earlier of the sandbox's and the preview's expiry: the edge stops routing then, even
    before a sweeper has deleted the records."""
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    standby: bool = False
    """The sandbox is asleep: a request triggers the wake call and is held (issue 14)."""

    @classmethod
    def build(cls, sandbox: Sandbox, preview: Preview) -> Route:
        expiries = [e for e in (sandbox.expires_at, preview.expires_at) if e is not None]
        return cls(
            hostname=preview.hostname,
            workspace=preview.workspace,
            sandbox=preview.sandbox,
            preview=preview.name,
            target_host=sandbox.target_host,
            port=preview.port,
            public=preview.public,
            request_headers=preview.request_headers,
            response_headers=preview.response_headers,
            preview_uid=preview.uid,
            tokens={t.jti: t.expires_at.timestamp() for t in preview.tokens.values()},
            expires_at=min(expiries) if expiries else None,
            lifecycle=sandbox.lifecycle,
            standby=sandbox.state == "standby",
        )


class Keys:
    """Redis key layout, in one place (documented in docs/redis.md). Workspace, sandbox and
    preview names are validated DNS labels and hostnames validated DNS names, so no key can
    contain a separator, a brace or a glob character of its own.

    ``tagged`` (Redis Cluster) wraps the workspace in a hash tag, ``{ws}``: every key of one
    workspace (sandboxes, previews, routes, expiries, its invalidation channel) lands in one
    hash slot, so each write stays one transaction on one node. What must be unique across
    workspaces, a hostname, gets a key of its own slot (``host_owner``). Untagged (one Redis,
    Sentinel) the layout is the original one, so existing tables keep working. Custom-domain
    keys (``domain`` … ``custom_host``) are untagged: their writes span names and workspaces,
    so a Cluster refuses them (``DomainsUnsupported``) and only ever reads them empty.
    """

    def __init__(self, prefix: str, *, tagged: bool = False) -> None:
        if tagged and ("{" in prefix or "}" in prefix):
            raise ValueError("a Redis Cluster key prefix must not contain braces")
        self.prefix = prefix
        self.tagged = tagged

    def _ws(self, workspace: str) -> str:
        return f"{{{workspace}}}" if self.tagged else workspace

    def sandbox(self, workspace: str, name: str) -> str:
        return f"{self.prefix}sb:{self._ws(workspace)}:{name}"

    def sandboxes(self, workspace: str) -> str:
        return f"{self.prefix}sbs:{self._ws(workspace)}"

    def preview(self, workspace: str, sandbox: str, name: str) -> str:
        return f"{self.prefix}pv:{self._ws(workspace)}:{sandbox}:{name}"

    def previews(self, workspace: str, sandbox: str) -> str:
        return f"{self.prefix}pvs:{self._ws(workspace)}:{sandbox}"

    def route(self, hostname: str, workspace: str = "") -> str:
        """Untagged, routes are keyed by hostname alone; tagged, by the owning workspace too
        (``host_owner`` says which workspace that is)."""
        if self.tagged:
            return f"{self.prefix}route:{self._ws(workspace)}:{hostname}"
        return f"{self.prefix}route:{hostname}"

    def host_owner(self, hostname: str) -> str:
        """Tagged only: the workspace holding a hostname, in the hostname's own slot."""
        return f"{self.prefix}host:{{{hostname}}}"

    def domain(self, name: str) -> str:
        return f"{self.prefix}dom:{name}"

    def domains(self, workspace: str) -> str:
        return f"{self.prefix}doms:{workspace}"

    def all_domains(self) -> str:
        """Every registered domain's name: what the periodic re-check walks."""
        return f"{self.prefix}doms-all"

    def domain_tree(self, name: str) -> str:
        """Hash of workspace -> how many of its domains are ``name`` or under it."""
        return f"{self.prefix}domtree:{name}"

    def domain_hosts(self, name: str) -> str:
        """The domain's table: custom hostnames of previews attached to it."""
        return f"{self.prefix}domhosts:{name}"

    def custom_host(self, hostname: str) -> str:
        return f"{self.prefix}chost:{hostname}"

    def expiries(self, workspace: str = "") -> str:
        if self.tagged:
            return f"{self.prefix}expiries:{self._ws(workspace)}"
        return f"{self.prefix}expiries"

    def expiring(self) -> str:
        """Tagged only: the workspaces that have (or had) an expiries set, for the sweeper."""
        return f"{self.prefix}expiring"

    def channel(self, workspace: str) -> str:
        """Where a write in ``workspace`` publishes the hostnames it touched."""
        if self.tagged:
            return f"{self.prefix}invalidate:{self._ws(workspace)}"
        return f"{self.prefix}invalidate"

    def wake_lock(self, workspace: str, sandbox: str) -> str:
        return f"{self.prefix}wake:{self._ws(workspace)}:{sandbox}"

    @property
    def invalidations(self) -> str:
        """What replicas subscribe to: the one channel, or (tagged) the pattern of every
        workspace's channel."""
        return f"{self.prefix}invalidate:*" if self.tagged else f"{self.prefix}invalidate"

    def parse_record(self, key: str) -> tuple[str, str, str | None] | None:
        """A sandbox or preview key back to (workspace, sandbox, preview or None)."""
        kind, _, rest = key.removeprefix(self.prefix).partition(":")
        parts = rest.split(":")
        if self.tagged and parts and parts[0].startswith("{") and parts[0].endswith("}"):
            parts[0] = parts[0][1:-1]
        if kind == "sb" and len(parts) == 2:
            return (parts[0], parts[1], None)
        if kind == "pv" and len(parts) == 3:
            return (parts[0], parts[1], parts[2])
        return None
