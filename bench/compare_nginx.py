"""The two nginx roles of the comparison (``bench/compare.py``).

* **upstream**: a static server, one worker, serving ``/small`` (100 bytes) and ``/1m``
  (1 MiB) from files. It costs a few µs per request, so the proxies, not the app, make the
  difference between targets.
* **proxy**: the reference, one worker, configured as ``bench/nginx.py`` (streaming both ways,
  WebSocket upgrades, upstream keep-alive, 64 KiB relay buffers), routing ``/ws`` to the
  WebSocket echo upstream, ``/download`` and ``/upload`` to the aiohttp app (1 GiB transfers)
  and everything else to the static upstream.

Both raise ``keepalive_requests``, toward clients and (proxy) toward the static upstream.
"""

from __future__ import annotations

from pathlib import Path

from bench import nginx
from bench.procs import Child

SMALL_BYTES = 100
LARGE_BYTES = 1 << 20


# keepalive_requests is 1,000 by default: a keep-alive connection would be closed every
# thousand requests in the middle of a measurement.
def keepalive(indent: int) -> str:
    # Valid in the http and the upstream context alike.
    return "".join(
        f"{' ' * indent}{d}\n" for d in ("keepalive_requests 10000000;", "keepalive_timeout 300s;")
    )


UPSTREAM = (
    nginx.PROLOGUE
    + """
http {{
    access_log off;
{keepalive}
    sendfile on;
    open_file_cache max=16;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        location = /small {{ }}
        location = /1m {{ }}
    }}
}}
"""
)


def start_upstream(path: str, port: int, work_dir: Path, cpus: set[int] | None) -> Child:
    root = work_dir / "static"
    root.mkdir(parents=True, exist_ok=True)
    (root / "small").write_bytes(b"s" * (SMALL_BYTES - 1) + b"\n")
    (root / "1m").write_bytes(b"m" * LARGE_BYTES)
    # Started as root, nginx's worker runs as an unprivileged user (www-data): it must be able
    # to reach the files through the private temporary directory (traverse, not list).
    work_dir.chmod(0o711)
    root.chmod(0o755)
    for f in root.iterdir():
        f.chmod(0o644)
    return nginx.start_config(
        path,
        "nginx-upstream",
        port,
        work_dir,
        lambda prefix: UPSTREAM.format(prefix=prefix, port=port, root=root, keepalive=keepalive(4)),
        cpus,
    )


def start_proxy(
    path: str,
    port: int,
    work_dir: Path,
    cpus: set[int] | None,
    *,
    static_port: int,
    ws_port: int,
    app_port: int,
) -> Child:
    return nginx.start_config(
        path,
        "nginx-proxy",
        port,
        work_dir,
        lambda prefix: nginx.proxy_config(
            prefix,
            port,
            {
                "static": (static_port, keepalive(8)),
                "ws": (ws_port, ""),
                "app": (app_port, ""),
            },
            {"/": "static", "/ws": "ws", "/download": "app", "/upload": "app"},
            http_extra=keepalive(4),
        ),
        cpus,
    )
