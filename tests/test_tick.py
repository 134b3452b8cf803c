"""Serverless tick mode: with ``BRIDGE_BACKGROUND=off`` nothing moves until ``/v1/tick`` (or
``bridge tick``) runs a bounded round; overlapping ticks never do the same work twice."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook

from bridge.models import utcnow
from tests.conftest import Harness, Receiver, Sims, running_bridge

TICK = "tick-secret-for-tests"
OFF = {"BRIDGE_BACKGROUND": "off", "BRIDGE_TICK_SECRET": TICK,
       "BRIDGE_ALLOW_PRIVATE_TARGETS": "1", "BRIDGE_RETRY_SCHEDULE": "100ms,100ms"}
FOX = {"provider": "airforce", "model": "wan-2.6", "prompt": "A red fox [sim:duration=0.3]"}
FLYOVER = {"provider": "apixo", "model": "veo-3-1", "prompt": "A flyover [sim:duration=0.3]"}


async def tick(harness: Harness, method: str = "POST") -> dict[str, Any]:
    answer = await harness.client.request(method, "/v1/tick",
                                          headers={"Authorization": f"Bearer {TICK}"})
    assert answer.status_code == 200, answer.text
    counts: dict[str, Any] = answer.json()
    return counts


async def hurry(harness: Harness, job_ids: list[str]) -> None:
    """Make unfinished jobs due now, so a test does not sit out real polling intervals."""
    for job_id in job_ids:
        await harness.bridge.store.release_job(job_id, utcnow())


async def test_tick_is_404_without_a_secret_and_401_without_the_right_one(
    tmp_path: Path, sims: Sims, database: str,
) -> None:
    async with running_bridge(tmp_path / "a", sims, BRIDGE_DATABASE=database) as harness:
        assert (await harness.client.post("/v1/tick")).status_code == 404
    async with running_bridge(tmp_path / "b", sims, BRIDGE_DATABASE=database, **OFF) as harness:
        for headers in ({}, {"Authorization": "Bearer wrong-secret"},
                        {"Authorization": f"Basic {TICK}"}, {"X-API-Key": TICK}):
            answer = await harness.client.post("/v1/tick", headers={
                "Authorization": "", **headers})
            assert answer.status_code == 401, headers
            assert answer.json()["error"]["code"] == "unauthorized"
        assert TICK not in answer.text
        get = await tick(harness, "GET")  # as Vercel's cron calls it
        assert get["finished"] is True and get["jobs"] == 0 and get["deliveries"] == 0


async def test_work_moves_only_by_ticks_and_webhooks_are_sent_by_them(
    tmp_path: Path, sims: Sims, database: str, receiver: Receiver,
) -> None:
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database, **OFF) as harness:
        endpoint = (await harness.client.post("/v1/endpoints", json={
            "url": receiver.url + "/t", "events": ["job.submitted", "job.succeeded"]})).json()
        jobs = [await harness.create(FOX), await harness.create(FLYOVER)]
        await asyncio.sleep(0.5)
        assert sims.apps["airforce"].state.submissions == 0  # no worker runs
        first = await tick(harness)
        assert first["jobs"] >= 2 and first["finished"] is True
        assert sims.apps["airforce"].state.submissions == 1
        assert sims.apps["apixo"].state.submissions == 1
        for _ in range(60):
            states = [(await harness.job(job["id"]))["status"] for job in jobs]
            if states == ["succeeded", "succeeded"]:
                break
            await asyncio.sleep(0.2)
            await hurry(harness, [job["id"] for job in jobs])
            await tick(harness)
        assert states == ["succeeded", "succeeded"]
        await tick(harness)  # the last events' deliveries
        got = await receiver.wait_for(lambda g: sum(
            r.json["type"] == "job.succeeded" for r in g) == 2, seconds=5)
        for received in got:
            Webhook(endpoint["secret"]).verify(received.body, received.headers)


async def test_overlapping_ticks_never_do_the_same_work_twice(
    tmp_path: Path, sims: Sims, database: str, receiver: Receiver,
) -> None:
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database, **OFF) as harness:
        await harness.client.post("/v1/endpoints", json={
            "url": receiver.url + "/t", "events": ["job.submitted"]})
        jobs = [await harness.create({**FLYOVER, "prompt": f"flyover {i}"}) for i in range(12)]
        results = await asyncio.gather(*(tick(harness) for _ in range(4)))
        assert sum(r["jobs"] for r in results) >= 12
        assert sims.apps["apixo"].state.submissions == 12
        for _ in range(20):
            await asyncio.gather(*(tick(harness) for _ in range(4)))
            if len(receiver.received) >= 12:
                break
        await asyncio.sleep(0.3)
        ids = [r.headers["webhook-id"] for r in receiver.received]
        assert len(ids) == 12 and len(set(ids)) == 12  # each job.submitted sent once
        assert {r.json["data"]["id"] for r in receiver.received} == {j["id"] for j in jobs}


def test_bridge_tick_runs_one_round_and_prints_its_counts(tmp_path: Path) -> None:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env = {**keep, "BRIDGE_DATABASE": str(tmp_path / "b.db"),
           "BRIDGE_MEDIA_DIR": str(tmp_path / "media"), "BRIDGE_BACKGROUND": "off"}
    done = subprocess.run([sys.executable, "-m", "bridge.cli", "tick"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["jobs"] == 0 and counts["deliveries"] == 0 and counts["finished"] is True


async def test_a_slow_receiver_is_cut_at_the_ticks_deadline_and_retried_later(
    tmp_path: Path, sims: Sims, database: str, receiver: Receiver,
) -> None:
    receiver.default = (200, {}, 3.0)  # answers after 3 s
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database, **OFF) as harness:
        endpoint = (await harness.client.post("/v1/endpoints", json={
            "url": receiver.url + "/slow", "events": ["endpoint.test"]})).json()
        await harness.client.post(f"/v1/endpoints/{endpoint['id']}/test")
        counts = await harness.bridge.tick(budget=2.0)
        assert counts["deliveries"] == 1 and counts["finished"] is True
        attempts = (await harness.client.get(
            f"/v1/endpoints/{endpoint['id']}/deliveries")).json()["data"]
    assert [a["status"] for a in attempts] == ["pending", "failed"]  # newest first
    assert attempts[1]["error"].startswith("timed out after ")
    assert attempts[1]["duration_ms"] < 3000


async def test_a_tick_beside_a_running_worker_never_repeats_its_work(
    tmp_path: Path, sims: Sims, database: str, receiver: Receiver,
) -> None:
    on = {**OFF, "BRIDGE_BACKGROUND": "on"}
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database, **on) as harness:
        await harness.client.post("/v1/endpoints", json={
            "url": receiver.url + "/t", "events": ["job.submitted"]})
        jobs = [await harness.create({**FLYOVER, "prompt": f"flyover {i}"}) for i in range(10)]
        await asyncio.gather(*(tick(harness) for _ in range(3)))  # beside the workers
        await receiver.wait_for(lambda got: len(got) >= 10, seconds=15)
        await asyncio.gather(*(tick(harness) for _ in range(3)))
        await asyncio.sleep(0.5)
    assert sims.apps["apixo"].state.submissions == 10
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert {r.json["data"]["id"] for r in receiver.received} == {j["id"] for j in jobs}
