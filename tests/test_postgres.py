"""What only a shared database has: several bridge processes on one PostgreSQL database
claim work without doubling it, take over what a killed one leased, wake each other at once,
and keep api.airforce's limit of 4 tasks per key between them."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from bridge.jobs import end_job
from bridge.models import Job, JobStatus, Tracking, new_id, utcnow
from bridge.store import Change, Store, open_store
from bridge.timings import Timings
from tests.conftest import Harness, Receiver, Sims, running_bridge
from tests.postgres import new_database

FOX = {"provider": "airforce", "model": "wan-2.6", "prompt": "A red fox", "duration_seconds": 5}


@pytest.fixture
def url() -> Iterator[str]:
    with new_database() as made:
        yield made


@contextlib.asynccontextmanager
async def stores(url: str, count: int) -> AsyncIterator[list[Store]]:
    """``count`` stores on one database, each with its own pool: as many processes."""
    opened: list[Store] = []
    try:
        for _ in range(count):
            store = await open_store(url)
            assert isinstance(store, Store)
            opened.append(store)
        await opened[0].ensure_tenant("acme", lambda: "whsec_acme")
        yield opened
    finally:
        for store in opened:
            await store.close()


def due_job(number: int) -> Job:
    now = utcnow()
    return Job(id=new_id("job"), tenant="acme", provider="infrai", model=None,
               status=JobStatus.RUNNING, tracking=Tracking.POLL,
               request={"provider": "infrai", "prompt": f"due {number}", "mode": "text"},
               created_at=now, updated_at=now, next_check_at=now - timedelta(seconds=1))


async def test_two_processes_claiming_the_same_due_jobs_never_share_one(url: str) -> None:
    async with stores(url, 2) as (first, second):
        jobs = [due_job(n) for n in range(200)]
        for job in jobs:
            await first.create_job(job, idempotency_window=0)
        claimed: list[list[str]] = [[], []]

        async def claim_all(store: Store, into: list[str]) -> None:
            while True:
                got = await store.claim_due_jobs(utcnow(), 7, 60)
                if not got:
                    return
                into.extend(job.id for job in got)

        await asyncio.gather(*(claim_all(store, into) for store, into in
                               ((first, claimed[0]), (second, claimed[1]),
                                (first, claimed[0]), (second, claimed[1]))))
    every = claimed[0] + claimed[1]
    assert sorted(every) == sorted(job.id for job in jobs)  # each exactly once
    assert claimed[0] and claimed[1]  # both took part


CLAIMER = """
import asyncio, sys
from bridge.models import utcnow
from bridge.store import Change, open_store
from bridge.timings import Timings

async def main():
    store = await open_store(sys.argv[1])
    jobs = await store.claim_due_jobs(utcnow(), 1000, float(sys.argv[2]))
    print(len(jobs), flush=True)
    await asyncio.sleep(3600)  # holds its leases until it is killed

