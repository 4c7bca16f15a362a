"""Command line: ``python -m gateway [--demo]`` runs the gateway: reads settings, picks the loop,
handles signals. ``python -m gateway api ...`` is the operators' client of a running gateway's
control API (``gateway/api_cli.py``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway import __version__

if TYPE_CHECKING:
    from gateway.app import Running
    from gateway.ops.settings import Settings
    from gateway.ops.workers import WorkerSlot


def _loop_factory() -> type[asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency everywhere but Windows
        return None
    return uvloop.Loop


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument(
        "--demo", action="store_true", help="start a demo sandbox with a public preview"
    )
    parser.add_argument("--version", action="version", version=f"preview-gateway {__version__}")
    parser.add_argument(
        "--settings-table", action="store_true", help="print the settings as a Markdown table"
    )
    # Set by the supervisor on the workers it starts (GATEWAY_WORKERS > 1), never by hand.
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-dir", help=argparse.SUPPRESS)
    parser.epilog = "python -m gateway api --help: manage sandboxes, previews and tokens"
    return parser


def _aiohttp_parses_in_c() -> bool:
    """Threat model VER-2: the pure-Python parser accepts framing the C parser refuses (S06);
    AIOHTTP_NO_EXTENSIONS or a platform without the compiled wheel would switch it on. aiohttp
    serves the control API."""
    import aiohttp.http_parser

    return aiohttp.http_parser.HttpRequestParser is aiohttp.http_parser.HttpRequestParserC


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["api"]:
        # A client, not the server: it reads no Settings and starts no loop.
        from gateway.cli.api import main as api_main

        return api_main(args_list[1:])
    # Imported here, not at the top, so that `api` (a short-lived client, run from scripts)
    # does not pay for importing the server.
    from pydantic import ValidationError

    from gateway.app import configure_logging
    from gateway.ops.settings import Settings, markdown_table

    args = _parser().parse_args(args_list)
    if args.settings_table:
        print(markdown_table())
        return 0
    if not _aiohttp_parses_in_c():
        print(
            "preview-gateway: aiohttp's C HTTP parser is not in use; refusing to start",
            file=sys.stderr,
        )
        return 2
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    _raise_nofile_limit()
    if settings.workers > 1 and args.worker_index is None:
        return _supervise(settings, args_list, demo=args.demo)
    from gateway.app import StartupFailed
    from gateway.edge.tls import CertificateError

    worker = _worker_slot(settings, args.worker_index, args.worker_dir)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(_run(settings, demo=args.demo, worker=worker))
    except* (StartupFailed, CertificateError) as group:
        print(f"preview-gateway: cannot start: {group.exceptions[0]}", file=sys.stderr)
    except* OSError as group:  # a port in use, an address not on this host
        print(f"preview-gateway: cannot listen: {group.exceptions[0]}", file=sys.stderr)
    return 1


def _raise_nofile_limit(want: int = 1_048_576) -> None:
    """Each relayed WebSocket holds two file descriptors, and containers often start with a
    soft limit of 1024 (about 500 sockets). Raising the soft limit up to the hard one needs no
    privilege, and Kubernetes has no per-pod setting for it."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _worker_slot(settings: Settings, index: int | None, directory: str | None) -> WorkerSlot | None:
    from pathlib import Path

    from gateway.ops.workers import WorkerSlot

    if index is None or directory is None:
        return None
    return WorkerSlot(index, settings.workers, Path(directory))


def _supervise(settings: Settings, argv: Sequence[str], *, demo: bool) -> int:
    """``GATEWAY_WORKERS`` > 1: this process only starts, watches and signals the workers."""
    if demo:
        print("preview-gateway: --demo runs one process; unset GATEWAY_WORKERS", file=sys.stderr)
        return 2
    from gateway.cli.supervisor import Supervisor

    async def supervise() -> int:
        supervisor = Supervisor(settings, argv)
        print(
            f"preview-gateway {__version__}: {settings.workers} workers on edge port "
            f"{settings.edge_port} and api port {settings.api_port}",
            flush=True,
        )
        if supervisor.api_key:
            print(f"  api key: {supervisor.api_key}  (workspace 'default')", flush=True)
        return await supervisor.run()

    return asyncio.run(supervise())


async def _run(settings: Settings, *, demo: bool, worker: WorkerSlot | None = None) -> int:
    from gateway.app import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGTERM: `kill`, docker stop, Kubernetes. SIGINT: Ctrl+C.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    demo_runner = None
    ready = asyncio.Event()
    holder: list[Running] = []

    def on_ready(running: Running) -> None:
        holder.append(running)
        ready.set()

    async with asyncio.TaskGroup() as tasks:
        server = tasks.create_task(
            serve(
                settings,
                stop,
                on_ready=on_ready,
                extra_targets=["127.0.0.0/8"] if demo else None,
                worker=worker,
            )
        )
        waiter = tasks.create_task(ready.wait())
        await asyncio.wait([server, waiter], return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiter.cancel()
        else:
            running = holder[0]
            # SIGHUP re-reads the API keys file and the TLS certificates at once (both are also
            # re-read when they change).
            loop.add_signal_handler(signal.SIGHUP, lambda: _reload(running))
            if worker is None or worker.index == 0:
                _announce(settings, running)
            if demo:
                from gateway.cli.demo import start_demo

                demo_runner, url = await start_demo(
                    running,
                    public_scheme=settings.effective_public_scheme,
                    public_port=settings.public_port or running.tls_port or running.edge_port,
                )
                print(f"\n  Demo preview:  {url}\n  Try:           curl {url}\n", flush=True)
    if demo_runner is not None:
        with contextlib.suppress(Exception):
            await demo_runner.cleanup()
    return 0


def _reload(running: Running) -> None:
    running.keys.reload(force=True)
    if running.certs is not None:
        running.certs.reload()


def _announce(settings: Settings, running: Running) -> None:
    store = "redis" if settings.redis_url else "embedded (in-memory, single node)"
    print(
        f"preview-gateway {__version__}\n"
        f"  edge:    http://{settings.bind}:{running.edge_port}  (*.{settings.preview_domain})\n"
        f"  api:     http://{settings.bind}:{running.api_port}/v0\n"
        f"  store:   {store}",
        flush=True,
    )
    if running.api_key:
        print(
            f"  api key: {running.api_key}  (workspace 'default'; "
            "set GATEWAY_API_KEYS to choose your own)",
            flush=True,
        )
