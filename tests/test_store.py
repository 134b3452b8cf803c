"""The SQLite store keeps the guarantees of ``bridge.store.base`` on a real database file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bridge.core import hash_key
from bridge.errors import InvalidRequest
from bridge.jobs import apply_snapshot, end_job
from bridge.models import (
    TERMINAL,
    Endpoint,
    Event,
    Job,
    JobError,
    JobStatus,
    Tracking,
    new_id,
    utcnow,
)
from bridge.providers.base import Snapshot
from bridge.store import Change, Decide, Store, open_store
from bridge.store.rows import encode_cursor
from bridge.store.sqlite import BUSY_TIMEOUT, MIGRATIONS, SQLiteConnector
from tests.conftest import SQLITE_ONLY

DAY = 24 * 3600.0
TERMINAL_EVENTS = {f"job.{status}" for status in TERMINAL}

# The due-job query inside Store.claim_due_jobs, copied from bridge/store/sqlite.py.
DUE_JOBS_SQL = (
    "SELECT id FROM jobs WHERE next_check_at <= ?"
    "  AND (lease_until IS NULL OR lease_until < ?)"
    "  ORDER BY next_check_at LIMIT ?"
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "bridge.db"  # the SQLite file of the ``database`` fixture


# The SQLite connector's own ways (its file, its write-ahead log, its batches and threads).
INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    store = await open_store(database)
    assert isinstance(store, Store)
    await store.ensure_tenant("acme", lambda: "whsec_acme")
    await store.ensure_tenant("other", lambda: "whsec_other")
    yield store
    await store.close()


@pytest.fixture
async def second(store: Store, database: str) -> AsyncIterator[Store]:
    """Another store on the same database: what a second process (``bridge tick``) sees."""
    other = await open_store(database)
    assert isinstance(other, Store)
    yield other
    await other.close()


def make_job(tenant: str = "acme", *, provider: str = "airforce",
             status: JobStatus = JobStatus.QUEUED, age: float = 0.0, **fields: Any) -> Job:
    created = utcnow() - timedelta(seconds=age)
    return Job(
        id=new_id("job"),
        tenant=tenant,
        provider=provider,
        model="wan-2.6",
        status=status,
        tracking=Tracking.POLL,
        request={"provider": provider, "prompt": "a red fox", "mode": "text"},
        created_at=created,
        updated_at=created,
        **fields,
    )


async def add(store: Store, tenant: str = "acme", **fields: Any) -> Job:
    job, created = await store.create_job(make_job(tenant, **fields), idempotency_window=DAY)
    assert created
    return job


def touch(event_type: str | None, **changes: Any) -> Decide:
    """A decision that stamps the job (with ``changes``) and records ``event_type``."""

    def decide(current: Job) -> Change:
        return Change(replace(current, updated_at=utcnow(), **changes), event_type)

    return decide


def link(name: str) -> tuple[str, datetime]:
    return f"https://bridge.example/media/{name}", utcnow() + timedelta(days=7)


def read_db(path: Path, sql: str, params: Any = ()) -> list[Any]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def read(database: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (written with ``?``) read straight from either store's database."""
    if not database.startswith("postgresql://"):
        return [tuple(row) for row in read_db(Path(database), sql, params)]
    with psycopg.connect(database, connect_timeout=5) as conn:
        return conn.execute(sql.replace("?", "%s"), params).fetchall()


def ids(items: list[Job] | list[Event]) -> list[str]:
    return [item.id for item in items]


# -- file and migrations ------------------------------------------------------------------


@SQLITE_ONLY
async def test_database_file_is_in_wal_mode(store: Store, db_path: Path) -> None:
    assert read_db(db_path, "PRAGMA journal_mode") == [("wal",)]


@SQLITE_ONLY
async def test_user_version_counts_every_migration(store: Store, db_path: Path) -> None:
    assert read_db(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]


async def test_ping_answers_true_when_the_schema_is_current(store: Store) -> None:
    assert await store.ping() is True