asyncio.run(main())
"""


async def test_the_leases_of_a_killed_process_lapse_and_another_takes_the_work(
    url: str,
) -> None:
    lease = 3.0
    async with stores(url, 1) as (store,):
        jobs = [due_job(n) for n in range(20)]
        for job in jobs:
            await store.create_job(job, idempotency_window=0)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLAIMER, url, str(lease), stdout=asyncio.subprocess.PIPE)
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 20)
            assert int(line) == len(jobs)
            killed_at = time.monotonic()
            process.send_signal(signal.SIGKILL)
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert await store.claim_due_jobs(utcnow(), 100, 60) == []  # still leased
        taken: list[Job] = []
        while len(taken) < len(jobs):
            assert time.monotonic() - killed_at < lease + 10, "the leases never lapsed"
            taken += await store.claim_due_jobs(utcnow(), 100, 60)
            await asyncio.sleep(0.1)
        assert time.monotonic() - killed_at >= lease - 1.0  # not before the lease ran out
        assert sorted(job.id for job in taken) == sorted(job.id for job in jobs)


@contextlib.asynccontextmanager
async def two_bridges(tmp_path: Path, sims: Sims, url: str,
                      **second: str) -> AsyncIterator[tuple[Harness, Harness]]:
    """Two bridges on one database: ``api`` serves the API only (no workers), ``worker``
    runs the workers (with ``second``'s settings)."""
    common = {"BRIDGE_DATABASE": url, "BRIDGE_ALLOW_PRIVATE_TARGETS": "1"}
    async with running_bridge(tmp_path / "api", sims, BRIDGE_BACKGROUND="off",
                              **common) as api, \
            running_bridge(tmp_path / "worker", sims, **common, **second) as worker:
        yield api, worker


async def test_work_made_in_one_process_wakes_another_at_once(
    tmp_path: Path, sims: Sims, url: str, receiver: Receiver,
) -> None:
    idle = Timings().delivery_idle  # the deliverer's own

    async with two_bridges(tmp_path, sims, url) as (api, _worker):
        endpoint = await api.client.post("/v1/endpoints", json={
            "url": receiver.url + "/in", "events": ["endpoint.test"]})
        assert endpoint.status_code == 201, endpoint.text
        latencies = []
        for number in range(5):  # the test route's burst
            await asyncio.sleep(idle * 0.37 * (number % 3))  # anywhere in the idle wait
            sent = time.monotonic()
            answer = await api.client.post(f"/v1/endpoints/{endpoint.json()['id']}/test")
            assert answer.status_code in (200, 201, 202), answer.text
            await receiver.wait_for(lambda got, n=number: len(got) > n, seconds=10)
            latencies.append(receiver.received[-1].at - sent)
        median = statistics.median(latencies)
        print(f"endpoint.test made in the API process, sent by the worker process: "
              f"median {median * 1000:.0f} ms, worst {max(latencies) * 1000:.0f} ms "
              f"(the worker looks by itself every {idle * 1000:.0f} ms)")
        assert median < idle / 4

        started = time.monotonic()
        job = await api.create({**FOX, "prompt": "[sim:duration=0.3] a fox"})
        while (await api.job(job["id"]))["status"] == "queued":
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.01)
        submitted_after = time.monotonic() - started
        print(f"job made in the API process, submitted by the worker process after "
              f"{submitted_after * 1000:.0f} ms")
        assert submitted_after < 0.5  # the tracker's own look is every 500 ms


async def test_the_limit_of_four_airforce_tasks_holds_across_processes(
    tmp_path: Path, sims: Sims, url: str,
) -> None:
    def refused() -> float:
        value = REGISTRY.get_sample_value("bridge_provider_requests_total",
                                          {"provider": "airforce", "outcome": "rate_limited"})
        return value or 0.0

    before = refused()
    common = {"BRIDGE_DATABASE": url}
    async with running_bridge(tmp_path / "a", sims, **common) as first, \
            running_bridge(tmp_path / "b", sims, **common) as second:
        jobs = []
        for number in range(10):
            bridge = first if number % 2 else second
            jobs.append((bridge, await bridge.create(
                {**FOX, "prompt": f"[sim:duration=1] fox {number}"})))
        await asyncio.sleep(0.5)
        busy = [t for t in sims.apps["airforce"].state.jobs.values()
                if t.sim.phase(time.time()) in ("queued", "processing")]
        assert len(busy) <= 4
        for bridge, job in jobs:
            done = await bridge.wait(job["id"], hurry=False, seconds=40)
            assert done["status"] == "succeeded"
    assert sims.apps["airforce"].state.submissions == 10  # each once, none refused
    assert refused() == before


