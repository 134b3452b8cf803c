"""Following jobs to the end: stream, poll, callback, queueing, never paying twice, expiry,
restarts and hosted media — the bridge and the simulators each on a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import httpx
import pytest

from bridge.signing import Signer
from tests.conftest import Harness, Sims, running_bridge

FOX = {"provider": "airforce", "model": "wan-2.6", "prompt": "A red fox darting across snowy hills",
       "duration_seconds": 8, "aspect_ratio": "16:9", "resolution": "720p"}
CITY = {"provider": "infrai", "prompt": "A timelapse of a city skyline at dusk",
        "duration_seconds": 5, "aspect_ratio": "16:9"}
FLYOVER = {"provider": "apixo", "model": "veo-3-1", "aspect_ratio": "16:9",
           "prompt": "A cinematic flyover of a futuristic city at sunrise"}
CANAL = {"provider": "venice", "model": "seedance-2-0-text-to-video", "duration_seconds": 5,
         "prompt": "Commerce being conducted in the city of Venice, Italy", "resolution": "720p"}


def types_of(harness: Harness, job_id: str) -> list[str]:
    return [e.type for e in harness.events if e.job_id == job_id]


# -- stream (api.airforce) -------------------------------------------------------------------


async def test_airforce_job_is_followed_by_stream_to_success(harness: Harness) -> None:
    job = await harness.create({**FOX, "prompt": "[sim:duration=1.5] fox"})
    done = await harness.wait(job["id"], hurry=False)
    assert done["status"] == "succeeded"
    assert done["tracking"] == "stream"
    assert done["result"]["video_url"].endswith(".mp4")
    # api.airforce: results are purged at expires_at = created + 24 h.
    assert done["result"]["expires_at"].endswith("Z")
    # wan-2.6 at 40 cents a second: estimated at submission, settled at the end.
    assert done["cost"] == {"estimated_usd": pytest.approx(8 * 0.4),
                            "usd": pytest.approx(8 * 0.4)}
    kinds = types_of(harness, job["id"])
    assert kinds[0] == "job.submitted"
    assert kinds[-1] == "job.succeeded"
    assert "job.running" in kinds


async def test_a_broken_stream_falls_back_to_polling_and_resumes(harness: Harness) -> None:
    sim = harness.sims.apps["airforce"]
    sim.state.faults.add(r"^/v1/video/tasks/[^/]+/stream$", status=500)  # the first stream
    job = await harness.create({**FOX, "prompt": "[sim:duration=2] fox"})
    done = await harness.wait(job["id"], hurry=False, seconds=10)
    assert done["status"] == "succeeded"
    assert sim.state.faults.take("GET", "/v1/video/tasks/x/stream") is None  # it was used
    # The fallback polls run 5-15 s apart: finishing in seconds means the stream resumed.
    assert done["progress"] == 100


async def test_expired_at_the_provider_ends_the_job_expired(harness: Harness) -> None:
    job = await harness.create({**FOX, "prompt": "[sim:expire] fox"})
    done = await harness.wait(job["id"], hurry=False)
    assert done["status"] == "expired"
    assert types_of(harness, job["id"])[-1] == "job.expired"


async def test_a_failed_task_fails_the_job_with_the_providers_reason(harness: Harness) -> None:
    job = await harness.create({**FOX, "prompt": "[sim:violation] fox"})
    done = await harness.wait(job["id"], hurry=False)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "content_violation"


# -- queueing (api.airforce: 4 tasks per key) ------------------------------------------------


async def test_the_fifth_airforce_job_waits_in_queued_until_a_slot_frees(harness: Harness) -> None:
    jobs = [await harness.create({**FOX, "prompt": f"[sim:duration=1.5] fox {n}"})
            for n in range(6)]
    await asyncio.sleep(0.8)
    statuses = [(await harness.job(j["id"]))["status"] for j in jobs]
    assert statuses.count("queued") == 2, statuses
    for job in jobs:
        assert (await harness.wait(job["id"], hurry=False, seconds=30))["status"] == "succeeded"
    sim = harness.sims.apps["airforce"]
    assert sim.state.submissions == 6  # every job submitted exactly once, none refused


async def test_a_429_on_submit_requeues_with_backoff(harness: Harness) -> None:
    sim = harness.sims.apps["airforce"]
    sim.state.faults.add(r"^/v1/video/generations$", method="POST", status=429, retry_after=1)
    job = await harness.create({**FOX, "prompt": "[sim:duration=0.5] fox"})
    await asyncio.sleep(0.5)
    assert (await harness.job(job["id"]))["status"] == "queued"
    done = await harness.wait(job["id"], hurry=False, seconds=20)
    assert done["status"] == "succeeded"
    assert sim.state.submissions == 1


# -- poll (infrai, Venice) -------------------------------------------------------------------


async def test_infrai_job_is_polled_to_success(harness: Harness) -> None:
    job = await harness.create(CITY)
    done = await harness.wait(job["id"])
    assert done["status"] == "succeeded"
    assert done["tracking"] == "poll"
    assert done["result"]["video_url"]
    assert done["result"]["expires_at"]


async def test_polling_backs_off_on_provider_errors_and_recovers(harness: Harness) -> None:
    sim = harness.sims.apps["infrai"]
    sim.state.faults.add(r"^/v1/video/status/", status=500, times=2)
    sim.state.faults.add(r"^/v1/video/status/", status=429, retry_after=1, times=1)
    job = await harness.create(CITY)
    done = await harness.wait(job["id"], seconds=20)
    assert done["status"] == "succeeded"


async def test_venice_bytes_are_hosted_and_served_with_range(harness: Harness) -> None:
    job = await harness.create(CANAL)
    done = await harness.wait(job["id"])
    assert done["status"] == "succeeded", done
    url = done["result"]["video_url"]
    assert url.startswith(harness.url + "/media/")
    async with httpx.AsyncClient() as anyone:  # media links need no API key
        whole = await anyone.get(url)
        part = await anyone.get(url, headers={"Range": "bytes=0-99"})
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.content[4:8] == b"ftyp"
    assert part.status_code == 206
    assert part.content == whole.content[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(whole.content)}"


async def test_a_tampered_media_token_answers_403_and_an_expired_one_404(
    harness: Harness,
) -> None:
    job = await harness.wait((await harness.create(CANAL))["id"])
    token = job["result"]["video_url"].rsplit("/", 1)[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert (await harness.client.get(f"/media/{tampered}")).status_code == 403
    expired = harness.bridge.signer.media_token(f"{job['id']}.mp4", 1000.0)
    answer = await harness.client.get(f"/media/{expired}")
    assert answer.status_code == 404
    forged = Signer("another-secret-key-entirely").media_token(f"{job['id']}.mp4", 4e9)
    assert (await harness.client.get(f"/media/{forged}")).status_code == 403


async def test_venice_consent_refusal_fails_with_the_policy_text(harness: Harness) -> None:
    job = await harness.create({
        "provider": "venice", "model": "seedance-2-0-image-to-video", "duration_seconds": 5,
        "mode": "image", "images": ["https://example.com/face.jpg"],
        "prompt": "[sim:faces] a portrait turning to smile"})
    done = await harness.wait(job["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "needs_consent"
    assert "policy_text" in str(done["error"]["details"])


async def test_venice_insufficient_balance_fails_with_insufficient_credit(
    harness: Harness,
) -> None:
    harness.sims.apps["venice"].state.balance_usd = 0.0
    done = await harness.wait((await harness.create(CANAL))["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "insufficient_credit"


# -- never pay twice -------------------------------------------------------------------------


async def test_a_lost_infrai_submit_is_resent_with_the_same_idempotency_key(
    tmp_path: Path, sims: Sims, database: str,
) -> None:
    sims.apps["infrai"].state.faults.add(r"^/v1/video/generate$", method="POST", hang=True)
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database) as harness:
        harness.bridge.http.timeout = httpx.Timeout(1.0)
        job = await harness.create(CITY)
        done = await harness.wait(job["id"], seconds=20)
    assert done["status"] == "succeeded"
    assert sims.apps["infrai"].state.submissions == 1


async def test_a_lost_airforce_submit_is_found_in_the_task_list(
    tmp_path: Path, sims: Sims, database: str,
) -> None:
    sims.apps["airforce"].state.faults.add(r"^/v1/video/generations$", method="POST", hang=True)
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database) as harness:
        harness.bridge.http.timeout = httpx.Timeout(1.0)
        job = await harness.create({**FOX, "prompt": "[sim:duration=1] fox"})
        done = await harness.wait(job["id"], seconds=20)
    assert done["status"] == "succeeded"
    assert sims.apps["airforce"].state.submissions == 1
    assert done["provider_job_id"] in sims.apps["airforce"].state.jobs


@pytest.mark.parametrize(("body", "path"), [(CANAL, r"^/api/v1/video/queue$"),
                                            (FLYOVER, r"^/api/v1/generateTask/")])
async def test_a_lost_submit_without_lookup_fails_rather_than_resubmit(
    tmp_path: Path, sims: Sims, database: str, body: dict[str, object], path: str,
) -> None:
    provider = str(body["provider"])
    sims.apps[provider].state.faults.add(path, method="POST", hang=True)
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database) as harness:
        harness.bridge.http.timeout = httpx.Timeout(1.0)
        done = await harness.wait((await harness.create(body))["id"], seconds=20)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "submit_outcome_unknown"
    assert sims.apps[provider].state.submissions == 1


# -- callback (apixo) ------------------------------------------------------------------------


async def test_apixo_job_finishes_by_callback(harness: Harness) -> None:
    job = await harness.create(FLYOVER)
    done = await harness.wait(job["id"], hurry=False)
    assert done["status"] == "succeeded"
    assert done["tracking"] == "callback"
    attempts = harness.sims.apps["apixo"].state.callback_attempts
    assert attempts == [(done["provider_job_id"], 200)]
    assert done["result"]["video_url"].endswith(".mp4")


async def test_a_bad_callback_token_answers_401(harness: Harness) -> None:
    answer = await harness.client.post("/callbacks/apixo/not-a-token", content=b"{}")
    assert answer.status_code == 401
    forged = Signer("another-secret-key-entirely").callback_token("apixo", "job_x")
    assert (await harness.client.post(f"/callbacks/apixo/{forged}", content=b"{}")
            ).status_code == 401
    job = await harness.create(FLYOVER)
    token = harness.bridge.signer.callback_token("apixo", job["id"])
    # A genuine token is still refused on another provider's path.
    assert (await harness.client.post(f"/callbacks/venice/{token}", content=b"{}")
            ).status_code == 401


async def test_a_callback_body_over_1_mib_answers_413(harness: Harness) -> None:
    job = await harness.create(FLYOVER)
    token = harness.bridge.signer.callback_token("apixo", job["id"])
    answer = await harness.client.post(f"/callbacks/apixo/{token}",
                                       content=b"x" * (1024 * 1024 + 1))
    assert answer.status_code == 413


async def test_a_callback_answers_like_every_route_json_errors_and_a_request_id(
    harness: Harness,
) -> None:
    refused = await harness.client.post("/callbacks/apixo/not-a-token", content=b"{}",
                                        headers={"X-Request-Id": "provider-call-7"})
    assert refused.status_code == 401
    assert refused.headers["x-request-id"] == "provider-call-7"
    assert refused.headers["content-type"] == "application/json"
    assert refused.json()["error"]["code"] == "unauthorized"
    job = await harness.create(FLYOVER)
    token = harness.bridge.signer.callback_token("apixo", job["id"])
    big = await harness.client.post(f"/callbacks/apixo/{token}",
                                    content=b"x" * (1024 * 1024 + 1))
    assert big.json()["error"]["code"] == "payload_too_large"
    assert big.headers["x-request-id"].startswith("req_")
    elsewhere = harness.bridge.signer.callback_token("nosuch", job["id"])
    unknown = await harness.client.post(f"/callbacks/nosuch/{elsewhere}", content=b"{}")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"


async def test_callback_paths_of_another_shape_get_the_routers_answers(
    harness: Harness,
) -> None:
    job = await harness.create(FLYOVER)
    token = harness.bridge.signer.callback_token("apixo", job["id"])
    wrong_method = await harness.client.get(f"/callbacks/apixo/{token}")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    for path in (f"/callbacks/apixo/{token}/more", "/callbacks/apixo", "/callbacks/apixo/",
                 "/callbacks//" + token):
        answer = await harness.client.post(path, content=b"{}")
        assert answer.status_code == 404, path
        assert answer.json()["error"]["code"] == "not_found"
        assert "x-request-id" in answer.headers


async def test_repeated_callbacks_are_harmless(harness: Harness) -> None:
    job = await harness.create(FLYOVER)
    done = await harness.wait(job["id"], hurry=False)
    url = harness.bridge.tracker.callback_url(
        await harness.bridge.store.get_job(job["id"]))  # type: ignore[arg-type]
    for _ in range(3):
        answer = await harness.client.post(url, content=b'{"code":200,"data":{}}')
        assert answer.status_code == 200
    assert types_of(harness, job["id"]).count("job.succeeded") == 1
    assert (await harness.job(job["id"]))["updated_at"] == done["updated_at"]


async def test_a_callback_is_confirmed_with_the_provider_before_it_is_trusted(
    harness: Harness,
) -> None:
    job = await harness.create({**FLYOVER, "prompt": "[sim:duration=60] slow flyover"})
    job = await harness.wait(job["id"], {"submitted", "running"}, hurry=False)
    url = harness.bridge.tracker.callback_url(
        await harness.bridge.store.get_job(job["id"]))  # type: ignore[arg-type]
    lie = {"code": 200, "message": "success", "data": {
        "taskId": job["provider_job_id"], "state": "success",
        "resultJson": json.dumps({"resultUrls": ["https://evil.example/x.mp4"]})}}
    answer = await harness.client.post(url, json=lie)
    assert answer.status_code == 200
    assert (await harness.job(job["id"]))["status"] in ("submitted", "running")


async def test_without_confirmation_the_callback_body_is_used(
    tmp_path: Path, sims: Sims, database: str,
) -> None:
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database,
                              BRIDGE_CONFIRM_CALLBACKS="0") as harness:
        done = await harness.wait((await harness.create(FLYOVER))["id"], hurry=False)
    assert done["status"] == "succeeded"
    assert done["result"]["video_url"].endswith(".mp4")


async def test_a_lost_callback_is_caught_by_the_safety_net_poll(
    tmp_path: Path, sims: Sims, database: str,
) -> None:
    # Callbacks go to a public URL where nothing listens: the safety-net poll must find it.
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database,
                              BRIDGE_PUBLIC_URL="http://127.0.0.1:9") as harness:
        job = await harness.create(FLYOVER)
        await asyncio.sleep(1.5)  # the task is done at the provider; no callback arrived
        stored = await harness.bridge.store.get_job(job["id"])
        assert stored is not None and stored.next_check_at is not None  # the safety net
        done = await harness.wait(job["id"])
    assert done["status"] == "succeeded"
    assert all(code != 200 for _, code in sims.apps["apixo"].state.callback_attempts)


# -- restart ---------------------------------------------------------------------------------


async def test_after_a_restart_every_unfinished_job_is_followed_again(
    tmp_path: Path, sims: Sims, database: str,
) -> None:
    bodies = [{**FOX, "prompt": "[sim:duration=2] fox"}, {**CITY, "prompt": "[sim:duration=2] c"},
              {**FLYOVER, "prompt": "[sim:duration=2] f"},
              {**CANAL, "prompt": "[sim:duration=2] v"}]
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database,
                              BRIDGE_CONFIRM_CALLBACKS="1") as first:
        ids = [(await first.create(body))["id"] for body in bodies]
        for job_id in ids:
            await first.wait(job_id, {"submitted", "running"}, hurry=False)
    await asyncio.sleep(2.5)  # every task finishes at its provider while the bridge is down
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database) as second:
        for job_id in ids:
            done = await second.wait(job_id, seconds=30)
            assert done["status"] == "succeeded", done
    for name in ("airforce", "infrai", "apixo", "venice"):
        assert sims.apps[name].state.submissions == 1


async def test_the_tracker_stops_even_when_woken_as_it_is_stopped(tmp_path: Path) -> None:
    from bridge.store import open_store
    from bridge.tracking import Tracker

    store = await open_store(str(tmp_path / "bridge.db"))
    try:
        for _ in range(100):
            tracker = Tracker(store, {}, Signer("k" * 32), public_url="http://127.0.0.1:1",
                              media_link=lambda name: ("", None))
            await tracker.start()
            await asyncio.sleep(0.03)  # past the claim: it is waiting for a wake now
            tracker.wake()  # the wake and the cancel land in the same turn of the loop
            stopping = asyncio.create_task(tracker.stop())
            done, _ = await asyncio.wait({stopping}, timeout=3)
            if not done:  # its loop went on past the cancel: end it (with stop()), then fail
                stopping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stopping
                pytest.fail("the tracker did not stop")
            assert not tracker.running
    finally:
        await store.close()
