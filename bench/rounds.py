"""Merging repeated rounds of one scenario into one result per target."""

from __future__ import annotations

import statistics
from typing import Any

# Cheap and noisy scenarios are repeated; SSE, whose tail is the point, and the idle sockets,
# which take a fresh thousand sockets, run once.
REPEATED = {"http", "http_paced", "download", "upload", "ws_echo_1", "ws_echo_n"}
# When rounds are merged these keep their worst value, every other number its median.
WORST = {
    "rss_growth_mib": max,
    "rss_peak_mib": max,
    "hwm_after_mib": max,
    "errors": max,
    "non_2xx": max,
    "max_ms": max,
}
# Headline figures whose spread over rounds is kept next to the median.
SPREAD = ("rps", "mib_s", "rt_per_s")


def merge_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    merged: dict[str, Any] = dict(good[0])
    for key, first in good[0].items():
        if isinstance(first, bool) or not isinstance(first, int | float):
            continue
        values = [r[key] for r in good if key in r]
        pick = WORST.get(key)
        value = pick(values) if pick else round(statistics.median(values), 3)
        merged[key] = int(value) if isinstance(first, int) and value == int(value) else value
        if key in SPREAD and len(values) > 1:
            merged[f"{key}_min"], merged[f"{key}_max"] = min(values), max(values)
    merged["rounds_ok"] = len(good)
    if len(good) < len(runs):
        merged["rounds_failed"] = [r["error"] for r in runs if "error" in r]
    return merged
