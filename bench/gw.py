"""Start a gateway process and register one public preview of the upstream app.

(Not named ``gateway.py``: ``python bench/run.py`` puts bench/ on sys.path, where that name would
shadow the real package.)
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from bench.procs import PYTHON, REPO, Child, free_port, wait_http_ok

API_KEY = "bench-key-0123456789abcdef"


@dataclass
class Gateway:
    child: Child
    edge_port: int
    api_port: int
    hostname: str  # the preview's Host header

    @property
    def pid(self) -> int:
        return self.child.pid


def _api(api_port: int, path: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{api_port}{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        result: dict[str, object] = json.load(resp)
        return result


def snapshot(ref: str, dest: Path) -> Path:
    """Extract ``ref`` of the repository into ``dest`` with ``git archive`` (read-only on the
    repository), so a benchmark measures one commit even while the work tree is being edited."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, "gateway"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True, timeout=60)
    return dest


def start(
    upstream_port: int,
    work_dir: Path,
    name: str = "gateway",
    *,
    src: Path = REPO,
    extra_env: dict[str, str] | None = None,
    cpus: set[int] | None = None,
    register: bool = True,
) -> Gateway:
    """Run ``python -m gateway`` from ``src`` (the work tree, or a snapshot: the current
    directory comes first on sys.path, ahead of the editable install). ``register=False``: a
    replica of a shared table that already has the preview (``hostname`` is then empty)."""
    edge_port, api_port = free_port(), free_port()
    env = dict(os.environ)
    env.update(
        GATEWAY_BIND="127.0.0.1",
        GATEWAY_EDGE_PORT=str(edge_port),
        GATEWAY_API_PORT=str(api_port),
        GATEWAY_API_KEYS=f"default:{API_KEY}",
        GATEWAY_ALLOWED_TARGETS="127.0.0.0/8",
        GATEWAY_ACCESS_LOG="false",
        GATEWAY_MAX_BODY_BYTES="0",  # the 1 GiB upload is above the default 100 MiB cap
        GATEWAY_SHUTDOWN_GRACE_S="2",  # nothing is in flight at stop; do not wait 10 s
        # All load comes from one address (loopback): the per-client and per-preview abuse caps
        # (issue 12) would refuse it, and the nginx it is compared with has none by default.
        GATEWAY_MAX_CONNECTIONS_PER_CLIENT_IP="0",
        GATEWAY_MAX_WEBSOCKETS_PER_CLIENT_IP="0",
        GATEWAY_MAX_CONNECTIONS_PER_PREVIEW="0",
        GATEWAY_MAX_WEBSOCKETS_PER_PREVIEW="0",
        PYTHONPATH=str(src),
    )
    env.update(extra_env or {})
    child = Child(name, [str(PYTHON), "-m", "gateway"], work_dir, env=env, cwd=src, cpus=cpus)
    try:
        wait_http_ok(f"http://127.0.0.1:{api_port}/readyz", child)
        if not register:
            return Gateway(child, edge_port, api_port, "")
        _api(
            api_port,
            "/v0/sandboxes",
            {"metadata": {"name": "sb"}, "spec": {"target": {"host": "127.0.0.1"}}},
        )
        netloc = add_preview(api_port, "web", upstream_port)
    except BaseException:
        child.stop()
        raise
    return Gateway(child, edge_port, api_port, netloc)


def pool_env(sockets: int) -> dict[str, str]:
    """Gateway settings for holding ``sockets`` relayed WebSockets at once.

    Each relayed WebSocket holds a slot of the gateway's upstream pool for its whole life, and
    the pool allows 128 per sandbox port by default, so idle socket 129 would wait for a slot
    forever (and so would plain HTTP to that preview). Both pool limits go above the count.
    """
    limit = str(max(4096, sockets + 64))
    return {
        "GATEWAY_UPSTREAM_MAX_CONNECTIONS": limit,
        "GATEWAY_UPSTREAM_MAX_CONNECTIONS_PER_TARGET": limit,
    }


def add_preview(api_port: int, name: str, port: int, *, public: bool = True) -> str:
    """Register a preview of 127.0.0.1:``port`` in sandbox ``sb``; returns its Host."""
    preview = _api(
        api_port,
        "/v0/sandboxes/sb/previews",
        {"metadata": {"name": name}, "spec": {"port": port, "public": public}},
    )
    spec = preview["spec"]
    assert isinstance(spec, dict)
    return urlsplit(str(spec["url"])).netloc


def mint_token(api_port: int, preview: str, lifetime_s: int = 3600) -> str:
    """A token for private preview ``preview`` of sandbox ``sb``. Never print it."""
    expires = datetime.now(UTC) + timedelta(seconds=lifetime_s)
    body = _api(
        api_port,
        f"/v0/sandboxes/sb/previews/{preview}/tokens",
        {"metadata": {"name": ""}, "spec": {"expiresAt": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}},
    )
    spec = body["spec"]
    assert isinstance(spec, dict)
    return str(spec["token"])
