"""Provider callbacks: one ordinary route, one status call per job at a time however many
callbacks come together, and a token that expires a while after its job ends — the bridge and
the apixo simulator each on a real socket."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.signing import Signer
from bridge.timings import Timings
from tests.conftest import API_KEY, SQLITE_ONLY, Harness, Sims, running_bridge

FLYOVER = {"provider": "apixo", "model": "veo-3-1", "aspect_ratio": "16:9",
           "prompt": "A cinematic flyover of a futuristic city at sunrise"}
# Where the simulator's own callbacks go unanswered, so that the test sends every one.
NOWHERE = "http://127.0.0.1:9"
RUNNING = {"submitted", "running"}


async def call_back(harness: Harness, job_id: str, task_id: str) -> httpx.Response:
    """What apixo POSTs to the job's callback URL: its status envelope as the task stands."""
    apixo = harness.sims.apps["apixo"]
    body = {"code": 200, "message": "success", "data": apixo.state.jobs[task_id].data()}
    token = harness.bridge.signer.callback_token("apixo", job_id)
    return await harness.client.post(f"/callbacks/apixo/{token}", json=body)


async def until_done_at_the_provider(harness: Harness, task_id: str) -> None:
    task = harness.sims.apps["apixo"].state.jobs[task_id]
    await asyncio.sleep(max(0.0, task.sim.done_at - time.time()) + 0.05)


def event_types(harness: Harness, job_id: str) -> list[str]:
    return [e.type for e in harness.events if e.job_id == job_id]


@pytest.mark.parametrize("late", [0.8])  # how long the status answer takes: the burst's window
async def test_concurrent_callbacks_for_one_job_share_one_status_call(
    tmp_path: Path, sims: Sims, database: str, late: float,
) -> None:
    apixo = sims.apps["apixo"]
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database,
                              BRIDGE_PUBLIC_URL=NOWHERE) as harness:
        job = await harness.create({**FLYOVER, "prompt": "[sim:duration=2] flyover"})
        job = await harness.wait(job["id"], RUNNING, hurry=False)
        task_id = job["provider_job_id"]

        async def burst(size: int = 20) -> tuple[int, list[httpx.Response]]:
            """``size`` callbacks at once while the status answer is late; the status calls
            they made and their answers."""
            before = apixo.state.status_calls[task_id]
            apixo.state.faults.add(r"^/api/v1/statusTask/", delay=late)
            answers = await asyncio.gather(*(call_back(harness, job["id"], task_id)
                                             for _ in range(size)))
            apixo.state.faults.clear()
            return apixo.state.status_calls[task_id] - before, list(answers)

        calls, answers = await burst()
        assert calls == 1
        assert [(a.status_code, a.json()) for a in answers] == [(200, {"received": True})] * 20
        assert (await harness.job(job["id"]))["status"] in RUNNING  # the answer it shared

        await until_done_at_the_provider(harness, task_id)
        calls, answers = await burst()
        assert calls == 1  # a confirmation of its own: the one before was over
        assert [(a.status_code, a.json()) for a in answers] == [(200, {"received": True})] * 20
        done = await harness.job(job["id"])
        assert done["status"] == "succeeded"
        assert done["result"]["video_url"].endswith(f"/files/{task_id}.mp4")
        assert event_types(harness, job["id"]).count("job.succeeded") == 1

        before = apixo.state.status_calls[task_id]
        assert (await call_back(harness, job["id"], task_id)).status_code == 200
        assert apixo.state.status_calls[task_id] == before  # final: nothing to ask


