"""The preview flow of the unmodified ``blaxel`` Python SDK against a running preview-gateway.

Run by tests/sdk/test_python_sdk.py in a subprocess with a clean environment, so the SDK's
global client cannot leak into (or from) other tests. Reads:

    BL_API_KEY, BL_WORKSPACE   the SDK's own credentials (blaxel-api.md §1.1)
    FLOW_API_URL               http://127.0.0.1:<api>/v0: set as the SDK's base URL (§1.3)
    FLOW_EDGE                  127.0.0.1:<edge>, to try the SDK's token on the preview
    FLOW_SANDBOX, FLOW_PORT    a sandbox registered beforehand, and the port to preview

Prints one JSON object of what each step saw; the test makes the assertions.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import blaxel  # noqa: F401 - autoload() sets the hard-coded base URL, replaced below
from blaxel.core import SandboxAPIError, SandboxInstance
from blaxel.core.client import client
from blaxel.core.client.errors import ConflictError, UnexpectedStatus

# blaxel-api.md §1.3: the Python SDK has no base-URL setting; this is the documented override.
client.with_base_url(os.environ["FLOW_API_URL"])

SANDBOX = os.environ["FLOW_SANDBOX"]
PORT = int(os.environ["FLOW_PORT"])
EDGE = os.environ["FLOW_EDGE"]


def edge_status(url: str, token: str | None) -> int:
    """GET the preview through the gateway's edge (loopback, Host header from the URL)."""
    host = url.split("//", 1)[1].split("/", 1)[0].split(":", 1)[0]
    headers = {"Host": host}
    if token is not None:
        headers["X-Blaxel-Preview-Token"] = token
    request = urllib.request.Request(f"http://{EDGE}/", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def flow() -> dict[str, Any]:
    out: dict[str, Any] = {}
    sandbox = await SandboxInstance.get(SANDBOX)
    out["get"] = {"name": sandbox.metadata.name, "status": str(sandbox.status)}

    full = {"metadata": {"name": "web"}, "spec": {"port": PORT, "public": False}}
    first = await sandbox.previews.create_if_not_exists(full)
    second = await sandbox.previews.create_if_not_exists(full)
    out["create_if_not_exists"] = {
        "first": {"name": first.name, "url": first.url},
        "second": {"name": second.name, "url": second.url},
        "resource_name": first.preview.metadata.resource_name,
    }
    shorthand = await sandbox.previews.create_if_not_exists({"port": PORT, "public": True})
    again = await sandbox.previews.create_if_not_exists({"port": PORT, "public": True})
    out["shorthand"] = {"name": shorthand.name, "same_url": shorthand.url == again.url}
    out["public_edge"] = edge_status(shorthand.url, None)

    try:
        await sandbox.previews.create(full)
        out["conflict"] = None
    except ConflictError as exc:
        out["conflict"] = {"type": type(exc).__name__, "status": exc.status_code}
    try:
        await sandbox.previews.get("nope")
        out["missing"] = None
    except UnexpectedStatus as exc:
        out["missing"] = {"type": type(exc).__name__, "status": exc.status_code}

    out["private_edge_without_token"] = edge_status(first.url, None)
    token = await first.tokens.create(datetime.now(UTC) + timedelta(hours=2))
    # A naive datetime is read as UTC by the SDK and the gateway alike.
    naive = await first.tokens.create(datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=3))
    out["tokens_create"] = {
        "name": token.name,
        "has_value": bool(token.value),
        "expires_at": str(token.expires_at),
        "naive_name": naive.name,
    }
    out["private_edge_with_token"] = edge_status(first.url, token.value)
    reused = await first.tokens.create_if_expired(datetime.now(UTC) + timedelta(hours=4))
    out["create_if_expired_reused"] = reused.name
    listed = await first.tokens.list()
    out["tokens_list"] = sorted(t.name for t in listed)
    out["tokens_list_expired"] = sorted(t.preview_token.spec.expired for t in listed)
    deleted = await first.tokens.delete(token.name)
    out["tokens_delete"] = deleted.to_dict() if hasattr(deleted, "to_dict") else deleted
    out["tokens_after_delete"] = sorted(t.name for t in await first.tokens.list())
    out["private_edge_revoked"] = edge_status(first.url, token.value)
    out["private_edge_other_token"] = edge_status(first.url, naive.value)

    out["previews_list"] = sorted(p.name for p in await sandbox.previews.list())
    removed = await sandbox.previews.delete(shorthand.name)
    out["previews_delete"] = {"name": removed.metadata.name, "status": str(removed.status)}
    try:
        await sandbox.previews.get(shorthand.name)
        out["get_after_delete"] = None
    except UnexpectedStatus as exc:
        out["get_after_delete"] = exc.status_code
    out["previews_after_delete"] = sorted(p.name for p in await sandbox.previews.list())

    terminated = await SandboxInstance.delete(SANDBOX)
    out["sandbox_delete"] = {"name": terminated.metadata.name, "status": str(terminated.status)}
    try:
        await SandboxInstance.get(SANDBOX)
        out["sandbox_get_after_delete"] = None
    except SandboxAPIError as exc:
        out["sandbox_get_after_delete"] = {"type": type(exc).__name__, "status": exc.status_code}
    try:
        await sandbox.previews.list()
        out["previews_after_sandbox_delete"] = None
    except UnexpectedStatus as exc:
        out["previews_after_sandbox_delete"] = exc.status_code
    out["web_edge_after_sandbox_delete"] = edge_status(first.url, naive.value)
    return out


if __name__ == "__main__":
    result = asyncio.run(flow())
    sys.stdout.write("FLOW-RESULT " + json.dumps(result, default=str) + "\n")
