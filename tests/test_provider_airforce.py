"""The api.airforce adapter, against the simulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from bridge.errors import InvalidRequest, ProviderError, SubmitOutcomeUnknown
from bridge.models import JobStatus, Tracking
from bridge.providers.airforce import AirforceProvider
from bridge.providers.base import (
    JobRequest,
    Provider,
    Snapshot,
    StreamingProvider,
    Submission,
    TrackedJob,
)
from bridge.serving import serve_in_background
from bridge.simulators.airforce import create_app
from bridge.simulators.base import SimSettings

KEY = "sk-air-test-key"
BASE = "https://api.airforce"

_: type[Provider] = AirforceProvider  # the adapter satisfies the Protocol (checked by mypy)


@pytest.fixture
def sim() -> Starlette:
    return create_app(SimSettings(api_key=KEY, duration=(0.2, 0.4), queue_delay=0.05, seed=3))


@pytest.fixture
async def client(sim: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim)) as c:
        yield c


@pytest.fixture
def provider(client: httpx.AsyncClient) -> AirforceProvider:
    return AirforceProvider(client, base_url=BASE, api_key=KEY)


def job(prompt: str = "a red fox", **fields: Any) -> TrackedJob:
    fields.setdefault("model", "wan-2.6")
    return TrackedJob(id="job_1", request=JobRequest(provider="airforce", prompt=prompt, **fields))


def tracked(submission: Submission, request: TrackedJob) -> TrackedJob:
    return TrackedJob(id=request.id, request=request.request,
                      provider_job_id=submission.provider_job_id,
                      provider_data=submission.provider_data)


async def run_to_end(provider: AirforceProvider, request: TrackedJob) -> list[Snapshot]:
    following = tracked(await provider.submit(request, callback_url=None), request)
    return await poll_to_end(provider, following)


async def poll_to_end(provider: AirforceProvider, following: TrackedJob) -> list[Snapshot]:
    seen: list[Snapshot] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        seen.append(await provider.status(following))
        if seen[-1].status.terminal:
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError("job did not end")


# -- shape ------------------------------------------------------------------------------------

def test_adapter_is_a_streaming_provider(provider: AirforceProvider) -> None:
    assert isinstance(provider, StreamingProvider)
    assert (provider.name, provider.tracking, provider.max_concurrent, provider.can_cancel) == (
        "airforce", Tracking.STREAM, 4, False)


async def test_list_models_keeps_only_video_models(provider: AirforceProvider) -> None:
    models = {model.id: model for model in await provider.list_models()}

    assert set(models) == {"wan-2.6", "kling-1"}
    wan = models["wan-2.6"]
    assert wan.price_per_second_usd == pytest.approx(0.40)
    assert (wan.min_duration_seconds, wan.max_duration_seconds) == (5, 10)
    assert wan.resolutions == ("480p", "720p", "1080p")
    assert models["kling-1"].modes == ("text", "image")


# -- check ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"mode": "first_last", "images": ("https://e.x/a.jpg", "https://e.x/b.jpg")}, "mode"),
        ({"model": None}, "model"),
        ({"mode": "image"}, "images"),
        ({"mode": "image", "images": ("https://e.x/a.jpg", "https://e.x/b.jpg")}, "images"),
        ({"mode": "reference", "images": ("ftp://e.x/a.jpg",)}, "images"),
        ({"mode": "reference", "images": ("data:image/png,rawbytes",)}, "images"),
    ],
)
def test_check_refuses_what_airforce_cannot_take(
    provider: AirforceProvider, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        provider.check(job(**fields).request, None)

    assert caught.value.field == field


def test_check_accepts_a_reference_job_with_url_and_data_images(
    provider: AirforceProvider,
) -> None:
    request = job(mode="reference", images=("https://e.x/a.jpg", "data:image/png;base64,iVBO"))

    provider.check(request.request, None)


# -- submit -----------------------------------------------------------------------------------

async def test_submit_translates_every_unified_field(
    provider: AirforceProvider, sim: Starlette
) -> None:
    request = job(
        mode="reference", duration_seconds=8, aspect_ratio="9:16", resolution="1080p",
        images=("https://example.com/style.jpg", "data:image/png;base64,iVBORw0KGgo="),
        negative_prompt="blur", seed=1234, audio=True, options={"watermark": False},
    )

    submission = await provider.submit(request, callback_url=None)

    assert sim.state.jobs[submission.provider_job_id].sim.body == {
        "model": "wan-2.6",
        "prompt": "a red fox",
        "mode": "reference",
        "duration_seconds": 8,
        "aspect_ratio": "9:16",
        "quality": "1080p",
        "input_images": [{"url": "https://example.com/style.jpg"},
                         {"b64_json": "iVBORw0KGgo="}],
        "negative_prompt": "blur",
        "seed": 1234,
        "sound": True,
        "watermark": False,
    }


async def test_submit_leaves_out_unset_fields(provider: AirforceProvider, sim: Starlette) -> None:
    submission = await provider.submit(job(), callback_url=None)

    assert sim.state.jobs[submission.provider_job_id].sim.body == {
        "model": "wan-2.6", "prompt": "a red fox", "mode": "text"}


async def test_options_override_translated_keys(
    provider: AirforceProvider, sim: Starlette
) -> None:
    submission = await provider.submit(job(resolution="720p", options={"quality": "480p"}),
                                       callback_url=None)

    assert sim.state.jobs[submission.provider_job_id].sim.body["quality"] == "480p"


async def test_submit_returns_the_task_with_estimate_and_expiry(
    provider: AirforceProvider,
) -> None:
    submission = await provider.submit(job(duration_seconds=8), callback_url=None)

    assert submission.snapshot.status is JobStatus.SUBMITTED
    assert submission.snapshot.progress == 0
    assert submission.estimated_cost_usd == pytest.approx(3.20)
    expires_at = submission.snapshot.expires_at
    assert expires_at is not None
    assert expires_at - datetime.now(UTC) > timedelta(hours=23, minutes=59)
    assert submission.provider_data["expires_at"] == int(expires_at.timestamp())


async def test_refused_request_is_a_final_provider_rejected_naming_the_field(
    provider: AirforceProvider,
) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.submit(job(duration_seconds=30), callback_url=None)

    error = caught.value
    assert (error.code, error.http_status, error.retryable) == ("provider_rejected", 400, False)
    assert "duration_seconds" in error.message


async def test_bad_key_is_provider_rejected_401_without_the_key(client: httpx.AsyncClient) -> None:
    provider = AirforceProvider(client, base_url=BASE, api_key="sk-air-wrong-secret")

    with pytest.raises(ProviderError) as caught:
        await provider.submit(job(), callback_url=None)

    error = caught.value
    assert (error.code, error.http_status, error.retryable) == ("provider_rejected", 401, False)
    assert "sk-air-wrong-secret" not in repr(error)


async def test_fifth_task_is_rate_limited_and_retryable(provider: AirforceProvider) -> None:
    for _ in range(4):
        await provider.submit(job("slow [sim:duration=2]"), callback_url=None)

    with pytest.raises(ProviderError) as caught:
        await provider.submit(job(), callback_url=None)

    error = caught.value
    assert (error.code, error.retryable, error.http_status) == ("rate_limited", True, 429)
    assert error.retry_after is not None and error.retry_after >= 1


async def test_scripted_429_keeps_its_retry_after(
    provider: AirforceProvider, sim: Starlette
) -> None:
    sim.state.faults.add("/v1/video/generations", status=429, retry_after=7)

    with pytest.raises(ProviderError) as caught:
        await provider.submit(job(), callback_url=None)

    assert (caught.value.code, caught.value.retryable, caught.value.retry_after) == (
        "rate_limited", True, 7.0)
    assert sim.state.submissions == 0


async def test_scripted_500_is_retryable_provider_unavailable(
    provider: AirforceProvider, sim: Starlette
) -> None:
    following = tracked(await provider.submit(job(), callback_url=None), job())
    sim.state.faults.add(r"/v1/video/tasks/", status=500)

    with pytest.raises(ProviderError) as caught:
        await provider.status(following)

    assert (caught.value.code, caught.value.retryable, caught.value.http_status) == (
        "provider_unavailable", True, 500)


async def test_cancel_is_refused(provider: AirforceProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.cancel(job())

    assert caught.value.code == "provider_rejected"


# -- status -----------------------------------------------------------------------------------

async def test_status_follows_a_job_to_succeeded(provider: AirforceProvider) -> None:
    seen = await run_to_end(provider, job(duration_seconds=8))

    statuses = [snapshot.status for snapshot in seen]
    assert statuses[0] in (JobStatus.SUBMITTED, JobStatus.RUNNING)
    assert JobStatus.RUNNING in statuses
    final = seen[-1]
    assert final.status is JobStatus.SUCCEEDED
    assert final.progress == 100
    assert final.video_url is not None and final.video_url.endswith(".mp4")
    assert final.cost_usd == pytest.approx(3.20)
    assert final.expires_at is not None
    assert final.provider_state == "completed"


async def test_failed_task_is_failed_generation_failed(provider: AirforceProvider) -> None:
    final = (await run_to_end(provider, job("x [sim:fail]")))[-1]

    assert final.status is JobStatus.FAILED
    assert final.error is not None
    assert final.error.code == "generation_failed"
    assert final.error.provider_code
    assert final.cost_usd == 0


async def test_violating_task_is_failed_content_violation(provider: AirforceProvider) -> None:
    final = (await run_to_end(provider, job("x [sim:violation]")))[-1]

    assert final.status is JobStatus.FAILED
    assert final.error is not None and final.error.code == "content_violation"


async def test_expired_task_is_expired(provider: AirforceProvider) -> None:
    final = (await run_to_end(provider, job("x [sim:expire]")))[-1]

    assert final.status is JobStatus.EXPIRED
    assert final.video_url is None


async def test_purged_task_past_its_expiry_is_expired(provider: AirforceProvider) -> None:
    gone = TrackedJob(id="job_1", request=job().request,
                      provider_job_id="f47ac10b-58cc-4372-a567-0e02b2c3d479",
                      provider_data={"expires_at": int(time.time()) - 10})

    snapshot = await provider.status(gone)

    assert snapshot.status is JobStatus.EXPIRED


async def test_unknown_task_is_a_final_error(provider: AirforceProvider) -> None:
    missing = TrackedJob(id="job_1", request=job().request,
                         provider_job_id="f47ac10b-58cc-4372-a567-0e02b2c3d479")

    with pytest.raises(ProviderError) as caught:
        await provider.status(missing)

    assert (caught.value.http_status, caught.value.retryable) == (404, False)


async def test_base_url_may_carry_the_v1_suffix(client: httpx.AsyncClient) -> None:
    provider = AirforceProvider(client, base_url=BASE + "/v1/", api_key=KEY)

    assert {model.id for model in await provider.list_models()} == {"wan-2.6", "kling-1"}


# -- stream (real sockets: ASGITransport buffers whole responses) -----------------------------

async def test_stream_yields_growing_progress_and_ends_succeeded(sim: Starlette) -> None:
    async with serve_in_background(sim) as base, httpx.AsyncClient(timeout=5) as client:
        provider = AirforceProvider(client, base_url=base, api_key=KEY)
        request = job("[sim:duration=0.6]")
        following = tracked(await provider.submit(request, callback_url=None), request)

        seen = [snapshot async for snapshot in provider.stream(following)]
        video_url = seen[-1].video_url
        assert video_url is not None
        video = await client.get(video_url)

    progress = [snapshot.progress or 0 for snapshot in seen]
    assert len(seen) >= 3
    assert progress == sorted(progress)
    assert JobStatus.RUNNING in {snapshot.status for snapshot in seen}
    assert seen[-1].status is JobStatus.SUCCEEDED
    assert video.headers["content-type"] == "video/mp4"


async def test_stream_that_drops_before_the_end_raises_a_retryable_error(sim: Starlette) -> None:
    sim.state.stream_cut_after = 2
    async with serve_in_background(sim) as base, httpx.AsyncClient(timeout=5) as client:
        provider = AirforceProvider(client, base_url=base, api_key=KEY)
        request = job("[sim:duration=1]")
        following = tracked(await provider.submit(request, callback_url=None), request)
        seen: list[Snapshot] = []

        with pytest.raises(ProviderError) as caught:
            async for snapshot in provider.stream(following):
                seen.append(snapshot)

    assert len(seen) == 2
    assert (caught.value.code, caught.value.retryable) == ("provider_unavailable", True)


async def test_stream_of_an_ended_task_yields_its_final_state(
    provider: AirforceProvider,
) -> None:
    request = job("x [sim:violation]")
    following = tracked(await provider.submit(request, callback_url=None), request)
    await poll_to_end(provider, following)

    seen = [snapshot async for snapshot in provider.stream(following)]

    assert [snapshot.status for snapshot in seen] == [JobStatus.FAILED]
    assert seen[0].error is not None and seen[0].error.code == "content_violation"


# -- unknown submit outcome -------------------------------------------------------------------

async def test_hung_submit_is_unknown_and_find_submission_finds_the_task(sim: Starlette) -> None:
    sim.state.faults.add("/v1/video/generations", method="POST", hang=True)
    async with serve_in_background(sim) as base, httpx.AsyncClient(timeout=0.5) as client:
        provider = AirforceProvider(client, base_url=base, api_key=KEY)
        request = job(duration_seconds=8)
        sent_at = datetime.now(UTC)

        with pytest.raises(SubmitOutcomeUnknown):
            await provider.submit(request, callback_url=None)
        found = await provider.find_submission(request, sent_at)

    assert sim.state.submissions == 1
    assert found is not None
    assert found.provider_job_id == next(iter(sim.state.jobs))
    assert found.estimated_cost_usd == pytest.approx(3.20)


async def test_accepted_submit_without_a_task_id_is_unknown(
    provider: AirforceProvider, sim: Starlette
) -> None:
    sim.state.faults.add("/v1/video/generations", status=200, body={"status": "queued"})

    with pytest.raises(SubmitOutcomeUnknown):
        await provider.submit(job(), callback_url=None)


async def test_find_submission_is_none_when_no_task_matches(provider: AirforceProvider) -> None:
    sent_at = datetime.now(UTC)
    await provider.submit(job(model="kling-1"), callback_url=None)  # another model
    await provider.submit(job(duration_seconds=10), callback_url=None)  # another duration

    assert await provider.find_submission(job(duration_seconds=8), sent_at) is None


async def test_find_submission_ignores_tasks_created_long_before(
    provider: AirforceProvider,
) -> None:
    await provider.submit(job(), callback_url=None)

    later = datetime.now(UTC) + timedelta(seconds=30)

    assert await provider.find_submission(job(), later) is None


async def test_find_submission_picks_the_one_task_created_around_the_send_time(
    provider: AirforceProvider, sim: Starlette
) -> None:
    first = await provider.submit(job(), callback_url=None)
    second = await provider.submit(job(), callback_url=None)
    sim.state.jobs[first.provider_job_id].created -= 60  # sent a minute earlier

    found = await provider.find_submission(job(), datetime.now(UTC))

    assert found is not None and found.provider_job_id == second.provider_job_id


async def test_find_submission_is_unknown_when_two_tasks_could_be_the_one(
    provider: AirforceProvider,
) -> None:
    # The list shows no prompt: the closer one in time may well be another job's task.
    sent_at = datetime.now(UTC)
    await provider.submit(job("a red fox"), callback_url=None)
    await provider.submit(job("a blue whale"), callback_url=None)

    with pytest.raises(SubmitOutcomeUnknown):
        await provider.find_submission(job("a red fox"), sent_at)


async def test_find_submission_that_cannot_list_is_retryable(
    provider: AirforceProvider, sim: Starlette
) -> None:
    sim.state.faults.add("/v1/video/tasks$", status=503)

    with pytest.raises(ProviderError) as caught:
        await provider.find_submission(job(), datetime.now(UTC))

    assert not isinstance(caught.value, SubmitOutcomeUnknown)
    assert (caught.value.code, caught.value.retryable) == ("provider_unavailable", True)


async def test_find_submission_is_unknown_when_newer_tasks_fill_the_history(
    provider: AirforceProvider,
) -> None:
    sent_at = datetime.now(UTC)
    for _ in range(25):  # 100 quick tasks of another model, 4 at a time
        for _ in range(4):
            await provider.submit(job("[sim:duration=0]", model="kling-1"), callback_url=None)
        await asyncio.sleep(0.06)

    with pytest.raises(SubmitOutcomeUnknown):
        await provider.find_submission(job(), sent_at)


async def test_stream_whose_connection_breaks_raises_a_retryable_error() -> None:
    event = b'event: state\ndata: {"task_id": "t1", "status": "processing", "progress": 12}\n\n'

    async def breaking_app(scope: Any, receive: Any, send: Any) -> None:
        # one event of a chunked answer, then the connection goes without its last chunk
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": event, "more_body": True})
        raise ConnectionAbortedError("simulated network failure")

    async with serve_in_background(breaking_app) as base, httpx.AsyncClient(timeout=5) as client:
        provider = AirforceProvider(client, base_url=base, api_key=KEY)
        following = TrackedJob(id="job_1", request=job().request, provider_job_id="t1")
        seen: list[Snapshot] = []

        with pytest.raises(ProviderError) as caught:
            async for snapshot in provider.stream(following):
                seen.append(snapshot)

    assert [snapshot.progress for snapshot in seen] == [12]
    assert (caught.value.code, caught.value.retryable) == ("provider_unavailable", True)
    assert "broke" in caught.value.message