@SQLITE_ONLY
async def test_reopening_migrates_nothing_twice_and_keeps_the_data(
    store: Store, db_path: Path
) -> None:
    job = await add(store)
    schema = read_db(db_path, "SELECT type, name FROM sqlite_master ORDER BY name")
    await store.close()

    reopened = await open_store(str(db_path))
    try:
        stored = await reopened.get_job(job.id)
        assert stored is not None and stored.request == job.request
        assert await reopened.ping() is True
    finally:
        await reopened.close()
    assert read_db(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert read_db(db_path, "SELECT type, name FROM sqlite_master ORDER BY name") == schema


# -- meta, tenants and keys -----------------------------------------------------------------


async def test_get_or_set_meta_stores_the_first_value_only(store: Store) -> None:
    made: list[str] = []

    def make(value: str) -> Callable[[], str]:
        def _make() -> str:
            made.append(value)
            return value

        return _make

    assert await store.get_or_set_meta("secret_key", make("first")) == "first"
    assert await store.get_or_set_meta("secret_key", make("second")) == "first"
    assert made == ["first"]


async def test_ensure_tenant_is_idempotent_and_keeps_the_first_secret(
    store: Store,
) -> None:
    first = await store.ensure_tenant("newco", lambda: "whsec_first")
    again = await store.ensure_tenant("newco", lambda: "whsec_second")
    assert first.id == again.id == "newco"
    assert first.signing_secret == again.signing_secret == "whsec_first"


async def test_tenant_for_key_finds_the_tenant_by_the_key_hash(store: Store) -> None:
    await store.add_api_key("acme", hash_key("brk_acme_key"))
    tenant = await store.tenant_for_key(hash_key("brk_acme_key"))
    assert tenant is not None
    assert (tenant.id, tenant.signing_secret) == ("acme", "whsec_acme")


@pytest.mark.parametrize("looked_up", [hash_key("brk_unknown"), "brk_acme_key", ""])
async def test_tenant_for_key_answers_none_for_anything_but_a_stored_hash(
    store: Store, looked_up: str
) -> None:
    await store.add_api_key("acme", hash_key("brk_acme_key"))
    assert await store.tenant_for_key(looked_up) is None


@SQLITE_ONLY
async def test_raw_api_key_never_reaches_the_database_file(
    store: Store, db_path: Path
) -> None:
    raw = "brk_RawKeyThatMustNeverBeStored123"
    await store.add_api_key("acme", hash_key(raw))
    await store.close()
    stored = b"".join(
        path.read_bytes() for path in db_path.parent.iterdir() if path.name.startswith("bridge.db")
    )
    assert hash_key(raw).encode() in stored
    assert raw.encode() not in stored


# -- create_job and idempotency ---------------------------------------------------------------


async def test_same_idempotency_key_within_the_window_returns_the_first_job(
    store: Store,
) -> None:
    first, created = await store.create_job(make_job(idempotency_key="k1"),
                                            idempotency_window=DAY)
    again, created_again = await store.create_job(make_job(idempotency_key="k1"),
                                                  idempotency_window=DAY)
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    page = await store.list_jobs("acme", status=None, provider=None, limit=10, cursor=None)
    assert ids(page.data) == [first.id]


async def test_same_idempotency_key_after_the_window_creates_a_new_job(
    store: Store,
) -> None:
    old = await add(store, idempotency_key="k1", age=DAY + 60)
    new, created = await store.create_job(make_job(idempotency_key="k1"),
                                          idempotency_window=DAY)
    assert created
    assert new.id != old.id
    assert await store.get_job(old.id) is not None


async def test_idempotency_keys_are_per_tenant(store: Store) -> None:
    _, acme_created = await store.create_job(make_job("acme", idempotency_key="k1"),
                                             idempotency_window=DAY)
    _, other_created = await store.create_job(make_job("other", idempotency_key="k1"),
                                              idempotency_window=DAY)
    assert acme_created and other_created


async def test_concurrent_creates_with_one_key_store_exactly_one_job(
    store: Store, second: Store
) -> None:
    results = await asyncio.gather(*(
        (store if index % 2 else second).create_job(
            make_job(idempotency_key="same"), idempotency_window=DAY)
        for index in range(20)
    ))
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    page = await store.list_jobs("acme", status=None, provider=None, limit=100, cursor=None)
    assert len(page.data) == 1


# -- reading jobs ------------------------------------------------------------------------------


async def test_get_job_with_another_tenant_answers_none(store: Store) -> None:
    job = await add(store, "acme")
    assert await store.get_job(job.id, "other") is None
    found = await store.get_job(job.id, "acme")
    assert found is not None and found.id == job.id


async def test_list_jobs_pages_newest_first_with_a_cursor(store: Store) -> None:
    created = [await add(store) for _ in range(5)]
    await add(store, "other")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.list_jobs("acme", status=None, provider=None, limit=2,
                                     cursor=cursor)
        seen += ids(page.data)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids(created)[::-1]
    assert pages == 3


async def test_list_jobs_filters_by_status(store: Store) -> None:
    queued = await add(store)
    running = await add(store, status=JobStatus.RUNNING)
    page = await store.list_jobs("acme", status="running", provider=None, limit=10,
                                 cursor=None)
    assert ids(page.data) == [running.id]
    assert queued.id not in ids(page.data)


async def test_list_jobs_filters_by_provider(store: Store) -> None:
    await add(store, provider="airforce")
    venice = await add(store, provider="venice")
    page = await store.list_jobs("acme", status=None, provider="venice", limit=10,
                                 cursor=None)
    assert ids(page.data) == [venice.id]


@pytest.mark.parametrize("cursor", ["garbage", "!!!", "", "eDEy", "cw"])
async def test_list_jobs_refuses_a_cursor_it_never_returned(
    store: Store, cursor: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await store.list_jobs("acme", status=None, provider=None, limit=10, cursor=cursor)
    assert caught.value.field == "cursor"


async def test_list_jobs_refuses_a_cursor_with_a_huge_number(store: Store) -> None:
    cursor = encode_cursor(10**30)
    with pytest.raises(InvalidRequest) as caught:
        await store.list_jobs("acme", status=None, provider=None, limit=10, cursor=cursor)
    assert caught.value.field == "cursor"


# -- update_job ------------------------------------------------------------------------------


async def test_update_job_stores_the_change_and_its_event(store: Store) -> None:
    job = await add(store)
    result = await store.update_job(job.id, touch("job.submitted", status=JobStatus.SUBMITTED,
                                                  provider_job_id="task-1"))
    assert result is not None
    updated, event = result
    assert event is not None and event.type == "job.submitted"
    assert updated.sequence == event.data["sequence"] == 1
    stored = await store.get_job(job.id)
    assert stored is not None
    assert (stored.status, stored.provider_job_id) == (JobStatus.SUBMITTED, "task-1")
    assert ids(await store.job_events(job.id)) == [event.id]
    assert event.data["status"] == "submitted"


async def test_update_job_whose_decision_raises_leaves_no_change_and_no_event(
    store: Store,
) -> None:
    job = await add(store)

    def decide(current: Job) -> Change:
        raise RuntimeError("decided badly")

    with pytest.raises(RuntimeError):
        await store.update_job(job.id, decide)
    stored = await store.get_job(job.id)
    assert stored is not None and stored.status == JobStatus.QUEUED and stored.sequence == 0
    assert await store.job_events(job.id) == []


async def test_update_job_whose_write_fails_keeps_no_event(store: Store) -> None:
    job = await add(store)
    # The job write breaks the tenants foreign key after the event row was inserted.
    with pytest.raises(INTEGRITY_ERRORS):
        await store.update_job(job.id, touch("job.running", status=JobStatus.RUNNING,
                                             tenant="no-such-tenant"))
    stored = await store.get_job(job.id)
    assert stored is not None and stored.status == JobStatus.QUEUED
    assert await store.job_events(job.id) == []
    page = await store.list_events("acme", type=None, job_id=None, limit=10, cursor=None)
    assert page.data == []


async def test_update_job_numbers_a_jobs_events_one_two_three(store: Store) -> None:
    job = await add(store)
    for event_type in ("job.submitted", "job.running", "job.progress"):
        await store.update_job(job.id, touch(event_type))
    await store.update_job(job.id, touch(None))  # no event: no number used
    events = await store.job_events(job.id)
    assert [event.data["sequence"] for event in events] == [1, 2, 3]
    stored = await store.get_job(job.id)
    assert stored is not None and stored.sequence == 3


@pytest.mark.parametrize("status", sorted(TERMINAL))
async def test_update_job_never_asks_about_a_terminal_job(
    store: Store, status: JobStatus
) -> None:
    job = await add(store, status=status)
    asked: list[Job] = []

    def decide(current: Job) -> Change:
        asked.append(current)
        return Change(replace(current, status=JobStatus.RUNNING), "job.running")

    assert await store.update_job(job.id, decide) is None
    assert asked == []
    stored = await store.get_job(job.id)
    assert stored is not None and stored.status == status


async def test_update_job_of_a_missing_job_answers_none(store: Store) -> None:
    assert await store.update_job("job_missing", touch("job.running")) is None


async def test_update_job_whose_decision_is_none_changes_nothing(store: Store) -> None:
    job = await add(store)
    assert await store.update_job(job.id, lambda current: None) is None
    stored = await store.get_job(job.id)
    assert stored is not None
    assert (stored.status, stored.sequence) == (JobStatus.QUEUED, 0)
    assert await store.job_events(job.id) == []


CALLBACK = Snapshot(JobStatus.SUCCEEDED, progress=100, video_url="https://cdn.example/v.mp4",
                    expires_at=utcnow() + timedelta(days=1))
STREAM = Snapshot(JobStatus.RUNNING, progress=40)
POLL = Snapshot(JobStatus.FAILED, error=JobError("provider_rejected", "the task failed"))


@pytest.mark.parametrize("seed", range(30))
async def test_racing_callback_stream_and_poll_end_in_exactly_one_terminal_state(
    store: Store, second: Store, seed: int
) -> None:
    rng = random.Random(seed)
    job = await add(store, status=JobStatus.SUBMITTED, provider_job_id="task-1")
    # Each message arrives twice (providers repeat callbacks), through either process.
    arrivals = [(snapshot, via) for snapshot in (CALLBACK, STREAM, POLL)
                for via in (store, second)]
    rng.shuffle(arrivals)

    async def arrive(snapshot: Snapshot, via: Store, delay: float) -> None:
        await asyncio.sleep(delay)
        await via.update_job(
            job.id, lambda current: apply_snapshot(current, snapshot, utcnow(), link)
        )

    await asyncio.gather(*(
        asyncio.create_task(arrive(snapshot, via, rng.choice((0, 0, 0.001, 0.003))))
        for snapshot, via in arrivals
    ))

    final = await second.get_job(job.id)
    assert final is not None and final.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)
    events = await store.job_events(job.id)
    terminal = [event for event in events if event.type in TERMINAL_EVENTS]
    assert [event.type for event in terminal] == [f"job.{final.status}"]
    assert events[-1].id == terminal[0].id
    assert terminal[0].data["status"] == final.status
    assert [event.data["sequence"] for event in events] == list(range(1, len(events) + 1))
    assert final.sequence == len(events)


# -- claiming due jobs -------------------------------------------------------------------------


async def test_claim_due_jobs_returns_only_due_jobs_earliest_first(
    store: Store,
) -> None:
    now = utcnow()
    late = await add(store, next_check_at=now - timedelta(seconds=10))
    earliest = await add(store, next_check_at=now - timedelta(seconds=30))
    middle = await add(store, next_check_at=now - timedelta(seconds=20))
    await add(store, next_check_at=now + timedelta(seconds=60))
    await add(store, next_check_at=None)
    claimed = await store.claim_due_jobs(now, 10, 60)
    assert ids(claimed) == [earliest.id, middle.id, late.id]


async def test_claim_due_jobs_takes_at_most_limit_jobs(store: Store) -> None:
    now = utcnow()
    jobs = [await add(store, next_check_at=now - timedelta(seconds=10 - i)) for i in range(5)]
    claimed = await store.claim_due_jobs(now, 2, 60)
    assert ids(claimed) == ids(jobs[:2])


async def test_a_leased_job_is_not_handed_out_again(store: Store) -> None:
    now = utcnow()
    job = await add(store, next_check_at=now)
    assert ids(await store.claim_due_jobs(now, 10, 60)) == [job.id]
    assert await store.claim_due_jobs(now + timedelta(seconds=59), 10, 60) == []


async def test_a_leased_job_is_handed_out_again_once_its_lease_expires(
    store: Store,
) -> None:
    now = utcnow()
    job = await add(store, next_check_at=now)
    await store.claim_due_jobs(now, 10, 60)
    assert ids(await store.claim_due_jobs(now + timedelta(seconds=61), 10, 60)) == [job.id]


async def test_release_job_ends_the_lease_and_sets_the_next_check(store: Store) -> None:
    now = utcnow()
    job = await add(store, next_check_at=now)
    await store.claim_due_jobs(now, 10, 60)
    await store.release_job(job.id, now + timedelta(seconds=5))
    assert await store.claim_due_jobs(now + timedelta(seconds=4), 10, 60) == []
    assert ids(await store.claim_due_jobs(now + timedelta(seconds=5), 10, 60)) == [job.id]


async def test_release_job_without_a_time_takes_the_job_off_the_timer(
    store: Store,
) -> None:
    now = utcnow()
    job = await add(store, next_check_at=now)
    await store.claim_due_jobs(now, 10, 60)
    await store.release_job(job.id, None)
    assert await store.claim_due_jobs(now + timedelta(days=1), 10, 60) == []


async def test_release_job_never_puts_a_terminal_job_back_on_the_timer(
    store: Store,
) -> None:
    now = utcnow()
    job = await add(store, status=JobStatus.SUCCEEDED)
    await store.release_job(job.id, now)
    assert await store.claim_due_jobs(now, 10, 60) == []


async def test_update_job_with_release_lease_ends_the_lease(store: Store) -> None:
    now = utcnow()
    job = await add(store, next_check_at=now)
    await store.claim_due_jobs(now, 10, 60)
    await store.update_job(job.id, touch(None), release_lease=True)
    assert ids(await store.claim_due_jobs(now, 10, 60)) == [job.id]


async def test_update_job_without_release_lease_keeps_the_lease(store: Store) -> None:
    now = utcnow()
    job = await add(store, next_check_at=now)
    await store.claim_due_jobs(now, 10, 60)
    await store.update_job(job.id, touch(None))
    assert await store.claim_due_jobs(now, 10, 60) == []


async def test_a_job_finished_while_claimed_keeps_no_lease(
    store: Store, database: str
) -> None:
    # Claimed by one worker, finished by another (a callback): no lease outlives the job,
    # and the claimer's own update finds it finished.
    now = utcnow()
    job = await add(store, status=JobStatus.RUNNING, next_check_at=now)
    assert ids(await store.claim_due_jobs(now, 10, 60)) == [job.id]
    await store.update_job(job.id, lambda job: end_job(job, JobStatus.SUCCEEDED, None, now))
    assert await store.update_job(job.id, touch(None), release_lease=True) is None
    assert read(database, "SELECT lease_until FROM jobs WHERE id = ?", job.id) == [(None,)]


async def test_two_stores_claiming_at_once_get_disjoint_jobs(
    store: Store, second: Store
) -> None:
    now = utcnow()
    jobs = [await add(store, next_check_at=now - timedelta(seconds=i)) for i in range(40)]
    claims = await asyncio.gather(*(
        via.claim_due_jobs(now, 7, 60) for _ in range(4) for via in (store, second)
    ))
    claimed = [job_id for claim in claims for job_id in ids(claim)]
    assert len(claimed) == len(set(claimed)) == 40
    assert set(claimed) == set(ids(jobs))


@SQLITE_ONLY
async def test_due_job_query_uses_the_jobs_due_index(
    store: Store, db_path: Path
) -> None:
    plan = read_db(db_path, f"EXPLAIN QUERY PLAN {DUE_JOBS_SQL}", (0.0, 0.0, 10))
    details = " ".join(str(row[-1]) for row in plan)
    assert "jobs_due" in details, details
    assert "SCAN" not in details and "TEMP B-TREE" not in details, details


# -- submission slots --------------------------------------------------------------------------


async def test_begin_submit_refuses_the_job_over_the_limit(store: Store) -> None:
    now = utcnow()
    jobs = [await add(store) for _ in range(5)]
    began = [await store.begin_submit(job.id, "airforce", 4, now) for job in jobs]
    assert began == [True, True, True, True, False]


async def test_begin_submit_from_two_stores_at_once_never_exceeds_the_limit(
    store: Store, second: Store
) -> None:
    now = utcnow()
    jobs = [await add(store) for _ in range(10)]
    began = await asyncio.gather(*(
        (store if index % 2 else second).begin_submit(job.id, "airforce", 4, now)
        for index, job in enumerate(jobs)
    ))
    assert sum(began) == 4


async def test_requests_for_slots_that_arrive_together_are_served_in_their_order(
    store: Store,
) -> None:
    now = utcnow()
    for _ in range(2):
        await add(store, status=JobStatus.RUNNING, next_check_at=now + timedelta(hours=1))
    jobs = [await add(store, next_check_at=now) for _ in range(5)]
    later = now + timedelta(minutes=10)
    began = await asyncio.gather(*(
        store.begin_submit(job.id, "airforce", 4, now, wait_until=later) for job in jobs))
    assert began == [True, True, False, False, False]
    stored = [await store.get_job(job.id) for job in jobs]
    assert [job.submit_started_at is not None for job in stored if job] == began
    # The refused wait for a slot (or their look at wait_until); the granted are due.
    due = await store.claim_due_jobs(now + timedelta(minutes=1), 10, 60)
    assert ids(due) == ids(jobs[:2])


@SQLITE_ONLY
async def test_requests_for_slots_that_arrive_together_share_one_count(
    store: Store,
) -> None:
    now = utcnow()
    jobs = [await add(store) for _ in range(6)]
    seen = await statements(store)
    began = await asyncio.gather(*(
        store.begin_submit(job.id, "airforce", 4, now) for job in jobs))
    assert sum(began) == 4
    assert sum("COUNT(*)" in statement for statement in seen) == 1


async def test_a_job_finished_before_its_slot_is_granted_is_neither_begun_nor_parked(
    store: Store,
) -> None:
    # Canceled while its submission waited for the grant: not sent, and never due again.
    now = utcnow()
    for _ in range(3):
        await add(store, status=JobStatus.RUNNING, next_check_at=now + timedelta(hours=1))
    jobs = [await add(store, next_check_at=now) for _ in range(3)]
    for job in jobs:
        await store.update_job(job.id, lambda job: end_job(job, JobStatus.CANCELED, None, now))
    later = now + timedelta(minutes=2)
    began = await asyncio.gather(*(
        store.begin_submit(job.id, "airforce", 4, now, wait_until=later) for job in jobs))
    assert began == [False, False, False]
    stored = [await store.get_job(job.id) for job in jobs]
    assert [(job.submit_started_at, job.next_check_at) for job in stored if job] == [
        (None, None)] * 3
    assert await store.claim_due_jobs(later + timedelta(minutes=1), 10, 60) == []


async def test_begin_submit_marks_the_submission_started(store: Store) -> None:
    job = await add(store)
    assert await store.begin_submit(job.id, "airforce", 4, utcnow())
    stored = await store.get_job(job.id)
    assert stored is not None and stored.submit_started_at is not None


async def test_a_terminal_job_frees_its_submission_slot(store: Store) -> None:
    now = utcnow()
    jobs = [await add(store) for _ in range(5)]
    for job in jobs[:4]:
        assert await store.begin_submit(job.id, "airforce", 4, now)
    await store.update_job(jobs[0].id,
                           lambda current: end_job(current, JobStatus.FAILED, None, now))
    assert await store.begin_submit(jobs[4].id, "airforce", 4, now)


async def test_begin_submit_counts_jobs_at_the_provider(store: Store) -> None:
    for status in (JobStatus.SUBMITTED, JobStatus.RUNNING, JobStatus.RUNNING,
                   JobStatus.SUBMITTED):
        await add(store, status=status)
    job = await add(store)
    assert not await store.begin_submit(job.id, "airforce", 4, utcnow())


async def test_begin_submit_ignores_queued_jobs_not_yet_started(store: Store) -> None:
    for _ in range(4):
        await add(store)
    job = await add(store)
    assert await store.begin_submit(job.id, "airforce", 4, utcnow())


async def test_begin_submit_counts_only_the_same_provider(store: Store) -> None:
    for _ in range(4):
        await add(store, provider="venice", status=JobStatus.RUNNING)
    job = await add(store)
    assert await store.begin_submit(job.id, "airforce", 4, utcnow())


async def test_begin_submit_without_a_limit_always_begins(store: Store) -> None:
    for _ in range(10):
        await add(store, status=JobStatus.RUNNING)
    job = await add(store)
    assert await store.begin_submit(job.id, "airforce", None, utcnow())


async def test_a_job_ending_makes_its_providers_waiting_jobs_due(store: Store) -> None:
    now = utcnow()
    later = now + timedelta(minutes=5)
    waiting = await add(store, next_check_at=later)
    started = await add(store, next_check_at=later, submit_started_at=now)
    running = await add(store, status=JobStatus.RUNNING, next_check_at=later)
    elsewhere = await add(store, provider="venice", next_check_at=later)
    await store.update_job(running.id, lambda job: end_job(job, JobStatus.SUCCEEDED, None, now))
    claimed = ids(await store.claim_due_jobs(now, 10, 60))
    assert claimed == [waiting.id]
    assert {started.id, running.id, elsewhere.id}.isdisjoint(claimed)


async def test_each_job_ending_wakes_one_waiting_job_the_longest_waiting_first(
    store: Store,
) -> None:
    now = utcnow()
    later = now + timedelta(minutes=5)
    waiting = [await add(store, next_check_at=later) for _ in range(5)]
    running = [await add(store, status=JobStatus.RUNNING, next_check_at=later)
               for _ in range(3)]
    await store.update_job(running[0].id,
                           lambda job: end_job(job, JobStatus.SUCCEEDED, None, now))
    await asyncio.gather(*(  # two ending together (one batch on SQLite)
        store.update_job(job.id, lambda job: end_job(job, JobStatus.SUCCEEDED, None, now))
        for job in running[1:]
    ))
    assert ids(await store.claim_due_jobs(now, 10, 60)) == ids(waiting[:3])


async def test_a_job_refused_a_slot_waits_until_a_job_of_its_provider_ends(
    store: Store,
) -> None:
    now = utcnow()
    busy = [await add(store, status=JobStatus.RUNNING, next_check_at=now + timedelta(hours=1))
            for _ in range(4)]
    job = await add(store, next_check_at=now)
    assert ids(await store.claim_due_jobs(now, 1, 60)) == [job.id]
    behind = await add(store, next_check_at=now)  # due too, unclaimed: it waits as well
    assert not await store.begin_submit(job.id, "airforce", 4, now,
                                        wait_until=now + timedelta(minutes=2))
    assert await store.claim_due_jobs(now + timedelta(minutes=1), 10, 60) == []
    await store.update_job(busy[0].id, lambda job: end_job(job, JobStatus.SUCCEEDED, None, now))
    assert ids(await store.claim_due_jobs(now, 10, 600)) == [job.id]  # its lease was ended
    later = now + timedelta(minutes=2)
    assert ids(await store.claim_due_jobs(later, 10, 60)) == [behind.id]


@pytest.mark.parametrize("accepted", [False, True])
async def test_a_submission_given_up_frees_its_slot_for_the_job_waiting_longest(
    store: Store, accepted: bool,
) -> None:
    # Given up, the job is queued again and its slot is free; accepted, it keeps its slot
    # at the provider and wakes nobody.
    now = utcnow()
    for _ in range(3):
        await add(store, status=JobStatus.RUNNING, next_check_at=now + timedelta(hours=1))
    submitting = await add(store, next_check_at=now)
    assert await store.begin_submit(submitting.id, "airforce", 4, now)
    waiting = await add(store, next_check_at=now)
    assert not await store.begin_submit(waiting.id, "airforce", 4, now,
                                        wait_until=now + timedelta(minutes=2))
    later = now + timedelta(seconds=30)
    if accepted:
        await store.update_job(submitting.id, touch(
            "job.submitted", status=JobStatus.SUBMITTED, submit_started_at=None,
            next_check_at=later))
    else:
        await store.update_job(submitting.id, touch(None, submit_started_at=None,
                                                    next_check_at=later))
    # The waiting job is due now (or not at all); the other only after its own wait.
    woken = await store.claim_due_jobs(now + timedelta(seconds=1), 10, 60)
    assert ids(woken) == ([] if accepted else [waiting.id])


async def test_unfinished_jobs_are_every_job_not_terminal(store: Store) -> None:
    unfinished = [await add(store, status=status) for status in
                  (JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING)]
    for status in TERMINAL:
        await add(store, status=status)
    assert ids(await store.unfinished_jobs()) == ids(unfinished)


async def test_adopted_provider_job_names_the_job_following_a_task(
    store: Store,
) -> None:
    job = await add(store, provider_job_id="task-1", status=JobStatus.SUBMITTED)
    assert await store.adopted_provider_job("airforce", "task-1") == job.id
    assert await store.adopted_provider_job("venice", "task-1") is None
    assert await store.adopted_provider_job("airforce", "task-2") is None


# -- events ------------------------------------------------------------------------------------


async def record(store: Store, job: Job, *event_types: str) -> list[Event]:
    events = []
    for event_type in event_types:
        result = await store.update_job(job.id, touch(event_type))
        assert result is not None and result[1] is not None
        events.append(result[1])
    return events


async def test_list_events_pages_newest_first_with_a_cursor(store: Store) -> None:
    events = await record(store, await add(store), "job.submitted", "job.running",
                          "job.progress", "job.progress", "job.succeeded")
    await record(store, await add(store, "other"), "job.submitted")
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_events("acme", type=None, job_id=None, limit=2, cursor=cursor)
        seen += ids(page.data)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids(events)[::-1]


async def test_list_events_filters_by_type(store: Store) -> None:
    events = await record(store, await add(store), "job.submitted", "job.progress",
                          "job.progress", "job.failed")
    page = await store.list_events("acme", type="job.progress", job_id=None, limit=10,
                                   cursor=None)
    assert ids(page.data) == [events[2].id, events[1].id]


async def test_list_events_filters_by_job(store: Store) -> None:
    first, second_job = await add(store), await add(store)
    mine = await record(store, first, "job.submitted")
    await record(store, second_job, "job.submitted")
    mine += await record(store, first, "job.running")
    page = await store.list_events("acme", type=None, job_id=first.id, limit=10, cursor=None)
    assert ids(page.data) == ids(mine)[::-1]


async def test_list_events_refuses_a_garbage_cursor(store: Store) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await store.list_events("acme", type=None, job_id=None, limit=10, cursor="garbage")
    assert caught.value.field == "cursor"


async def test_get_event_answers_only_its_tenant(store: Store) -> None:
    [event] = await record(store, await add(store), "job.submitted")
    found = await store.get_event(event.id, "acme")
    assert found is not None and found.data == event.data and found.type == "job.submitted"
    assert await store.get_event(event.id, "other") is None


async def test_job_events_come_in_order(store: Store) -> None:
    job = await add(store)
    events = await record(store, job, "job.submitted", "job.running", "job.succeeded")
    stored = await store.job_events(job.id)
    assert ids(stored) == ids(events)
    assert [event.type for event in stored] == ["job.submitted", "job.running", "job.succeeded"]


# -- where writes run ---------------------------------------------------------------------


async def test_works_of_one_batch_commit_together_but_a_raising_one_alone(
    store: Store,
) -> None:
    jobs = [await add(store) for _ in range(4)]

    def broken(current: Job) -> Change:
        raise RuntimeError("decided badly")

    outcomes = await asyncio.gather(
        store.update_job(jobs[0].id, touch("job.submitted", status=JobStatus.SUBMITTED)),
        store.update_job(jobs[1].id, broken),
        store.update_job(jobs[2].id, touch("job.submitted", status=JobStatus.SUBMITTED)),
        store.update_job(jobs[3].id, touch("job.running", status=JobStatus.RUNNING,
                                           tenant="no-such-tenant")),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], RuntimeError)
    assert isinstance(outcomes[3], INTEGRITY_ERRORS)
    statuses = [(await store.get_job(job.id)).status for job in jobs]  # type: ignore[union-attr]
    assert statuses == [JobStatus.SUBMITTED, JobStatus.QUEUED, JobStatus.SUBMITTED,
                        JobStatus.QUEUED]
    assert [len(await store.job_events(job.id)) for job in jobs] == [1, 0, 1, 0]


