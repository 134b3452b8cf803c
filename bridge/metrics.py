"""Prometheus metrics (``prometheus-client``): counters kept as things happen, gauges read
from the database when ``/metrics`` is scraped.

Counted in-process (since this process started):

- ``bridge_http_requests_total{method, route, status}`` and
  ``bridge_http_request_duration_seconds{method, route}``: every request answered, by its
  route template (``/v1/jobs/{job_id}``, never the path: paths carry ids and tokens).
- ``bridge_provider_requests_total{provider, outcome}``: every request to a provider;
  outcome ``ok`` (2xx), ``client_error`` (other 4xx), ``rate_limited`` (429),
  ``server_error`` (5xx) or ``transport_error`` (no answer); and
  ``bridge_provider_request_duration_seconds{provider, outcome}``, how long each took.
- ``bridge_job_duration_seconds{provider, status}``: from a job's creation to its terminal
  state, observed by the process that recorded that state.
- ``bridge_deliveries_total{outcome}``: every webhook attempt, ``succeeded`` or ``failed``.
- ``bridge_delivery_duration_seconds``: how long each attempt took, a histogram.

No ``_created`` series: they double the output and say only when this process started.

Read at scrape time (true across processes sharing the database):

- ``bridge_jobs{provider, status}``: jobs in each state.
- ``bridge_outbox_depth``: deliveries pending.
- ``bridge_outbox_oldest_pending_seconds``: age of the oldest event with a pending delivery.
- ``bridge_database_connections{state}`` (PostgreSQL): this process's pool, ``in_use`` and
  ``idle``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.models import Stats

disable_created_metrics()  # type: ignore[no-untyped-call]

HTTP_REQUESTS = Counter(
    "bridge_http_requests", "HTTP requests answered, by route template and status.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "bridge_http_request_duration_seconds", "Duration of HTTP requests, by route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
PROVIDER_REQUESTS = Counter(
    "bridge_provider_requests", "Requests sent to video providers, by outcome.",
    ["provider", "outcome"],
)
PROVIDER_SECONDS = Histogram(
    "bridge_provider_request_duration_seconds",
    "Duration of requests to video providers (a stream: until its answer began), by outcome.",
    ["provider", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
JOB_SECONDS = Histogram(
    "bridge_job_duration_seconds", "Time from a job's creation to its terminal state.",
    ["provider", "status"],
    buckets=(1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
             21600.0, 86400.0),
)
DELIVERIES = Counter(
    "bridge_deliveries", "Webhook delivery attempts, by outcome.", ["outcome"],
)
DELIVERY_SECONDS = Histogram(
    "bridge_delivery_duration_seconds", "Duration of webhook delivery attempts.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0),
)


def count_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one HTTP request answered: ``route`` is its template (or ``(no route)``)."""
    if method not in _METHODS:  # the client chooses it: a bounded set of labels
        method = "OTHER"
    counter, histogram = _http(method, route, status)
    counter.inc()
    histogram.observe(seconds)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def count_provider_request(provider: str, status: int | None, seconds: float) -> None:
    """Count one request to ``provider``: its HTTP status, or ``None`` for no answer, and
    how long it took."""
    counter, histogram = _provider_requests(provider, provider_outcome(status))
    counter.inc()
    histogram.observe(seconds)


def count_job_finished(provider: str, status: str, seconds: float) -> None:
    """A job reached its terminal ``status`` ``seconds`` after it was created."""
    _jobs_finished(provider, status).observe(seconds)


def count_delivery(ok: bool) -> None:
    """Count one delivery attempt by its outcome."""
    _deliveries("succeeded" if ok else "failed").inc()


# A label lookup is a lock and a hash; these run for every request and every attempt.
@functools.lru_cache(maxsize=1024)
def _http(method: str, route: str, status: int) -> tuple[Any, Any]:
    return HTTP_REQUESTS.labels(method, route, str(status)), HTTP_SECONDS.labels(method, route)


@functools.lru_cache(maxsize=256)
def _provider_requests(provider: str, outcome: str) -> tuple[Any, Any]:
    return (PROVIDER_REQUESTS.labels(provider, outcome),
            PROVIDER_SECONDS.labels(provider, outcome))


@functools.lru_cache(maxsize=64)
def _jobs_finished(provider: str, status: str) -> Any:
    return JOB_SECONDS.labels(provider, status)


@functools.lru_cache(maxsize=4)
def _deliveries(outcome: str) -> Any:
    return DELIVERIES.labels(outcome)


def provider_outcome(status: int | None) -> str:
    if status is None:
        return "transport_error"
    if 200 <= status < 300:
        return "ok"
    if status == 429:
        return "rate_limited"
    return "server_error" if status >= 500 else "client_error"


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
    gauges = CollectorRegistry(auto_describe=False)
    gauges.register(_Gauges(snapshot))
    return generate_latest(REGISTRY) + generate_latest(gauges)
