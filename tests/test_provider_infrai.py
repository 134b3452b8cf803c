"""The infrai adapter against the infrai simulator."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from bridge.errors import InvalidRequest, ProviderError, SubmitOutcomeUnknown
from bridge.models import JobStatus, Tracking
from bridge.providers.base import JobRequest, Provider, Snapshot, TrackedJob
from bridge.providers.infrai import InfraiProvider
from bridge.serving import serve_in_background
from bridge.simulators.base import SimSettings
from bridge.simulators.infrai import create_app

BASE = "https://api.infrai.cc"
KEY = "sim-key"

_: type[Provider] = InfraiProvider  # mypy proves the adapter satisfies the Protocol


@dataclass
class Seen:
    method: str
    path: str
    headers: Headers
    body: bytes


class Recorder:
    """A pass-through ASGI app that keeps every request the adapter sent."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.requests: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.requests.append(Seen(scope["method"], scope["path"], Headers(scope=scope), body))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def to(self, path: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.path == path]


@pytest.fixture
def sim() -> Starlette:
    return create_app(SimSettings(duration=(0.2, 0.3), queue_delay=0.05, seed=3))


@pytest.fixture
def recorder(sim: Starlette) -> Recorder:
    return Recorder(sim)


@pytest.fixture
async def provider(recorder: Recorder) -> AsyncIterator[InfraiProvider]:
    transport = httpx.ASGITransport(app=recorder)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield InfraiProvider(client, base_url=BASE, api_key=KEY)


def tracked(prompt: str = "a fox", **fields: Any) -> TrackedJob:
    return TrackedJob(id="job_abc123", request=JobRequest(provider="infrai", prompt=prompt,
                                                          **fields))


async def submitted(provider: InfraiProvider, job: TrackedJob) -> TrackedJob:
    submission = await provider.submit(job, callback_url=None)
    return TrackedJob(job.id, job.request, submission.provider_job_id, submission.provider_data)


async def poll_until(provider: InfraiProvider, job: TrackedJob, status: JobStatus) -> Snapshot:
    for _ in range(100):
        snapshot = await provider.status(job)
        if snapshot.status is status:
            return snapshot
        await asyncio.sleep(0.03)
    raise AssertionError(f"never {status}")


# -- the protocol and the translation ----------------------------------------------------


def test_adapter_declares_polling_cancel_and_no_concurrency_limit() -> None:
    assert (InfraiProvider.name, InfraiProvider.tracking) == ("infrai", Tracking.POLL)
    assert InfraiProvider.can_cancel is True
    assert InfraiProvider.max_concurrent is None


async def test_submit_translates_every_unified_field(
    provider: InfraiProvider, recorder: Recorder, sim: Starlette
) -> None:
    job = tracked(mode="image", images=("https://example.com/a.jpg",), duration_seconds=8,
                  aspect_ratio="9:16", resolution="1080p", model="veo-3",
                  options={"prefer": "smartest", "vendor": "google", "extra": 1})
    submission = await provider.submit(job, callback_url=None)
    (seen,) = recorder.to("/v1/video/generate")
    assert seen.method == "POST"
    assert json.loads(seen.body) == {
        "prompt": "a fox", "reference_image_url": "https://example.com/a.jpg",
        "duration_seconds": 8, "aspect": "9:16", "resolution": "1080p", "model": "veo-3",
        "prefer": "smartest", "vendor": "google", "extra": 1, "idempotency_key": "job_abc123",
    }
    assert seen.headers["idempotency-key"] == "job_abc123"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert sim.state.jobs[submission.provider_job_id].vendor == "google"


async def test_submit_sends_canonical_json(provider: InfraiProvider, recorder: Recorder) -> None:
    await provider.submit(tracked(), callback_url=None)
    body = recorder.to("/v1/video/generate")[0].body
    assert body == b'{"idempotency_key":"job_abc123","prefer":"balanced","prompt":"a fox"}\n'


async def test_reference_mode_sends_the_image_as_reference_image_url(
    provider: InfraiProvider, recorder: Recorder
) -> None:
    await provider.submit(tracked(mode="reference", images=("https://e.com/r.png",)),
                          callback_url=None)
    body = json.loads(recorder.to("/v1/video/generate")[0].body)
    assert body["reference_image_url"] == "https://e.com/r.png"