async def statements(store: Store) -> list[str]:
    """Every statement the store's write connection runs from now on, as SQLite sees it."""
    seen: list[str] = []
    assert isinstance(store.db, SQLiteConnector) and store.db.writer is not None
    await store.db.writer.set_trace_callback(seen.append)
    return seen


async def hook(store: Store, **fields: Any) -> Endpoint:
    made = Endpoint(id=new_id("ep"), tenant="acme", url="https://hooks.example.com/x",
                    events=None, description=None, headers={}, secret="whsec_x",
                    created_at=utcnow(), **fields)
    return await store.create_endpoint(made)


async def delivered(store: Store, job: Job, endpoint: Endpoint) -> list[str]:
    """The event types ``endpoint`` has deliveries of, for ``job``."""
    page = await store.endpoint_deliveries(endpoint.id, limit=100, cursor=None)
    return sorted(d.event_type for d in page.data if d.job_id == job.id)


@SQLITE_ONLY
async def test_job_updates_of_one_batch_share_their_reads_and_writes(
    store: Store,
) -> None:
    jobs = [await add(store, status=JobStatus.RUNNING) for _ in range(6)]
    await hook(store)
    seen = await statements(store)
    now = utcnow()
    await asyncio.gather(*(
        store.update_job(job.id, lambda current: end_job(current, JobStatus.SUCCEEDED, None, now))
        for job in jobs
    ))
    # One read of the six rows, of the tenant's endpoints, one wake of waiting jobs.
    assert sum(s.startswith("SELECT") and "FROM jobs WHERE id IN" in s for s in seen) == 1
    assert not any("FROM jobs WHERE id = " in s for s in seen)
    assert sum("FROM endpoints" in s for s in seen) == 1
    assert sum("status = 'queued'" in s for s in seen) == 1
    assert seen.count("COMMIT") == 1
    for job in jobs:
        stored = await store.get_job(job.id)
        assert stored is not None and stored.status == JobStatus.SUCCEEDED
        assert [e.type for e in await store.job_events(job.id)] == ["job.succeeded"]
    # The events are numbered in the order of the works, as one by one.
    page = await store.list_events("acme", type=None, job_id=None, limit=10, cursor=None)
    assert [event.job_id for event in reversed(page.data)] == ids(jobs)


