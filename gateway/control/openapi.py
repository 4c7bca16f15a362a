"""The control API's endpoint table and its OpenAPI 3.1 document. Pure: no I/O.

``ENDPOINTS`` is the single list of what the control API serves: ``control_api`` registers its
routes from it and this module describes them, with the schemas generated from the very pydantic
models that validate the requests and serialise the answers (``api_models``). So an endpoint
cannot exist undocumented, and a documented shape cannot drift from the real one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway import __version__
from gateway.control.domain_models import DomainIn, DomainOut
from gateway.control.models import (
    TOKEN_NAME_PATTERN,
    ErrorBody,
    MessageOut,
    PreviewIn,
    PreviewOut,
    SandboxIn,
    SandboxOut,
    StateIn,
    TokenIn,
    TokenOut,
)
from gateway.core.records import NAME_PATTERN

Method = Literal["GET", "POST", "PUT", "DELETE"]

SANDBOXES = "/v0/sandboxes"
SANDBOX = SANDBOXES + "/{sandboxName}"
SANDBOX_STATE = SANDBOX + "/state"
PREVIEWS = SANDBOX + "/previews"
PREVIEW = PREVIEWS + "/{previewName}"
TOKENS = PREVIEW + "/tokens"
TOKEN = TOKENS + "/{tokenName}"
DOMAINS = "/v0/customdomains"
DOMAIN = DOMAINS + "/{domainName}"
VERIFY = DOMAIN + "/verify"
OPENAPI_PATH = "/v0/openapi.json"
DOMAIN_NAME_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"
"""A domain in a path: checked fully (``core.domains``) only when it is created."""

PATH_PATTERNS = {
    "sandboxName": NAME_PATTERN,
    "previewName": NAME_PATTERN,
    "tokenName": TOKEN_NAME_PATTERN,
    "domainName": DOMAIN_NAME_PATTERN,
}
"""Names in paths. A name outside its pattern cannot exist, so it is answered 404."""

_EXAMPLES = {
    "sandboxName": "sb",
    "previewName": "web",
    "tokenName": "tok",
    "domainName": "acme.dev",
}
MAX_LENGTHS = {"domainName": 253}
"""Longest name in a path, by parameter; 63 (a DNS label) for the others."""


@dataclass(frozen=True)
class Query:
    name: str
    description: str


FORCE = Query(
    "force",
    "`true`: delete the workspace's previews whose prefixUrl or customDomain hostname clashes "
    "with this one, instead of answering 409.",
)
CREATE_IF_NOT_EXIST = Query(
    "createIfNotExist", "`true`: answer the existing sandbox (200) instead of 409."
)


@dataclass(frozen=True)
class Endpoint:
    method: Method
    path: str
    handler: str
    """Name of the ``ControlApi`` method that serves it; also the OpenAPI operationId."""
    summary: str
    response: type[BaseModel]
    many: bool = False
    """The answer is a bare JSON array of ``response``, as the SDKs expect for lists."""
    body: type[BaseModel] | None = None
    query: tuple[Query, ...] = ()
    errors: tuple[int, ...] = field(default=(401, 403, 404, 503))


_WRITE_ERRORS = (400, 401, 403, 404, 409, 413, 503)
_PREVIEW_WRITE_ERRORS = (*_WRITE_ERRORS, 501)
"""501: ``customDomain`` on a Redis Cluster routing table."""

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", SANDBOXES, "list_sandboxes", "List the workspace's sandboxes", SandboxOut,
             many=True, errors=(401, 403, 503)),
    Endpoint("POST", SANDBOXES, "create_sandbox", "Register a sandbox (where the gateway dials)",
             SandboxOut, body=SandboxIn, query=(CREATE_IF_NOT_EXIST,),
             errors=(400, 401, 403, 409, 413, 503)),
    Endpoint("GET", SANDBOX, "get_sandbox", "Get a sandbox", SandboxOut),
    Endpoint("PUT", SANDBOX, "put_sandbox", "Replace a sandbox's spec and labels", SandboxOut,
             body=SandboxIn, errors=_WRITE_ERRORS),
    Endpoint("POST", SANDBOX_STATE, "set_sandbox_state",
             "Tell the gateway the sandbox went to standby or is running again", SandboxOut,
             body=StateIn, errors=_WRITE_ERRORS),
    Endpoint("DELETE", SANDBOX, "delete_sandbox",
             "Delete a sandbox with all its previews and tokens", SandboxOut),
    Endpoint("GET", PREVIEWS, "list_previews", "List a sandbox's previews", PreviewOut,
             many=True),
    Endpoint("POST", PREVIEWS, "create_preview", "Create a preview of a sandbox port",
             PreviewOut, body=PreviewIn, query=(FORCE,), errors=_PREVIEW_WRITE_ERRORS),
    Endpoint("GET", PREVIEW, "get_preview", "Get a preview", PreviewOut),
    Endpoint("PUT", PREVIEW, "put_preview", "Replace a preview's spec (tokens are kept)",
             PreviewOut, body=PreviewIn, query=(FORCE,), errors=_PREVIEW_WRITE_ERRORS),
    Endpoint("DELETE", PREVIEW, "delete_preview", "Delete a preview and its tokens", PreviewOut),
    Endpoint("GET", TOKENS, "list_tokens", "List a preview's tokens, expired ones included",
             TokenOut, many=True),
    Endpoint("POST", TOKENS, "create_token", "Create a token for a private preview", TokenOut,
             body=TokenIn, errors=_WRITE_ERRORS),
    Endpoint("DELETE", TOKEN, "delete_token", "Revoke a token", MessageOut),
    Endpoint("GET", DOMAINS, "list_domains", "List the workspace's custom domains", DomainOut,
             many=True, errors=(401, 403, 503)),
    Endpoint("POST", DOMAINS, "create_domain",
             "Register a custom domain (pending until verified over DNS)", DomainOut,
             body=DomainIn, errors=(400, 401, 403, 409, 413, 501, 503)),
    Endpoint("GET", DOMAIN, "get_domain", "Get a custom domain", DomainOut),
    Endpoint("PUT", DOMAIN, "put_domain",
             "Replace a custom domain's display name, region and fallback", DomainOut,
             body=DomainIn, errors=_WRITE_ERRORS),
    Endpoint("DELETE", DOMAIN, "delete_domain",
             "Delete a custom domain; its previews stop answering on it", DomainOut),
    Endpoint("POST", VERIFY, "verify_domain",
             "Check the TXT record now: verified, or failed with the reason", DomainOut),
)  # fmt: skip

_REASONS = {
    400: "Invalid request: the message names the field",
    401: "Missing or unknown API key",
    403: "X-Blaxel-Workspace is not the key's workspace",
    404: "Not found in the key's workspace",
    409: "The name (or the prefixUrl/customDomain hostname) is taken",
    413: "Request body too large",
    500: "Internal error (a bug)",
    501: "Custom domains (and customDomain) are not available on a Redis Cluster routing table",
    503: "The routing table (Redis) is unreachable; retry after Retry-After",
}


def _path_params(path: str) -> list[dict[str, Any]]:
    params = []
    for name, pattern in PATH_PATTERNS.items():
        if "{" + name + "}" in path:
            params.append(
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": {
                        "type": "string",
                        "pattern": pattern,
                        "maxLength": MAX_LENGTHS.get(name, 63),
                    },
                    "example": _EXAMPLES[name],
                }
            )
    return params


WORKSPACE_HEADER = {
    "name": "X-Blaxel-Workspace",
    "in": "header",
    "required": False,
    "description": "When sent, must be the API key's workspace (else 403).",
    "schema": {"type": "string"},
}


def _schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """Component schemas of every model, and a ``$ref`` for each (model, mode)."""
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for ep in ENDPOINTS:
        pairs.append((ep.response, "serialization"))
        if ep.body is not None:
            pairs.append((ep.body, "validation"))
    unique = list(dict.fromkeys(pairs))
    refs, top = models_json_schema(
        unique, by_alias=True, ref_template="#/components/schemas/{model}"
    )
    names = {f"{model.__name__}:{mode}": ref for (model, mode), ref in refs.items()}
    return names, top.get("$defs", {})


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(ep: Endpoint, refs: dict[str, Any]) -> dict[str, Any]:
    answer = refs[f"{ep.response.__name__}:serialization"]
    error = refs["ErrorBody:serialization"]
    op: dict[str, Any] = {
        "operationId": ep.handler,
        "summary": ep.summary,
        "parameters": [
            *_path_params(ep.path),
            *(
                {
                    "name": q.name,
                    "in": "query",
                    "required": False,
                    "description": q.description,
                    "schema": {"type": "string", "enum": ["true", "false"]},
                }
                for q in ep.query
            ),
            WORKSPACE_HEADER,
        ],
        "responses": {
            "200": {
                "description": "OK",
                "content": _json({"type": "array", "items": answer} if ep.many else answer),
            },
            **{
                str(status): {"description": _REASONS[status], "content": _json(error)}
                for status in (*ep.errors, 500)
            },
        },
    }
    if ep.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": _json(refs[f"{ep.body.__name__}:validation"]),
        }
    return op


@cache
def document() -> dict[str, Any]:
    refs, schemas = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for ep in ENDPOINTS:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep, refs)
    unauthenticated: list[dict[str, list[str]]] = []
    for path, summary in (("/healthz", "Liveness"), ("/readyz", "Readiness (503 while not)")):
        paths[path] = {
            "get": {
                "operationId": path.strip("/"),
                "summary": summary,
                "security": unauthenticated,
                "responses": {
                    "200": {"description": "OK", "content": _json({"type": "object"})},
                    **({"503": {"description": "Not ready"}} if path == "/readyz" else {}),
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "preview-gateway control API",
            "version": __version__,
            "description": "Blaxel-compatible preview API (docs/api.md). Every success is 200 "
            'with JSON; every error is {"error", "code", "message"} with code = the status.',
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"blaxelAuth": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "blaxelAuth": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Blaxel-Authorization",
                    "description": "`Bearer <key>`, as the Blaxel SDKs send it.",
                },
            },
        },
    }
