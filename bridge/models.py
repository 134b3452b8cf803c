"""The domain objects: jobs, their states, events, and the shapes the API returns."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar


class JobStatus(StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED})

# The order in which a job moves; a snapshot never moves a job backwards.
STATUS_RANK = {
    JobStatus.QUEUED: 0,
    JobStatus.SUBMITTED: 1,
    JobStatus.RUNNING: 2,
    JobStatus.SUCCEEDED: 3,
    JobStatus.FAILED: 3,
    JobStatus.CANCELED: 3,
    JobStatus.EXPIRED: 3,
}


class Tracking(StrEnum):
    CALLBACK = "callback"
    STREAM = "stream"
    POLL = "poll"


EVENT_TYPES = (
    "job.submitted",
    "job.running",
    "job.progress",
    "job.succeeded",
    "job.failed",
    "job.canceled",
    "job.expired",
    "endpoint.test",
    "endpoint.disabled",
)
# Told to a tenant's other endpoints when one is disabled for failing (410, or five days).
ENDPOINT_DISABLED = "endpoint.disabled"

PROGRESS_EVENT_INTERVAL = 5.0  # seconds: at most one job.progress per job in this window


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # in ASCII order
# Byte -> base62 digit, for the random part. 256 is not a multiple of 62, so the first 8
# digits are a little likelier (5/256 against 4/256): 5.95 bits a character, not 5.954;
# 13 characters carry 77 bits.
_RANDOM_DIGITS = bytes(ord(_BASE62[b % 62]) for b in range(256))


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


_stamp: tuple[int, str] = (-1, "")  # (ms, its base62), one object: threads share it
# Random digits come from the system's generator 4,095 bytes at a time: one system call per
# 315 ids instead of one per id. A forked child draws its own (it must not repeat ours).
_POOL = 13 * 315
_random_lock = threading.Lock()
_random_pool = ""
_random_at = _POOL


def _reset_random_pool() -> None:
    # A new lock too: another thread may have held the parent's at the fork.
    global _random_pool, _random_at, _random_lock
    _random_pool, _random_at, _random_lock = "", _POOL, threading.Lock()


os.register_at_fork(after_in_child=_reset_random_pool)


def _random_part() -> str:
    global _random_pool, _random_at
    with _random_lock:
        at = _random_at
        if at >= _POOL:
            _random_pool = os.urandom(_POOL).translate(_RANDOM_DIGITS).decode()
            at = 0
        _random_at = at + 13
        return _random_pool[at:at + 13]


def new_id(prefix: str) -> str:
    """An id like ``evt_0HzT1qB7w3kPp9XfRa2LmQ``: a prefix, then 9 base62 characters of the
    time in milliseconds and 13 random ones (77 bits).

    Ids made later sort after earlier ones, so each new row's id lands at the end of its
    unique index instead of on a random page: fewer pages rewritten per commit. The time
    part is worked out once per millisecond; ids are made for every event and delivery.
    """
    global _stamp
    ms = time.time_ns() // 1_000_000
    last_ms, stamp = _stamp
    if ms != last_ms:
        stamp = _base62(ms, 9)
        _stamp = (ms, stamp)
    return f"{prefix}_{stamp}{_random_part()}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime | None) -> str | None:
    """``2026-12-01T18:22:15Z``: whole seconds (the fraction dropped), in UTC."""
    if value is None:
        return None
    return rfc3339_stamp(value.timestamp())


def rfc3339_stamp(stamp: float) -> str:
    """``rfc3339`` of a POSIX time."""
    return _rfc3339_second(int(stamp // 1))


@functools.lru_cache(maxsize=1024)
def _rfc3339_second(stamp: int) -> str:
    # Made once a second: every event and API answer formats a few of the same seconds.
    return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")


def parse_rfc3339(value: str) -> datetime:
    """Parse an RFC 3339 time; a time without an offset is taken as UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class JobError:
    code: str
    message: str
    provider_code: str | None = None
    details: Any = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "provider_code": self.provider_code,
        }
        if self.details is not None:
            out["details"] = self.details
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobError:
        return cls(
            code=data["code"],
            message=data["message"],
            provider_code=data.get("provider_code"),
            details=data.get("details"),
        )