async def test_a_job_updated_twice_in_one_batch_sees_its_first_change(
    store: Store,
) -> None:
    job, other = await add(store), await add(store)
    results = await asyncio.gather(
        store.update_job(job.id, touch("job.submitted", status=JobStatus.SUBMITTED)),
        store.update_job(other.id, touch("job.submitted", status=JobStatus.SUBMITTED)),
        store.update_job(job.id, touch("job.running", status=JobStatus.RUNNING)),
    )
    assert [r[0].sequence for r in results if r is not None] == [1, 1, 2]
    stored = await store.get_job(job.id)
    assert stored is not None and (stored.status, stored.sequence) == (JobStatus.RUNNING, 2)
    assert [e.type for e in await store.job_events(job.id)] == ["job.submitted", "job.running"]


async def test_a_missing_or_finished_job_in_a_batch_answers_none_beside_the_others(
    store: Store,
) -> None:
    job, done = await add(store), await add(store, status=JobStatus.SUCCEEDED)
    results = await asyncio.gather(
        store.update_job("job_missing", touch("job.running")),
        store.update_job(job.id, touch("job.submitted", status=JobStatus.SUBMITTED)),
        store.update_job(done.id, touch("job.running", status=JobStatus.RUNNING)),
    )
    assert results[0] is None and results[2] is None
    assert results[1] is not None and results[1][0].status == JobStatus.SUBMITTED