async def test_a_status_call_that_fails_fails_alike_for_every_callback_sharing_it(
    tmp_path: Path, sims: Sims, database: str,
) -> None:
    apixo = sims.apps["apixo"]
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database,
                              BRIDGE_PUBLIC_URL=NOWHERE) as harness:
        job = await harness.create({**FLYOVER, "prompt": "[sim:duration=0.3] flyover"})
        job = await harness.wait(job["id"], RUNNING, hurry=False)
        task_id = job["provider_job_id"]
        await until_done_at_the_provider(harness, task_id)
        apixo.state.faults.add(r"^/api/v1/statusTask/", status=500, delay=0.8)
        answers = await asyncio.gather(*(call_back(harness, job["id"], task_id)
                                         for _ in range(10)))
        # Unconfirmed, so not trusted: each is received, and the job is polled soon.
        assert [a.status_code for a in answers] == [200] * 10
        assert apixo.state.faults.take("GET", "/api/v1/statusTask/veo-3-1") is None  # asked
        assert apixo.state.status_calls[task_id] == 0  # once: no other status call came
        assert (await harness.job(job["id"]))["status"] in RUNNING
        stored = await harness.bridge.store.get_job(job["id"])
        assert stored is not None and stored.next_check_at is not None
        assert stored.next_check_at.timestamp() < time.time() + 10


@pytest.mark.parametrize("confirm", ["1", "0"])
@pytest.mark.parametrize("ttl", [1.0])  # Timings.callback_token_ttl: a day in service
async def test_a_callback_token_expires_its_ttl_after_the_job_ends(
    tmp_path: Path, sims: Sims, database: str, confirm: str, ttl: float,
) -> None:
    async with running_bridge(tmp_path, sims, Timings(callback_token_ttl=ttl),
                              BRIDGE_DATABASE=database, BRIDGE_PUBLIC_URL=NOWHERE,
                              BRIDGE_CONFIRM_CALLBACKS=confirm) as harness:
        job = await harness.create({**FLYOVER, "prompt": "[sim:duration=3] flyover"})
        job = await harness.wait(job["id"], RUNNING, hurry=False)
        task_id = job["provider_job_id"]
        await asyncio.sleep(ttl)
        # Older than the ttl but not finished: the token holds.
        assert (await call_back(harness, job["id"], task_id)).status_code == 200
        assert (await harness.job(job["id"]))["status"] in RUNNING

        await until_done_at_the_provider(harness, task_id)
        assert (await call_back(harness, job["id"], task_id)).status_code == 200
        assert (await harness.job(job["id"]))["status"] == "succeeded"
        repeat = await call_back(harness, job["id"], task_id)
        assert repeat.status_code == 200  # a repeat within the ttl is harmless

        await asyncio.sleep(ttl)
        expired = await call_back(harness, job["id"], task_id)
        assert expired.status_code == 401
        assert expired.headers["content-type"] == "application/json"
        error = expired.json()["error"]
        assert error["code"] == "unauthorized"
        assert "expired" in error["message"]
        assert event_types(harness, job["id"]).count("job.succeeded") == 1


@SQLITE_ONLY  # no store is involved
@pytest.mark.parametrize("route", ["/v1/jobs", "/callbacks/apixo/{token}"])
async def test_a_client_that_hangs_up_mid_body_is_logged_499_not_as_an_error(
    harness: Harness, caplog: pytest.LogCaptureFixture, route: str,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    path = route.format(token=harness.bridge.signer.callback_token("apixo", "job_gone"))
    host, port = harness.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {API_KEY}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())
        await asyncio.sleep(0.2)
    deadline = time.monotonic() + 5
    lines: list[Any] = []
    while not lines and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        lines = [r for r in caplog.records if r.name == "bridge.access"
                 and getattr(r, "route", None) == route.replace("apixo", "{provider}")]
    assert [line.status for line in lines] == [499]  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@SQLITE_ONLY
async def test_a_forged_token_is_refused_before_the_body_is_read(harness: Harness) -> None:
    forged = Signer("another-secret-key-entirely").callback_token("apixo", "job_x")
    answer = await harness.client.post(f"/callbacks/apixo/{forged}", content=b"not json")
    assert answer.status_code == 401
    assert answer.json()["error"] == {"code": "unauthorized", "message": "invalid callback token"}


@SQLITE_ONLY
async def test_a_callback_passes_the_middleware_of_every_route(harness: Harness) -> None:
    # NulPaths, like for every route: a path holding a NUL character names nothing.
    token = harness.bridge.signer.callback_token("apixo", "job_x")
    for path in (f"/callbacks/apixo/{token}%00", "/v1/jobs/job_%00"):
        answer = await harness.client.post(path, content=b"{}")
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found"), path
        assert answer.headers["x-request-id"].startswith("req_")
