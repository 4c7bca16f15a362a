"""Wire models of the control API (Blaxel's JSON shapes, camelCase) and their conversions.

The same models validate requests, serialise responses and generate the OpenAPI document
(``gateway/openapi.py``), so the document cannot drift from what the server accepts and
answers. Unknown request keys are ignored, as the Blaxel SDKs send extra ones (``events``);
every known key is validated.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator
from pydantic.alias_generators import to_camel

from gateway.core import header_policy
from gateway.core.hostnames import is_valid_dns_name
from gateway.core.records import (
    NAME_PATTERN,
    Lifecycle,
    Preview,
    Sandbox,
    SandboxState,
    TokenRecord,
)
from gateway.core.timeparse import format_timestamp, parse_timestamp, parse_ttl

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)]
TTL_PATTERN = r"^[1-9][0-9]{0,5}[smhdw]$"
"""What ``timeparse.parse_ttl`` reads, so the schema tells clients the same rule."""
TOKEN_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"  # noqa: S105 - a name rule, not a secret


class Wire(BaseModel):
    model_config = ConfigDict(
        extra="ignore", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


# ── requests ────────────────────────────────────────────────────────────────────────────────
class Metadata(Wire):
    name: Name = Field(examples=["sb"])
    labels: dict[str, str] | None = None


class OptionalNameMetadata(Wire):
    name: str = Field("", max_length=63)
    """Empty: the gateway makes up a name (the Python SDK always sends "")."""


class Target(Wire):
    host: str = Field(min_length=1, max_length=253, examples=["sandbox-1.internal"])
    """IP address or DNS name of the sandbox, as the gateway dials it."""


class Lifetime(Wire):
    ttl: str | None = Field(None, pattern=TTL_PATTERN)
    """Time to live from creation: `30m`, `2h`, `1d`, `1w` (and `s` for seconds)."""
    expires: str | None = Field(None, max_length=64)
    """Absolute expiry, ISO 8601. With both `ttl` and `expires`, the earlier wins."""

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str | None) -> str | None:
        if value is not None:
            parse_ttl(value)
        return value

    @field_validator("expires")
    @classmethod
    def _expires(cls, value: str | None) -> str | None:
        if value is not None:
            parse_timestamp(value)
        return value

    def expires_at(self, created: datetime) -> datetime | None:
        candidates = []
        if self.ttl:
            candidates.append(created + parse_ttl(self.ttl))
        if self.expires:
            candidates.append(parse_timestamp(self.expires))
        return min(candidates) if candidates else None


class LifecycleSpec(Wire):
    wake_url: str | None = Field(
        None, max_length=2048, examples=["https://orchestrator.internal/wake"]
    )
    """The orchestrator's endpoint: a request for the sandbox in standby makes the gateway POST
    `{"workspace", "sandbox"}` to it, signed with `GATEWAY_WAKE_SECRET` (docs/api.md)."""
    wake_timeout_s: StrictInt = Field(30, ge=1, le=600)
    """How long a request for the sandbox in standby is held before 503 `sandbox_starting`."""

    @field_validator("wake_url")
    @classmethod
    def _wake_url(cls, value: str | None) -> str | None:
        if value is not None:
            url = urlsplit(value)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError("wakeUrl must be an http:// or https:// URL with a host")
        return value

    def record(self) -> Lifecycle:
        return Lifecycle(wake_url=self.wake_url, wake_timeout_s=self.wake_timeout_s)


class SandboxSpec(Lifetime):
    target: Target
    lifecycle: LifecycleSpec | None = None


class StateIn(Wire):
    status: SandboxState
    """`standby`: the sandbox sleeps, requests wake it; `running`: requests go straight on."""


class SandboxIn(Wire):
    metadata: Metadata
    spec: SandboxSpec


def _check_headers(value: dict[str, str] | None, forbidden: frozenset[str], what: str) -> None:
    lowered = {f.lower() for f in forbidden}
    for name, header_value in (value or {}).items():
        if not header_policy.valid_header_pair(name, header_value):
            raise ValueError(f"{what} has an invalid header: {name!r}")
        if name.lower() in lowered:
            raise ValueError(f"{what} may not set {name}")


REQUEST_HEADERS_FORBIDDEN = frozenset(
    header_policy.HOP_BY_HOP
    | header_policy.GATEWAY_OWNED
    | {"Host", "Content-Length", "Cookie", "Expect"}
)


class PreviewSpec(Lifetime):
    port: StrictInt = Field(ge=1, le=65535, examples=[3000])
    public: StrictBool = False
    prefix_url: str | None = Field(None, pattern=NAME_PATTERN, max_length=40)
    custom_domain: str | None = Field(None, max_length=253)
    request_headers: dict[str, str] | None = None
    response_headers: dict[str, str] | None = None

    @field_validator("request_headers")
    @classmethod
    def _request_headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        _check_headers(value, REQUEST_HEADERS_FORBIDDEN, "requestHeaders")
        return value

    @field_validator("response_headers")
    @classmethod
    def _response_headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        _check_headers(value, header_policy.UNSETTABLE_RESPONSE_HEADERS, "responseHeaders")
        return value

    @field_validator("custom_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_dns_name(value.lower()):
            raise ValueError("customDomain must be a lower-case DNS name")
        return value.lower() if value else value


class PreviewIn(Wire):
    metadata: Metadata
    spec: PreviewSpec


class TokenSpecIn(Wire):
    expires_at: str = Field(min_length=1, max_length=64, examples=["2030-01-01T00:00:00Z"])
    """When the token stops working, ISO 8601 (read leniently, as the SDKs send it)."""


class TokenIn(Wire):
    metadata: OptionalNameMetadata = OptionalNameMetadata()
    spec: TokenSpecIn


# ── responses ───────────────────────────────────────────────────────────────────────────────
Status = Literal["DEPLOYED", "DELETING", "TERMINATED"]
"""Only values of Blaxel's `Status` enum: any other string makes the Python SDK raise."""


