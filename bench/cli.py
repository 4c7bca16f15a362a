"""Command line: options, resource limits, signals, and writing the results."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from bench import gw, report
from bench.procs import REPO, CpuLedger
from bench.runner import SCENARIOS, Bench


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark the gateway against direct access and nginx (loopback only).",
    )
    p.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of ~1 min")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--wrk-s", type=int, default=5)
    p.add_argument("--wrk-connections", type=int, default=32)
    p.add_argument("--paced-rate", type=int, default=2000, help="req/s offered, paced mode")
    p.add_argument("--paced-connections", type=int, default=20)
    p.add_argument("--transfer-mib", type=int, default=1024)
    p.add_argument("--transfer-deadline-s", type=float, default=60.0)
    p.add_argument("--sse-events", type=int, default=200)
    p.add_argument("--sse-interval-ms", type=float, default=20.0)
    p.add_argument("--ws-trips", type=int, default=5000)
    p.add_argument("--ws-connections", type=int, default=4)
    p.add_argument("--idle-ws", type=int, default=1000)
    p.add_argument("--pause-s", type=float, default=0.5)
    p.add_argument("--rounds", type=int, help="rounds of the cheap scenarios (3; 1 with --quick)")
    p.add_argument(
        "--gateway-ref",
        help="benchmark this git ref (git archive into a temp dir) instead of the work tree",
    )
    p.add_argument(
        "--gateway-src",
        type=Path,
        help="benchmark the gateway package found in this directory (e.g. a copy of the tree)",
    )
    args = p.parse_args(argv)
    if args.gateway_ref and args.gateway_src:
        p.error("--gateway-ref and --gateway-src exclude each other")
    if args.gateway_src and not (args.gateway_src / "gateway" / "__main__.py").exists():
        p.error(f"{args.gateway_src} holds no gateway/ package")
    if args.quick:
        args.wrk_s, args.transfer_mib, args.sse_events = 2, 64, 50
        args.ws_trips, args.idle_ws, args.pause_s = 1000, 200, 0.3
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    unknown = set(args.only.split(",")) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    # Bounds, so a typo cannot turn into a long or unbounded run on a shared machine.
    args.wrk_s = min(args.wrk_s, 30)
    args.transfer_mib = min(args.transfer_mib, 4096)
    args.sse_events = min(args.sse_events, 2000)
    args.ws_trips = min(args.ws_trips, 100_000)
    args.idle_ws = min(args.idle_ws, 5000)
    args.rounds = max(1, min(args.rounds, 10))
    return args


def raise_fd_limit(needed: int) -> None:
    """The idle test holds N client sockets here, and children inherit the limit (the gateway
    needs 2 fds per relayed socket). Raise the soft limit toward the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def terminate(signum: int, frame: object) -> None:
    # SIGTERM becomes an exception so the finally blocks stop every child we started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [s for s in SCENARIOS if s in args.only.split(",")]
    raise_fd_limit(4 * args.idle_ws + 1024)
    signal.signal(signal.SIGTERM, terminate)
    started = datetime.now(UTC)
    facts = report.machine_facts(args.gateway_ref, args.gateway_src)
    print(f"machine: {json.dumps(facts)}", flush=True)
    run: dict[str, Any] = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": facts,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    wall = time.monotonic()
    whole = CpuLedger().snapshot()
    with tempfile.TemporaryDirectory(prefix="pgw-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        if args.gateway_ref:
            bench.gateway_src = gw.snapshot(args.gateway_ref, Path(tmp) / "src")
        elif args.gateway_src:
            bench.gateway_src = args.gateway_src.resolve()
        try:
            bench.start_fixed()
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                run["scenarios"] = runner.run(bench.run(chosen))
        finally:
            bench.stop_all()
    run["wall_s"] = round(time.monotonic() - wall, 1)
    run["load"] = CpuLedger.share(whole, CpuLedger().snapshot())  # every child has been waited
    run["loadavg_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}"
    text = report.markdown(run)
    stem.with_suffix(".json").write_text(json.dumps(run, indent=2) + "\n")
    stem.with_suffix(".md").write_text(text + "\n")
    print()
    print(text)
    print(f"\nwritten: {stem}.json and {stem}.md")
    return 0
