"""The container image builds and runs for real: buildah build on a local debootstrapped base,
podman run, a preview request through it and a clean SIGTERM (ci/container-smoke.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_S = 900
"""The smoke script's own budget: a cold build debootstraps a base and installs the wheel."""


@pytest.mark.container
# Past the build's own budget, so that budget (subprocess timeout) ends a slow build, never the
# suite's 120 s pytest-timeout.
@pytest.mark.timeout(BUILD_S + 60)
@pytest.mark.parametrize(
    "suite",
    [
        pytest.param("bookworm", id="debian12-python3.11"),
        pytest.param("trixie", id="debian13-python3.13"),
    ],
)
def test_image_builds_serves_a_preview_and_stops_cleanly(suite: str) -> None:
    """Both ends of the supported Python range (3.11 and 3.13), each on its Debian base."""
    command = [
        "env",
        f"SUITE={suite}",
        f"IMAGE=localhost/preview-gateway:ci-{suite}",
        "bash",
        str(ROOT / "ci" / "container-smoke.sh"),
    ]
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            pytest.fail("the container test needs root (or sudo) for buildah and podman")
        command = ["sudo", "-n", *command]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_S, check=False
    )
    tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
    assert result.returncode == 0, f"container smoke test failed:\n{tail}"