class Out(BaseModel):
    """Response models: camelCase on the wire; ``None`` fields are left out, never null."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True, frozen=True
    )

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SandboxMetadataOut(Out):
    name: str
    workspace: str
    labels: dict[str, str] = Field(default_factory=dict)
    created_at: str
    updated_at: str


class SandboxSpecOut(Out):
    """No `region`: from a sandbox's region, @blaxel/core derives a Blaxel edge host
    (`any.<region>.bl.run`) and opens an HTTP/2 connection to it. The gateway's region label is
    on previews only."""

    target: Target
    ttl: str | None = None
    expires: str | None = None
    """The effective expiry (the earlier of `ttl` and the `expires` sent), UTC."""
    lifecycle: LifecycleSpec


class SandboxOut(Out):
    metadata: SandboxMetadataOut
    spec: SandboxSpecOut
    status: Status
    state: SandboxState = "running"
    """What the orchestrator last posted to `/state`: `running` or `standby`."""
    events: list[dict[str, Any]] = Field(default_factory=list)


class PreviewMetadataOut(Out):
    name: str
    resource_name: str
    """The sandbox's name. The SDKs build token paths from it (blaxel-api.md §2)."""
    resource_type: Literal["sandbox"] = "sandbox"
    workspace: str
    created_at: str
    updated_at: str


class PreviewSpecOut(Out):
    port: int
    public: bool
    url: str
    """The preview's public URL."""
    region: str | None = None
    prefix_url: str | None = None
    custom_domain: str | None = None
    request_headers: dict[str, str] = Field(default_factory=dict)
    response_headers: dict[str, str] = Field(default_factory=dict)
    ttl: str | None = None
    expires: str | None = None


class PreviewOut(Out):
    metadata: PreviewMetadataOut
    spec: PreviewSpecOut
    status: Status
    events: list[dict[str, Any]] = Field(default_factory=list)


class TokenMetadataOut(Out):
    name: str
    preview_name: str
    resource_name: str
    resource_type: Literal["sandbox"] = "sandbox"
    workspace: str
    created_at: str


class TokenSpecOut(Out):
    token: str
    """The secret: send it as `X-Blaxel-Preview-Token` or `?bl_preview_token=`."""
    expires_at: str
    expired: bool


class TokenOut(Out):
    metadata: TokenMetadataOut
    spec: TokenSpecOut


class MessageOut(Out):
    message: str


class ErrorBody(Out):
    """Every 4xx/5xx. `code` is the HTTP status: the TS SDK's createIfNotExists tests it."""

    error: str
    code: int
    message: str


# ── conversions ─────────────────────────────────────────────────────────────────────────────
def ts(value: datetime | None) -> str | None:
    return format_timestamp(value) if value is not None else None


def sandbox_out(sandbox: Sandbox, *, status: Status = "DEPLOYED") -> SandboxOut:
    return SandboxOut(
        metadata=SandboxMetadataOut(
            name=sandbox.name,
            workspace=sandbox.workspace,
            labels=sandbox.labels,
            created_at=format_timestamp(sandbox.created_at),
            updated_at=format_timestamp(sandbox.updated_at),
        ),
        spec=SandboxSpecOut(
            target=Target(host=sandbox.target_host),
            ttl=sandbox.ttl,
            expires=ts(sandbox.expires_at),
            lifecycle=LifecycleSpec(
                wake_url=sandbox.lifecycle.wake_url,
                wake_timeout_s=sandbox.lifecycle.wake_timeout_s,
            ),
        ),
        status=status,
        state=sandbox.state,
    )


def preview_out(
    preview: Preview, *, url: str, region: str, status: Status = "DEPLOYED"
) -> PreviewOut:
    return PreviewOut(
        metadata=PreviewMetadataOut(
            name=preview.name,
            resource_name=preview.sandbox,
            workspace=preview.workspace,
            created_at=format_timestamp(preview.created_at),
            updated_at=format_timestamp(preview.updated_at),
        ),
        spec=PreviewSpecOut(
            port=preview.port,
            public=preview.public,
            url=url,
            region=region or None,
            prefix_url=preview.prefix_url,
            custom_domain=preview.custom_domain,
            request_headers=preview.request_headers,
            response_headers=preview.response_headers,
            ttl=preview.ttl,
            expires=preview.expires,
        ),
        status=status,
    )


def token_out(preview: Preview, token: TokenRecord, *, value: str, now: datetime) -> TokenOut:
    return TokenOut(
        metadata=TokenMetadataOut(
            name=token.name,
            preview_name=preview.name,
            resource_name=preview.sandbox,
            workspace=preview.workspace,
            created_at=format_timestamp(token.created_at),
        ),
        spec=TokenSpecOut(
            token=value,
            expires_at=format_timestamp(token.expires_at),
            expired=token.expires_at <= now,
        ),
    )
