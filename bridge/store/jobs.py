"""The store's operations on jobs: create, read, change (with the event and the outbox rows a
change makes), lease to workers, and a provider's submission slots.

``update_job`` reads the job, lets the caller decide the change, and writes the job and its
event in one transaction, the row locked against other writers: a callback, a stream message
and a poll racing on one job are applied one after another, each seeing the other's result.
Updates that arrive together are written together (``update_jobs``): their rows read with
one statement, their events and deliveries inserted with one each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge import events, slots
from bridge.models import TERMINAL, Decide, Event, Job, JobStatus, Media, Page
from bridge.store.connector import StoreBase, Transaction, Wake
from bridge.store.outbox import Fanout
from bridge.store.queries import JOB_COLUMNS
from bridge.store.rows import JOBS, column, dumps, loads, stamp_of

PARK_AT_ONCE = 1000  # due jobs a refused submission sends to wait with it, at most


@dataclass(slots=True)
class JobUpdate:
    job_id: str
    decide: Decide
    release_lease: bool


@dataclass(slots=True)
class SlotRequest:
    """A job asking for one of its provider's slots (``begin_submit``)."""

    job_id: str
    provider: str
    limit: int
    now: float
    wait_until: float | None


class Jobs(StoreBase):
    async def create_job(self, job: Job, *, idempotency_window: float,
                         media: Media = ()) -> tuple[Job, bool]:
        """Insert ``job``; with ``job.idempotency_key`` set, a job of the same tenant and
        key created within ``idempotency_window`` seconds is answered instead (``False``).
        Of requests racing with one key, one inserts and the others get its job. ``media``
        (the ``data:`` URLs taken out of ``job.request``) is kept beside it."""
        async def work(tx: Transaction) -> tuple[Job, bool]:
            tx.woken.add(Wake.JOBS)
            if job.idempotency_key is not None:
                await tx.lock(f"idempotency:{job.tenant}:{job.idempotency_key}")
                row = await tx.fetch_one(tx.q.job_by_idempotency_key,
                                         {"tenant": job.tenant, "key": job.idempotency_key})
                if row is not None:
                    if row["created_at"] >= time.time() - idempotency_window:
                        return JOBS.of(row), False
                    # The key's window has passed: it may name a new job now.
                    await tx.execute(tx.q.forget_idempotency_key, {"id": row["id"]})
            await tx.execute(tx.q.insert_job, JOBS.params(job))
            if media:
                await tx.execute(tx.q.insert_job_media, {"job_id": job.id, "media": dumps(
                    [[list(path), url] for path, url in media])})
            return job, True

        result: tuple[Job, bool] = await self._write(work)
        return result

    async def job_media(self, job_id: str) -> Media:
        row = await self.db.fetch_one(self.q.job_media, {"job_id": job_id})
        return [] if row is None else [(tuple(path), url) for path, url in loads(row["media"])]

    async def get_job(self, job_id: str, tenant: str | None = None) -> Job | None:
        """The job; with ``tenant``, only if it belongs to that tenant."""
        if tenant is None:
            row = await self.db.fetch_one(self.q.job, {"id": job_id})
        else:
            row = await self.db.fetch_one(self.q.job_of_tenant, {"id": job_id, "tenant": tenant})
        return JOBS.of(row) if row else None

    async def list_jobs(self, tenant: str, *, status: str | None, provider: str | None,
                        limit: int, cursor: str | None) -> Page[Job]:
        return await self._page("jobs", JOBS, tenant, cursor, limit,
                                {"status": status, "provider": provider})

    async def update_job(self, job_id: str, decide: Decide, *, release_lease: bool = False,
                         ) -> tuple[Job, Event | None] | None:
        """Apply ``decide`` to the current row atomically (see the module docstring); with
        ``release_lease``, end the caller's lease on the job in the same transaction.
        ``None`` when the job is finished or missing, or ``decide`` answered ``None``. A
        job's reaching a final state makes its provider's job waiting longest for a slot
        due."""
        result: tuple[Job, Event | None] | None = await self.db.queue.write(
            self._update_jobs, JobUpdate(job_id, decide, release_lease))
        return result

    async def _update_jobs(self, tx: Transaction, updates: list[JobUpdate]) -> list[Any]:
        """Updates that arrived together, in their order (each sees the one before)."""
        rows = {row["id"]: row for row in await tx.fetch_all(
            tx.q.jobs_to_change, {"ids": sorted({u.job_id for u in updates})})}
        stored = {job_id: JOBS.of(row) for job_id, row in rows.items()}
        current = dict(stored)
        release: set[str] = set()
        fanout = Fanout(tx)
        freed: dict[str, tuple[float, int]] = {}  # provider: when its last job ended, how many
        results: list[Any] = []
        for update in updates:
            job = current.get(update.job_id)
            if job is None or job.status in TERMINAL:
                results.append(None)
                continue
            change = update.decide(job)
            if change is None:
                if update.release_lease:
                    release.add(job.id)
                results.append(None)
                continue
            after, event = change.job, None
            stamp = after.updated_at.timestamp()
            if change.event_type is not None:
                after, event = events.job_event(after.evolve(sequence=job.sequence),
                                                change.event_type)
                await fanout.add(event, after, stamp)
            if update.release_lease or after.status in TERMINAL:
                # A finished job is no one's work: a claim racing this finish holds no
                # lease past it (its own update then finds the job finished).
                release.add(job.id)
            if (after.status == JobStatus.QUEUED and job.submit_started_at is not None
                    and after.submit_started_at is None):
                # Its submission given up, to be tried later: its slot goes to the job
                # waiting longest, woken before this row changes so that it is not itself.
                await self._wake_waiting(tx, after.provider, stamp, 1)
            if after.status in TERMINAL:
                last, count = freed.get(after.provider, (0.0, 0))
                freed[after.provider] = (max(stamp, last), count + 1)
            current[job.id] = after
            results.append((after, event))
        await fanout.write()
        await self._write_jobs(tx, stored, current, release, rows)
        for provider, (stamp, count) in freed.items():
            # A finished job frees its slot: the provider's jobs waiting longest are due.
            await self._wake_waiting(tx, provider, stamp, count)
        return results

    async def _write_jobs(self, tx: Transaction, stored: dict[str, Job],
                          current: dict[str, Job], release: set[str],
                          rows: dict[str, Any]) -> None:
        """Write each job's columns that changed: an untouched index is a page not
        rewritten, and a change that changes nothing costs no write at all."""
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for job_id, job in current.items():
            before, after = stored[job_id].__dict__, job.__dict__
            changed = [c for c in JOB_COLUMNS
                       if after[c] is not before[c] and after[c] != before[c]]
            values = {c: column(after[c]) for c in changed}
            if job_id in release and rows[job_id]["lease_until"] is not None:
                changed.append("lease_until")
                values["lease_until"] = None
            if changed:
                by_columns.setdefault(tuple(changed), []).append({**values, "id": job_id})
        for columns, each_values in by_columns.items():
            await tx.execute_many(tx.q.update_job(columns), each_values)

    async def _wake_waiting(self, tx: Transaction, provider: str, stamp: float,
                            freed: int) -> None:
        """``freed`` slots of ``provider`` came free at ``stamp``: as many of its jobs
        waiting for one, the longest waiting first, are due then (not all of them, to be
        refused again)."""
        await tx.lock(f"submit:{provider}", shared=True)
        woken = await tx.fetch_all(tx.q.wake_waiting,
                                   {"now": stamp, "provider": provider, "freed": freed})
        if woken:
            tx.woken.add(Wake.JOBS)

    async def claim_due_jobs(self, now: datetime, limit: int, lease: float) -> list[Job]:
        """Lease up to ``limit`` jobs whose next check is due, earliest first, so that
        overlapping workers or ticks never work the same job twice."""
        stamp = now.timestamp()
        rows = await self._write(lambda tx: tx.fetch_all(tx.q.claim_due_jobs, {
            "until": stamp + lease, "now": stamp, "limit": limit}))
        # Due first, and among jobs due at once the oldest: RETURNING keeps no order.
        rows.sort(key=lambda row: (row["next_check_at"], row["seq"]))
        return [JOBS.of(row) for row in rows]

    async def release_job(self, job_id: str, next_check_at: datetime | None) -> None:
        """End the lease and set when the job is next due (``None``: not on a timer)."""
        await self._write(lambda tx: tx.execute(tx.q.release_job, {
            "id": job_id, "next_check_at": stamp_of(next_check_at)}))

    async def unfinished_jobs(self) -> list[Job]:
        """Every job not yet finished (to follow again after a restart)."""
        return [JOBS.of(row) for row in await self.db.fetch_all(self.q.unfinished_jobs)]

    async def adopted_provider_job(self, provider: str, provider_job_id: str) -> str | None:
        """The id of the job already following this provider task, if any."""
        row = await self.db.fetch_one(self.q.job_of_provider_task, {
            "provider": provider, "provider_job_id": provider_job_id})
        return str(row["id"]) if row else None

    # -- a provider's slots ----------------------------------------------------------------
    async def begin_submit(self, job_id: str, provider: str, limit: int | None,
                           now: datetime, wait_until: datetime | None = None) -> bool:
        """Mark the job's submission as begun if fewer than ``limit`` of the provider's jobs
        are at the provider or being submitted, across every process. ``False`` when full:
        the job then waits, its lease ended, due at ``wait_until`` or when a job of the
        provider frees a slot. Requests made in one turn of the loop share one grant."""
        if limit is None:
            await self._write(lambda tx: tx.execute(tx.q.begin_submit, {
                "id": job_id, "now": now.timestamp()}))
            return True
        request = SlotRequest(job_id, provider, limit, now.timestamp(), stamp_of(wait_until))
        granted: bool = await self.db.queue.write(_grant_slots, request)
        return granted


