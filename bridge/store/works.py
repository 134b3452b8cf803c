"""The works' shared parts: the connection a work runs on, what a backend gives the
operations (``Backend``), and the steps that more than one work takes (the outbox's fan-out,
an attempt's record, what a claimed delivery needs).

A work is a plain function over a DB-API connection, run inside one transaction by the
backend (``bridge.store.sqlite``, ``bridge.store.postgres``): its SQL is written once. The
connection says what its backend needs beyond that SQL: PostgreSQL locks the rows a work
reads to change (``for_update``), lets claims pass over rows that others hold
(``skip_locked``) and serializes what must not run twice at once (``lock``); SQLite's
``BEGIN IMMEDIATE`` already serializes every write transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from bridge import events, retry
from bridge.events import sequence_of
from bridge.models import (
    DEFAULT_MAX_CONCURRENCY,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    Job,
    new_id,
)
from bridge.store.base import AttemptResult, Outgoing
from bridge.store.codec import (
    DELIVERY_INSERT,
    ENDPOINT_COLUMNS,
    EVENT_INSERT,
    JOB_SELECT,
    decode_cursor,
    delivery_params,
    endpoint_of,
    endpoint_params,
    event_params,
    loads,
    stamp_of,
)

_T = TypeVar("_T")

class Cursor(Protocol):
    """What the works use of a cursor: ``sqlite3.Cursor`` and psycopg's alike."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def close(self) -> None: ...

    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """The connection a work runs on, inside its transaction (see ``_WriteConnection``)."""

    deliveries_added: int
    jobs_due: int
    batch: JobBatch | None
    for_update: str
    skip_locked: str

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...

    def lock(self, key: str, *, shared: bool = False) -> None: ...

    def pipeline(self) -> contextlib.AbstractContextManager[Any]: ...


def one(conn: Conn, sql: str, params: Any = ()) -> sqlite3.Row | None:
    """The first row, with the statement finished (an unfinished one blocks COMMIT)."""
    cursor = conn.execute(sql, params)
    try:
        row: sqlite3.Row | None = cursor.fetchone()
        return row
    finally:
        cursor.close()


def scalar(conn: Conn, sql: str, params: Any = ()) -> Any:
    row = one(conn, sql, params)
    assert row is not None
    return row[0]


UNREAD: Any = object()  # a job row not read ahead


class JobBatch:
    """What a run of job updates in one transaction shares, so that each does less alone.

    A burst of callbacks is a burst of ``update_job`` works, committed together; each would
    read its job, insert its event, read its tenant's endpoints and wake its provider's
    waiting jobs with statements of its own. Together:

    * ``rows``: the jobs' rows, read ahead with one ``SELECT ... IN``; a work takes its own
      row (once: a second update of the same job reads it again, after the first);
    * ``events``: the events the works make, inserted with one ``executemany`` at the end;
    * ``endpoints``: each tenant's enabled endpoints, read once;
    * ``freed``: the providers whose jobs ended (when the last did, and how many), their
      waiting jobs woken once at the end.

    It holds only while job updates run back to back, all of it inside the transaction:
    before any other work (which may write jobs, events or endpoints, or read events) it is
    settled and ended, and a batch that fails is run again without one.
    """

    __slots__ = ("endpoints", "events", "freed", "rows")

    def __init__(self, conn: Conn, job_ids: list[str]) -> None:
        self.rows: dict[str, sqlite3.Row | None] = {}
        self.events: list[tuple[Any, ...]] = []
        self.endpoints: dict[str, list[sqlite3.Row]] = {}
        self.freed: dict[str, tuple[float, int]] = {}
        wanted = list(dict.fromkeys(job_ids))
        if len(wanted) < 2:
            return  # one job reads its own row: the same one statement
        for start in range(0, len(wanted), READ_AHEAD):
            chunk = wanted[start:start + READ_AHEAD]
            padded = padded_ids(chunk)
            self.rows.update(dict.fromkeys(chunk))  # None: no such job
            # In id order: on PostgreSQL, batches lock their rows in one order.
            for row in conn.execute(
                f"{JOB_SELECT} WHERE id IN ({', '.join('?' * len(padded))}) "
                f"ORDER BY id{conn.for_update}", padded
            ):
                self.rows[row[0]] = row

    def settle(self, conn: Conn) -> None:
        if self.events:
            conn.executemany(EVENT_INSERT, self.events)
        for provider, (stamp, count) in self.freed.items():
            wake_waiting(conn, provider, stamp, count)


