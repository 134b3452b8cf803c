"""The ``/metrics`` text (Prometheus exposition format): the process's counters
(``bridge.metrics``), then the gauges read from the database at scrape time. Imported when
``/metrics`` is first asked for."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge import metrics
from bridge.models import Stats

__all__ = ["CONTENT_TYPE_LATEST", "render"]


class _Gauges(Collector):
    def __init__(self, snapshot: Stats) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("bridge_jobs", "Jobs by provider and status.",
                                 labels=["provider", "status"])
        for (provider, status), count in sorted(self._snapshot.jobs.items()):
            jobs.add_metric([provider, status], count)
        yield jobs
        yield GaugeMetricFamily("bridge_outbox_depth", "Webhook deliveries pending.",
                                value=self._snapshot.outbox_depth)
        yield GaugeMetricFamily(
            "bridge_outbox_oldest_pending_seconds",
            "Age of the oldest event with a webhook delivery still pending (0: none).",
            value=self._snapshot.oldest_pending_seconds,
        )
        if self._snapshot.connections is not None:
            pool = GaugeMetricFamily("bridge_database_connections",
                                     "This process's PostgreSQL connections, by state.",
                                     labels=["state"])
            for state, count in sorted(self._snapshot.connections.items()):
                pool.add_metric([state], count)
            yield pool


def render(snapshot: Stats) -> bytes:
    """The Prometheus text exposition: the process's counters, then the gauges."""
    metrics.families()  # every family listed, even one not used yet
    gauges = CollectorRegistry(auto_describe=False)
    gauges.register(_Gauges(snapshot))
    return generate_latest(REGISTRY) + generate_latest(gauges)
