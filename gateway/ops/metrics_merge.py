"""One ``/metrics`` view across worker processes: the workers' expositions, summed.

Every series the gateway exports adds up across processes: counters and histogram buckets are
counts, and the one gauge (open WebSockets) is a count of things each worker holds. Only a
counter's ``_created`` timestamp does not add; the earliest one is kept. Per worker, only the
request count is kept (label ``worker``, one value per worker slot, so cardinality stays
bounded), which shows how evenly ``SO_REUSEPORT`` spreads connections.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

_SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def merge_expositions(by_worker: Mapping[int, str]) -> bytes:
    """The text exposition of every worker's series summed, plus per-worker request counts."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[_SampleKey, float]] = {}
    per_worker = CounterMetricFamily(
        "gateway_worker_requests",
        "Edge requests and WebSocket sessions by worker process (GATEWAY_WORKERS); a restarted "
        "worker starts again from zero.",
        labels=["worker"],
    )
    for index, text in sorted(by_worker.items()):
        requests = 0.0
        for family in text_string_to_metric_families(text):
            families.setdefault(family.name, family)
            merged = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                merged[key] = _combine(sample.name, merged.get(key), sample.value)
                if sample.name == "gateway_requests_total":
                    requests += sample.value
        per_worker.add_metric([str(index)], requests)
    reporting = GaugeMetricFamily(
        "gateway_workers_reporting",
        "Worker processes whose metrics are in this scrape.",
        value=len(by_worker),
    )
    rebuilt = [_rebuild(families[name], values[name]) for name in families]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([*rebuilt, per_worker, reporting]))
    return generate_latest(registry)


def _combine(name: str, old: float | None, new: float) -> float:
    if old is None:
        return new
    return min(old, new) if name.endswith("_created") else old + new


def _rebuild(family: Metric, merged: Mapping[_SampleKey, float]) -> Metric:
    out = Metric(family.name, family.documentation, family.type, family.unit)
    for (name, labels), value in merged.items():
        out.add_sample(name, dict(labels), value)
    return out


class _Fixed(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