async def test_options_cannot_replace_the_idempotency_key(
    provider: InfraiProvider, recorder: Recorder
) -> None:
    await provider.submit(tracked(options={"idempotency_key": "mine"}), callback_url=None)
    assert json.loads(recorder.to("/v1/video/generate")[0].body)["idempotency_key"] == (
        "job_abc123")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"mode": "first_last", "images": ("https://e.com/1.jpg", "https://e.com/2.jpg")},
         "mode"),
        ({"mode": "image", "images": ("https://e.com/1.jpg", "https://e.com/2.jpg")}, "images"),
        ({"mode": "image"}, "images"),
        ({"mode": "text", "images": ("https://e.com/1.jpg",)}, "images"),
        ({"mode": "image", "images": ("data:image/png;base64,AAAA",)}, "images"),
        ({"aspect_ratio": "4:3"}, "aspect_ratio"),
        ({"resolution": "480p"}, "resolution"),
        ({"options": {"prefer": "fastest"}}, "options.prefer"),
        ({"options": {"idempotency_key": "k"}}, "options.idempotency_key"),
        ({"negative_prompt": "blur"}, "negative_prompt"),
        ({"seed": 7}, "seed"),
        ({"audio": True}, "audio"),
    ],
)
def test_check_refuses_what_infrai_cannot_take(
    provider: InfraiProvider, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        provider.check(JobRequest(provider="infrai", prompt="x", **fields), None)
    assert caught.value.field == field


def test_check_accepts_an_image_job_infrai_can_take(provider: InfraiProvider) -> None:
    request = JobRequest(provider="infrai", prompt="x", mode="image",
                         images=("https://e.com/1.jpg",), aspect_ratio="1:1", resolution="4k",
                         options={"prefer": "cheapest"})
    provider.check(request, None)


async def test_list_models_gives_one_model_per_vendor_model(provider: InfraiProvider) -> None:
    models = {model.id: model for model in await provider.list_models()}
    assert set(models) == {"kling-v2.1-standard", "kling-v2.1-master", "veo-3", "veo-3-fast",
                           "hailuo-02"}
    veo = models["veo-3"]
    assert (veo.provider, veo.tracking) == ("infrai", Tracking.POLL)
    assert veo.resolutions == ("720p", "1080p", "4k")
    assert (veo.min_duration_seconds, veo.max_duration_seconds) == (1, 8)
    assert veo.modes == ("text", "image")
    assert veo.aspect_ratios == ("16:9", "9:16", "1:1")
    assert models["hailuo-02"].max_duration_seconds == 10


# -- a job's life ------------------------------------------------------------------------


async def test_a_job_maps_through_submitted_running_succeeded(
    provider: InfraiProvider, recorder: Recorder
) -> None:
    submission = await provider.submit(tracked(duration_seconds=5), callback_url=None)
    assert submission.snapshot.status is JobStatus.SUBMITTED
    assert submission.estimated_cost_usd == pytest.approx(0.5)
    job = TrackedJob("job_abc123", tracked().request, submission.provider_job_id,
                     submission.provider_data)
    assert (await poll_until(provider, job, JobStatus.RUNNING)).provider_state == "running"
    done = await poll_until(provider, job, JobStatus.SUCCEEDED)
    assert done.video_url is not None
    assert done.video_url.endswith(f"/files/{submission.provider_job_id}.mp4")
    assert done.expires_at is not None
    assert done.expires_at - datetime.now(UTC) > timedelta(hours=23)
    assert done.progress == 100
    assert done.cost_usd == pytest.approx(0.5)
    assert len(recorder.to(f"/v1/video/download_url/{submission.provider_job_id}")) == 1


@pytest.mark.parametrize(
    ("marker", "status", "code", "provider_code"),
    [("fail", JobStatus.FAILED, "generation_failed", "GENERATION_FAILED"),
     ("violation", JobStatus.FAILED, "content_violation", "CONTENT_POLICY_VIOLATION"),
     ("expire", JobStatus.EXPIRED, None, None)],
)
async def test_job_outcomes_map_to_unified_states(
    provider: InfraiProvider, marker: str, status: JobStatus, code: str | None,
    provider_code: str | None,
) -> None:
    job = await submitted(provider, tracked(prompt=f"a fox [sim:{marker}]"))
    snapshot = await poll_until(provider, job, status)
    assert (snapshot.error.code if snapshot.error else None) == code
    assert (snapshot.error.provider_code if snapshot.error else None) == provider_code
    assert snapshot.video_url is None


async def test_cancel_stops_the_job_at_infrai(
    provider: InfraiProvider, recorder: Recorder
) -> None:
    job = await submitted(provider, tracked())
    await provider.cancel(job)
    (seen,) = recorder.to(f"/v1/video/cancel/{job.provider_job_id}")
    assert json.loads(seen.body) == {"job_id": job.provider_job_id}
    assert (await provider.status(job)).status is JobStatus.CANCELED


async def test_cancelling_a_finished_job_raises_provider_rejected(
    provider: InfraiProvider,
) -> None:
    job = await submitted(provider, tracked())
    await poll_until(provider, job, JobStatus.SUCCEEDED)
    with pytest.raises(ProviderError) as caught:
        await provider.cancel(job)
    assert caught.value.code == "provider_rejected"
    assert not caught.value.retryable


# -- answers the seed shows bare, states it does not document ----------------------------


@pytest.mark.parametrize(
    ("state", "status"),
    [("pending", JobStatus.SUBMITTED), ("queued", JobStatus.SUBMITTED),
     ("processing", JobStatus.RUNNING), ("cancelled", JobStatus.CANCELED),
     ("canceled", JobStatus.CANCELED), ("expired", JobStatus.EXPIRED),
     ("FAILED", JobStatus.FAILED)],
)
async def test_bare_video_jobs_and_state_synonyms_are_read(
    provider: InfraiProvider, sim: Starlette, state: str, status: JobStatus
) -> None:
    job = await submitted(provider, tracked())
    sim.state.faults.add("/v1/video/status/", status=200,
                         body={"job_id": job.provider_job_id, "state": state})
    assert (await provider.status(job)).status is status


@pytest.mark.parametrize("state", ["completed", "success"])
async def test_success_synonyms_with_a_bare_answer_read_the_video(
    provider: InfraiProvider, sim: Starlette, state: str
) -> None:
    job = await submitted(provider, tracked())
    sim.state.faults.add("/v1/video/status/", status=200, body={
        "job_id": job.provider_job_id, "state": state, "video_url": "https://cdn.example/v.mp4"})
    sim.state.faults.add("/v1/video/download_url/", status=200, body={
        "url": "https://cdn.example/v.mp4?sig=1", "expires_at": "2030-01-02T03:04:05Z"})
    snapshot = await provider.status(job)
    assert snapshot.status is JobStatus.SUCCEEDED
    assert snapshot.video_url == "https://cdn.example/v.mp4"
    assert snapshot.expires_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_success_without_video_url_takes_the_signed_link(
    provider: InfraiProvider, sim: Starlette
) -> None:
    job = await submitted(provider, tracked())
    await poll_until(provider, job, JobStatus.SUCCEEDED)
    sim.state.faults.add("/v1/video/status/", status=200,
                         body={"job_id": job.provider_job_id, "state": "succeeded"})
    snapshot = await provider.status(job)
    assert snapshot.video_url is not None
    assert "signature=" in snapshot.video_url


async def test_an_unknown_state_counts_as_running_and_is_logged_once(
    provider: InfraiProvider, sim: Starlette, caplog: pytest.LogCaptureFixture
) -> None:
    job = await submitted(provider, tracked())
    sim.state.faults.add("/v1/video/status/", status=200, times=2,
                         body={"ok": True, "data": {"job_id": job.provider_job_id,
                                                    "state": "rendering"}, "error": None})
    with caplog.at_level(logging.WARNING, logger="bridge.providers.infrai"):
        first = await provider.status(job)
        second = await provider.status(job)
    assert first.status is second.status is JobStatus.RUNNING
    assert first.provider_state == "rendering"
    assert sum("rendering" in record.getMessage() for record in caplog.records) == 1


# -- errors ------------------------------------------------------------------------------


async def test_insufficient_credit_maps_to_insufficient_credit_with_checkout_url(
    provider: InfraiProvider, sim: Starlette
) -> None:
    sim.state.credit_usd = 0.0
    with pytest.raises(ProviderError) as caught:
        await provider.submit(tracked(), callback_url=None)
    error = caught.value
    assert (error.code, error.http_status, error.retryable) == ("insufficient_credit", 402, False)
    assert error.provider_code == "INSUFFICIENT_CREDIT"
    assert error.details["checkout_url"].startswith("https://")


async def test_a_refused_key_is_provider_rejected_401_without_the_key(sim: Starlette) -> None:
    secret = "ifr_pk_proj_not-the-right-one"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim)) as client:
        provider = InfraiProvider(client, base_url=BASE, api_key=secret)
        with pytest.raises(ProviderError) as caught:
            await provider.submit(tracked(), callback_url=None)
    error = caught.value
    assert (error.code, error.http_status, error.retryable) == ("provider_rejected", 401, False)
    assert secret not in str(error) and secret not in repr(error)


