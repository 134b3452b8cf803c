"""Time the portal's pages with 10,000 jobs in the store.

    python bench/portal.py [--jobs 10000] [--requests 50]

Fills a fresh SQLite file through the store's own methods (jobs of every status and
provider, with their events; endpoints; endpoint.test deliveries), serves the bridge on a
loopback socket (no background workers: nothing changes while it is timed), signs in with a
magic link and times each page with httpx, one request at a time: the jobs list (plain,
filtered by status and provider, a later page, and searched by prompt words and by an event
id), a job's page, the endpoints with their health, an endpoint's page with its chart, the
deliveries (plain, filtered, and charted over 30 days) and the event catalog. Prints the
median and p95 of each and exits 1 when a median misses the target (100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

from bridge.app import create_app
from bridge.core import Bridge, new_signing_secret
from bridge.models import Endpoint, Event, Job, JobStatus, Tracking, new_id, utcnow
from bridge.portal.sessions import issue_link
from bridge.serving import bind, serve_in_background, url_of
from bridge.settings import PROVIDERS, Settings

TARGET_MS = 100.0
STATUSES = [JobStatus.SUCCEEDED] * 6 + [JobStatus.FAILED, JobStatus.RUNNING,
                                         JobStatus.CANCELED, JobStatus.QUEUED]


async def fill(bridge: Bridge, jobs: int) -> tuple[str, str, str]:
    """Jobs (every tenth with three events), 20 endpoints and 2,000 deliveries; answers a
    job with events, an endpoint and a job's event to time."""
    store = bridge.store
    start = utcnow() - timedelta(days=7)
    made: list[Job] = []
    for number in range(jobs):
        at = start + timedelta(seconds=number * 30)
        made.append(Job(
            id=new_id("job"), tenant="default", provider=PROVIDERS[number % 4],
            model="veo-3-1", status=STATUSES[number % len(STATUSES)], tracking=Tracking.POLL,
            request={"provider": PROVIDERS[number % 4], "prompt": f"bench job {number}",
                     "mode": "text"},
            created_at=at, updated_at=at, progress=100,
            result={"video_url": f"https://cdn.example.com/{number}.mp4"}))
    for first in range(0, jobs, 500):
        await asyncio.gather(*(store.create_job(job, idempotency_window=0)
                               for job in made[first:first + 500]))
    for job in made[::10]:
        for sequence in (1, 2, 3):
            event = Event(id=new_id("evt"), tenant="default", type="job.progress",
                          job_id=job.id, created_at=utcnow(),
                          data={**job.to_json(), "sequence": sequence})
            await store.add_event(event)
    oldest = Event(id=new_id("evt"), tenant="default", type="job.progress", job_id=made[0].id,
                   created_at=utcnow(), data={**made[0].to_json(), "sequence": 4})
    await store.add_event(oldest)  # the oldest job's: a search by its id finds it
    endpoints = []
    for number in range(20):
        endpoint = Endpoint(id=new_id("ep"), tenant="default",
                            url=f"https://hooks.example.com/{number}", events=None,
                            description=f"endpoint {number}", headers={},
                            secret=new_signing_secret(), created_at=utcnow())
        endpoints.append(await store.create_endpoint(endpoint))
    for number in range(2000):
        event = Event(id=new_id("evt"), tenant="default", type="endpoint.test", job_id=None,
                      created_at=utcnow(), data={"endpoint_id": endpoints[number % 20].id})
        await store.add_event(event, endpoint_id=endpoints[number % 20].id)
    return made[-10].id, endpoints[0].id, oldest.id


async def time_page(client: httpx.AsyncClient, path: str, requests: int) -> list[float]:
    for _ in range(5):  # warm the caches
        assert (await client.get(path)).status_code == 200, path
    spent = []
    for _ in range(requests):
        began = time.perf_counter()
        answer = await client.get(path)
        spent.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200, path
    return spent


async def main(jobs: int, requests: int) -> int:
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        sock = bind()
        settings = Settings.from_env({
            "BRIDGE_DATABASE": str(Path(tmp) / "bridge.db"),
            "BRIDGE_MEDIA_DIR": str(Path(tmp) / "media"), "BRIDGE_BACKGROUND": "off",
            "BRIDGE_PUBLIC_URL": url_of(sock), "BRIDGE_API_KEY": "brk_bench_portal_key"})
        app = create_app(settings)
        async with serve_in_background(app, sock=sock) as base:
            bridge: Bridge = app.state.bridge
            began = time.monotonic()
            job_id, endpoint_id, event_id = await fill(bridge, jobs)
            print(f"stored {jobs} jobs, 20 endpoints, 2000 deliveries in "
                  f"{time.monotonic() - began:.1f} s")
            link = await issue_link(bridge, "default")
            assert link is not None
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                assert (await client.get(link[0])).status_code == 303
                first = (await client.get("/portal")).text
                assert first.count('href="/portal/jobs/job_') == 25
                second = first.split("cursor=")[1].split('"')[0]
                failed = (await client.get("/portal?status=failed&provider=airforce")).text
                assert failed.count('href="/portal/jobs/job_') == 25
                found = (await client.get(f"/portal?q={event_id}")).text
                assert found.count('href="/portal/jobs/job_') == 1
                pages = {
                    "jobs list": "/portal",
                    "jobs, status=failed&provider=airforce":
                        "/portal?status=failed&provider=airforce",
                    "jobs, second page": f"/portal?cursor={second}",
                    "jobs, search 'bench job 42'": "/portal?q=bench+job+42",
                    "jobs, search an event id": f"/portal?q={event_id}",
                    "a job's page": f"/portal/jobs/{job_id}",
                    "endpoints": "/portal/endpoints",
                    "an endpoint's page": f"/portal/endpoints/{endpoint_id}",
                    "deliveries": "/portal/deliveries",
                    "deliveries, 30 days": "/portal/deliveries?range=30d",
                    "deliveries, one endpoint, pending":
                        f"/portal/deliveries?endpoint={endpoint_id}&outcome=pending",
                    "event catalog": "/portal/event-types",
                }
                print(f"{'page':<40} {'median ms':>10} {'p95 ms':>8}")
                missed = False
                for name, path in pages.items():
                    spent = sorted(await time_page(client, path, requests))
                    median = statistics.median(spent)
                    p95 = spent[max(0, round(len(spent) * 0.95) - 1)]
                    missed = missed or median > TARGET_MS
                    print(f"{name:<40} {median:>10.1f} {p95:>8.1f}")
    print(f"target: every median under {TARGET_MS:.0f} ms: {'MISSED' if missed else 'met'}")
    return 1 if missed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.jobs, args.requests)))