async def test_a_lost_connection_is_answered_with_503_and_then_recovers(
    tmp_path: Path, sims: Sims, url: str,
) -> None:
    import psycopg

    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=url) as harness:
        assert (await harness.client.get("/readyz")).status_code == 200
        scraped = (await harness.client.get("/metrics")).text
        for state in ("in_use", "idle"):
            assert f'bridge_database_connections{{state="{state}"}}' in scraped
        # Every connection of the bridge's pools ends, as in a failover.
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        answers = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            answer = await harness.client.get("/v1/jobs")
            answers.append(answer.status_code)
            if answer.status_code == 200 and (await harness.client.get("/readyz")).status_code \
                    == 200:
                break
            assert answer.status_code == 503, answer.text
            assert "retry-after" in answer.headers
            await asyncio.sleep(0.2)
        assert answers[-1] == 200, answers
        job = await harness.create({**FOX, "prompt": "[sim:duration=0.3] after"})
        assert (await harness.wait(job["id"]))["status"] == "succeeded"


def running_job(provider: str = "airforce", status: JobStatus = JobStatus.RUNNING,
                due_in: float | None = None) -> Job:
    now = utcnow()
    due = now + timedelta(seconds=due_in) if due_in is not None else None
    return Job(id=new_id("job"), tenant="acme", provider=provider, model="wan-2.6",
               status=status, tracking=Tracking.STREAM,
               request={"provider": provider, "prompt": "a fox", "mode": "text"},
               created_at=now, updated_at=now, next_check_at=due)


async def notified_jobs(url: str, store: Store,
                        work: Callable[[], Awaitable[object]]) -> int:
    """How many "jobs" NOTIFYs other processes hear while ``work`` runs: a marker NOTIFY
    sent once the store has announced its commits arrives after every one they sent."""
    import psycopg

    from bridge.store.postgres import NOTIFY_CHANNEL as CHANNEL

    await store.db.announced()  # what came before is not counted
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {CHANNEL}")
        await work()
        await store.db.announced()
        await listener.execute("SELECT pg_notify(%s, 'marker')", (CHANNEL,))
        heard = 0
        async with asyncio.timeout(10):
            async for notify in listener.notifies():
                if notify.payload == "marker":
                    return heard
                heard += notify.payload.startswith("jobs ")
    raise AssertionError("unreachable")


async def test_a_finished_job_wakes_other_processes_only_when_it_frees_a_waiting_job(
    url: str,
) -> None:
    # A NOTIFY serializes the commits of every process (PostgreSQL takes one lock for
    # it): a job ending with nobody waiting for its provider's slot sends none.
    async with stores(url, 1) as (store,):
        first, second = running_job(), running_job()
        for job in (first, second):
            await store.create_job(job, idempotency_window=0)

        def finish(job_id: str) -> Callable[[], Awaitable[object]]:
            return lambda: store.update_job(
                job_id, lambda job: end_job(job, JobStatus.SUCCEEDED, None, utcnow()))

        assert await notified_jobs(url, store, finish(first.id)) == 0
        waiting = running_job(status=JobStatus.QUEUED, due_in=5.0)  # waits for a slot
        await store.create_job(waiting, idempotency_window=0)
        assert await notified_jobs(url, store, finish(second.id)) == 1
        woken = await store.get_job(waiting.id)
        assert woken is not None and woken.next_check_at is not None
        assert woken.next_check_at <= utcnow()


async def test_batches_of_job_updates_in_two_processes_never_deadlock(url: str) -> None:
    # Each process commits the updates that arrive together in one transaction, locking
    # their rows in one order: two batches over the same jobs, in opposite orders, wait for
    # each other at most, and every job's events stay numbered 1, 2, 3, 4.
    async with stores(url, 2) as pair:
        jobs = [running_job() for _ in range(40)]
        for job in jobs:
            await pair[0].create_job(job, idempotency_window=0)

        def progress(current: Job) -> Change:
            return Change(current.evolve(updated_at=utcnow()), "job.progress")

        for _ in range(2):
            await asyncio.gather(*(
                store.update_job(job.id, progress)
                for store, order in zip(pair, (jobs, jobs[::-1]), strict=True)
                for job in order))
        for job in jobs:
            events = await pair[1].job_events(job.id)
            assert [event.data["sequence"] for event in events] == [1, 2, 3, 4]
        assert [store.db.races for store in pair] == [0, 0]
