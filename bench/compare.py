"""The issue 9 comparison: ``.venv/bin/python -m bench.compare [--profile]``.

Measures, in one run, direct (the upstreams themselves), nginx (one worker, as a proxy) and the
gateway, and writes one Markdown table of ratios to nginx to ``--out``. See docs/benchmarks.md
for the set-up and the columns.
Requires nginx and wrk (``apt-get install -y nginx-light wrk``). Loopback only; every loop and
every wait is bounded; every process started is stopped at the end, also on Ctrl+C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from bench import compare_report, gw, report
from bench.cli import raise_fd_limit, terminate
from bench.compare_run import SCENARIOS, Compare
from bench.procs import REPO, CpuLedger


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the rate points")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per rate point")
    p.add_argument("--connections", type=int, default=50, help="wrk connections, small bodies")
    p.add_argument("--large-connections", type=int, default=8, help="wrk connections, 1 MiB")
    p.add_argument("--ws-connections", type=int, default=8)
    p.add_argument("--ws-window", type=int, default=8, help="messages in flight per socket")
    p.add_argument("--idle-ws", type=int, default=1000, help="idle WebSockets held")
    p.add_argument("--transfer-mib", type=int, default=1024, help="upload and download size")
    p.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    p.add_argument("--profile", action="store_true", help="py-spy on the gateway")
    p.add_argument("--gateway-ref", help="measure this git ref (git archive) not the work tree")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s, small sizes")
    p.add_argument("--out", type=Path, help="Markdown file (default bench/results/compare-*.md)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.idle_ws, args.transfer_mib = 1, 1.0, 200, 64
    unknown = set(args.only.split(",")) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    # Bounds, so a typo cannot turn into a long or unbounded run on a shared machine.
    args.rounds = max(1, min(args.rounds, 10))
    args.duration = max(1.0, min(args.duration, 30.0))
    args.connections = max(1, min(args.connections, 1000))
    args.large_connections = max(1, min(args.large_connections, 256))
    args.ws_connections = max(1, min(args.ws_connections, 256))
    args.ws_window = max(1, min(args.ws_window, 256))
    args.idle_ws = max(10, min(args.idle_ws, 5000))
    args.transfer_mib = max(1, min(args.transfer_mib, 4096))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [s for s in SCENARIOS if s in args.only.split(",")]
    raise_fd_limit(4 * args.idle_ws + 1024)
    signal.signal(signal.SIGTERM, terminate)
    started = datetime.now(UTC)
    facts = report.machine_facts(args.gateway_ref)
    wall, whole = time.monotonic(), CpuLedger().snapshot()
    with tempfile.TemporaryDirectory(prefix="pgw-compare-") as tmp:
        bench = Compare(args, Path(tmp))
        if args.gateway_ref:
            bench.gateway_src = gw.snapshot(args.gateway_ref, Path(tmp) / "src")
        try:
            bench.start_fixed()
            print(f"pinning: load on {bench.load_cpus}, servers on {bench.server_cpus}")
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                results = runner.run(bench.run(chosen))
        finally:
            bench.stop_all()
    profiles = results.pop("profile", {})
    run: dict[str, Any] = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _facts_line(facts),
        "settings": " ".join(f"--{k.replace('_', '-')}={v}" for k, v in _settings(args).items()),
        "targets": bench.targets(),
        "transfer_mib": args.transfer_mib,
        "results": results,
        "profile": profiles,
        "wall_s": time.monotonic() - wall,
        "load": CpuLedger.share(whole, CpuLedger().snapshot()),
    }
    text = compare_report.markdown(run)
    out = args.out or REPO / "bench" / "results" / f"compare-{started:%Y%m%dT%H%M%SZ}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(run, indent=2, default=str) + "\n")
    print()
    print(text)
    print(f"written: {out} (and {out.with_suffix('.json').name})")
    return 0


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in ("out", "quick") and v is not None}


def _facts_line(f: dict[str, Any]) -> str:
    return (
        f"{f['cpu']}, {f['cores_usable']} usable cores, Linux {f['kernel']}, Python {f['python']}, "
        f"aiohttp {f['aiohttp']}, uvloop {f['uvloop']}, nginx {f['nginx']}, wrk {f['wrk']}; "
        f"gateway: {f['gateway_source']}"
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every child has been stopped by then (the finally in main)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
