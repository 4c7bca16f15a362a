"""``python -m bench.scale propagation|table|workers``: the scale-out figures of issue 13.

* ``propagation``: three replicas on one Redis; 1,000 changes, p50/p99/max of the time until each
  other replica's edge serves the new state, idle and with wrk at 32 connections per replica.
* ``table``: lookup cost at 10 to 100,000 routes on both stores, memory per cached route,
  loading 100,000 routes through the API, and a cold replica's start against them.
* ``workers``: edge throughput and API loading with ``GATEWAY_WORKERS`` = 1 and 2.

Loopback only; results go to ``bench/results/scale-<kind>-<time>.json``. The machine's load is
recorded with them (``os.getloadavg`` before and after): read the figures with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from bench import propagation, table_size, workers
from bench.cli import terminate
from bench.procs import REPO


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    p.add_argument("kind", choices=["propagation", "table", "workers"])
    p.add_argument("--changes", type=int, default=1000, help="propagation: changes per phase")
    p.add_argument("--connections", type=int, default=32, help="propagation: wrk per replica")
    p.add_argument("--routes", type=int, default=100_000, help="table: the largest table")
    p.add_argument("--load-clients", type=int, default=32, help="table: concurrent API clients")
    p.add_argument("--workers", type=int, default=1, help="table: GATEWAY_WORKERS while loading")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    # Bounds, so a typo cannot turn into an unbounded run on a shared machine.
    args.changes = max(1, min(args.changes, 10_000))
    args.routes = max(10, min(args.routes, 1_000_000))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, terminate)
    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "kind": args.kind,
        "started_utc": started.strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
    }
    with (
        tempfile.TemporaryDirectory(prefix="pgw-scale-") as tmp,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        if args.kind == "propagation":
            figures = runner.run(propagation.run(Path(tmp), args.changes, args.connections))
        elif args.kind == "workers":
            figures = runner.run(workers.run(Path(tmp)))
        else:
            figures = runner.run(
                table_size.run(Path(tmp), args.routes, args.load_clients, args.workers)
            )
    result.update(figures)
    result["loadavg_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scale-{args.kind}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
