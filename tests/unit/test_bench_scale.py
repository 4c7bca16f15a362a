"""The scale benchmark's own arithmetic (bench/propagation.py): percentiles of the delays, and
reading when each replica applied an invalidation from its debug log."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench import propagation


@pytest.mark.parametrize(
    ("ms", "want"),
    [
        ([], {}),
        ([5.0], {"p50_ms": 5.0, "p99_ms": 5.0, "max_ms": 5.0}),
        ([float(i) for i in range(1, 101)], {"p50_ms": 50.5, "p99_ms": 100.0, "max_ms": 100.0}),
        ([3.0, 1.0, 2.0], {"p50_ms": 2.0, "p99_ms": 3.0, "max_ms": 3.0}),
    ],
)
def test_summary(ms: list[float], want: dict[str, float]) -> None:
    assert propagation.summary(ms) == want


def test_applied_counts_only_the_replicas_that_did_not_write(tmp_path: Path) -> None:
    host = "abc.local.preview.localhost"
    logs = []
    for index, times in enumerate([[10.000, 20.000], [10.004, 20.030], [10.010, 19.990]]):
        log = tmp_path / f"r{index}.log"
        lines = ["x DEBUG gateway.routing: route cache: invalidated * at 1.0"]
        lines += [f"x DEBUG gateway.routing: route cache: invalidated {host} at {t}" for t in times]
        lines.append("x DEBUG gateway.routing: route cache: invalidated other.host at 10.5")
        log.write_text("\n".join(lines) + "\n")
        logs.append(SimpleNamespace(child=SimpleNamespace(log_path=log)))
    cluster: Any = SimpleNamespace(
        replicas=logs, host=f"{host}:8080", changed=[(0, 10.000), (1, 20.000)]
    )
    got = propagation.applied(cluster, 0)
    # Change 0 (written through replica 0) seen by 1 and 2; change 1 by 0 and 2.
    assert got["applied_observations"] == 4
    assert got["applied_max_ms"] == pytest.approx(10.0)
    assert got["applied_p50_ms"] == pytest.approx(2.0)  # median of 4, 10, 0, -10
