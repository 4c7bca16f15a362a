"""Summing the workers' expositions into one ``/metrics`` view."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.ops.metrics_merge import merge_expositions


def exposition(requests: dict[str, int], open_ws: int, durations: list[float]) -> str:
    registry = CollectorRegistry()
    counter = Counter("gateway_requests", "r", ["code"], registry=registry)
    for code, n in requests.items():
        counter.labels(code).inc(n)
    Gauge("gateway_websockets_open", "w", registry=registry).set(open_ws)
    histogram = Histogram("gateway_overhead_seconds", "o", buckets=(0.01, 0.1), registry=registry)
    for d in durations:
        histogram.observe(d)
    return generate_latest(registry).decode()


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_counters_gauges_and_histograms_add_up_across_workers() -> None:
    merged = samples(
        merge_expositions(
            {
                0: exposition({"ok": 3, "preview_not_found": 1}, 2, [0.005, 0.05]),
                1: exposition({"ok": 4}, 5, [0.5]),
            }
        )
    )
    assert merged[("gateway_requests_total", (("code", "ok"),))] == 7
    assert merged[("gateway_requests_total", (("code", "preview_not_found"),))] == 1
    assert merged[("gateway_websockets_open", ())] == 7
    assert merged[("gateway_overhead_seconds_bucket", (("le", "0.01"),))] == 1
    assert merged[("gateway_overhead_seconds_bucket", (("le", "0.1"),))] == 2
    assert merged[("gateway_overhead_seconds_bucket", (("le", "+Inf"),))] == 3
    assert merged[("gateway_overhead_seconds_count", ())] == 3
    assert merged[("gateway_worker_requests_total", (("worker", "0"),))] == 4
    assert merged[("gateway_worker_requests_total", (("worker", "1"),))] == 4
    assert merged[("gateway_workers_reporting", ())] == 2


def test_created_timestamps_keep_the_earliest() -> None:
    first, second = exposition({"ok": 1}, 0, []), exposition({"ok": 1}, 0, [])
    merged = samples(merge_expositions({0: first, 1: second}))
    key = ("gateway_requests_created", (("code", "ok"),))
    assert merged[key] == min(samples(first.encode())[key], samples(second.encode())[key])


def test_a_missing_worker_is_left_out_and_counted() -> None:
    merged = samples(merge_expositions({1: exposition({"ok": 2}, 1, [])}))
    assert merged[("gateway_workers_reporting", ())] == 1
    assert merged[("gateway_requests_total", (("code", "ok"),))] == 2
    assert ("gateway_worker_requests_total", (("worker", "0"),)) not in merged
