"""The portal's read-outs in both stores: delivery outcomes per time bucket, each endpoint's
health, and the search of a tenant's jobs. A real database; the store's own API only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.core import new_signing_secret
from bridge.models import AttemptResult, Endpoint, Event, Job, JobStatus, Tracking, new_id, utcnow
from bridge.store import Store, open_store

HOUR = 3600.0


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    opened = await open_store(database)
    assert isinstance(opened, Store)
    await opened.ensure_tenant("acme", new_signing_secret)
    await opened.ensure_tenant("other", new_signing_secret)
    try:
        yield opened
    finally:
        await opened.close()


async def endpoint(store: Store, tenant: str = "acme") -> Endpoint:
    return await store.create_endpoint(Endpoint(
        id=new_id("ep"), tenant=tenant, url="https://hooks.example.com/x", events=None,
        description=None, headers={}, secret=new_signing_secret(),
        created_at=utcnow() - timedelta(days=40)))


async def attempts(store: Store, target: Endpoint, at: datetime, *outcomes: str) -> None:
    """One attempt per outcome, queued at ``at``: "succeeded" and "failed" are made (and not
    tried again), "pending" waits."""
    made: dict[str, str] = {}
    for outcome in outcomes:
        event = Event(id=new_id("evt"), tenant=target.tenant, type="endpoint.test",
                      job_id=None, created_at=at, data={})
        await store.add_event(event, endpoint_id=target.id)
        made[event.id] = outcome
    claimed = await store.claim_due_deliveries(utcnow(), 100, 30.0)
    for outgoing in claimed:
        outcome = made.get(outgoing.delivery.event_id, "pending")
        if outcome == "pending":
            await store.release_deliveries([outgoing])
            continue
        ok = outcome == "succeeded"
        await store.record_attempt(outgoing, AttemptResult(
            ok=ok, at=utcnow(), response_status=200 if ok else 500, duration_ms=1,
            error=None if ok else "HTTP 500", response_excerpt=None, retry_at=None))


async def test_outcomes_are_counted_per_bucket_for_the_tenant_or_one_endpoint(
    store: Store,
) -> None:
    mine, second, theirs = (await endpoint(store), await endpoint(store),
                            await endpoint(store, "other"))
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    await attempts(store, mine, start + timedelta(minutes=1), "succeeded", "failed", "failed")
    await attempts(store, mine, start + timedelta(hours=5, minutes=59), "succeeded")
    await attempts(store, second, start + timedelta(hours=5, minutes=30), "failed", "pending")
    await attempts(store, theirs, start + timedelta(hours=5), "succeeded", "succeeded")
    await attempts(store, mine, start - timedelta(minutes=1), "succeeded")  # before the chart
    tenant = await store.delivery_outcomes("acme", endpoint_id=None, start=start, width=HOUR,
                                           buckets=24)
    assert len(tenant) == 24
    assert [b.start for b in tenant[:2]] == [start, start + timedelta(hours=1)]
    counts = [(b.succeeded, b.failed, b.pending) for b in tenant]
    assert counts[0] == (1, 2, 0) and counts[5] == (1, 1, 1)
    assert all(c == (0, 0, 0) for i, c in enumerate(counts) if i not in (0, 5))
    one = await store.delivery_outcomes("acme", endpoint_id=second.id, start=start,
                                        width=HOUR, buckets=24)
    assert [(b.succeeded, b.failed, b.pending) for b in one][5] == (0, 1, 1)
    assert sum(b.succeeded + b.failed + b.pending for b in one) == 2
    # Another tenant's endpoint id counts nothing.
    foreign = await store.delivery_outcomes("acme", endpoint_id=theirs.id, start=start,
                                            width=HOUR, buckets=24)
    assert sum(b.succeeded + b.failed + b.pending for b in foreign) == 0
    days = await store.delivery_outcomes("acme", endpoint_id=None,
                                         start=start - timedelta(days=29), width=24 * HOUR,
                                         buckets=30)
    assert sum(b.succeeded for b in days) == 3 and sum(b.failed for b in days) == 3


async def test_endpoint_health_counts_the_window_and_keeps_the_last_success(
    store: Store,
) -> None:
    healthy, failing, idle = await endpoint(store), await endpoint(store), await endpoint(store)
    now = utcnow()
    await attempts(store, healthy, now - timedelta(hours=30), "failed", "failed")  # before
    await attempts(store, healthy, now - timedelta(hours=2), "succeeded", "succeeded", "failed",
                   "succeeded", "pending")
    await attempts(store, failing, now - timedelta(hours=40), "succeeded")
    await attempts(store, failing, now - timedelta(hours=1), "failed", "failed")
    health = await store.endpoint_health("acme", [healthy.id, failing.id, idle.id],
                                         now - timedelta(hours=24))
    assert set(health) == {healthy.id, failing.id}  # no attempt: nothing to say
    assert (health[healthy.id].succeeded, health[healthy.id].failed) == (3, 1)
    assert health[healthy.id].success_rate == 0.75
    assert health[failing.id].success_rate == 0.0
    last = health[failing.id].last_success
    assert last is not None and abs(last - (now - timedelta(hours=40))) < timedelta(seconds=1)
    assert await store.endpoint_health("other", [healthy.id], now) == {}
    assert await store.endpoint_health("acme", [], now) == {}


def job(tenant: str, prompt: str, **fields: Any) -> Job:
    now = utcnow()
    return Job(id=new_id("job"), tenant=tenant, provider="airforce", model="wan-2.6",
               status=JobStatus.QUEUED, tracking=Tracking.POLL,
               request={"provider": "airforce", "prompt": prompt}, created_at=now,
               updated_at=now, **fields)


async def test_search_finds_jobs_by_id_event_id_prompt_and_metadata_of_the_tenant_only(
    store: Store,
) -> None:
    fox, _ = await store.create_job(job("acme", "A red fox in the snow"), idempotency_window=1)
    order, _ = await store.create_job(job("acme", "Caf\u00e9 at dawn, 50% off",
                                          metadata={"order": "A-1234"}), idempotency_window=1)
    theirs, _ = await store.create_job(job("other", "A red fox in the snow"),
                                       idempotency_window=1)
    event = Event(id=new_id("evt"), tenant="acme", type="job.submitted", job_id=order.id,
                  created_at=utcnow(), data={})
    await store.add_event(event)

    async def found(text: str, tenant: str = "acme", **filters: Any) -> list[str]:
        page = await store.search_jobs(tenant, text, status=filters.get("status"),
                                       provider=filters.get("provider"), limit=10, cursor=None)
        return [j.id for j in page.data]

    assert await found("RED FOX") == [fox.id]  # a part of the prompt, case ignored
    assert await found("a-1234") == [order.id]  # a part of the metadata's JSON
    assert await found("caf\u00e9") == [order.id]
    assert await found("50%") == [order.id] and await found("%") == [order.id]
    assert await found("_") == []  # LIKE's wildcards are themselves
    assert await found(fox.id) == [fox.id] and await found(fox.id[:-2]) == []
    assert await found(event.id) == [order.id]  # an event id finds its job
    assert await found(theirs.id) == [] and await found(event.id, "other") == []
    assert await found("red fox", "other") == [theirs.id]
    assert await found("fox", status="succeeded") == []
    assert await found("fox", provider="airforce") == [fox.id]
    first = await store.search_jobs("acme", "a", status=None, provider=None, limit=1,
                                    cursor=None)
    assert [j.id for j in first.data] == [order.id] and first.next_cursor is not None
    rest = await store.search_jobs("acme", "a", status=None, provider=None, limit=1,
                                   cursor=first.next_cursor)
    assert [j.id for j in rest.data] == [fox.id] and rest.next_cursor is None
