"""Events and the outbox: every stored event gets, in the same transaction, one pending
delivery per enabled endpoint of its tenant that wants it and one for its job's own
``webhook_url``, so no crash can leave an event without its deliveries. Deliveries are
leased to senders like jobs, in order per job and target, and each attempt is recorded with
what comes of it (the next attempt, a superseded progress, an endpoint disabled)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from bridge import events, retry
from bridge.models import (
    DEFAULT_MAX_CONCURRENCY,
    AttemptResult,
    Delivery,
    DeliveryStatus,
    Event,
    Job,
    Outgoing,
    Page,
    Stats,
    new_id,
)
from bridge.store.connector import StoreBase, Transaction, Wake
from bridge.store.rows import (
    DELIVERIES,
    ENDPOINTS,
    EVENTS,
    JOB_WEBHOOK,
    JOBS,
    delivery_params,
    loads,
    stamp_of,
    target_of,
)


class Fanout:
    """The events made in one transaction and their deliveries, written together."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx
        self.events: list[dict[str, Any]] = []
        self.deliveries: list[Delivery] = []
        self.superseding: list[dict[str, Any]] = []
        self._subscribers: dict[str, list[events.Subscriber]] = {}

    async def add(self, event: Event, job: Job | None, stamp: float, *,
                  stored: bool = False, again: bool = False) -> list[Delivery]:
        """Queue ``event`` (unless ``stored`` already) with a delivery, due at ``stamp``, to
        each recipient; ``again``: sent before (a replay), attempts numbered on."""
        if not stored:
            self.events.append(EVENTS.params(event))
        subscribers = self._subscribers.get(event.tenant)
        if subscribers is None:
            subscribers = self._subscribers[event.tenant] = [
                events.Subscriber(row["id"], None if (wanted := loads(row["events"])) is None
                                  else tuple(wanted))
                for row in await self.tx.fetch_all(self.tx.q.subscribers,
                                                   {"tenant": event.tenant})]
        endpoint_ids, webhook = events.recipients(event, subscribers, job)
        made = [await self.delivery(event, endpoint_id, None, stamp, again=again)
                for endpoint_id in endpoint_ids]
        if webhook and job is not None:
            made.append(await self.delivery(event, None, job.webhook_url, stamp, again=again))
        if event.job_id is not None:
            self.superseding += [{
                "target": target_of(d), "job_id": event.job_id, "now": stamp,
                "sequence": d.sequence, "types": list(events.SUPERSEDED)} for d in made]
        return made

    async def delivery(self, event: Event, endpoint_id: str | None, url: str | None,
                       stamp: float, *, again: bool = False) -> Delivery:
        """A pending delivery of ``event``, due at ``stamp``."""
        attempts = 0
        if again:
            row = await self.tx.fetch_one(self.tx.q.attempts_of, {
                "event_id": event.id, "target": endpoint_id or JOB_WEBHOOK})
            attempts = int(row["n"]) if row else 0
        at = datetime.fromtimestamp(stamp, UTC)
        delivery = Delivery(
            id=new_id("del"), tenant=event.tenant, event_id=event.id, event_type=event.type,
            endpoint_id=endpoint_id, url=url, job_id=event.job_id,
            sequence=events.sequence_of(event), attempt=attempts + 1,
            first_attempt=attempts + 1, status=DeliveryStatus.PENDING, created_at=at,
            next_attempt_at=at)
        self.deliveries.append(delivery)
        return delivery

    async def write(self) -> None:
        tx = self.tx
        if self.events:
            await tx.execute_many(tx.q.insert_event, self.events)
        if self.deliveries:
            await tx.execute_many(tx.q.insert_delivery, [
                delivery_params(d) for d in self.deliveries])
            tx.woken.add(Wake.DELIVERIES)
        if self.superseding:
            await tx.execute_many(tx.q.skip_superseded, self.superseding)
        self.events, self.deliveries, self.superseding = [], [], []


