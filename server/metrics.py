"""Prometheus metrics: engine gauges and counters read at scrape time, latency histograms
observed by the routes."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from hearth import EngineStats

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _EngineCollector:
    """Reads the engine's stats when Prometheus scrapes, so gauges are never stale."""

    def __init__(self, stats: Callable[[], EngineStats | None]) -> None:
        self._stats = stats

    def collect(self):
        s = self._stats()
        if s is None:  # still loading
            return
        for name, doc, value in (
            ("hearth_num_requests_running", "Requests in the running batch", s.num_running),
            ("hearth_num_requests_waiting", "Requests queued for admission", s.num_waiting),
            ("hearth_kv_cache_usage_perc", "Fraction of KV blocks held by requests", s.kv_cache_usage),
            ("hearth_kv_cache_blocks", "KV blocks in the pool", s.num_kv_blocks),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        for name, doc, value in (
            ("hearth_prefix_cache_queries", "Prompt tokens looked up in the prefix cache", s.prefix_cache_queries),
            ("hearth_prefix_cache_hits", "Prompt tokens found in the prefix cache", s.prefix_cache_hits),
            ("hearth_num_preemptions", "Requests preempted for lack of KV blocks", s.num_preemptions),
            ("hearth_prompt_tokens", "Prompt tokens of requests added", s.num_prompt_tokens),
            ("hearth_generation_tokens", "Tokens generated", s.num_generation_tokens),
        ):
            yield CounterMetricFamily(name, doc, value=value)


class ServerMetrics:
    """The registry behind GET /metrics."""

    def __init__(self, stats: Callable[[], EngineStats | None]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(stats))

        def hist(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, buckets=_LATENCY_BUCKETS, registry=self.registry)

        self.time_to_first_token = hist("hearth_time_to_first_token_seconds", "Arrival to first output token")
        self.inter_token_latency = hist("hearth_inter_token_latency_seconds", "Gap between output tokens")
        self.e2e_latency = hist("hearth_e2e_request_latency_seconds", "Arrival to last output token")
        self.queue_time = hist("hearth_request_queue_time_seconds", "Arrival to the first step that ran it")
