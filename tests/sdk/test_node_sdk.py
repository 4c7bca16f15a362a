"""The unmodified @blaxel/core TypeScript SDK (pinned in node/package.json) under Node, against
the gateway process, pointed at it by the SDK's own environment variables only."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.process import GatewayProcess
from tests.sdk.support import SANDBOX, register_sandbox, run_flow, sdk_env

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).with_name("node")
CORE_VERSION = "0.3.21"


def node_binary() -> str:
    """Node and the installed SDK, or a failure that says how to get them (never a skip)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (apt-get install -y nodejs npm)")
    package = NODE_DIR / "node_modules" / "@blaxel" / "core" / "package.json"
    if not package.exists():
        pytest.fail("tests/sdk/node/node_modules is missing: run tests/sdk/setup.sh")
    version = json.loads(package.read_text())["version"]
    if version != CORE_VERSION:
        pytest.fail(f"@blaxel/core {version} is installed, not {CORE_VERSION}: tests/sdk/setup.sh")
    return node


def test_the_pinned_sdk_is_declared() -> None:
    manifest = json.loads((NODE_DIR / "package.json").read_text())
    assert manifest["dependencies"] == {"@blaxel/core": CORE_VERSION}
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@blaxel/core"]["version"] == CORE_VERSION


async def test_typescript_sdk_preview_flow(
    gateway_process: Callable[..., GatewayProcess], upstream: int, tmp_path: Path
) -> None:
    node = node_binary()
    gp = gateway_process()
    await register_sandbox(gp)
    env = sdk_env(gp, tmp_path / "home", upstream)
    env["BL_API_URL"] = f"http://127.0.0.1:{gp.api_port}/v0"
    r = await run_flow(node, "flow.mjs", env=env, cwd=NODE_DIR)

    # No spec.region on our sandboxes, so the SDK opens no HTTP/2 session to a Blaxel edge.
    assert r["get"] == {"name": SANDBOX, "status": "DEPLOYED", "h2": False}
    cine = r["createIfNotExists"]
    assert cine["first"] == cine["second"] and cine["first"]["name"] == "web"
    assert cine["resourceName"] == SANDBOX
    # Errors come out as the thrown parsed body, with `code` (createIfNotExists relies on it).
    assert r["conflict"] == {
        "code": 409,
        "error": "Preview web already exists",
        "message": "Preview web already exists",
    }
    assert r["missing"]["code"] == 404

    assert r["privateEdgeWithoutToken"] == 401
    token = r["tokensCreate"]
    assert token["name"].startswith("token-") and token["hasValue"] and token["expired"] is False
    assert token["expiresAt"].endswith("Z")
    assert r["privateEdgeWithToken"] == 200
    assert r["tokensList"] == [{"name": token["name"], "expired": False}]
    assert r["tokensDelete"] == {"message": "Preview token deleted successfully"}
    assert r["tokensAfterDelete"] == []
    assert r["privateEdgeRevoked"] == 401

    assert r["previewsList"] == ["web"]
    assert r["previewsDelete"] == {"name": "web", "status": "DELETING"}
    assert r["getAfterDelete"]["code"] == 404
    assert r["previewsAfterDelete"] == []

    assert r["keptEdgeBefore"] == 200
    assert r["sandboxDelete"] == {"name": SANDBOX, "status": "TERMINATED"}
    assert r["sandboxGetAfterDelete"]["code"] == 404
    assert r["previewsAfterSandboxDelete"]["code"] == 404
    assert r["keptEdgeAfter"] == 404