class Outbox(StoreBase):
    async def list_events(self, tenant: str, *, type: str | None, job_id: str | None,
                          limit: int, cursor: str | None) -> Page[Event]:
        return await self._page("events", EVENTS, tenant, cursor, limit,
                                {"type": type, "job_id": job_id})

    async def get_event(self, event_id: str, tenant: str) -> Event | None:
        row = await self.db.fetch_one(self.q.event_of_tenant, {"id": event_id, "tenant": tenant})
        return EVENTS.of(row) if row else None

    async def job_events(self, job_id: str) -> list[Event]:
        return [EVENTS.of(row) for row in await self.db.fetch_all(self.q.job_events,
                                                                   {"job_id": job_id})]

    async def add_event(self, event: Event, *, endpoint_id: str | None = None,
                        ) -> Delivery | None:
        """Store an event that is not a job's (``endpoint.test``); with ``endpoint_id``, one
        pending delivery of it to that endpoint."""
        async def work(tx: Transaction) -> Delivery | None:
            fanout = Fanout(tx)
            fanout.events.append(EVENTS.params(event))
            made = None
            if endpoint_id is not None:
                made = await fanout.delivery(event, endpoint_id, None,
                                             event.created_at.timestamp())
            await fanout.write()
            return made

        result: Delivery | None = await self._write(work)
        return result

    async def replay_event(self, event: Event, endpoint_id: str | None,
                           now: datetime) -> list[Delivery]:
        """New pending deliveries of ``event``: to that endpoint, or to every enabled
        endpoint that wants it and the job's own webhook."""
        stamp = now.timestamp()

        async def work(tx: Transaction) -> list[Delivery]:
            fanout = Fanout(tx)
            if endpoint_id is not None:
                made = [await fanout.delivery(event, endpoint_id, None, stamp, again=True)]
            else:
                row = None if event.job_id is None else await tx.fetch_one(
                    tx.q.job, {"id": event.job_id})
                made = await fanout.add(event, JOBS.of(row) if row else None, stamp,
                                        stored=True, again=True)
            await fanout.write()
            return made

        result: list[Delivery] = await self._write(work)
        return result

    async def claim_due_deliveries(
        self, now: datetime, limit: int, lease: float, *,
        skip_endpoints: frozenset[str] = frozenset(), per_tenant: int | None = None,
        tenant_slots: dict[str, int] | None = None,
    ) -> list[Outgoing]:
        """Lease up to ``limit`` due deliveries, earliest first, never one whose target has
        an earlier pending event of the same job, none for ``skip_endpoints``. With
        ``per_tenant``, tenants take turns and one gets at most ``per_tenant`` (or
        ``tenant_slots[tenant]``; 0 or less: none). Every tenant with due work is looked at,
        however many earlier rows the others have."""
        stamp = now.timestamp()
        slots = dict(tenant_slots or {})
        most = limit if per_tenant is None else min(limit, max([per_tenant, *slots.values()]))

        async def work(tx: Transaction) -> list[Outgoing]:
            due = await tx.fetch_all(tx.q.due_deliveries, {
                "now": stamp, "skip_targets": sorted(skip_endpoints),
                "skip_tenants": sorted(t for t, left in slots.items() if left <= 0),
                "per_tenant": most})
            taken = _in_turns(due, limit, per_tenant, slots)
            if not taken:
                return []
            rows = await tx.fetch_all(tx.q.lease_deliveries, {
                "until": stamp + lease, "seqs": taken})
            turn = {seq: index for index, seq in enumerate(taken)}
            rows.sort(key=lambda row: turn[row["seq"]])
            return await _outgoing(tx, [DELIVERIES.of(row) for row in rows], stamp,
                                   stamp + lease)

        result: list[Outgoing] = await self._write(work)
        return result

    async def record_attempt(self, outgoing: Outgoing, result: AttemptResult) -> bool:
        [recorded] = await self.record_attempts([(outgoing, result)])
        if isinstance(recorded, Exception):
            raise recorded
        return recorded

    async def record_attempts(self, attempts: Sequence[tuple[Outgoing, AttemptResult]],
                              ) -> list[bool | Exception]:
        """Record attempts, each only while its claim's lease holds (``False``: claimed
        again, deleted or failed by a disable meanwhile); schedule the next one at
        ``result.retry_at`` unless a later event of its job superseded it; keep the
        target's failure record (``retry.standing_after``). In order; in place of an
        attempt that could not be recorded, its exception (the others are recorded)."""
        futures = [self.db.queue.write(_record, attempt) for attempt in attempts]
        outcomes: list[bool | Exception] = []
        for future in futures:
            try:
                outcomes.append(await future)
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    async def release_deliveries(self, claimed: Sequence[Outgoing]) -> None:
        """End the leases of claimed deliveries not attempted (a shutdown), so that any
        worker may send them now; one claimed again meanwhile is left alone."""
        await self._write(lambda tx: tx.execute_many(tx.q.release_delivery, [
            {"id": o.delivery.id, "lease_until": o.lease_until} for o in claimed]))

    async def stats(self, now: datetime) -> Stats:
        jobs = await self.db.fetch_all(self.q.job_counts)
        outbox = await self.db.fetch_one(self.q.outbox)
        oldest = outbox["oldest"] if outbox else None
        return Stats(
            jobs={(row["provider"], row["status"]): int(row["n"]) for row in jobs},
            outbox_depth=int(outbox["n"]) if outbox else 0,
            oldest_pending_seconds=max(0.0, now.timestamp() - oldest) if oldest else 0.0,
            connections=self.db.pool_stats())


