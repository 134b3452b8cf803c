"""The delivery outbox in both stores: claims, leases, order, superseded progress,
retries after a replay, recover. A real database file; the store's own API only."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from bridge.core import new_signing_secret
from bridge.models import AttemptResult, DeliveryStatus, Endpoint, Event, Outgoing, new_id, utcnow
from bridge.retry import next_attempt
from bridge.store import Store, open_store

LEASE = 30.0


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    opened = await open_store(database)
    assert isinstance(opened, Store)
    await opened.ensure_tenant("acme", new_signing_secret)
    try:
        yield opened
    finally:
        await opened.close()


async def endpoint(store: Store, **fields: Any) -> Endpoint:
    made = Endpoint(id=new_id("ep"), tenant="acme", url="https://hooks.example.com/x",
                    events=None, description=None, headers={}, secret=new_signing_secret(),
                    created_at=utcnow() - timedelta(hours=1))
    made = Endpoint(**{**made.__dict__, **fields})
    return await store.create_endpoint(made)


def event(event_type: str, sequence: int, job_id: str = "job_1", **extra: Any) -> Event:
    return Event(id=new_id("evt"), tenant="acme", type=event_type, job_id=job_id,
                 created_at=utcnow(), data={"id": job_id, "sequence": sequence, **extra})


def failed(at: datetime, retry_in: float | None = 1.0, *, gone: bool = False) -> AttemptResult:
    return AttemptResult(
        ok=False, at=at, response_status=410 if gone else 500, duration_ms=3,
        error="HTTP 500", response_excerpt=None,
        retry_at=at + timedelta(seconds=retry_in) if retry_in is not None else None, gone=gone)


def succeeded(at: datetime) -> AttemptResult:
    return AttemptResult(ok=True, at=at, response_status=200, duration_ms=3, error=None,
                         response_excerpt="ok", retry_at=None)


async def claim(store: Store, now: datetime | None = None,
                limit: int = 10) -> list[Outgoing]:
    return await store.claim_due_deliveries(now or utcnow(), limit, LEASE)


async def test_a_claim_is_leased_and_not_claimed_twice(store: Store) -> None:
    target = await endpoint(store)
    await store.add_event(event("endpoint.test", 0, job_id=None), endpoint_id=target.id)  # type: ignore[arg-type]
    first = await claim(store)
    assert len(first) == 1
    assert await claim(store) == []
    again = await claim(store, utcnow() + timedelta(seconds=LEASE + 1))  # the lease lapsed
    assert [o.delivery.id for o in again] == [first[0].delivery.id]


async def test_a_claim_takes_tenants_in_turns_within_each_ones_room(store: Store) -> None:
    await store.ensure_tenant("other", new_signing_secret)
    mine = await endpoint(store)
    theirs = await endpoint(store, tenant="other", max_concurrency=7)
    for number in range(6):  # acme's backlog comes due first
        await store.add_event(event("job.succeeded", 1, job_id=f"job_{number}"),
                              endpoint_id=mine.id)
    for number in range(2):
        await store.add_event(Event(id=new_id("evt"), tenant="other", type="job.succeeded",
                                    job_id=f"their_{number}", created_at=utcnow(),
                                    data={"sequence": 1}), endpoint_id=theirs.id)
    now = utcnow()
    first = await store.claim_due_deliveries(now, 4, LEASE, per_tenant=3)
    assert [o.delivery.tenant for o in first] == ["acme", "other", "acme", "other"]
    assert [o.delivery.job_id for o in first] == ["job_0", "their_0", "job_1", "their_1"]
    assert [o.max_concurrency for o in first] == [4, 7, 4, 7]
    one = await store.claim_due_deliveries(now, 10, LEASE, per_tenant=10,
                                           tenant_slots={"acme": 1})
    assert [o.delivery.job_id for o in one] == ["job_2"]
    assert await store.claim_due_deliveries(now, 10, LEASE, per_tenant=10,
                                            tenant_slots={"acme": 0}) == []
    rest = await store.claim_due_deliveries(now, 10, LEASE)
    assert [o.delivery.job_id for o in rest] == ["job_3", "job_4", "job_5"]


async def test_a_claim_sees_every_tenant_with_due_work_behind_anothers_backlog(
    store: Store,
) -> None:
    await store.ensure_tenant("other", new_signing_secret)
    await store.ensure_tenant("third", new_signing_secret)
    mine = await endpoint(store)
    for number in range(30):  # acme's older backlog: far more than the claim's limit
        await store.add_event(event("job.succeeded", 1, job_id=f"job_{number}"),
                              endpoint_id=mine.id)
    for tenant in ("other", "third"):
        theirs = await endpoint(store, tenant=tenant)
        await store.add_event(Event(id=new_id("evt"), tenant=tenant, type="job.succeeded",
                                    job_id=f"{tenant}_job", created_at=utcnow(),
                                    data={"sequence": 1}), endpoint_id=theirs.id)
    now = utcnow()
    first = await store.claim_due_deliveries(now, 4, LEASE, per_tenant=2,
                                             tenant_slots={"other": 1})
    assert [o.delivery.tenant for o in first] == ["acme", "other", "third", "acme"]
    assert [o.delivery.job_id for o in first] == ["job_0", "other_job", "third_job", "job_1"]
    rest = await store.claim_due_deliveries(now, 100, LEASE, per_tenant=100,
                                            tenant_slots={"acme": 3})
    assert [o.delivery.job_id for o in rest] == ["job_2", "job_3", "job_4"]


async def test_an_outcome_is_recorded_only_under_the_claims_own_lease(
    store: Store,
) -> None:
    target = await endpoint(store)
    await store.add_event(event("job.succeeded", 1), endpoint_id=target.id)
    stale = (await claim(store))[0]
    fresh = (await claim(store, utcnow() + timedelta(seconds=LEASE + 1)))[0]
    assert not await store.record_attempt(stale, succeeded(utcnow()))
    assert await store.record_attempt(fresh, succeeded(utcnow()))
    page = await store.endpoint_deliveries(target.id, limit=10, cursor=None)
    assert [d.status for d in page.data] == [DeliveryStatus.SUCCEEDED]


async def test_a_later_event_of_a_job_waits_for_the_earlier_one(store: Store) -> None:
    target = await endpoint(store)
    await store.add_event(event("job.submitted", 1), endpoint_id=target.id)
    await store.add_event(event("job.succeeded", 2), endpoint_id=target.id)
    await store.add_event(event("job.submitted", 1, job_id="job_2"), endpoint_id=target.id)
    first = await claim(store)
    assert sorted((o.delivery.job_id, o.delivery.sequence) for o in first) == [
        ("job_1", 1), ("job_2", 1)]
    now = utcnow()
    one = next(o for o in first if o.delivery.job_id == "job_1")
    await store.record_attempt(one, failed(now, retry_in=0.0))
    retry = await claim(store, now + timedelta(seconds=1))
    assert [(o.delivery.sequence, o.delivery.attempt) for o in retry] == [(1, 2)]
    await store.record_attempt(retry[0], succeeded(now))
    assert [o.delivery.sequence for o in await claim(store)] == [2]


async def test_a_replay_of_a_pending_event_waits_for_the_pending_one(
    store: Store,
) -> None:
    target = await endpoint(store)
    original = event("job.succeeded", 3)
    await store.add_event(original, endpoint_id=target.id)
    replayed = await store.replay_event(original, target.id, utcnow())
    assert replayed[0].attempt == 2
    first = await claim(store)
    assert len(first) == 1 and first[0].delivery.attempt == 1
    await store.record_attempt(first[0], succeeded(utcnow()))
    assert [o.delivery.attempt for o in await claim(store)] == [2]


async def test_progress_superseded_while_in_flight_is_not_tried_again(
    store: Store,
) -> None:
    target = await endpoint(store, events=("job.progress", "job.succeeded"))
    await store.add_event(event("job.progress", 2), endpoint_id=target.id)
    in_flight = (await claim(store))[0]
    await store.add_event(event("job.succeeded", 3), endpoint_id=target.id)
    now = utcnow()
    assert await store.record_attempt(in_flight, failed(now, retry_in=0.0))
    nxt = await claim(store, now + timedelta(seconds=1))
    assert [o.delivery.event_type for o in nxt] == ["job.succeeded"]


async def test_a_replay_gets_a_whole_retry_schedule_of_its_own(store: Store) -> None:
    schedule = (1.0, 1.0)
    target = await endpoint(store)
    original = event("job.succeeded", 1)
    await store.add_event(original, endpoint_id=target.id)
    now = utcnow()
    attempts = 0
    while True:  # the first run: 1 attempt + 2 retries, all failing
        got = await claim(store, now)
        if not got:
            break
        attempts += 1
        delivery = got[0].delivery
        retry_at = next_attempt(delivery.attempt - delivery.first_attempt + 1, schedule,
                                None, now, jitter=lambda a, b: 1.0)
        await store.record_attempt(got[0], failed(now, None if retry_at is None
                                                   else (retry_at - now).total_seconds()))
        now += timedelta(seconds=2)
    assert attempts == 3
    await store.replay_event(original, target.id, now)
    replayed = (await claim(store, now))[0].delivery
    assert (replayed.attempt, replayed.first_attempt) == (4, 4)
    assert next_attempt(replayed.attempt - replayed.first_attempt + 1, schedule, None,
                        now) is not None


async def test_recover_skips_superseded_progress_other_types_and_older_events(
    store: Store,
) -> None:
    old = event("job.succeeded", 1, job_id="job_old")
    await store.add_event(old)  # before the endpoint existed
    target = await endpoint(store, created_at=utcnow())
    await store.add_event(event("job.progress", 1))  # not wanted by default
    await store.add_event(event("job.succeeded", 2))
    count, more = await store.recover_endpoint(target, utcnow() - timedelta(days=1), utcnow())
    assert (count, more) == (1, False)
    assert await store.recover_endpoint(target, utcnow() - timedelta(days=1), utcnow()) == (
        0, False)


async def test_a_job_webhook_answering_410_gets_nothing_more_of_the_job(
    store: Store,
) -> None:
    from bridge.models import Job, JobStatus, Tracking

    now = utcnow()
    job = Job(id=new_id("job"), tenant="acme", provider="apixo", model="veo-3-1",
              status=JobStatus.QUEUED, tracking=Tracking.CALLBACK,
              request={"provider": "apixo", "prompt": "x", "mode": "text"},
              created_at=now, updated_at=now, webhook_url="https://hooks.example.com/job")
    await store.create_job(job, idempotency_window=0)
    from bridge.store import Change

    await store.update_job(job.id, lambda j: Change(
        j.evolve(status=JobStatus.SUBMITTED, updated_at=utcnow()), "job.submitted"))
    first = (await claim(store))[0]
    assert first.url == "https://hooks.example.com/job"
    await store.record_attempt(first, failed(utcnow(), gone=True))
    await store.update_job(job.id, lambda j: Change(
        j.evolve(status=JobStatus.SUCCEEDED, updated_at=utcnow()), "job.succeeded"))
    assert await claim(store, utcnow() + timedelta(seconds=5)) == []


async def test_a_410_stores_endpoint_disabled_with_deliveries_to_the_others_only(
    store: Store,
) -> None:
    gone = await endpoint(store, events=("endpoint.test",))
    watcher = await endpoint(store)  # the default filter includes endpoint.disabled
    await endpoint(store, events=("job.succeeded",))
    await store.ensure_tenant("other", new_signing_secret)
    await endpoint(store, tenant="other")
    await store.add_event(event("endpoint.test", 0, job_id=None), endpoint_id=gone.id)  # type: ignore[arg-type]
    heard: list[int] = []
    store.outbox_listeners.append(lambda: heard.append(1))
    await store.record_attempt((await claim(store))[0], failed(utcnow(), gone=True))
    assert heard == [1]  # the commit added a delivery to send now
    told = await store.list_events("acme", type="endpoint.disabled", job_id=None, limit=10,
                                   cursor=None)
    assert len(told.data) == 1
    shown = await store.get_endpoint(gone.id, "acme")
    assert shown is not None and told.data[0].data == shown.to_json()
    sent = await claim(store)
    assert [o.delivery.endpoint_id for o in sent] == [watcher.id]
    await store.record_attempt(sent[0], failed(utcnow(), gone=True))
    again = await store.list_events("acme", type="endpoint.disabled", job_id=None, limit=10,
                                    cursor=None)
    assert len(again.data) == 2  # the watcher's own 410 is told to no one: none left
    assert await claim(store, utcnow() + timedelta(seconds=LEASE + 1)) == []


async def test_the_outbox_listeners_hear_of_commits_that_added_deliveries_only(
    store: Store,
) -> None:
    heard: list[int] = []
    store.outbox_listeners.append(lambda: heard.append(1))
    first = event("job.succeeded", 1)
    await store.add_event(first)  # no endpoint: nothing to deliver
    await store.replay_event(first, None, utcnow())  # the tenant has no endpoints yet
    assert heard == []
    made = await endpoint(store)
    await store.replay_event(first, None, utcnow())  # fans out to the new endpoint
    assert heard == [1]
    await store.add_event(event("job.failed", 2), endpoint_id=made.id)
    assert heard == [1, 1]
    outgoing = (await claim(store))[0]
    await store.record_attempt(outgoing, succeeded(utcnow()))
    assert heard == [1, 1]  # a recorded attempt adds nothing to send now


async def test_the_deliverer_stops_even_when_woken_as_it_is_stopped(
    store: Store,
) -> None:
    from bridge.delivery import Deliverer
    from bridge.targets import Guard

    for _ in range(200):
        deliverer = Deliverer(store, Guard(allow_private=True), (1.0,))
        await deliverer.start()
        await asyncio.sleep(0.002)  # it is waiting for a wake now
        deliverer.wake()  # the wake and the cancel land in the same turn of the loop
        stopping = asyncio.create_task(deliverer.stop())
        done, _ = await asyncio.wait({stopping}, timeout=3)
        if not done:  # its loop went on past the cancel: end it (with stop()), then fail
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
            pytest.fail("the deliverer did not stop")
        assert not deliverer.running


@pytest.mark.parametrize(("concurrency", "per_target", "overall"), [
    (12, 4, 6),  # the one tenant's share binds (half the slots): 3 endpoints could take 12
    (24, 3, 9),  # the per-endpoint bound binds: 3 endpoints of 3
])
async def test_the_deliverer_keeps_its_overall_and_per_endpoint_bounds(
    store: Store, concurrency: int, per_target: int, overall: int,
) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from bridge.delivery import Deliverer
    from bridge.serving import serve_in_background
    from bridge.targets import Guard

    now: dict[str, int] = {}
    most: dict[str, int] = {}
    received: list[str] = []

    async def hook(request: Request) -> PlainTextResponse:
        path = request.url.path
        await request.body()
        now[path] = now.get(path, 0) + 1
        now["all"] = now.get("all", 0) + 1
        for key in (path, "all"):
            most[key] = max(most.get(key, 0), now[key])
        await asyncio.sleep(0.03)  # long enough for every slot to fill
        now[path] -= 1
        now["all"] -= 1
        received.append(request.headers["webhook-id"])
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/hook/{n}", hook, methods=["POST"])])
    async with serve_in_background(app) as url:
        targets = [await endpoint(store, url=f"{url}/hook/{n}") for n in range(3)]
        for number in range(60):  # each its own job: order holds nothing back
            await store.add_event(event("job.succeeded", 1, job_id=f"job_{number}"),
                                  endpoint_id=targets[number % 3].id)
        deliverer = Deliverer(store, Guard(allow_private=True), (1.0,),
                              concurrency=concurrency, per_target=per_target)
        await deliverer.start()
        try:
            for _ in range(500):
                if len(received) >= 60:
                    break
                await asyncio.sleep(0.02)
        finally:
            await deliverer.stop()
    assert len(received) == len(set(received)) == 60
    assert most.pop("all") == overall  # reached, never passed
    assert len(most) == 3 and max(most.values()) <= per_target
    if overall < concurrency // 2:
        assert set(most.values()) == {per_target}


async def test_a_deliverer_stopped_at_any_moment_keeps_no_claim_and_sends_the_rest(
    store: Store,
) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from bridge.delivery import Deliverer
    from bridge.serving import serve_in_background
    from bridge.targets import Guard

    received: set[str] = set()

    async def hook(request: Request) -> PlainTextResponse:
        await request.body()
        received.add(request.headers["webhook-id"])
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with serve_in_background(app) as url:
        target = await endpoint(store, url=f"{url}/hook")
        events = [event("job.succeeded", 1, job_id=f"job_{n}") for n in range(40)]
        for made in events:
            await store.add_event(made, endpoint_id=target.id)
        deliverer = Deliverer(store, Guard(allow_private=True), (1.0,), concurrency=4,
                              per_target=2)
        for number in range(60):  # stopped before, during and after claims and attempts
            if number % 3:
                await deliverer.start()
                await asyncio.sleep(0.001 * (number % 7))
            else:  # the narrowest case: senders started for a claim but not yet run
                await deliverer._claim(4)
            await deliverer.stop()
        # Whatever was claimed and not sent is left for its lease; a tick an hour later
        # (every lease lapsed) sends the rest, and settles rather than waiting for claims
        # that a stop lost track of.
        deliverer.clock = lambda: utcnow() + timedelta(hours=1)
        for _ in range(10):
            if len(received) == len(events):
                break
            await asyncio.wait_for(deliverer.run_once(100), timeout=10)
        await deliverer.stop()
    assert received == {made.id for made in events}


async def test_one_attempt_that_cannot_be_recorded_leaves_the_others_recorded(
    store: Store,
) -> None:
    target = await endpoint(store)
    for number in range(2):
        await store.add_event(event("job.succeeded", 1, job_id=f"job_{number}"),
                              endpoint_id=target.id)
    first, second = await claim(store)
    broken = succeeded(utcnow())
    broken.at = None  # type: ignore[assignment]  # recording it raises
    outcomes = await store.record_attempts([(first, broken), (second, succeeded(utcnow()))])
    assert isinstance(outcomes[0], Exception) and outcomes[1] is True
    page = await store.endpoint_deliveries(target.id, limit=10, cursor=None)
    assert sorted(d.status for d in page.data) == [DeliveryStatus.PENDING,
                                                   DeliveryStatus.SUCCEEDED]


@contextlib.asynccontextmanager
async def hooks_receiver(delay: float = 0.0) -> AsyncIterator[tuple[str, list[str]]]:
    """A receiver on loopback answering every POST /hook 200 after ``delay`` seconds; yields
    its URL and the webhook-ids of the requests it received."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from bridge.serving import serve_in_background

    answered: list[str] = []

    async def hook(request: Request) -> PlainTextResponse:
        await request.body()
        answered.append(request.headers["webhook-id"])
        await asyncio.sleep(delay)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with serve_in_background(app) as url:
        yield f"{url}/hook", answered