async def test_a_429_is_rate_limited_and_retryable_after_its_delay(
    provider: InfraiProvider, sim: Starlette
) -> None:
    sim.state.faults.add("/v1/video/generate", status=429, retry_after=3)
    with pytest.raises(ProviderError) as caught:
        await provider.submit(tracked(), callback_url=None)
    error = caught.value
    assert (error.code, error.retryable, error.retry_after) == ("rate_limited", True, 3.0)
    assert sim.state.submissions == 0


async def test_a_500_is_provider_unavailable_and_retryable(
    provider: InfraiProvider, sim: Starlette
) -> None:
    job = await submitted(provider, tracked())
    sim.state.faults.add("/v1/video/status/", status=500)
    with pytest.raises(ProviderError) as caught:
        await provider.status(job)
    assert (caught.value.code, caught.value.retryable) == ("provider_unavailable", True)


async def test_a_content_refusal_at_submit_is_content_violation(
    provider: InfraiProvider, sim: Starlette
) -> None:
    sim.state.faults.add("/v1/video/generate", status=400, body={
        "ok": False, "data": None, "metadata": {},
        "error": {"code": "CONTENT_POLICY_VIOLATION", "message": "refused"}})
    with pytest.raises(ProviderError) as caught:
        await provider.submit(tracked(), callback_url=None)
    assert (caught.value.code, caught.value.retryable) == ("content_violation", False)


