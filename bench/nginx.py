"""nginx as the reference reverse proxy, configured like the gateway is meant to behave.

One worker process, because the gateway is one single-threaded process: the comparison is one
event loop against one event loop. Bodies are streamed both ways (``proxy_buffering off``,
``proxy_request_buffering off``), WebSocket upgrades are passed through, and upstream
connections are kept alive, as the gateway's pool does.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.procs import Child, children_of, wait_tcp

# One worker, in the foreground's prefix directory; shared by every nginx the benchmarks start.
PROLOGUE = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 8192;
}}
"""

PROXY = (
    PROLOGUE
    + """
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
{http_extra}
{upstreams}
    # "Connection: upgrade" only on upgrades; an empty value keeps the upstream connection
    # reusable for plain requests.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}

    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 0;
        # Unbuffered uploads are relayed through a buffer of this size (default 16 KiB): 64 KiB
        # like the download side, so neither direction is held back by a tiny buffer.
        client_body_buffer_size 64k;

        # Inherited by every location below (none sets proxy_* directives of its own).
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_buffering off;
        # With buffering off nginx relays through one buffer of this size; the default
        # (one 4 KiB page) caps bulk downloads at a few hundred MiB/s here. 64 KiB is the
        # size of the reads aiohttp does in the gateway.
        proxy_buffer_size 64k;
        proxy_buffers 4 64k;  # unused with buffering off, but nginx checks their sizes
        proxy_busy_buffers_size 128k;
        proxy_request_buffering off;
        proxy_read_timeout 300s;
        proxy_send_timeout 300s;

{locations}
    }}
}}
"""
)


def proxy_config(
    prefix: Path,
    port: int,
    upstreams: dict[str, tuple[int, str]],
    locations: dict[str, str],
    http_extra: str = "",
) -> str:
    """The reverse proxy: ``upstreams`` maps a name to (port, extra directives of its block),
    ``locations`` a path prefix to the upstream it is passed to."""
    blocks = "".join(
        f"    upstream {name} {{\n        server 127.0.0.1:{up_port};\n        keepalive 128;\n"
        f"{extra}    }}\n"
        for name, (up_port, extra) in upstreams.items()
    )
    where = "".join(
        f"        location {path} {{ proxy_pass http://{name}; }}\n"
        for path, name in locations.items()
    )
    return PROXY.format(
        prefix=prefix, port=port, http_extra=http_extra, upstreams=blocks, locations=where
    )


def binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


def version(path: str) -> str:
    out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


def start(path: str, port: int, upstream_port: int, work_dir: Path) -> Child:
    return start_config(
        path,
        "nginx",
        port,
        work_dir,
        lambda prefix: proxy_config(prefix, port, {"app": (upstream_port, "")}, {"/": "app"}),
    )


def start_config(
    path: str,
    name: str,
    port: int,
    work_dir: Path,
    config: Callable[[Path], str],
    cpus: set[int] | None = None,
) -> Child:
    """Run nginx with the configuration ``config(prefix)`` in its own prefix directory."""
    prefix = work_dir / name
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(config(prefix))
    # Foreground (daemon off) so the master is our child and SIGTERM to its pid stops it all.
    argv = [path, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
    child = Child(name, argv, work_dir, cpus=cpus)
    wait_tcp(port, child)
    return child


def worker_pid(master: Child) -> int:
    """The single worker: that is where connections and their buffers live. The master listens
    before it forks the worker, so wait a little for it."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        workers = children_of(master.pid)
        if len(workers) == 1:
            return workers[0]
        time.sleep(0.05)
    raise RuntimeError(f"expected one nginx worker, found {children_of(master.pid)}")
