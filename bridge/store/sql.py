"""The store's operations on jobs, events, endpoints and deliveries, written once in SQL
over the works' connection (``bridge.store.works``); tenants, keys and the portal are in
``bridge.store.accounts``. Each backend supplies the transactions and reads (``Backend``).
See ``bridge.store.base`` for the guarantees every operation keeps."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from bridge import events
from bridge.config import ConfiguredEndpoint
from bridge.events import disabled_endpoint_of
from bridge.models import (
    EVENT_TYPES,
    TERMINAL,
    Delivery,
    Endpoint,
    Event,
    Job,
    JobStatus,
    new_id,
)
from bridge.store.accounts import Accounts
from bridge.store.base import AttemptResult, Decide, Media, Outgoing, Page, Stats
from bridge.store.codec import (
    DELIVERY_READ,
    ENDPOINT_INSERT,
    JOB_BY_ID,
    JOB_COLUMNS,
    JOB_ENCODERS,
    JOB_INSERT,
    JOB_READ,
    JOB_SELECT,
    LEASE_UNTIL,
    STATUS,
    TERMINAL_STATUSES,
    decode_cursor,
    delivery_of,
    dumps,
    endpoint_of,
    endpoint_params,
    event_of,
    event_params,
    job_of,
    job_params,
    loads,
    page_of,
    stamp_of,
)
from bridge.store.overview import Overview
from bridge.store.slots import Slots
from bridge.store.works import (
    RECOVER_LIMIT,
    UNREAD,
    Conn,
    fail_pending,
    fan_out,
    finish,
    in_turns,
    insert_delivery,
    insert_event,
    one,
    outgoing_of,
    wake_waiting,
    write_endpoint,
)

_T = TypeVar("_T")
log = logging.getLogger("bridge.store")

TURN_SCAN = 2  # a claim taking tenants in turns reads up to this many times its limit


class SQLStore(Accounts, Overview):
    """``bridge.store.base.Store`` in SQL; a backend subclasses it with its connections."""

    def __init__(self) -> None:
        super().__init__()
        self._slots = Slots(self._transaction)

    # -- jobs ----------------------------------------------------------------------------
    async def create_job(
        self, job: Job, *, idempotency_window: float, media: Media = (),
    ) -> tuple[Job, bool]:
        def work(conn: Conn) -> tuple[Job, bool]:
            conn.jobs_due += 1
            if job.idempotency_key is not None:
                conn.lock(f"idempotency:{job.tenant}:{job.idempotency_key}")
                row = one(
                    conn,
                    f"{JOB_SELECT} WHERE tenant = ? AND idempotency_key = ?",
                    (job.tenant, job.idempotency_key),
                )
                if row is not None:
                    if row["created_at"] >= time.time() - idempotency_window:
                        return job_of(row), False
                    # The key's window has passed: it may name a new job now.
                    conn.execute(
                        "UPDATE jobs SET idempotency_key = NULL WHERE id = ?", (row["id"],)
                    )
            conn.execute(JOB_INSERT, job_params(job))
            if media:
                conn.execute("INSERT INTO job_media (job_id, media) VALUES (?, ?)",
                             (job.id, dumps([[list(path), url] for path, url in media])))
            return job, True

        # A body with media is written in a thread: a few MiB are not copied on the loop.
        return await self._transaction(work, heavy=bool(media))

    async def job_media(self, job_id: str) -> Media:
        rows = await self._fetchall("SELECT media FROM job_media WHERE job_id = ?", (job_id,))
        if not rows:
            return []
        return [(tuple(path), url) for path, url in loads(rows[0]["media"])]

    async def get_job(self, job_id: str, tenant: str | None = None) -> Job | None:
        if tenant is None:
            row = await self._fetchone(JOB_BY_ID, (job_id,))
        else:
            row = await self._fetchone(
                f"{JOB_SELECT} WHERE id = ? AND tenant = ?", (job_id, tenant)
            )
        return job_of(row) if row else None

    async def list_jobs(
        self,
        tenant: str,
        *,
        status: str | None,
        provider: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Job]:
        rows = await self._newest_first(
            "jobs", tenant, {"status": status, "provider": provider}, limit, cursor,
            columns=f"{JOB_READ}, seq",
        )
        return page_of(rows, limit, job_of)

    async def update_job(
        self, job_id: str, decide: Decide, *, release_lease: bool = False
    ) -> tuple[Job, Event | None] | None:
        def work(conn: Conn) -> tuple[Job, Event | None] | None:
            batch = conn.batch
            row = batch.rows.pop(job_id, UNREAD) if batch is not None else UNREAD
            if row is UNREAD:
                row = one(conn, JOB_BY_ID + conn.for_update, (job_id,))
            if row is None or row[STATUS] in TERMINAL_STATUSES:
                return None
            current = job_of(row)
            change = decide(current)
            if change is None:
                if release_lease:
                    conn.execute("UPDATE jobs SET lease_until = NULL WHERE id = ?", (job_id,))
                return None
            job = change.job
            event = None
            stamp = job.updated_at.timestamp()
            if change.event_type is not None:
                job, event = events.job_event(job.evolve(sequence=current.sequence),
                                              change.event_type)
                if batch is not None:
                    batch.events.append(event_params(event))
                else:
                    insert_event(conn, event)
                fan_out(conn, event, job, stamp)
            # Write only the columns that changed: each untouched index is a page not
            # rewritten, and a change that changes nothing costs no write at all. Job
            # fields are named as their columns; ``evolve`` shares what it leaves alone.
            before, after = current.__dict__, job.__dict__
            changed = [c for c in JOB_COLUMNS
                       if after[c] is not before[c] and after[c] != before[c]]
            values = [JOB_ENCODERS[c](job) for c in changed]
            if (release_lease or job.status in TERMINAL) and row[LEASE_UNTIL] is not None:
                # A finished job is no one's work: a claim of it racing this finish holds
                # no lease past it (its own update then finds the job finished).
                changed.append("lease_until")
                values.append(None)
            if (job.status == JobStatus.QUEUED and current.submit_started_at is not None
                    and job.submit_started_at is None):
                # Its submission given up, to be tried later: its slot is free for the job
                # waiting longest, woken before this row changes so that it is not itself.
                wake_waiting(conn, job.provider, stamp)
            if changed:
                assignments = ", ".join(f"{c} = ?" for c in changed)
                conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values, job_id))
            if job.status in TERMINAL:
                # A finished job frees its slot at the provider: the provider's job waiting
                # longest for one is due now.
                if batch is not None:
                    last, count = batch.freed.get(job.provider, (0.0, 0))
                    batch.freed[job.provider] = (max(stamp, last), count + 1)
                else:
                    wake_waiting(conn, job.provider, stamp)
            return job, event

        work.job_id = job_id  # type: ignore[attr-defined]  # a job update: see JobBatch
        return await self._transaction(work)

    async def claim_due_jobs(self, now: datetime, limit: int, lease: float) -> list[Job]:
        stamp = now.timestamp()

        def work(conn: Conn) -> list[sqlite3.Row]:
            return conn.execute(
                "UPDATE jobs SET lease_until = ? WHERE id IN ("
                "  SELECT id FROM jobs WHERE next_check_at <= ?"
                "  AND (lease_until IS NULL OR lease_until < ?)"
                f"  ORDER BY next_check_at LIMIT ?{conn.skip_locked}"
                f") RETURNING {JOB_READ}, seq",
                (stamp + lease, stamp, stamp, limit),
            ).fetchall()

        # Due first, and among jobs due at once the oldest: RETURNING keeps no order.
        rows = sorted(await self._transaction(work),
                      key=lambda row: (row["next_check_at"], row["seq"]))
        return [job_of(row) for row in rows]

    async def release_job(self, job_id: str, next_check_at: datetime | None) -> None:
        def work(conn: Conn) -> None:
            conn.execute(
                "UPDATE jobs SET lease_until = NULL, next_check_at = ? "
                "WHERE id = ? AND status NOT IN (?, ?, ?, ?)",
                (stamp_of(next_check_at), job_id, *TERMINAL_STATUSES),
            )

        await self._transaction(work)

    async def begin_submit(
        self, job_id: str, provider: str, limit: int | None, now: datetime,
        wait_until: datetime | None = None,
    ) -> bool:
        if limit is None:
            def work(conn: Conn) -> bool:
                conn.execute("UPDATE jobs SET submit_started_at = ? "
                             "WHERE id = ? AND status = 'queued'", (now.timestamp(), job_id))
                return True

            return await self._transaction(work)
        return await self._slots.request(job_id, provider, limit, now, wait_until)

    async def unfinished_jobs(self) -> list[Job]:
        rows = await self._fetchall(
            f"{JOB_SELECT} WHERE status NOT IN (?, ?, ?, ?) ORDER BY seq", TERMINAL_STATUSES
        )
        return [job_of(row) for row in rows]

    async def adopted_provider_job(self, provider: str, provider_job_id: str) -> str | None:
        row = await self._fetchone(
            "SELECT id FROM jobs WHERE provider = ? AND provider_job_id = ?",
            (provider, provider_job_id),
        )
        return str(row["id"]) if row else None

    # -- events --------------------------------------------------------------------------
    async def list_events(
        self,
        tenant: str,
        *,
        type: str | None,
        job_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Event]:
        rows = await self._newest_first(
            "events", tenant, {"type": type, "job_id": job_id}, limit, cursor
        )
        return page_of(rows, limit, event_of)

    async def get_event(self, event_id: str, tenant: str) -> Event | None:
        row = await self._fetchone(
            "SELECT * FROM events WHERE id = ? AND tenant = ?", (event_id, tenant)
        )
        return event_of(row) if row else None

    async def job_events(self, job_id: str) -> list[Event]:
        rows = await self._fetchall("SELECT * FROM events WHERE job_id = ? ORDER BY seq", (job_id,))
        return [event_of(row) for row in rows]

    async def add_event(self, event: Event, *, endpoint_id: str | None = None) -> Delivery | None:
        def work(conn: Conn) -> Delivery | None:
            insert_event(conn, event)
            if endpoint_id is None:
                return None
            return insert_delivery(conn, event, endpoint_id, None,
                                    event.created_at.timestamp())

        return await self._transaction(work)

    async def replay_event(
        self, event: Event, endpoint_id: str | None, now: datetime
    ) -> list[Delivery]:
        stamp = now.timestamp()

        def work(conn: Conn) -> list[Delivery]:
            if endpoint_id is not None:
                return [insert_delivery(conn, event, endpoint_id, None, stamp, again=True)]
            job = None
            if event.job_id is not None:
                row = one(conn, JOB_BY_ID, (event.job_id,))
                job = job_of(row) if row is not None else None
            return fan_out(conn, event, job, stamp, again=True)

        return await self._transaction(work)

    # -- endpoints -----------------------------------------------------------------------
    async def create_endpoint(self, endpoint: Endpoint) -> Endpoint:
        def work(conn: Conn) -> Endpoint:
            conn.execute(ENDPOINT_INSERT, endpoint_params(endpoint))
            return endpoint

        return await self._transaction(work)

    async def get_endpoint(self, endpoint_id: str, tenant: str) -> Endpoint | None:
        row = await self._fetchone(
            "SELECT * FROM endpoints WHERE id = ? AND tenant = ?", (endpoint_id, tenant)
        )
        return endpoint_of(row) if row else None

    async def list_endpoints(
        self, tenant: str, *, limit: int, cursor: str | None
    ) -> Page[Endpoint]:
        rows = await self._newest_first("endpoints", tenant, {}, limit, cursor)
        return page_of(rows, limit, endpoint_of)

    async def update_endpoint(
        self, endpoint_id: str, tenant: str, change: Callable[[Endpoint], Endpoint]
    ) -> Endpoint | None:
        def work(conn: Conn) -> Endpoint | None:
            row = one(conn, "SELECT * FROM endpoints WHERE id = ? AND tenant = ?"
                       + conn.for_update, (endpoint_id, tenant))
            if row is None:
                return None
            current = endpoint_of(row)
            updated = change(current)
            if current.disabled and not updated.disabled:
                updated = replace(updated, disabled_reason=None, failing_since=None)
            write_endpoint(conn, updated)
            if updated.disabled and not current.disabled:
                fail_pending(conn, "endpoint_id = ?", (endpoint_id,), "endpoint disabled")
            return updated

        return await self._transaction(work)

    async def delete_endpoint(self, endpoint_id: str, tenant: str) -> bool:
        def work(conn: Conn) -> bool:
            gone = conn.execute("DELETE FROM endpoints WHERE id = ? AND tenant = ?",
                                (endpoint_id, tenant)).rowcount
            if gone:
                conn.execute("DELETE FROM deliveries WHERE endpoint_id = ?", (endpoint_id,))
            return bool(gone)

        return await self._transaction(work)

    async def endpoint_deliveries(
        self, endpoint_id: str, *, limit: int, cursor: str | None
    ) -> Page[Delivery]:
        params: list[Any] = [endpoint_id]
        before = ""
        if cursor is not None:
            before = " AND seq < ?"
            params.append(decode_cursor(cursor))
        rows = await self._fetchall(
            f"SELECT {DELIVERY_READ} FROM deliveries WHERE endpoint_id = ?{before} "
            "ORDER BY seq DESC LIMIT ?",
            (*params, limit + 1),
        )
        return page_of(rows, limit, delivery_of)

    async def recover_endpoint(
        self, endpoint: Endpoint, since: datetime, now: datetime
    ) -> tuple[int, bool]:
        stamp = now.timestamp()
        wanted = [t for t in EVENT_TYPES if t != "endpoint.test" and endpoint.wants(t)]

        def work(conn: Conn) -> tuple[int, bool]:
            rows = conn.execute(
                "SELECT * FROM events v WHERE v.tenant = ? AND v.created_at >= ? "
                f"AND v.type IN ({', '.join('?' * len(wanted))}) AND NOT EXISTS ("
                "  SELECT 1 FROM deliveries d WHERE d.event_id = v.id AND d.endpoint_id = ?"
                "  AND d.status IN ('pending', 'succeeded', 'skipped')"
                ") ORDER BY v.seq LIMIT ?",
                (endpoint.tenant, max(since, endpoint.created_at).timestamp(), *wanted,
                 endpoint.id, RECOVER_LIMIT + 1),
            ).fetchall()
            queued = 0
            for row in rows[:RECOVER_LIMIT]:
                event = event_of(row)
                if disabled_endpoint_of(event) == endpoint.id:
                    continue  # its own endpoint.disabled: told to the others only
                insert_delivery(conn, event, endpoint.id, None, stamp, again=True)
                queued += 1
            return queued, len(rows) > RECOVER_LIMIT

        return await self._transaction(work, heavy=True)

    async def list_deliveries(
        self, tenant: str, *, endpoint_id: str | None, event_id: str | None,
        status: str | None, limit: int, cursor: str | None,
    ) -> Page[Delivery]:
        rows = await self._newest_first(
            "deliveries", tenant,
            {"endpoint_id": endpoint_id, "event_id": event_id, "status": status},
            limit, cursor, columns=DELIVERY_READ,
        )
        return page_of(rows, limit, delivery_of)

    # -- deliveries ----------------------------------------------------------------------
    async def claim_due_deliveries(
        self, now: datetime, limit: int, lease: float, *,
        skip_endpoints: frozenset[str] = frozenset(),
        per_tenant: int | None = None,
        tenant_room: Mapping[str, int] | None = None,
    ) -> list[Outgoing]:
        stamp = now.timestamp()
        until = stamp + lease
        room = dict(tenant_room or {})
        full = sorted(tenant for tenant, left in room.items() if left <= 0)
        skip = ""
        if skip_endpoints:
            skip = f"  AND d.channel NOT IN ({', '.join('?' * len(skip_endpoints))})"
        if full:
            skip += f"  AND d.tenant NOT IN ({', '.join('?' * len(full))})"
        # Taking tenants in turns looks further than ``limit``: past the first tenant's rows.
        scan = limit if per_tenant is None else TURN_SCAN * limit

        def work(conn: Conn) -> list[Outgoing]:
            # A delivery waits while its target has an earlier pending one of the same job:
            # an earlier event, or the same event queued before it (a replay).
            due = conn.execute(
                "SELECT d.seq, d.tenant FROM deliveries d WHERE d.status = 'pending'"
                "  AND d.next_attempt_at <= ? AND (d.lease_until IS NULL OR d.lease_until < ?)"
                f"{skip}"
                "  AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.status = 'pending'"
                "    AND e.channel = d.channel AND e.job_id = d.job_id"
                "    AND (e.sequence < d.sequence OR (e.sequence = d.sequence AND e.seq < d.seq)))"
                f"  ORDER BY d.next_attempt_at, d.seq LIMIT ?{conn.skip_locked}",
                (stamp, stamp, *sorted(skip_endpoints), *full, scan),
            ).fetchall()
            taken = in_turns(due, limit, per_tenant, room)
            if not taken:
                return []
            rows = conn.execute(
                "UPDATE deliveries SET lease_until = ? "
                f"WHERE seq IN ({', '.join('?' * len(taken))}) RETURNING {DELIVERY_READ}",
                (until, *taken),
            ).fetchall()
            turn = {seq: index for index, seq in enumerate(taken)}
            deliveries = [delivery_of(row) for row in sorted(rows, key=lambda r: turn[r["seq"]])]
            return outgoing_of(conn, deliveries, stamp, until)

        return await self._transaction(work)

    async def finish_delivery(self, outgoing: Outgoing, result: AttemptResult) -> bool:
        recorded: list[bool] = await self._transaction(
            functools.partial(finish, finished=[(outgoing, result)]))
        return recorded[0]

    async def finish_deliveries(
        self, finished: Sequence[tuple[Outgoing, AttemptResult]]
    ) -> list[bool | Exception]:
        try:
            # One work: what nearly always happens.
            return list(await self._transaction(functools.partial(finish, finished=finished)))
        except Exception as exc:
            if len(finished) == 1:
                return [exc]
        # One of them raised, and all were undone: each again on its own, so that only the
        # one that raises fails.
        futures = [self._enqueue(functools.partial(finish, finished=[attempt]))
                   for attempt in finished]
        outcomes: list[Any] = await asyncio.gather(*futures, return_exceptions=True)
        return [outcome[0] if isinstance(outcome, list) else outcome for outcome in outcomes]

    async def release_deliveries(self, claimed: Sequence[Outgoing]) -> None:
        def work(conn: Conn) -> None:
            conn.executemany(
                "UPDATE deliveries SET lease_until = NULL "
                "WHERE id = ? AND status = 'pending' AND lease_until = ?",
                [(outgoing.delivery.id, outgoing.lease_until) for outgoing in claimed])

        await self._transaction(work)

    async def sync_configured_endpoints(
        self, endpoints: Sequence[ConfiguredEndpoint], now: datetime,
        make_secret: Callable[[], str],
    ) -> dict[str, int]:
        removed_reason = "removed from BRIDGE_CONFIG"

        def work(conn: Conn) -> dict[str, int]:
            conn.lock("configured endpoints")  # processes starting together sync once
            counts = {"created": 0, "updated": 0, "disabled": 0}
            current = {(e.tenant, e.url): e for e in map(endpoint_of, conn.execute(
                "SELECT * FROM endpoints WHERE source = 'config'").fetchall())}
            for wanted in endpoints:
                conn.execute(
                    "INSERT INTO tenants (id, signing_secret, created_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (id) DO NOTHING", (wanted.tenant, make_secret(), now.timestamp()))
                have = current.pop((wanted.tenant, wanted.url), None)
                if have is None:
                    conn.execute(ENDPOINT_INSERT, endpoint_params(Endpoint(
                        id=new_id("ep"), tenant=wanted.tenant, url=wanted.url,
                        events=wanted.events, description=wanted.description, headers={},
                        secret=wanted.secret, created_at=now, source="config")))
                    counts["created"] += 1
                    continue
                updated = replace(have, events=wanted.events, description=wanted.description)
                if have.secret != wanted.secret:  # as a rotation: the old one signs for a day
                    updated = replace(updated, secret=wanted.secret, previous_secret=have.secret,
                                      previous_secret_until=now + timedelta(hours=24))
                if have.disabled and have.disabled_reason == removed_reason:
                    updated = replace(updated, disabled=False, disabled_reason=None,
                                      failing_since=None)
                if updated != have:
                    write_endpoint(conn, updated)
                    counts["updated"] += 1
            for gone in current.values():
                if not gone.disabled:
                    write_endpoint(conn, replace(gone, disabled=True,
                                                  disabled_reason=removed_reason))
                    fail_pending(conn, "endpoint_id = ?", (gone.id,), "endpoint disabled")
                    counts["disabled"] += 1
            return counts

        return await self._transaction(work, heavy=True)

    async def stats(self, now: datetime) -> Stats:
        jobs = await self._fetchall(
            "SELECT provider, status, COUNT(*) AS n FROM jobs GROUP BY provider, status")
        # A scan of the outbox, on the reader's thread (``_fetchone`` is for lookups).
        pending = next(iter(await self._fetchall(
            "SELECT COUNT(*) AS n, MIN(v.created_at) AS oldest FROM deliveries d "
            "JOIN events v ON v.id = d.event_id WHERE d.status = 'pending'")), None)
        depth = int(pending["n"]) if pending else 0
        oldest = pending["oldest"] if pending else None
        return Stats(
            jobs={(row["provider"], row["status"]): int(row["n"]) for row in jobs},
            outbox_depth=depth,
            oldest_pending_seconds=max(0.0, now.timestamp() - oldest) if oldest else 0.0,
        )