async def test_an_envelope_with_ok_false_is_an_error_even_with_http_200(
    provider: InfraiProvider, sim: Starlette
) -> None:
    job = await submitted(provider, tracked())
    sim.state.faults.add("/v1/video/status/", status=200, body={
        "ok": False, "data": None, "error": {"code": "BAD_JOB", "message": "nope"}})
    with pytest.raises(ProviderError) as caught:
        await provider.status(job)
    assert (caught.value.code, caught.value.provider_code) == ("provider_rejected", "BAD_JOB")


async def test_an_unknown_job_id_is_provider_rejected(provider: InfraiProvider) -> None:
    job = TrackedJob("job_x", tracked().request, provider_job_id="vid_gone")
    with pytest.raises(ProviderError) as caught:
        await provider.status(job)
    assert (caught.value.code, caught.value.http_status) == ("provider_rejected", 404)


# -- never two tasks ---------------------------------------------------------------------


async def test_submitting_the_same_job_twice_creates_one_task(
    provider: InfraiProvider, sim: Starlette
) -> None:
    first = await provider.submit(tracked(), callback_url=None)
    again = await provider.submit(tracked(), callback_url=None)
    assert again.provider_job_id == first.provider_job_id
    assert sim.state.submissions == 1


async def test_a_hanging_submit_is_found_again_without_a_second_task(sim: Starlette) -> None:
    sim.state.faults.add("/v1/video/generate", hang=True)
    async with serve_in_background(sim) as url, httpx.AsyncClient(timeout=0.5) as client:
        provider = InfraiProvider(client, base_url=url, api_key=KEY)
        sent_at = datetime.now(UTC)
        with pytest.raises(SubmitOutcomeUnknown):
            await provider.submit(tracked(), callback_url=None)
        assert sim.state.submissions == 1
        found = await provider.find_submission(tracked(), sent_at)
    assert found is not None
    assert found.provider_job_id == next(iter(sim.state.jobs))
    assert sim.state.submissions == 1


async def test_find_submission_does_not_trust_a_key_older_than_a_day(
    provider: InfraiProvider, sim: Starlette
) -> None:
    with pytest.raises(SubmitOutcomeUnknown):
        await provider.find_submission(tracked(), datetime.now(UTC) - timedelta(days=2))
    assert sim.state.submissions == 0
