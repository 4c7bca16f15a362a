"""``python -m gateway api domains ...``: custom domains from a shell (``cli.api`` runs them).

python -m gateway api domains create acme.dev          # prints the TXT record to publish
python -m gateway api domains verify acme.dev
python -m gateway api domains update acme.dev --fallback sb/web
python -m gateway api domains list
"""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol


class Caller(Protocol):
    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
    ) -> Any: ...


def _path(name: str | None = None, *rest: str) -> str:
    base = "/customdomains"
    if name is None:
        return base
    return "/".join([base, urllib.parse.quote(name, safe=""), *rest])


def _body(a: argparse.Namespace) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": a.domain}
    if a.display_name:
        metadata["displayName"] = a.display_name
    spec = {"fallbackPreviewId": a.fallback} if a.fallback else {}
    return {"metadata": metadata, "spec": spec}


def domains_list(c: Caller, a: argparse.Namespace) -> Any:
    return c.call("GET", _path())


def domains_get(c: Caller, a: argparse.Namespace) -> Any:
    return c.call("GET", _path(a.domain))


def domains_create(c: Caller, a: argparse.Namespace) -> Any:
    return c.call("POST", _path(), _body(a))


def domains_update(c: Caller, a: argparse.Namespace) -> Any:
    return c.call("PUT", _path(a.domain), _body(a))


def domains_verify(c: Caller, a: argparse.Namespace) -> Any:
    return c.call("POST", _path(a.domain, "verify"))


def domains_delete(c: Caller, a: argparse.Namespace) -> Any:
    return c.call("DELETE", _path(a.domain))


def txt_lines(result: Any) -> str:
    """The records to publish, after a create or a get: what the operator acts on next."""
    if not isinstance(result, dict):
        return ""
    spec = result.get("spec", {})
    lines = [f"{r['type']} {r['name']} {r['value']}" for r in spec.get("txtRecords", [])]
    if spec.get("verificationError"):
        lines.append(f"verification error: {spec['verificationError']}")
    return "\n".join(lines)


def add_parser(kinds: Any) -> None:
    """Adds ``domains`` to the CLI's sub-commands (``kinds`` is argparse's subparsers)."""
    dm = kinds.add_parser("domains", help="custom domains: verified over DNS")
    dma = dm.add_subparsers(dest="action", required=True)
    dma.add_parser("list").set_defaults(run=domains_list)
    for action, run in (
        ("get", domains_get),
        ("verify", domains_verify),
        ("delete", domains_delete),
    ):
        p = dma.add_parser(action)
        p.add_argument("domain")
        p.set_defaults(run=run)
    for action, run in (("create", domains_create), ("update", domains_update)):
        p = dma.add_parser(action)
        p.add_argument("domain")
        p.add_argument("--display-name")
        p.add_argument("--fallback", metavar="SANDBOX/PREVIEW", help="takes unknown names")
        p.set_defaults(run=run)


def columns(read: Callable[..., Callable[[dict[str, Any]], object]]) -> list[Any]:
    return [
        ("NAME", read("metadata", "name")),
        ("STATUS", read("spec", "status")),
        ("FALLBACK", read("spec", "fallbackPreviewId")),
        ("VERIFIED AT", read("spec", "lastVerifiedAt")),
    ]