@dataclass
class Job:
    """A job as stored. ``request`` is the unified request as accepted (a plain dict)."""

    id: str
    tenant: str
    provider: str
    model: str | None
    status: JobStatus
    tracking: Tracking
    request: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    provider_job_id: str | None = None
    progress: int | None = None
    result: dict[str, Any] | None = None
    error: JobError | None = None
    cost: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    completed_at: datetime | None = None
    sequence: int = 0
    # Adapter-private data kept with the job (e.g. Venice's one-time download_url).
    provider_data: dict[str, Any] = field(default_factory=dict)
    # When a submission was sent but its answer not recorded; see SubmitOutcomeUnknown.
    submit_started_at: datetime | None = None
    submitted_at: datetime | None = None
    check_count: int = 0
    error_streak: int = 0
    next_check_at: datetime | None = None
    progress_event_at: datetime | None = None  # when the last job.progress event was stored
    idempotency_key: str | None = None
    webhook_url: str | None = None
    webhook_events: list[str] | None = None
    # sha256 of the body that created it (``bridge.jobs.fingerprint``), with an
    # idempotency key: a later body under the same key must match it.
    request_hash: str | None = None

    def evolve(self, **changes: Any) -> Job:
        """A copy with ``changes`` (``dataclasses.replace`` without its per-field cost: this
        runs for every state change, inside the store's transaction)."""
        copied = object.__new__(Job)
        copied.__dict__.update(self.__dict__, **changes)
        return copied

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "job",
            "provider": self.provider,
            "model": self.model,
            "provider_job_id": self.provider_job_id,
            "status": str(self.status),
            "progress": self.progress,
            "tracking": str(self.tracking),
            "request": self.request,
            "result": self.result,
            "error": self.error.to_json() if self.error else None,
            "cost": self.cost,
            "metadata": self.metadata,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "completed_at": rfc3339(self.completed_at),
        }


@dataclass(frozen=True)
class Event:
    id: str
    tenant: str
    type: str
    job_id: str | None
    created_at: datetime
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "timestamp": rfc3339(self.created_at),
            "data": self.data,
        }


@dataclass(frozen=True)
class Tenant:
    id: str
    signing_secret: str


@dataclass(frozen=True)
class ApiKey:
    """An API key as it is shown: by its prefix, a short name that gives nothing of the key
    away (the key itself is kept only as its SHA-256 hash)."""

    prefix: str
    tenant: str
    source: str  # "cli": bridge keys create; "env": BRIDGE_API_KEY; "unknown": stored before
    created_at: datetime
    last_used_at: datetime | None = None  # kept to the minute
    revoked_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "tenant": self.tenant,
            "source": self.source,
            "created_at": rfc3339(self.created_at),
            "last_used_at": rfc3339(self.last_used_at),
            "revoked_at": rfc3339(self.revoked_at),
        }


def hashed_key_prefix(key_hash: str) -> str:
    """The prefix of a key whose text may not be shown, even in part (``BRIDGE_API_KEY`` is
    chosen by a person and may be short) or is not known (stored before keys had prefixes):
    taken from its hash, so an operator can work it out from the key."""
    return "sha256:" + key_hash[:8]


# Event types an endpoint gets when it names none: every one but the chatty job.progress.
DEFAULT_ENDPOINT_EVENTS = tuple(t for t in EVENT_TYPES if t != "job.progress")
# Delivery attempts in flight to one endpoint at once: the default (also for a job's own
# webhook_url) and the most an endpoint may ask for.
DEFAULT_MAX_CONCURRENCY = 4
MAX_CONCURRENCY = 32


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Endpoint:
    """Where a tenant's events are posted. A REST hook (``kind="hook"``) is an endpoint
    with one event type whose deliveries are signed with the tenant's signing secret
    (``secret`` is ``None``)."""

    id: str
    tenant: str
    url: str
    events: tuple[str, ...] | None  # None: DEFAULT_ENDPOINT_EVENTS
    description: str | None
    headers: dict[str, str]
    secret: str | None
    created_at: datetime
    kind: str = "endpoint"
    disabled: bool = False
    disabled_reason: str | None = None
    previous_secret: str | None = None
    previous_secret_until: datetime | None = None
    failing_since: datetime | None = None
    source: str = "api"
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY

    def wants(self, event_type: str) -> bool:
        return event_type in (self.events if self.events is not None
                              else DEFAULT_ENDPOINT_EVENTS)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events) if self.events is not None else None,
            "description": self.description,
            "headers": self.headers,
            "disabled": self.disabled,
            "disabled_reason": self.disabled_reason,
            "max_concurrency": self.max_concurrency,
            "created_at": rfc3339(self.created_at),
        }