async def test_an_attempt_that_raises_holds_back_nothing_behind_it(
    store: Store,
) -> None:
    from bridge.delivery import Deliverer
    from bridge.targets import Guard

    async with hooks_receiver() as (url, answered):
        bad = await endpoint(store, url=url, secret="whsec_not*base64")  # signing raises
        good = await endpoint(store, url=url)
        wanted = []
        for number in range(3):
            await store.add_event(event("job.succeeded", 1, job_id=f"bad_{number}"),
                                  endpoint_id=bad.id)
            made = event("job.succeeded", 1, job_id=f"good_{number}")
            await store.add_event(made, endpoint_id=good.id)
            wanted.append(made.id)
        deliverer = Deliverer(store, Guard(allow_private=True), (1.0,), concurrency=2,
                              per_target=1)
        attempted = await asyncio.wait_for(deliverer.run_once(10), timeout=10)
        await deliverer.stop()
    assert sorted(answered) == sorted(wanted)
    assert attempted == 3  # the bad endpoint's could not be attempted; their leases lapse


async def test_a_listener_that_raises_does_not_stop_the_recording(
    store: Store,
) -> None:
    from bridge.delivery import Deliverer
    from bridge.targets import Guard

    def broken(outgoing: Outgoing, result: AttemptResult) -> None:
        raise RuntimeError("a listener's own bug")

    async with hooks_receiver() as (url, answered):
        target = await endpoint(store, url=url)
        for number in range(3):
            await store.add_event(event("job.succeeded", 1, job_id=f"job_{number}"),
                                  endpoint_id=target.id)
        deliverer = Deliverer(store, Guard(allow_private=True), (1.0,), listeners=[broken])
        assert await asyncio.wait_for(deliverer.run_once(10), timeout=10) == 3
        await deliverer.stop()
    page = await store.endpoint_deliveries(target.id, limit=10, cursor=None)
    assert [d.status for d in page.data] == [DeliveryStatus.SUCCEEDED] * 3
    assert len(answered) == 3