@SQLITE_ONLY
async def test_an_endpoint_added_or_disabled_amid_a_batch_counts_from_then_on(
    store: Store,
) -> None:
    jobs = [await add(store) for _ in range(4)]
    early = await hook(store)
    late = Endpoint(id=new_id("ep"), tenant="acme", url="https://hooks.example.com/y",
                    events=None, description=None, headers={}, secret="whsec_y",
                    created_at=utcnow())
    submitted = touch("job.submitted", status=JobStatus.SUBMITTED)
    await asyncio.gather(
        store.update_job(jobs[0].id, submitted),
        store.create_endpoint(late),
        store.update_job(jobs[1].id, submitted),
        store.update_endpoint(early.id, "acme", lambda e: replace(e, disabled=True)),
        store.update_job(jobs[2].id, submitted),
        store.update_job(jobs[3].id, submitted),
    )
    assert [await delivered(store, job, early) for job in jobs] == [
        ["job.submitted"], ["job.submitted"], [], []]
    assert [await delivered(store, job, late) for job in jobs] == [
        [], ["job.submitted"], ["job.submitted"], ["job.submitted"]]


async def test_jobs_ending_in_one_batch_wake_their_providers_waiting_jobs(
    store: Store,
) -> None:
    now = utcnow()
    later = now + timedelta(minutes=5)
    waiting = await add(store, next_check_at=later)
    elsewhere = await add(store, provider="venice", next_check_at=later)
    running = [await add(store, status=JobStatus.RUNNING, next_check_at=later)
               for _ in range(3)]
    await asyncio.gather(*(
        store.update_job(job.id, lambda job: end_job(job, JobStatus.SUCCEEDED, None, now))
        for job in running
    ))
    assert ids(await store.claim_due_jobs(now, 10, 60)) == [waiting.id]
    stored = await store.get_job(elsewhere.id)
    assert stored is not None and stored.next_check_at == later