@dataclass(slots=True)
class Delivery:
    """One attempt to post one event to one target (an endpoint, or a job's own
    ``webhook_url`` when ``endpoint_id`` is ``None``). A ``pending`` attempt is due at
    ``next_attempt_at``; a failed one names when the next attempt is due, if any. Never
    changed once made (not frozen: one is made for every attempt, and a frozen dataclass's
    __init__ costs four times as much)."""

    id: str
    tenant: str
    event_id: str
    event_type: str
    endpoint_id: str | None
    url: str | None
    job_id: str | None
    sequence: int
    attempt: int
    status: DeliveryStatus
    created_at: datetime
    next_attempt_at: datetime | None = None
    response_status: int | None = None
    duration_ms: int | None = None
    error: str | None = None
    response_excerpt: str | None = None
    # The attempt that began this run of retries (a replay or recover begins a new one):
    # the retry schedule counts from it.
    first_attempt: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_id": self.event_id,
            "endpoint_id": self.endpoint_id,
            "attempt": self.attempt,
            "status": str(self.status),
            "response_status": self.response_status,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "response_excerpt": self.response_excerpt,
            "created_at": rfc3339(self.created_at),
            "next_attempt_at": rfc3339(self.next_attempt_at),
        }


# -- what the store takes and answers ------------------------------------------------------
T = TypeVar("T")
# A job's data: URLs, each with the path in its request where it goes (``bridge.inline``).
Media = Sequence[tuple[Sequence[str | int], str]]


@dataclass(frozen=True)
class Change:
    """What ``update_job``'s decision function returns: the job as it should now be
    stored and, when the change is worth telling, the type of event to record."""

    job: Job
    event_type: str | None = None


Decide = Callable[[Job], Change | None]

@dataclass(frozen=True)
class Page(Generic[T]):
    data: list[T]
    next_cursor: str | None


# Outgoing, AttemptResult and Delivery are made for every delivery attempt and never
# changed: plain slotted dataclasses, since a frozen one's __init__ costs four times as much.
@dataclass(slots=True)
class Outgoing:
    """A claimed delivery with what sending it needs: where, extra headers, the secrets to
    sign with (current first) and the exact body bytes."""

    delivery: Delivery
    url: str
    headers: dict[str, str]
    secrets: list[str]
    body: bytes
    lease_until: float  # the claim's lease: its outcome is recorded only while it holds
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY  # the target's attempts in flight at once


@dataclass(slots=True)
class AttemptResult:
    """What came of one attempt, and what the delivery policy decided about it."""

    ok: bool
    at: datetime
    response_status: int | None
    duration_ms: int
    error: str | None
    response_excerpt: str | None
    retry_at: datetime | None  # the next attempt, or None: no more
    gone: bool = False  # 410: the target asked never to be called again
    disable_after: float = 5 * 86400.0  # seconds of nothing but failures before disabling


@dataclass(frozen=True)
class Stats:
    """Counts for the metrics endpoint, read at scrape time."""

    jobs: dict[tuple[str, str], int]  # (provider, status) -> jobs
    outbox_depth: int  # deliveries pending
    oldest_pending_seconds: float  # age of the oldest event with a pending delivery; 0: none
    connections: dict[str, int] | None = None  # this process's pool: "in_use", "idle"


@dataclass(frozen=True)
class OutcomeCounts:
    """Delivery attempts in one time bucket of a chart, by outcome."""

    start: datetime
    succeeded: int
    failed: int
    pending: int


@dataclass(frozen=True)
class EndpointHealth:
    """An endpoint's attempts in a recent window, and its last success."""

    succeeded: int
    failed: int
    last_success: datetime | None

    @property
    def success_rate(self) -> float | None:
        """Succeeded of the finished attempts (``None``: none finished)."""
        done = self.succeeded + self.failed
        return self.succeeded / done if done else None
