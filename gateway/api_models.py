"""Wire models of the control API (Blaxel's JSON shapes, camelCase) and their conversions.

The same models validate requests and generate the OpenAPI document. Unknown keys are ignored,
as the Blaxel SDKs send extra ones (``events``); every known key is validated.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator
from pydantic.alias_generators import to_camel

from gateway import headers as header_policy
from gateway.hostnames import is_valid_dns_name
from gateway.routes import NAME_PATTERN, Preview, Sandbox
from gateway.timeparse import format_timestamp, parse_timestamp, parse_ttl

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)]


class Wire(BaseModel):
    model_config = ConfigDict(
        extra="ignore", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class Metadata(Wire):
    name: Name
    labels: dict[str, str] | None = None


class OptionalNameMetadata(Wire):
    name: str = ""


class Target(Wire):
    host: str = Field(min_length=1, max_length=253)
    """IP address or DNS name of the sandbox, as the gateway dials it."""


class Lifetime(Wire):
    ttl: str | None = None
    """Time to live from creation: `30m`, `2h`, `1d`, `1w`."""
    expires: str | None = None
    """Absolute expiry, ISO 8601."""

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


class SandboxSpec(Lifetime):
    target: Target


class SandboxIn(Wire):
    metadata: Metadata
    spec: SandboxSpec


def _check_headers(value: dict[str, str] | None, forbidden: frozenset[str], what: str) -> None:
    for name, header_value in (value or {}).items():
        if not header_policy.valid_header_pair(name, header_value):
            raise ValueError(f"{what} has an invalid header: {name!r}")
        if name.lower() in {f.lower() for f in forbidden}:
            raise ValueError(f"{what} may not set {name}")


class PreviewSpec(Lifetime):
    port: StrictInt = Field(ge=1, le=65535)
    public: StrictBool = False
    prefix_url: str | None = Field(None, pattern=NAME_PATTERN, max_length=40)
    custom_domain: str | None = None
    request_headers: dict[str, str] | None = None
    response_headers: dict[str, str] | None = None

    @field_validator("request_headers")
    @classmethod
    def _request_headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        forbidden = (
            header_policy.HOP_BY_HOP
            | header_policy.GATEWAY_OWNED
            | {
                "Host",
                "Content-Length",
                "Cookie",
                "Expect",
            }
        )
        _check_headers(value, frozenset(forbidden), "requestHeaders")
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
    expires_at: str = Field(min_length=1, max_length=64)
    """When the token stops working, ISO 8601 (read leniently, as the SDKs send it)."""


class TokenIn(Wire):
    metadata: OptionalNameMetadata = OptionalNameMetadata()
    spec: TokenSpecIn


class ErrorBody(BaseModel):
    error: str
    code: int
    message: str


# ── responses ───────────────────────────────────────────────────────────────────────────────
def _ts(value: datetime | None) -> str | None:
    return format_timestamp(value) if value is not None else None


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


Status = Literal["DEPLOYED", "DELETING", "TERMINATED"]


def sandbox_json(sandbox: Sandbox, *, region: str, status: Status = "DEPLOYED") -> dict[str, Any]:
    return {
        "metadata": _drop_none(
            {
                "name": sandbox.name,
                "workspace": sandbox.workspace,
                "labels": sandbox.labels,
                "createdAt": _ts(sandbox.created_at),
                "updatedAt": _ts(sandbox.updated_at),
            }
        ),
        "spec": _drop_none(
            {
                "target": {"host": sandbox.target_host},
                "region": region or None,
                "ttl": sandbox.ttl,
                "expires": _ts(sandbox.expires_at),
            }
        ),
        "status": status,
        "events": [],
    }


def preview_json(
    preview: Preview, *, url: str, region: str, status: Status = "DEPLOYED"
) -> dict[str, Any]:
    return {
        "metadata": _drop_none(
            {
                "name": preview.name,
                # The SDKs build token paths from resourceName; without it they request
                # /sandboxes/<Unset object>/... (shared/design/blaxel-api.md §2).
                "resourceName": preview.sandbox,
                "resourceType": "sandbox",
                "workspace": preview.workspace,
                "createdAt": _ts(preview.created_at),
                "updatedAt": _ts(preview.updated_at),
            }
        ),
        "spec": _drop_none(
            {
                "port": preview.port,
                "public": preview.public,
                "url": url,
                "region": region or None,
                "prefixUrl": preview.prefix_url,
                "customDomain": preview.custom_domain,
                "requestHeaders": preview.request_headers,
                "responseHeaders": preview.response_headers,
                "ttl": preview.ttl,
                "expires": preview.expires,
            }
        ),
        "status": status,
        "events": [],
    }
