"""Wire models of custom domains, in the shape of Blaxel's ``CustomDomain`` object (camelCase;
``None`` fields left out), and the conversion from the stored record."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gateway.control.models import Out, Wire, ts
from gateway.core import domains
from gateway.core.records import Domain
from gateway.core.timeparse import format_timestamp

FALLBACK_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?/[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class DomainMetadataIn(Wire):
    name: str = Field(min_length=1, max_length=253, examples=["acme.dev"])
    """The domain (a DNS name; upper case is folded)."""
    display_name: str | None = Field(None, max_length=200)

    @field_validator("name")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower().removesuffix(".")


class DomainSpecIn(Wire):
    fallback_preview_id: str | None = Field(None, pattern=FALLBACK_PATTERN, max_length=127)
    """`<sandbox>/<preview>` of the workspace: it answers every unknown name under the domain."""
    region: str | None = Field(None, max_length=63)


class DomainIn(Wire):
    metadata: DomainMetadataIn
    spec: DomainSpecIn = DomainSpecIn()


class DnsRecord(Out):
    name: str
    type: Literal["TXT", "CNAME"]
    value: str


class DomainMetadataOut(Out):
    name: str
    display_name: str | None = None
    workspace: str
    created_at: str
    updated_at: str


class DomainSpecOut(Out):
    status: Literal["pending", "verified", "failed"]
    txt_records: list[DnsRecord]
    """Publish these to prove ownership, then call `POST .../verify`."""
    cname_records: list[DnsRecord]
    """Point the names that previews answer on at the gateway (or use A records)."""
    last_verified_at: str | None = None
    verification_error: str | None = None
    region: str | None = None
    fallback_preview_id: str | None = None


class DomainOut(Out):
    metadata: DomainMetadataOut
    spec: DomainSpecOut


def domain_out(domain: Domain, *, gateway_host: str) -> DomainOut:
    return DomainOut(
        metadata=DomainMetadataOut(
            name=domain.name,
            display_name=domain.display_name,
            workspace=domain.workspace,
            created_at=format_timestamp(domain.created_at),
            updated_at=format_timestamp(domain.updated_at),
        ),
        spec=DomainSpecOut(
            status=domain.status,
            txt_records=[
                DnsRecord(
                    name=domains.challenge_name(domain.name), type="TXT", value=domain.txt_value
                )
            ],
            cname_records=[
                DnsRecord(name=f"*.{domain.name}", type="CNAME", value=gateway_host),
                DnsRecord(name=domain.name, type="CNAME", value=gateway_host),
            ],
            last_verified_at=ts(domain.last_verified_at),
            verification_error=domain.verification_error,
            region=domain.region or None,
            fallback_preview_id=domain.fallback,
        ),
    )