def padded_ids(ids: list[str]) -> list[str]:
    """``ids`` padded to a power of two with the last one, for an ``IN (...)``: a handful of
    statements to prepare and keep, not one for every size of batch."""
    return ids + ids[-1:] * ((1 << (len(ids) - 1).bit_length()) - len(ids))


READ_AHEAD = 256  # job rows per read-ahead statement (SQLite's older limit is 999 values)


def run_works(conn: Conn, works: list[Callable[[Conn], Any]]) -> list[tuple[bool, Any]]:
    """Run ``works`` in order (inside a transaction), each run of job updates sharing a
    ``JobBatch``; raises what a work raises."""
    job_ids: list[str | None] = [getattr(work, "job_id", None) for work in works]
    outcomes: list[tuple[bool, Any]] = []
    try:
        for index, (work, job_id) in enumerate(zip(works, job_ids, strict=True)):
            if job_id is None and conn.batch is not None:
                conn.batch.settle(conn)
                conn.batch = None
            elif job_id is not None and conn.batch is None:
                run = itertools.takewhile(lambda later: later is not None, job_ids[index:])
                conn.batch = JobBatch(conn, [later for later in run if later is not None])
            outcomes.append((True, work(conn)))
        if conn.batch is not None:
            conn.batch.settle(conn)
    finally:
        conn.batch = None
    return outcomes


# -- events and the outbox ----------------------------------------------------------------
RECOVER_LIMIT = 10_000  # events one recover call queues again, oldest first


def insert_event(conn: Conn, event: Event) -> None:
    conn.execute(EVENT_INSERT, event_params(event))


def wake_waiting(conn: Conn, provider: str, stamp: float, freed: int = 1) -> None:
    """``freed`` jobs of ``provider`` ended at ``stamp``: as many of its jobs waiting for a
    slot, the longest waiting first, are due then (not all of them, to be refused again).
    Only when there were any are the job listeners woken (on PostgreSQL, a NOTIFY)."""
    # After a refusal's count and wait, or before both; wakes do not wait for each other.
    conn.lock(f"submit:{provider}", shared=True)
    woken = conn.execute(
        "UPDATE jobs SET next_check_at = ? WHERE id IN ("
        "  SELECT id FROM jobs WHERE provider = ? AND status = 'queued'"
        "  AND submit_started_at IS NULL AND next_check_at > ?"
        f"  ORDER BY seq LIMIT ?{conn.skip_locked}) RETURNING id",  # rows: read in a pipeline
        (stamp, provider, stamp, freed),
    ).fetchall()
    if woken:
        conn.jobs_due += 1


def fan_out(
    conn: Conn, event: Event, job: Job | None, stamp: float, *,
    again: bool = False,
) -> list[Delivery]:
    """The event's deliveries: one per enabled endpoint of the tenant that wants it (an
    ``endpoint.disabled`` never to the endpoint it is about), one for the job's own webhook.
    Each target's older ``job.progress`` still waiting for the same job is skipped: this
    event supersedes it."""
    batch = conn.batch
    rows = batch.endpoints.get(event.tenant) if batch is not None else None
    if rows is None:
        rows = conn.execute(
            "SELECT id, events FROM endpoints WHERE tenant = ? AND disabled = 0",
            (event.tenant,),
        ).fetchall()
        if batch is not None:
            batch.endpoints[event.tenant] = rows
    subscribers = [events.Subscriber(row["id"], tuple(wanted) if (
        wanted := loads(row["events"])) is not None else None) for row in rows]
    endpoint_ids, webhook = events.recipients(event, subscribers, job)
    made = [insert_delivery(conn, event, endpoint_id, None, stamp, again=again)
            for endpoint_id in endpoint_ids]
    if webhook and job is not None:
        made.append(insert_delivery(conn, event, None, job.webhook_url, stamp, again=again))
    if made and event.job_id is not None:
        channels = [d.endpoint_id or "job" for d in made]
        conn.execute(
            "UPDATE deliveries SET status = 'skipped', next_attempt_at = NULL, "
            "error = 'superseded by a later event of the job' WHERE status = 'pending' "
            f"AND channel IN ({', '.join('?' * len(channels))}) AND job_id = ? "
            f"AND sequence < ? AND event_type IN ({', '.join('?' * len(events.SUPERSEDED))}) "
            "AND (lease_until IS NULL OR lease_until < ?)",
            (*channels, event.job_id, sequence_of(event), *events.SUPERSEDED, stamp),
        )
    return made


