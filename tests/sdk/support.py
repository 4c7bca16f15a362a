"""What both SDK tests share: a sandbox registered through our own API (the SDKs' sandbox
create sends Blaxel runtime fields, not `spec.target.host`), and running a flow script as a
subprocess with a clean environment, so the SDK sees only what a user would give it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.helpers.process import GatewayProcess

FLOW_PREFIX = "FLOW-RESULT "
SANDBOX = "sdk-sb"


async def register_sandbox(gp: GatewayProcess) -> None:
    async with gp.client() as gw:
        await gw.sandbox(SANDBOX)


def sdk_env(gp: GatewayProcess, home: Path, port: int) -> dict[str, str]:
    """Only what the flow needs: the SDK's own BL_* variables, tracking off, a fresh HOME (no
    ~/.blaxel/config.yaml), and where the flow's sandbox and edge are."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "DO_NOT_TRACK": "1",
        "BL_API_KEY": gp.key,
        "BL_WORKSPACE": "default",
        "FLOW_EDGE": f"127.0.0.1:{gp.edge_port}",
        "FLOW_SANDBOX": SANDBOX,
        "FLOW_PORT": str(port),
    }


async def run_flow(*argv: str, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    output = out.decode(errors="replace")
    assert proc.returncode == 0, f"flow failed ({proc.returncode}):\n{output}\n{err.decode()}"
    for line in output.splitlines():
        if line.startswith(FLOW_PREFIX):
            result: dict[str, Any] = json.loads(line.removeprefix(FLOW_PREFIX))
            return result
    raise AssertionError(f"the flow printed no result:\n{output}\n{err.decode()}")
