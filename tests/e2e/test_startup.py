"""Start-up failures end with one clear line and a non-zero exit, never a traceback; SIGHUP
re-reads the keys file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

from tests.helpers.gateway import ROOT
from tests.helpers.ports import unused_port


def run(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway"],
        cwd=ROOT,
        env={**clean, "GATEWAY_BIND": "127.0.0.1", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_port_in_use_is_one_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run({"GATEWAY_EDGE_PORT": str(port), "GATEWAY_API_PORT": str(unused_port())})
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_invalid_settings_are_reported() -> None:
    result = run({"GATEWAY_EDGE_PORT": "not-a-port"})
    assert result.returncode == 2
    assert "edge_port" in result.stderr and "Traceback" not in result.stderr


def test_sighup_rereads_the_keys_file(gateway_process: Any, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("ops:first-key-0123456789abcdef\n")
    gp = gateway_process(env={"GATEWAY_API_KEYS_FILE": str(keys)})

    def status(key: str) -> int:
        request = Request(
            f"http://127.0.0.1:{gp.api_port}/v0/sandboxes",
            headers={"Authorization": f"Bearer {key}"},
        )
        try:
            with urlopen(request, timeout=5) as response:
                return int(response.status)
        except OSError as exc:
            return int(getattr(exc, "code", 0))

    assert status("first-key-0123456789abcdef") == 200
    # Same size and, on a coarse clock, the same mtime: only a forced reload sees the change.
    stat = keys.stat()
    keys.write_text("ops:secnd-key-0123456789abcdef\n")
    os.utime(keys, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    gp.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while status("secnd-key-0123456789abcdef") != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status("secnd-key-0123456789abcdef") == 200
    assert status("first-key-0123456789abcdef") == 401
