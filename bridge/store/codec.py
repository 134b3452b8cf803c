"""How the bridge's objects are kept as rows, the same in both backends: the columns read
and written, each object to its row and back, and the cursors of newest-first pages.

Times are Unix seconds and JSON is text in SQLite and PostgreSQL alike, so that one reading of
a row serves both."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from bridge.errors import InvalidRequest
from bridge.models import (
    TERMINAL,
    ApiKey,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    Job,
    JobError,
    JobStatus,
    Tracking,
    utcnow,
)
from bridge.store.base import Page

_T = TypeVar("_T")

CURSOR = re.compile(r"s([0-9]{1,18})")


TERMINAL_STATUSES = tuple(str(status) for status in TERMINAL)


JOB_COLUMNS = (
    "id", "tenant", "provider", "model", "status", "tracking", "provider_job_id", "progress",
    "request", "result", "error", "cost", "metadata", "provider_data", "webhook_url",
    "webhook_events", "idempotency_key", "sequence", "created_at", "updated_at", "completed_at",
    "submit_started_at", "submitted_at", "next_check_at", "check_count", "error_streak",
    "progress_event_at", "request_hash",
)


# Every job read names its columns in this order, and ``job_of`` unpacks them by position: a
# name lookup in a ``sqlite3.Row`` scans the column names, 28 times a row.
JOB_READ = f"{', '.join(JOB_COLUMNS)}, lease_until"


JOB_SELECT = f"SELECT {JOB_READ} FROM jobs"


JOB_BY_ID = f"{JOB_SELECT} WHERE id = ?"


STATUS = JOB_COLUMNS.index("status")  # positions in a row of JOB_SELECT


LEASE_UNTIL = len(JOB_COLUMNS)


def insert_sql(table: str, columns: tuple[str, ...]) -> str:
    """An INSERT of one row of ``columns``, each value named as its column."""
    return (f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join(':' + c for c in columns)})")


JOB_INSERT = insert_sql("jobs", JOB_COLUMNS)


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``, as every row and event keeps it. What orjson refuses (an
    integer beyond 64 bits, a key that is not a string, a lone surrogate) the standard
    library writes."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"))


def loads(value: str | None) -> Any:
    """A kept document's value. The standard library's, since orjson reads an integer
    beyond 64 bits as a float."""
    return None if value is None else json.loads(value)


def stamp_of(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def time_or_none(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def time_of(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def json_or_null(value: Any) -> str | None:
    return None if value is None else dumps(value)


# How each job column is written, from the job field of the same name.
JOB_ENCODERS: dict[str, Callable[[Job], Any]] = {
    "id": lambda job: job.id,
    "tenant": lambda job: job.tenant,
    "provider": lambda job: job.provider,
    "model": lambda job: job.model,
    "status": lambda job: str(job.status),
    "tracking": lambda job: str(job.tracking),
    "provider_job_id": lambda job: job.provider_job_id,
    "progress": lambda job: job.progress,
    "request": lambda job: dumps(job.request),
    "result": lambda job: json_or_null(job.result),
    "error": lambda job: json_or_null(job.error.to_json() if job.error else None),
    "cost": lambda job: json_or_null(job.cost),
    "metadata": lambda job: json_or_null(job.metadata),
    "provider_data": lambda job: dumps(job.provider_data),
    "webhook_url": lambda job: job.webhook_url,
    "webhook_events": lambda job: json_or_null(job.webhook_events),
    "idempotency_key": lambda job: job.idempotency_key,
    "sequence": lambda job: job.sequence,
    "created_at": lambda job: job.created_at.timestamp(),
    "updated_at": lambda job: job.updated_at.timestamp(),
    "completed_at": lambda job: stamp_of(job.completed_at),
    "submit_started_at": lambda job: stamp_of(job.submit_started_at),
    "submitted_at": lambda job: stamp_of(job.submitted_at),
    "next_check_at": lambda job: stamp_of(job.next_check_at),
    "check_count": lambda job: job.check_count,
    "error_streak": lambda job: job.error_streak,
    "progress_event_at": lambda job: stamp_of(job.progress_event_at),
    "request_hash": lambda job: job.request_hash,
}


def job_params(job: Job) -> dict[str, Any]:
    return {column: encode(job) for column, encode in JOB_ENCODERS.items()}


STATUSES = {str(status): status for status in JobStatus}


TRACKINGS = {str(tracking): tracking for tracking in Tracking}


def job_of(row: sqlite3.Row) -> Job:
    """A job from a row of ``JOB_SELECT`` (its columns by position, in ``JOB_COLUMNS``
    order). Read for every state change: no JSON parser for empty values."""
    (id_, tenant, provider, model, status, tracking, provider_job_id, progress, request,
     result, error, cost, metadata, provider_data, webhook_url, webhook_events,
     idempotency_key, sequence, created_at, updated_at, completed_at, submit_started_at,
     submitted_at, next_check_at, check_count, error_streak, progress_event_at,
     request_hash) = row[:28]
    return Job(
        id=id_,
        tenant=tenant,
        provider=provider,
        model=model,
        status=STATUSES[status],
        tracking=TRACKINGS[tracking],
        request=json.loads(request),
        created_at=time_of(created_at),
        updated_at=time_of(updated_at),
        provider_job_id=provider_job_id,
        progress=progress,
        result=loads(result),
        error=None if error is None else JobError.from_json(json.loads(error)),
        cost=loads(cost),
        metadata=loads(metadata),
        completed_at=time_or_none(completed_at),
        sequence=sequence,
        provider_data={} if provider_data in (None, "{}") else json.loads(provider_data),
        submit_started_at=time_or_none(submit_started_at),
        submitted_at=time_or_none(submitted_at),
        check_count=check_count,
        error_streak=error_streak,
        webhook_url=webhook_url,
        webhook_events=loads(webhook_events),
        next_check_at=time_or_none(next_check_at),
        progress_event_at=time_or_none(progress_event_at),
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )


def event_of(row: sqlite3.Row) -> Event:
    return Event(
        id=row["id"],
        tenant=row["tenant"],
        type=row["type"],
        job_id=row["job_id"],
        created_at=time_or_none(row["created_at"]) or utcnow(),
        data=loads(row["data"]),
    )


EVENT_INSERT = (
    "INSERT INTO events (id, tenant, job_id, type, created_at, data) VALUES (?, ?, ?, ?, ?, ?)"
)


def event_params(event: Event) -> tuple[Any, ...]:
    return (event.id, event.tenant, event.job_id, event.type, event.created_at.timestamp(),
            dumps(event.data))


KEY_COLUMNS = "prefix, tenant, source, created_at, last_used_at, revoked_at"


def api_key_of(row: sqlite3.Row) -> ApiKey:
    prefix, tenant, source, created_at, last_used_at, revoked_at = row
    return ApiKey(prefix=prefix, tenant=tenant, source=source, created_at=time_of(created_at),
                  last_used_at=time_or_none(last_used_at), revoked_at=time_or_none(revoked_at))


ENDPOINT_COLUMNS = (
    "id", "tenant", "kind", "url", "events", "description", "headers", "secret",
    "previous_secret", "previous_secret_until", "disabled", "disabled_reason", "failing_since",
    "source", "created_at", "max_concurrency",
)


ENDPOINT_INSERT = insert_sql("endpoints", ENDPOINT_COLUMNS)


def endpoint_params(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "tenant": endpoint.tenant,
        "kind": endpoint.kind,
        "url": endpoint.url,
        "events": json_or_null(list(endpoint.events) if endpoint.events is not None else None),
        "description": endpoint.description,
        "headers": dumps(endpoint.headers),
        "secret": endpoint.secret,
        "previous_secret": endpoint.previous_secret,
        "previous_secret_until": stamp_of(endpoint.previous_secret_until),
        "disabled": int(endpoint.disabled),
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": stamp_of(endpoint.failing_since),
        "source": endpoint.source,
        "created_at": endpoint.created_at.timestamp(),
        "max_concurrency": endpoint.max_concurrency,
    }


def endpoint_of(row: sqlite3.Row) -> Endpoint:
    events = loads(row["events"])
    return Endpoint(
        id=row["id"],
        tenant=row["tenant"],
        kind=row["kind"],
        url=row["url"],
        events=tuple(events) if events is not None else None,
        description=row["description"],
        headers=loads(row["headers"]) or {},
        secret=row["secret"],
        previous_secret=row["previous_secret"],
        previous_secret_until=time_or_none(row["previous_secret_until"]),
        disabled=bool(row["disabled"]),
        disabled_reason=row["disabled_reason"],
        failing_since=time_or_none(row["failing_since"]),
        source=row["source"],
        created_at=time_or_none(row["created_at"]) or utcnow(),
        max_concurrency=row["max_concurrency"],
    )


DELIVERY_COLUMNS = (
    "id", "tenant", "event_id", "event_type", "endpoint_id", "url", "channel", "job_id",
    "sequence", "attempt", "first_attempt", "status", "next_attempt_at", "response_status",
    "duration_ms", "error", "response_excerpt", "created_at",
)


# Delivery reads name these columns in this order (``delivery_of`` unpacks them by position).
DELIVERY_READ = f"{', '.join(DELIVERY_COLUMNS)}, seq"


DELIVERY_INSERT = insert_sql("deliveries", DELIVERY_COLUMNS)


def delivery_params(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "tenant": delivery.tenant,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "endpoint_id": delivery.endpoint_id,
        "url": delivery.url,
        "channel": delivery.endpoint_id or "job",
        "job_id": delivery.job_id,
        "sequence": delivery.sequence,
        "attempt": delivery.attempt,
        "first_attempt": delivery.first_attempt,
        "status": str(delivery.status),
        "next_attempt_at": stamp_of(delivery.next_attempt_at),
        "response_status": delivery.response_status,
        "duration_ms": delivery.duration_ms,
        "error": delivery.error,
        "response_excerpt": delivery.response_excerpt,
        "created_at": delivery.created_at.timestamp(),
    }


DELIVERY_STATUSES = {str(status): status for status in DeliveryStatus}


def delivery_of(row: sqlite3.Row) -> Delivery:
    """A delivery from a row of ``DELIVERY_READ`` columns, by position."""
    (id_, tenant, event_id, event_type, endpoint_id, url, _, job_id, sequence, attempt,
     first_attempt, status, next_attempt_at, response_status, duration_ms, error,
     response_excerpt, created_at) = row[:18]
    return Delivery(
        id=id_,
        tenant=tenant,
        event_id=event_id,
        event_type=event_type,
        endpoint_id=endpoint_id,
        url=url,
        job_id=job_id,
        sequence=sequence,
        attempt=attempt,
        status=DELIVERY_STATUSES[status],
        created_at=time_of(created_at),
        next_attempt_at=time_or_none(next_attempt_at),
        response_status=response_status,
        duration_ms=duration_ms,
        error=error,
        response_excerpt=response_excerpt,
        first_attempt=first_attempt,
    )


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        text = ""
    match = CURSOR.fullmatch(text)
    if match is None:
        raise InvalidRequest("cursor is not one this API returned", field="cursor",
                             status_code=400)
    return int(match.group(1))


def page_of(
    rows: list[sqlite3.Row], limit: int, convert: Callable[[sqlite3.Row], _T]
) -> Page[_T]:
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["seq"]) if more and rows else None
    return Page([convert(row) for row in rows], next_cursor)


