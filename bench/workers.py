"""Workers: the same gateway with ``GATEWAY_WORKERS`` = 1 and 2 on one Redis: edge throughput
(wrk -t1 -c32 on the small GET) and loading previews through the API (32 clients). On a 2-core
machine that also runs wrk, the client and Redis, two workers cannot double anything; the figure
shows how much of the second core they take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import wrk
from bench.propagation import cluster
from bench.table_size import load_through_api

PREVIEWS = 5_000


async def run(work_dir: Path, counts: tuple[int, ...] = (1, 2), wrk_s: int = 10) -> dict[str, Any]:
    binary = wrk.binary()
    if binary is None:
        raise RuntimeError("wrk is not installed")
    figures: dict[str, Any] = {}
    for count in counts:
        with cluster(work_dir, count=1, env={"GATEWAY_WORKERS": str(count)}) as c:
            edge = c.replicas[0].edge_port
            load = await wrk.command(
                binary,
                f"http://127.0.0.1:{edge}/small",
                c.host,
                connections=32,
                duration_s=wrk_s,
                work_dir=work_dir,
            ).run()
            api, _ = await load_through_api(c, PREVIEWS, 32)
        figures[str(count)] = {
            "edge_rps": round(load["rps"]),
            "edge_p50_ms": load["p50_ms"],
            "edge_p99_ms": load["p99_ms"],
            "api_previews_per_s": api["per_s"],
        }
        print(f"workers={count}: {figures[str(count)]}", flush=True)
    return {"workers": figures}