async def _record(tx: Transaction, attempts: list[tuple[Outgoing, AttemptResult]],
                  ) -> list[bool]:
    held = {row["id"]: row["lease_until"] for row in await tx.fetch_all(
        tx.q.pending_leases, {"ids": [outgoing.delivery.id for outgoing, _ in attempts]})}
    recorded = [held.get(o.delivery.id) == o.lease_until for o, _ in attempts]
    fanout = Fanout(tx)
    updates: list[dict[str, Any]] = []
    retries: list[Delivery] = []
    clean: set[str] = set()  # endpoints whose failure record this batch has cleared
    for (outgoing, result), kept in zip(attempts, recorded, strict=True):
        if not kept:
            continue
        delivery = outgoing.delivery
        retry_at = None if result.ok or result.gone else stamp_of(result.retry_at)
        if retry_at is not None and delivery.event_type in events.SUPERSEDED:
            later = await tx.fetch_one(tx.q.later_sequence, {
                "target": target_of(delivery), "job_id": delivery.job_id,
                "sequence": delivery.sequence})
            if events.superseded(delivery.event_type, delivery.sequence,
                                 later["later"] if later else None):
                retry_at = None  # superseded while it was being sent: not tried again
        updates.append({
            "status": str(DeliveryStatus.SUCCEEDED if result.ok else DeliveryStatus.FAILED),
            "retry_at": retry_at, "response_status": result.response_status,
            "duration_ms": result.duration_ms, "error": result.error,
            "response_excerpt": result.response_excerpt, "id": delivery.id})
        if retry_at is not None:
            retries.append(replace(
                delivery, id=new_id("del"), attempt=delivery.attempt + 1,
                status=DeliveryStatus.PENDING, created_at=result.at,
                next_attempt_at=result.retry_at, response_status=None, duration_ms=None,
                error=None, response_excerpt=None))
        if delivery.endpoint_id is not None and result.ok:
            if delivery.endpoint_id in clean:
                continue
            clean.add(delivery.endpoint_id)
        elif delivery.endpoint_id is not None:
            clean.discard(delivery.endpoint_id)
        await _keep_standing(tx, fanout, delivery, result)
    if updates:
        await tx.execute_many(tx.q.record_attempt, updates)
    if retries:
        await tx.execute_many(tx.q.insert_delivery, [delivery_params(d) for d in retries])
    await fanout.write()
    return recorded