async def test_a_tick_cut_short_leaves_no_attempt_running(store: Store) -> None:
    from bridge.delivery import Deliverer
    from bridge.targets import Guard

    async with hooks_receiver(delay=2.0) as (url, answered):
        target = await endpoint(store, url=url)
        for number in range(4):
            await store.add_event(event("job.succeeded", 1, job_id=f"job_{number}"),
                                  endpoint_id=target.id)
        deliverer = Deliverer(store, Guard(allow_private=True), (1.0,), concurrency=1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(deliverer.run_once(10), timeout=0.3)
        assert deliverer.sending == 0  # cut off with the tick, not going on to the next
        await asyncio.sleep(2.5)  # long enough for a sender left running to go on
        await deliverer.stop()
    assert len(answered) == 1  # the attempt cut off, and none after it


@pytest.mark.parametrize("outcomes", [("ok", "fail"), ("ok", "fail", "ok"), ("fail", "ok", "ok")])
async def test_attempts_recorded_together_leave_the_endpoint_as_the_last_one_says(
    store: Store, outcomes: tuple[str, ...],
) -> None:
    target = await endpoint(store)
    for number in range(len(outcomes)):
        await store.add_event(event("job.succeeded", 1, job_id=f"job_{number}"),
                              endpoint_id=target.id)
    now = utcnow()
    attempts = [(outgoing, succeeded(now) if outcome == "ok" else failed(now))
                for outgoing, outcome in zip(await claim(store), outcomes, strict=True)]
    assert await store.record_attempts(attempts) == [True] * len(outcomes)
    stored = await store.get_endpoint(target.id, "acme")
    assert stored is not None
    assert (stored.failing_since is not None) == (outcomes[-1] == "fail")