@SQLITE_ONLY
async def test_a_batch_whose_shared_event_write_fails_is_written_work_by_work(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [await add(store) for _ in range(3)]
    # The second and third events get the same id: the batch's one INSERT of its events
    # fails, and the batch is run again work by work (new ids, the same clash), so only the
    # third fails.
    made = iter(["evt_1", "evt_2", "evt_2", "evt_3", "evt_4", "evt_4"])
    monkeypatch.setattr("bridge.events.new_id", lambda prefix: next(made))
    outcomes = await asyncio.gather(*(
        store.update_job(job.id, touch("job.submitted", status=JobStatus.SUBMITTED))
        for job in jobs
    ), return_exceptions=True)
    assert not isinstance(outcomes[0], BaseException)
    assert not isinstance(outcomes[1], BaseException)
    assert isinstance(outcomes[2], sqlite3.IntegrityError)
    assert [len(await store.job_events(job.id)) for job in jobs] == [1, 1, 0]


async def test_a_work_raising_stop_iteration_fails_its_caller_alone(
    store: Store,
) -> None:
    # A future cannot hold a StopIteration (asyncio refuses it): it reaches the caller as
    # a RuntimeError, and the rest of the batch is settled as usual, nobody left waiting.
    job, other = await add(store), await add(store)

    def exhausted(current: Job) -> Change:
        return next(iter([]))

    outcomes = await asyncio.wait_for(asyncio.gather(
        store.update_job(job.id, exhausted),
        store.update_job(other.id, touch("job.submitted", status=JobStatus.SUBMITTED)),
        return_exceptions=True,
    ), timeout=10)
    assert isinstance(outcomes[0], RuntimeError)
    assert isinstance(outcomes[0].__cause__, StopIteration)
    assert not isinstance(outcomes[1], BaseException)


@SQLITE_ONLY
async def test_a_write_waits_in_a_thread_while_another_process_holds_the_lock(
    store: Store, db_path: Path
) -> None:
    job = await add(store)
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # what a `bridge tick` mid-write looks like
        write = asyncio.create_task(
            store.update_job(job.id, touch("job.submitted", status=JobStatus.SUBMITTED)))
        # The loop is not held up by the wait: timers fire on time meanwhile.
        loop = asyncio.get_running_loop()
        for _ in range(5):
            started = loop.time()
            await asyncio.sleep(0.02)
            assert loop.time() - started < 0.5
        assert not write.done()
        other.execute("ROLLBACK")
        result = await asyncio.wait_for(write, timeout=5)
    finally:
        other.close()
    assert result is not None and result[0].status == JobStatus.SUBMITTED
    stored = await store.get_job(job.id)
    assert stored is not None and stored.status == JobStatus.SUBMITTED


async def test_a_lookup_sees_every_committed_write(store: Store) -> None:
    job = await add(store)
    for status in (JobStatus.SUBMITTED, JobStatus.RUNNING):
        await store.update_job(job.id, touch(f"job.{status}", status=status))
        stored = await store.get_job(job.id)
        assert stored is not None and stored.status == status


@SQLITE_ONLY
async def test_a_lookup_while_a_batch_waits_in_a_thread_does_not_wait_for_it(
    store: Store, db_path: Path
) -> None:
    # Lookups use the write connection between batches; while a thread has it (waiting
    # for another process's lock), they must neither block the loop on it nor see the
    # batch's uncommitted work.
    job = await add(store)
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    release = threading.Timer(BUSY_TIMEOUT / 2, other.execute, ("ROLLBACK",))
    try:
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.create_task(
            store.update_job(job.id, touch("job.submitted", status=JobStatus.SUBMITTED)))
        await asyncio.sleep(0.1)  # the batch is in its thread, waiting for the lock
        release.start()  # unblocks a loop that waits for the connection, so a failure shows
        started = time.monotonic()
        seen = await asyncio.wait_for(store.get_job(job.id), timeout=10)
        assert time.monotonic() - started < 1.0
        assert seen is not None and seen.status == job.status
        assert not write.done()
        result = await asyncio.wait_for(write, timeout=10)
    finally:
        release.cancel()
        release.join()
        other.close()
    assert result is not None and result[0].status == JobStatus.SUBMITTED
    stored = await store.get_job(job.id)
    assert stored is not None and stored.status == JobStatus.SUBMITTED


@SQLITE_ONLY
async def test_the_write_ahead_log_is_copied_into_the_database_as_it_grows(
    store: Store, db_path: Path
) -> None:
    # SQLite checkpoints the log once it passes 1000 pages (4 MB), inside a commit on the
    # writer's own thread: the database file grows while the log stays bounded.
    def size(path: Path) -> int:
        return os.path.getsize(path)

    before = size(db_path)
    for batch in range(8):
        await asyncio.gather(*(store.get_or_set_meta(f"filler-{batch}-{number}", lambda: "x" * 4000)
                               for number in range(200)))
    assert size(db_path) >= before + 4_000_000
    assert size(Path(f"{db_path}-wal")) < 8 * 200 * 4000
    assert read_db(db_path, "SELECT COUNT(*) FROM meta WHERE key LIKE 'filler-%'") == [(1600,)]


@SQLITE_ONLY
async def test_a_write_whose_caller_gives_up_while_the_file_is_locked_leaves_all_in_order(
    store: Store, db_path: Path
) -> None:
    first, second = await add(store), await add(store)
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        waiting = asyncio.create_task(
            store.update_job(first.id, touch("job.submitted", status=JobStatus.SUBMITTED)))
        await asyncio.sleep(0.1)  # the write waits for the lock, off the loop
        waiting.cancel()
        other.execute("ROLLBACK")
    finally:
        other.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # Written or not, the job and its events agree, and the store goes on working.
    stored = await store.get_job(first.id)
    assert stored is not None
    assert len(await store.job_events(first.id)) == (stored.status == JobStatus.SUBMITTED)
    await store.update_job(second.id, touch("job.running", status=JobStatus.RUNNING))
    assert (await store.get_job(second.id)).status == JobStatus.RUNNING  # type: ignore[union-attr]


async def test_a_write_cancelled_before_its_turn_is_never_written(store: Store) -> None:
    job = await add(store)
    write = asyncio.create_task(
        store.update_job(job.id, touch("job.submitted", status=JobStatus.SUBMITTED)))
    await asyncio.sleep(0)  # queued; the commit has not had its turn yet
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    await store.get_or_set_meta("after", lambda: "x")  # a commit after it
    assert (await store.get_job(job.id)).status == JobStatus.QUEUED  # type: ignore[union-attr]
    assert await store.job_events(job.id) == []


async def test_close_commits_every_accepted_write_and_refuses_later_ones(
    db_path: Path,
) -> None:
    store = await open_store(str(db_path))
    await store.ensure_tenant("acme", lambda: "whsec_acme")
    jobs = [make_job() for _ in range(20)]
    writes = [asyncio.create_task(store.create_job(job, idempotency_window=DAY))
              for job in jobs]
    await asyncio.sleep(0)
    await store.close()
    assert all(created for _, created in await asyncio.gather(*writes))
    with pytest.raises(RuntimeError):
        await store.create_job(make_job(), idempotency_window=DAY)
    assert read_db(db_path, "SELECT COUNT(*) FROM jobs") == [(20,)]