def finish(conn: Conn, finished: Sequence[tuple[Outgoing, AttemptResult]]) -> list[bool]:
    """Record attempts (see ``Store.finish_delivery``), each ``False`` if its delivery was
    deleted, failed by a disable or claimed again meanwhile. Every attempt's UPDATE is sent
    before any answer is read: in PostgreSQL's pipeline mode, one round trip for them all."""
    sent = []
    with conn.pipeline():
        try:
            for outgoing, result in finished:
                delivery = outgoing.delivery
                retry_at = None if result.ok or result.gone else stamp_of(result.retry_at)
                if retry_at is not None and delivery.event_type in events.SUPERSEDED:
                    later = one(conn, "SELECT MAX(sequence) FROM deliveries WHERE channel = ? "
                                "AND job_id = ? AND sequence > ?",
                                (delivery.endpoint_id or "job", delivery.job_id,
                                 delivery.sequence))
                    if events.superseded(delivery.event_type, delivery.sequence,
                                         later[0] if later is not None else None):
                        retry_at = None  # superseded while it was being sent: not retried
                cursor = conn.execute(
                    "UPDATE deliveries SET status = ?, lease_until = NULL, next_attempt_at = ?, "
                    "response_status = ?, duration_ms = ?, error = ?, response_excerpt = ? "
                    "WHERE id = ? AND status = 'pending' AND lease_until = ? RETURNING id",
                    (DeliveryStatus.SUCCEEDED if result.ok else DeliveryStatus.FAILED, retry_at,
                     result.response_status, result.duration_ms, result.error,
                     result.response_excerpt, delivery.id, outgoing.lease_until),
                )
                sent.append((delivery, result, retry_at, cursor))
            return _after_attempts(conn, sent)
        finally:
            for *_, cursor in sent:
                cursor.close()  # an unread one would keep SQLite's statement open


def _after_attempts(conn: Conn, sent: list[tuple[Delivery, AttemptResult, float | None, Cursor]]
                    ) -> list[bool]:
    recorded = []
    cleared: set[str] = set()  # endpoints whose failing_since this batch already cleared
    for delivery, result, retry_at, cursor in sent:
        recorded.append(bool(cursor.fetchall()))
        if not recorded[-1]:
            continue
        if retry_at is not None:
            conn.execute(DELIVERY_INSERT, delivery_params(replace(
                delivery, id=new_id("del"), attempt=delivery.attempt + 1,
                status=DeliveryStatus.PENDING, created_at=result.at,
                next_attempt_at=result.retry_at, response_status=None, duration_ms=None,
                error=None, response_excerpt=None)))
        if delivery.endpoint_id is not None and result.ok:
            if delivery.endpoint_id in cleared:
                continue
            cleared.add(delivery.endpoint_id)
        elif delivery.endpoint_id is not None:
            cleared.discard(delivery.endpoint_id)
        after_attempt(conn, delivery, result, result.at.timestamp())
    return recorded


def after_attempt(
    conn: Conn, delivery: Delivery, result: AttemptResult, stamp: float
) -> None:
    """Keep the target's failure record after an attempt (see ``finish_delivery``)."""
    if delivery.endpoint_id is None:
        if result.gone:  # the job's own webhook said 410: send it nothing more
            fail_pending(conn, "channel = 'job' AND job_id = ?", (delivery.job_id,),
                          "the target answered 410 Gone")
            conn.execute("UPDATE jobs SET webhook_url = NULL WHERE id = ?", (delivery.job_id,))
        return
    if result.ok:
        conn.execute("UPDATE endpoints SET failing_since = NULL "
                     "WHERE id = ? AND failing_since IS NOT NULL",
                     (delivery.endpoint_id,))
        return
    endpoint = one(conn, "SELECT failing_since, disabled FROM endpoints WHERE id = ?"
                    + conn.for_update, (delivery.endpoint_id,))
    if endpoint is None or endpoint["disabled"]:
        return
    standing = retry.standing_after(endpoint["failing_since"], stamp, ok=False,
                                    gone=result.gone, disable_after=result.disable_after)
    since, reason = standing.failing_since, standing.disabled_reason
    if reason is None:
        conn.execute("UPDATE endpoints SET failing_since = ? WHERE id = ?",
                     (since, delivery.endpoint_id))
        return
    conn.execute(
        "UPDATE endpoints SET disabled = 1, disabled_reason = ?, failing_since = ? "
        "WHERE id = ?", (reason, since, delivery.endpoint_id),
    )
    fail_pending(conn, "endpoint_id = ?", (delivery.endpoint_id,), "endpoint disabled")
    announce_disabled(conn, delivery.endpoint_id, stamp)


