"""The unmodified `blaxel` Python SDK (pinned: BLAXEL_VERSION) against the gateway process.

The flow (python_flow.py) runs in its own interpreter with a clean environment, since the SDK
keeps a process-wide client. Its base URL is set the documented way (blaxel-api.md §1.3).
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.gateway import ROOT
from tests.helpers.process import GatewayProcess
from tests.sdk.support import SANDBOX, register_sandbox, run_flow, sdk_env

pytestmark = pytest.mark.e2e

BLAXEL_VERSION = "0.4.24"
FLOW = Path(__file__).with_name("python_flow.py")


def test_the_pinned_sdk_is_installed() -> None:
    try:
        version = importlib.metadata.version("blaxel")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"the blaxel SDK is not installed: pip install blaxel=={BLAXEL_VERSION}")
    assert version == BLAXEL_VERSION, f"these tests are for blaxel=={BLAXEL_VERSION}"


async def test_python_sdk_preview_flow(
    gateway_process: Callable[..., GatewayProcess], upstream: int, tmp_path: Path
) -> None:
    gp = gateway_process()
    await register_sandbox(gp)
    env = sdk_env(gp, tmp_path / "home", upstream)
    env["FLOW_API_URL"] = f"http://127.0.0.1:{gp.api_port}/v0"
    r = await run_flow(sys.executable, str(FLOW), env=env, cwd=ROOT)

    assert r["get"] == {"name": SANDBOX, "status": "DEPLOYED"}
    # create_if_not_exists twice: the second call returns the first preview, unchanged.
    cine = r["create_if_not_exists"]
    assert cine["first"] == cine["second"] and cine["first"]["name"] == "web"
    assert cine["resource_name"] == SANDBOX
    assert r["shorthand"] == {"name": f"preview-{upstream}", "same_url": True}
    assert r["public_edge"] == 200
    # The SDK's own error types.
    assert r["conflict"] == {"type": "ConflictError", "status": 409}
    assert r["missing"] == {"type": "UnexpectedStatus", "status": 404}

    # Tokens: made with an expiry (an aware and a naive datetime), listed, reused, deleted.
    assert r["private_edge_without_token"] == 401
    created = r["tokens_create"]
    assert created["name"].startswith("token-") and created["has_value"]
    assert created["expires_at"].endswith("Z")
    assert r["private_edge_with_token"] == 200
    assert r["create_if_expired_reused"] == created["naive_name"]  # the later of the two
    assert r["tokens_list"] == sorted([created["name"], created["naive_name"]])
    assert r["tokens_list_expired"] == [False, False]
    assert r["tokens_delete"] == {"message": "Preview token deleted successfully"}
    assert r["tokens_after_delete"] == [created["naive_name"]]
    assert r["private_edge_revoked"] == 401
    assert r["private_edge_other_token"] == 200

    assert r["previews_list"] == sorted([f"preview-{upstream}", "web"])
    assert r["previews_delete"] == {"name": f"preview-{upstream}", "status": "DELETING"}
    assert r["get_after_delete"] == 404
    assert r["previews_after_delete"] == ["web"]

    # Sandbox delete: its previews (and their tokens) go with it.
    assert r["sandbox_delete"] == {"name": SANDBOX, "status": "TERMINATED"}
    assert r["sandbox_get_after_delete"] == {"type": "SandboxAPIError", "status": 404}
    assert r["previews_after_sandbox_delete"] == 404
    assert r["web_edge_after_sandbox_delete"] == 404
