"""The storage interface: what the rest of the bridge asks of a database.

One method per operation, named for the domain. Every backend gives the same guarantees:

- ``update_job`` reads the job, lets the caller decide the change, and writes the job and
  its event (if any) in one transaction, with the row locked against concurrent writers: a
  callback, a stream message and a poll racing on one job are applied one after another,
  each seeing the other's result. A terminal job is never passed to the caller's function,
  and a job's reaching a terminal state makes its provider's job waiting longest for a slot
  due.
- ``claim_due_jobs`` hands each due job to one caller at a time (a lease), so overlapping
  workers or ticks never work the same job twice; finding due jobs uses an index on the
  next-check time, so its cost does not grow with the number of jobs in flight.
- Every stored event gets, in the same transaction, one pending delivery per enabled
  endpoint of its tenant that wants its type, and one for its job's own ``webhook_url``:
  no crash can leave an event without its deliveries (the outbox). A new event of a job
  skips that job's ``job.progress`` deliveries still waiting on the same target.
- ``claim_due_deliveries`` leases due deliveries like jobs, and never one whose target has
  an earlier event of the same job still pending: each target gets a job's events in order.
  It can share a claim among tenants (turns, and a cap per tenant).

The SQLite backend (``bridge.store.sqlite``) is the embedded default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from bridge.config import ConfiguredEndpoint
from bridge.models import DEFAULT_MAX_CONCURRENCY, ApiKey, Delivery, Endpoint, Event, Job, Tenant


@dataclass(frozen=True)
class Change:
    """What ``update_job``'s decision function returns: the job as it should now be
    stored and, when the change is worth telling, the type of event to record."""

    job: Job
    event_type: str | None = None


Decide = Callable[[Job], Change | None]

# A job's data: URLs, each with the path in its request where it goes (``bridge.inline``).
Media = Sequence[tuple[Sequence[str | int], str]]


T = TypeVar("T")


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


class Store(Protocol):
    async def open(self) -> None:
        """Connect and apply pending migrations."""
        ...

    async def close(self) -> None: ...

    # Called after each commit that added deliveries to the outbox, or made jobs due now:
    # this process's commits, and (PostgreSQL) other processes' too.
    outbox_listeners: list[Callable[[], None]]
    job_listeners: list[Callable[[], None]]

    async def ping(self) -> bool:
        """Whether the database answers and its schema is current."""
        ...

    # -- settings kept in the database ---------------------------------------------------
    async def get_or_set_meta(self, key: str, make: Callable[[], str]) -> str:
        """The value stored under ``key``, storing ``make()`` first if there is none."""
        ...

    # -- tenants and keys ----------------------------------------------------------------
    async def ensure_tenant(self, name: str, make_secret: Callable[[], str]) -> Tenant: ...

    async def add_api_key(self, tenant: str, key_hash: str, *, prefix: str | None = None,
                          source: str = "cli") -> bool:
        """Store a key by its hash, named by ``prefix`` (``None``: ``hashed_key_prefix``);
        ``False``, storing nothing, when another active key already has that prefix."""
        ...

    async def set_env_api_key(self, tenant: str, key_hash: str) -> tuple[list[ApiKey], bool]:
        """Store the key of ``BRIDGE_API_KEY`` for ``tenant`` and revoke the tenant's other
        keys from there, in one transaction. Answers the keys revoked, and whether this one
        may be used (``False``: it was revoked before, and stays revoked)."""
        ...

    async def tenant_for_key(self, key_hash: str) -> Tenant | None:
        """The tenant of a key that is not revoked, read from the database every time (a key
        revoked by any process is refused at once); records the key's use, writing at most
        once a minute per key."""
        ...

    async def list_api_keys(self, tenant: str | None) -> list[ApiKey]:
        """The keys not revoked, newest first: the tenant's, or (``None``) every tenant's."""
        ...

    async def revoke_api_key(self, prefix: str, tenant: str | None,
                             now: datetime) -> ApiKey | None:
        """Revoke the active key named ``prefix`` (only if it is ``tenant``'s, unless
        ``None``); the key as revoked, or ``None`` when there is none."""
        ...

    async def rotate_signing_secret(self, tenant: str, secret: str,
                                    previous_until: datetime) -> Tenant | None:
        """Make ``secret`` the tenant's signing secret; the one before keeps signing beside it
        until ``previous_until``. ``None`` when there is no such tenant."""
        ...

    # -- jobs ----------------------------------------------------------------------------
    async def create_job(
        self, job: Job, *, idempotency_window: float, media: Media = (),
    ) -> tuple[Job, bool]:
        """Insert ``job``; with ``job.idempotency_key`` set, a job of the same tenant and key
        created within ``idempotency_window`` seconds is returned instead (``False``), with
        the ``request_hash`` it was made with. Atomic: of requests racing with one key,
        one inserts and the others get its job. ``media`` (the ``data:`` URLs taken out of
        ``job.request``) is stored with a new job, for ``job_media``."""
        ...

    async def job_media(self, job_id: str) -> Media:
        """The ``data:`` URLs stored with the job (none: empty), for its submission."""
        ...

    async def get_job(self, job_id: str, tenant: str | None = None) -> Job | None:
        """The job; with ``tenant``, only if it belongs to that tenant."""
        ...

    async def list_jobs(
        self,
        tenant: str,
        *,
        status: str | None,
        provider: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Job]: ...

    async def update_job(
        self, job_id: str, decide: Decide, *, release_lease: bool = False
    ) -> tuple[Job, Event | None] | None:
        """Apply ``decide`` to the current row atomically (see the module docstring);
        with ``release_lease``, end the caller's lease on the job in the same transaction.

        Returns the stored job and event, or ``None`` when the job is terminal, missing, or
        ``decide`` returned ``None``.
        """
        ...

    async def claim_due_jobs(self, now: datetime, limit: int, lease: float) -> list[Job]:
        """Lease up to ``limit`` jobs whose next check is due, earliest first."""
        ...

    async def release_job(self, job_id: str, next_check_at: datetime | None) -> None:
        """End the lease and set when the job is next due (``None``: not on a timer)."""
        ...

    async def begin_submit(self, job_id: str, provider: str, limit: int | None,
                           now: datetime, wait_until: datetime | None = None) -> bool:
        """Mark the job's submission as started, if fewer than ``limit`` of the provider's
        jobs are at the provider or being submitted. Atomic; ``False`` when full, and then
        the job waits for a slot: its lease ends and it is next due at ``wait_until``, or
        when a job of the provider frees one."""
        ...

    async def unfinished_jobs(self) -> list[Job]:
        """Every job not yet in a terminal state (to follow again after a restart)."""
        ...

    async def adopted_provider_job(self, provider: str, provider_job_id: str) -> str | None:
        """The id of the job already following this provider task, if any."""
        ...

    # -- events --------------------------------------------------------------------------
    async def list_events(
        self,
        tenant: str,
        *,
        type: str | None,
        job_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Event]: ...

    async def get_event(self, event_id: str, tenant: str) -> Event | None: ...

    async def job_events(self, job_id: str) -> list[Event]: ...

    async def add_event(self, event: Event, *, endpoint_id: str | None = None) -> Delivery | None:
        """Store an event that is not a job's (``endpoint.test``); with ``endpoint_id``, one
        pending delivery of it to that endpoint."""
        ...

    async def replay_event(
        self, event: Event, endpoint_id: str | None, now: datetime
    ) -> list[Delivery]:
        """New pending deliveries of ``event``: to that endpoint, or to every enabled
        endpoint that wants it and the job's own webhook."""
        ...

    # -- endpoints -----------------------------------------------------------------------
    async def create_endpoint(self, endpoint: Endpoint) -> Endpoint: ...

    async def get_endpoint(self, endpoint_id: str, tenant: str) -> Endpoint | None: ...

    async def list_endpoints(
        self, tenant: str, *, limit: int, cursor: str | None
    ) -> Page[Endpoint]: ...

    async def update_endpoint(
        self, endpoint_id: str, tenant: str, change: Callable[[Endpoint], Endpoint]
    ) -> Endpoint | None:
        """Apply ``change`` atomically. An endpoint that becomes disabled has its pending
        deliveries failed (``recover`` sends them later); one that is enabled again starts
        with a clean failure record."""
        ...

    async def delete_endpoint(self, endpoint_id: str, tenant: str) -> bool:
        """Delete the endpoint and its deliveries; ``False`` if there was none."""
        ...

    async def endpoint_deliveries(
        self, endpoint_id: str, *, limit: int, cursor: str | None
    ) -> Page[Delivery]: ...

    async def recover_endpoint(
        self, endpoint: Endpoint, since: datetime, now: datetime
    ) -> tuple[int, bool]:
        """Queue again, oldest first, the events since ``since`` (and since the endpoint was
        made) that it wants and that were neither delivered to it, nor dropped as superseded,
        nor are pending; answer how many, and whether more remain (call again)."""
        ...

    async def list_deliveries(
        self, tenant: str, *, endpoint_id: str | None, event_id: str | None,
        status: str | None, limit: int, cursor: str | None,
    ) -> Page[Delivery]:
        """Every delivery attempt of the tenant, newest first; each filter (``None``: none)
        narrows to one endpoint, one event or one status."""
        ...

    # -- portal --------------------------------------------------------------------------
    async def delivery_outcomes(
        self, tenant: str, *, endpoint_id: str | None, start: datetime, width: float,
        buckets: int,
    ) -> list[OutcomeCounts]:
        """Attempts counted by outcome per bucket of ``width`` seconds from ``start``."""
        ...

    async def endpoint_health(
        self, tenant: str, endpoint_ids: Sequence[str], since: datetime,
    ) -> dict[str, EndpointHealth]:
        """Each endpoint's attempts since ``since`` and its last success."""
        ...

    async def search_jobs(
        self, tenant: str, text: str, *, status: str | None, provider: str | None,
        limit: int, cursor: str | None,
    ) -> Page[Job]:
        """The tenant's jobs named by ``text``: a job or event id, or words of the prompt or
        the metadata."""
        ...

    async def create_portal_link(self, link_hash: str, tenant: str, now: datetime,
                                 expires_at: datetime) -> bool:
        """Record a single-use portal link, by the SHA-256 of its id, valid until
        ``expires_at``; ``False``, storing nothing, when there is no such tenant."""
        ...

    async def redeem_portal_link(self, link_hash: str, now: datetime, session_hash: str,
                                 session_expires_at: datetime) -> str | None:
        """Use the link and open a session for its tenant, in one transaction; the tenant,
        or ``None`` (storing nothing) when the link is unknown, used already or expired.
        Of two redemptions of one link, one alone succeeds."""
        ...

    async def portal_session(self, session_hash: str, now: datetime) -> Tenant | None:
        """The tenant of a session that is neither ended nor expired, read from the database
        every time (a session ended by any process is refused at once)."""
        ...

    async def end_portal_session(self, session_hash: str, now: datetime) -> bool:
        """End a session (logging out); ``False`` when it was not open."""
        ...

    # -- deliveries ----------------------------------------------------------------------
    async def claim_due_deliveries(
        self, now: datetime, limit: int, lease: float, *,
        skip_endpoints: frozenset[str] = frozenset(),
        per_tenant: int | None = None,
        tenant_room: Mapping[str, int] | None = None,
    ) -> list[Outgoing]:
        """Lease up to ``limit`` due deliveries, earliest first, in order per job and
        target (see the module docstring), none for the endpoints in ``skip_endpoints``.

        With ``per_tenant``, tenants take turns (each one's earliest first, then each one's
        next, ...) and one tenant gets at most ``per_tenant`` of them, or
        ``tenant_room[tenant]`` for a tenant named there (0 or less: none): a tenant with a
        backlog does not fill a claim that another tenant's due deliveries need."""
        ...

    async def finish_delivery(self, outgoing: Outgoing, result: AttemptResult) -> bool:
        """Record an attempt, if the claim's lease still holds (``False`` otherwise: another
        claim owns the delivery now); schedule the next one at ``result.retry_at``, unless
        it is a ``job.progress`` that a later event of its job has superseded; keep the
        target's failure record (disabling an endpoint on 410, or after ``disable_after``
        seconds of nothing but failures; a job's own webhook answering 410 gets nothing
        more of that job)."""
        ...

    async def finish_deliveries(
        self, finished: Sequence[tuple[Outgoing, AttemptResult]]
    ) -> list[bool | Exception]:
        """``finish_delivery`` for several attempts at once; answers in order, with the
        exception in place of an attempt that could not be recorded (the others are)."""
        ...

    async def release_deliveries(self, claimed: Sequence[Outgoing]) -> None:
        """End the leases of claimed deliveries that were not attempted (a shutdown), so
        that any worker may send them now; one claimed again meanwhile is left alone."""
        ...

    async def stats(self, now: datetime) -> Stats: ...

    async def sync_configured_endpoints(
        self, endpoints: Sequence[ConfiguredEndpoint], now: datetime,
        make_secret: Callable[[], str],
    ) -> dict[str, int]:
        """Bring the endpoints that came from ``BRIDGE_CONFIG`` in step with the file (see
        ``bridge.config``), in one transaction; answer what was created, updated, disabled."""
        ...