def announce_disabled(conn: Conn, endpoint_id: str, stamp: float) -> None:
    """Store ``endpoint.disabled`` (its data: the endpoint as the API shows it, without
    secrets) with its deliveries to the tenant's other endpoints that want it."""
    row = one(conn, "SELECT * FROM endpoints WHERE id = ?", (endpoint_id,))
    if row is None:
        return
    event = events.endpoint_disabled(endpoint_of(row), datetime.fromtimestamp(stamp, UTC))
    insert_event(conn, event)
    fan_out(conn, event, None, stamp)


def insert_delivery(
    conn: Conn, event: Event, endpoint_id: str | None, url: str | None,
    stamp: float, *, again: bool = False,
) -> Delivery:
    """A pending delivery, due at ``stamp``; ``again``: the event was sent before (replay,
    recover), so its attempts are numbered on from the earlier ones."""
    attempts = scalar(
        conn,
        "SELECT COUNT(*) FROM deliveries WHERE event_id = ? AND channel = ?",
        (event.id, endpoint_id or "job"),
    ) if again else 0
    delivery = Delivery(
        id=new_id("del"), tenant=event.tenant, event_id=event.id, event_type=event.type,
        endpoint_id=endpoint_id, url=url, job_id=event.job_id, sequence=sequence_of(event),
        attempt=attempts + 1, first_attempt=attempts + 1, status=DeliveryStatus.PENDING,
        created_at=datetime.fromtimestamp(stamp, UTC),
        next_attempt_at=datetime.fromtimestamp(stamp, UTC),
    )
    conn.execute(DELIVERY_INSERT, delivery_params(delivery))
    conn.deliveries_added += 1
    return delivery


def fail_pending(
    conn: Conn, where: str, params: tuple[Any, ...], error: str
) -> None:
    conn.execute(
        "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, lease_until = NULL, "
        f"error = ? WHERE status = 'pending' AND {where}", (error, *params),
    )


def by_id(
    conn: Conn, columns: str, table: str, ids: set[str]
) -> dict[str, sqlite3.Row]:
    if not ids:
        return {}
    rows = conn.execute(
        f"SELECT {columns} FROM {table} WHERE id IN ({', '.join('?' * len(ids))})", tuple(ids)
    ).fetchall()
    return {row["id"]: row for row in rows}


def in_turns(
    due: list[sqlite3.Row], limit: int, per_tenant: int | None, room: dict[str, int]
) -> list[int]:
    """Up to ``limit`` of the ``due`` rows' seqs (earliest first), the tenants taking turns:
    each tenant's first, then each one's second, and so on; at most ``room[tenant]`` or
    ``per_tenant`` rows of one tenant."""
    if per_tenant is None:
        return [seq for seq, _ in due[:limit]]
    queues: dict[str, list[int]] = {}
    for seq, tenant in due:
        queue = queues.setdefault(tenant, [])
        if len(queue) < room.get(tenant, per_tenant):
            queue.append(seq)
    taken = [seq for turn in itertools.zip_longest(*queues.values()) for seq in turn
             if seq is not None]
    return taken[:limit]


