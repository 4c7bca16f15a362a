"""Prometheus metrics on a private registry (one per gateway, so tests never collide).

Request metrics are observed from the access record the edge writes anyway; counters that other
components keep as plain integers (cache hits, open sockets) are read at scrape time by a
collector, so those components stay free of prometheus. Label values come from closed sets only:
never a hostname, a preview name or a path (bounded cardinality).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.ops.log import AccessRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Upstream failures by kind: the codes of gateway.errors' upstream leaves.
CONNECT_FAILURES = {
    "upstream_refused": "refused",
    "upstream_timeout": "timeout",
    "upstream_unreachable": "unreachable",
    "upstream_bad_response": "bad_response",
    "target_not_allowed": "not_allowed",
}
TOKEN_REASONS = frozenset(
    {
        "token_required",
        "token_malformed",
        "token_invalid",
        "token_expired",
        "token_revoked",
        "token_wrong_preview",
        "origin_not_allowed",
    }
)
_HOLD_REASONS = frozenset({"standby", "startup"})
_Children = tuple[Counter, Histogram, Counter | None]
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def status_class(status: int) -> str:
    if status == 499:
        return "client_closed"
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests",
            "Requests and WebSocket sessions on the edge, by outcome.",
            ["kind", "status_class", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Whole request (or WebSocket session) time as the client sees it.",
            ["kind"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "Time spent in the gateway before the request went upstream (parse, route, admit).",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.upstream = Histogram(
            "gateway_upstream_response_seconds",
            "Time from sending a request upstream to receiving the response headers.",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.upstream_failures = Counter(
            "gateway_upstream_failures",
            "Requests the gateway could not complete upstream, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.token_rejections = Counter(
            "gateway_token_rejections",
            "Requests to private previews refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.hold = Histogram(
            "gateway_hold_seconds",
            "Time requests were held while a sandbox woke (standby) or its port started "
            "listening (startup).",
            ["reason"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.gave_up = Counter(
            "gateway_hold_gave_up",
            "Held requests whose sandbox was not up within the limit.",
            ["reason"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, int, str | None], _Children] = {}
        """The labelled series one outcome updates. ``labels()`` validates and looks its
        arguments up under a lock on every call (about half of ``observe``); a labelled child is
        never removed here, so it can be kept. The key is bounded: kind, status and error code
        each come from small closed sets."""

    def observe(self, record: AccessRecord) -> None:
        key = (record.kind, record.status, record.error_code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = self._label(*key)
        requests, duration, failure = children
        requests.inc()
        duration.observe(record.duration_ms / 1000)
        if record.overhead_ms is not None:
            self.overhead.observe(record.overhead_ms / 1000)
        if record.upstream_ms is not None:
            self.upstream.observe(record.upstream_ms / 1000)
        if failure is not None:
            failure.inc()
        if record.extra:
            self._observe_hold(record.extra)

    def _observe_hold(self, extra: Mapping[str, object]) -> None:
        held_ms, reason = extra.get("held_ms"), extra.get("held_for")
        if isinstance(held_ms, float) and reason in _HOLD_REASONS:
            self.hold.labels(reason).observe(held_ms / 1000)
            if extra.get("gave_up"):
                self.gave_up.labels(reason).inc()

    def _label(self, kind: str, status: int, error_code: str | None) -> _Children:
        code = error_code or "ok"
        failure: Counter | None = None
        if code in CONNECT_FAILURES:
            failure = self.upstream_failures.labels(CONNECT_FAILURES[code])
        elif code in TOKEN_REASONS:
            failure = self.token_rejections.labels(code)
        return (
            self.requests.labels(kind, status_class(status), code),
            self.duration.labels(kind),
            failure,
        )

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StatsCollector(Collector):
    """Reads counters kept as plain numbers elsewhere, at scrape time."""

    def __init__(
        self,
        counters: Callable[[], Mapping[str, tuple[str, Mapping[str, int]]]],
        gauges: Callable[[], Mapping[str, float]],
    ) -> None:
        """``counters`` gives, per metric name, its one label's name and the values by label."""
        self._counters = counters
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        for name, (label, values) in self._counters().items():
            family = CounterMetricFamily(name, _HELP.get(name, name), labels=[label])
            for label_value, value in values.items():
                family.add_metric([label_value], value)
            yield family
        for name, gauge in self._gauges().items():
            yield GaugeMetricFamily(name, _HELP.get(name, name), value=gauge)


_HELP = {
    "gateway_route_cache": "Route lookups by result: hit, miss (read from the store), stale "
    "(served from cache while the store failed), error (store failed, nothing cached).",
    "gateway_store_errors": "Store (Redis) operations that failed or timed out: route lookups "
    "(by the edge, bounded by GATEWAY_REDIS_TIMEOUT_S), other commands, write transactions, and "
    "losses of the invalidation subscription.",
    "gateway_websockets_open": "WebSockets being relayed now.",
    "gateway_wakes": "Wake calls for sandboxes in standby, by outcome: called (the orchestrator "
    "answered 2xx), failed, deduplicated (another request or replica holds the wake lock), "
    "unsigned (no GATEWAY_WAKE_SECRET, so no call).",
    "gateway_requests_held": "Requests held now while a sandbox wakes or starts listening.",
    "gateway_limit_refusals": "Connections, requests and WebSockets refused by an abuse limit, "
    "by error code (overloaded, too_many_connections, rate_limited); shed connections are in no "
    "access log line.",
    "gateway_memory_resident_bytes": "Resident set size, as the memory budget last read it (0 "
    "when GATEWAY_MEMORY_LIMIT_MIB is unset).",
}