async def _keep_standing(tx: Transaction, fanout: Fanout, delivery: Delivery,
                         result: AttemptResult) -> None:
    """The target's failure record after an attempt (see ``retry.standing_after``)."""
    stamp = result.at.timestamp()
    if delivery.endpoint_id is None:
        if result.gone:  # the job's own webhook said 410: send it nothing more
            await tx.execute(tx.q.fail_pending_of_webhook, {
                "job_id": delivery.job_id, "error": "the target answered 410 Gone"})
            await tx.execute(tx.q.forget_webhook, {"job_id": delivery.job_id})
        return
    if result.ok:
        await tx.execute(tx.q.endpoint_succeeded, {"id": delivery.endpoint_id})
        return
    row = await tx.fetch_one(tx.q.endpoint_standing, {"id": delivery.endpoint_id})
    if row is None or row["disabled"]:
        return
    standing = retry.standing_after(row["failing_since"], stamp, ok=False, gone=result.gone,
                                    disable_after=result.disable_after)
    if standing.disabled_reason is None:
        await tx.execute(tx.q.endpoint_failing, {"id": delivery.endpoint_id,
                                                 "since": standing.failing_since})
        return
    await tx.execute(tx.q.disable_endpoint, {"id": delivery.endpoint_id,
                                             "reason": standing.disabled_reason,
                                             "since": standing.failing_since})
    await tx.execute(tx.q.fail_pending_of_endpoint, {"id": delivery.endpoint_id,
                                                     "error": "endpoint disabled"})
    # Told to the tenant's other endpoints that want it.
    endpoint = await tx.fetch_one(tx.q.endpoint, {"id": delivery.endpoint_id})
    if endpoint is not None:
        event = events.endpoint_disabled(ENDPOINTS.of(endpoint), result.at)
        await fanout.add(event, None, stamp)


def _in_turns(due: list[dict[str, Any]], limit: int, per_tenant: int | None,
              slots: dict[str, int]) -> list[int]:
    """Up to ``limit`` of the ``due`` rows' seqs (earliest first), the tenants taking turns:
    each one's first, then each one's second, ...; at most ``slots[tenant]`` or
    ``per_tenant`` of one tenant."""
    if per_tenant is None:
        return [row["seq"] for row in due[:limit]]
    queues: dict[str, list[int]] = {}
    for row in due:
        queue = queues.setdefault(row["tenant"], [])
        if len(queue) < slots.get(row["tenant"], per_tenant):
            queue.append(row["seq"])
    turns = [queue[i] for i in range(max(map(len, queues.values()), default=0))
             for queue in queues.values() if i < len(queue)]
    return turns[:limit]


async def _outgoing(tx: Transaction, deliveries: list[Delivery], stamp: float,
                    lease_until: float) -> list[Outgoing]:
    """What sending each claimed delivery needs, read with one query per table."""
    def ids(values: set[str | None]) -> list[str]:
        return sorted(v for v in values if v is not None)

    stored = {r["id"]: r for r in await tx.fetch_all(tx.q.events_to_send, {
        "ids": ids({d.event_id for d in deliveries})})}
    tenants = {r["id"]: r for r in await tx.fetch_all(tx.q.tenants_to_send, {
        "ids": ids({d.tenant for d in deliveries})})}
    endpoints = {r["id"]: r for r in await tx.fetch_all(tx.q.endpoints_to_send, {
        "ids": ids({d.endpoint_id for d in deliveries})})}
    out = []
    for delivery in deliveries:
        event, tenant = stored.get(delivery.event_id), tenants.get(delivery.tenant)
        if event is None or tenant is None:
            continue
        tenant_secrets = _secrets(tenant["signing_secret"], tenant["previous_signing_secret"],
                                  tenant["previous_signing_secret_until"], stamp)
        headers: dict[str, str] = {}
        cap = DEFAULT_MAX_CONCURRENCY
        if delivery.endpoint_id is None:
            url, secrets = delivery.url or "", tenant_secrets
        else:
            endpoint = endpoints.get(delivery.endpoint_id)
            if endpoint is None:
                continue
            url, cap = endpoint["url"], endpoint["max_concurrency"]
            if endpoint["headers"] not in (None, "{}"):
                headers = loads(endpoint["headers"])
            secrets = tenant_secrets if endpoint["secret"] is None else _secrets(  # a REST hook
                endpoint["secret"], endpoint["previous_secret"],
                endpoint["previous_secret_until"], stamp)
        # The stored event's own JSON text goes out as it is: the bytes signed are the
        # bytes sent, the same on every attempt.
        body = events.webhook_body(delivery.event_id, event["type"], event["created_at"],
                                   event["data"])
        out.append(Outgoing(delivery, url, headers, secrets, body, lease_until, cap))
    return out


def _secrets(current: str, previous: str | None, until: float | None,
             stamp: float) -> list[str]:
    """The secrets to sign with: the current one first, the one before while it overlaps."""
    return [current, previous] if previous and until is not None and until > stamp \
        else [current]