def outgoing_of(
    conn: Conn, deliveries: list[Delivery], stamp: float, lease_until: float
) -> list[Outgoing]:
    """What sending each claimed delivery needs, read in the claiming transaction (one
    query per table for the whole batch)."""
    stored = by_id(conn, "id, type, created_at, data", "events",
                    {d.event_id for d in deliveries})
    tenants = by_id(conn, "id, signing_secret, previous_signing_secret, "
                     "previous_signing_secret_until", "tenants", {d.tenant for d in deliveries})
    endpoints = by_id(conn, "id, url, headers, secret, previous_secret, previous_secret_until, "
                       "max_concurrency", "endpoints",
                       {d.endpoint_id for d in deliveries if d.endpoint_id})
    out = []
    for delivery in deliveries:
        event = stored.get(delivery.event_id)
        tenant = tenants.get(delivery.tenant)
        if event is None or tenant is None:
            continue
        # The tenant's secrets: the current one first, the one before while it overlaps.
        _, tenant_secret, tenant_previous, tenant_until = tenant
        tenant_secrets = [tenant_secret]
        if tenant_previous and tenant_until is not None and tenant_until > stamp:
            tenant_secrets.append(tenant_previous)
        headers: dict[str, str] = {}
        cap = DEFAULT_MAX_CONCURRENCY
        if delivery.endpoint_id is None:
            url, secrets = delivery.url or "", tenant_secrets
        else:
            endpoint = endpoints.get(delivery.endpoint_id)
            if endpoint is None:
                continue
            _, url, stored_headers, secret, previous, until, cap = endpoint
            if stored_headers not in (None, "{}"):
                headers = loads(stored_headers)
            if secret is None:  # a REST hook: signed as the tenant signs
                secrets = tenant_secrets
            else:
                secrets = [secret]
                if previous and until is not None and until > stamp:
                    secrets.append(previous)
        # The stored event's own JSON text goes out as is: the bytes signed are the bytes
        # sent, and the body is the same on every attempt.
        _, event_type, created_at, data = event
        body = events.webhook_body(delivery.event_id, event_type, created_at, data)
        out.append(Outgoing(delivery, url, headers, secrets, body, lease_until, cap))
    return out


def write_endpoint(conn: Conn, endpoint: Endpoint) -> None:
    columns = [c for c in ENDPOINT_COLUMNS if c not in ("id", "tenant", "created_at")]
    conn.execute(f"UPDATE endpoints SET {', '.join(f'{c} = :{c}' for c in columns)} "
                 "WHERE id = :id", endpoint_params(endpoint))


class Backend:
    """What a backend gives the store's operations: transactions and reads on its
    connections (``bridge.store.sqlite``, ``bridge.store.postgres``)."""

    def __init__(self) -> None:
        # Called after each commit that added deliveries (the deliverer's wake-up) or made
        # jobs due (the tracker's): events that go to no endpoint wake nobody.
        self.outbox_listeners: list[Callable[[], None]] = []
        self.job_listeners: list[Callable[[], None]] = []

    async def _transaction(
        self, work: Callable[[Conn], _T], *, heavy: bool = False
    ) -> _T:
        """Run ``work`` in a transaction; return once it is committed. ``heavy``: a bulk
        work (many rows)."""
        raise NotImplementedError

    def _enqueue(self, work: Callable[[Conn], Any], heavy: bool = False) -> asyncio.Future[Any]:
        """``_transaction`` as a future, started now."""
        raise NotImplementedError

    async def _fetchone(self, sql: str, params: Any = ()) -> Any:
        raise NotImplementedError

    async def _fetchall(self, sql: str, params: Any = ()) -> list[Any]:
        raise NotImplementedError

    async def _newest_first(
        self, table: str, tenant: str, equal: dict[str, Any], limit: int, cursor: str | None,
        columns: str = "*", where_also: tuple[str, tuple[Any, ...]] | None = None,
    ) -> list[sqlite3.Row]:
        """One page of a tenant's rows, newest first: ``equal`` filters (``None``: no
        filter) and ``where_also`` (a condition and its parameters), one row more than
        ``limit`` to tell whether another page follows."""
        where = ["tenant = ?"]
        params: list[Any] = [tenant]
        if where_also is not None:
            where.append(where_also[0])
            params.extend(where_also[1])
        for column, value in equal.items():
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if cursor is not None:
            where.append("seq < ?")
            params.append(decode_cursor(cursor))
        return await self._fetchall(
            f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)} ORDER BY seq DESC "
            "LIMIT ?",
            (*params, limit + 1),
        )