async def _grant_slots(tx: Transaction, requests: list[SlotRequest]) -> list[bool]:
    """Requests that arrived together, a provider's free slots given first come first
    served (``slots.grant``); the rest wait for a slot (see ``begin_submit``)."""
    granted: set[str] = set()
    for provider, limit in dict.fromkeys((r.provider, r.limit) for r in requests):
        asking = [r for r in requests if (r.provider, r.limit) == (provider, limit)]
        await tx.lock(f"submit:{provider}")  # the provider's slots, across processes
        row = await tx.fetch_one(tx.q.busy_slots, {"provider": provider,
                                                   "asking": [r.job_id for r in asking]})
        assert row is not None
        chosen, refused = slots.grant(asking, limit, int(row["busy"]))
        if chosen:
            # Only jobs still queued begin: one canceled meanwhile is not sent. Marked as
            # begun at the earliest request's time, a lower bound.
            granted |= {r["id"] for r in await tx.fetch_all(tx.q.begin_submits, {
                "now": min(r.now for r in chosen), "ids": [r.job_id for r in chosen]})}
        if refused:
            # Waiting from now on, in this transaction: a slot freed after this count wakes
            # them. So do the provider's other due jobs, unclaimed: each would be refused.
            await tx.execute_many(tx.q.wait_for_slot, [
                {"until": r.wait_until, "id": r.job_id} for r in refused])
            until = max((r.wait_until for r in refused if r.wait_until is not None),
                        default=None)
            if until is not None:
                await tx.execute(tx.q.postpone_waiting, {
                    "until": until, "provider": provider, "limit": PARK_AT_ONCE,
                    "now": max(r.now for r in refused)})
    return [r.job_id in granted for r in requests]
