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
- ``bridge_worker_restarts_total{worker}``: background workers restarted after they raised.

No ``_created`` series: they double the output and say only when this process started.
The counters are made (and prometheus-client loaded) at their first use, which is after the
first answer is sent: a start-up loads none of it.

Read at scrape time (true across processes sharing the database):

- ``bridge_jobs{provider, status}``: jobs in each state.
- ``bridge_outbox_depth``: deliveries pending.
- ``bridge_outbox_oldest_pending_seconds``: age of the oldest event with a pending delivery.
- ``bridge_database_connections{state}`` (PostgreSQL): this process's pool, ``in_use`` and
  ``idle``.

Both are written out by ``bridge.exposition`` when ``/metrics`` is asked for.
"""

from __future__ import annotations

import functools
from typing import Any


class _Families:
    """The process's counters and histograms."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram, disable_created_metrics

        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.http_requests = Counter(
            "bridge_http_requests", "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
        )
        self.http_seconds = Histogram(
            "bridge_http_request_duration_seconds",
            "Duration of HTTP requests, by route template.", ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
        )
        self.provider_requests = Counter(
            "bridge_provider_requests", "Requests sent to video providers, by outcome.",
            ["provider", "outcome"],
        )
        self.provider_seconds = Histogram(
            "bridge_provider_request_duration_seconds",
            "Duration of requests to video providers (a stream: until its answer began), "
            "by outcome.",
            ["provider", "outcome"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
        )
        self.job_seconds = Histogram(
            "bridge_job_duration_seconds", "Time from a job's creation to its terminal state.",
            ["provider", "status"],
            buckets=(1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
                     7200.0, 21600.0, 86400.0),
        )
        self.deliveries = Counter(
            "bridge_deliveries", "Webhook delivery attempts, by outcome.", ["outcome"],
        )
        self.delivery_seconds = Histogram(
            "bridge_delivery_duration_seconds", "Duration of webhook delivery attempts.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0),
        )
        self.worker_restarts = Counter(
            "bridge_worker_restarts", "Background workers restarted after they raised.",
            ["worker"],
        )


@functools.cache
def families() -> _Families:
    """The families, registered in prometheus-client's default registry the first time any
    of them is used (or ``/metrics`` is asked for)."""
    return _Families()


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


def count_delivery(ok: bool, seconds: float) -> None:
    """Count one delivery attempt by its outcome, and how long it took."""
    _deliveries("succeeded" if ok else "failed").inc()
    families().delivery_seconds.observe(seconds)


def count_worker_restart(worker: str) -> None:
    """A background worker raised (and is restarted, or its work taken up another way)."""
    families().worker_restarts.labels(worker).inc()


# A label lookup is a lock and a hash; these run for every request and every attempt.
@functools.lru_cache(maxsize=1024)
def _http(method: str, route: str, status: int) -> tuple[Any, Any]:
    made = families()
    return (made.http_requests.labels(method, route, str(status)),
            made.http_seconds.labels(method, route))


@functools.lru_cache(maxsize=256)
def _provider_requests(provider: str, outcome: str) -> tuple[Any, Any]:
    made = families()
    return (made.provider_requests.labels(provider, outcome),
            made.provider_seconds.labels(provider, outcome))


@functools.lru_cache(maxsize=64)
def _jobs_finished(provider: str, status: str) -> Any:
    return families().job_seconds.labels(provider, status)


@functools.lru_cache(maxsize=4)
def _deliveries(outcome: str) -> Any:
    return families().deliveries.labels(outcome)


def provider_outcome(status: int | None) -> str:
    if status is None:
        return "transport_error"
    if 200 <= status < 300:
        return "ok"
    if status == 429:
        return "rate_limited"
    return "server_error" if status >= 500 else "client_error"
