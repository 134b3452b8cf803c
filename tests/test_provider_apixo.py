"""The apixo adapter against the apixo simulator: body translation, states, errors, callbacks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.errors import InvalidRequest, ProviderError, SubmitOutcomeUnknown
from bridge.models import JobStatus, Tracking
from bridge.providers.apixo import ApixoProvider, parse_status
from bridge.providers.base import (
    CallbackProvider,
    JobRequest,
    Provider,
    Snapshot,
    TrackedJob,
)
from bridge.serving import serve_in_background
from bridge.simulators.apixo import create_app
from bridge.simulators.base import SimSettings

_: type[Provider] = ApixoProvider  # mypy proves the adapter satisfies the Protocol

KEY = "apixo-test-key"
BASE = "https://api.apixo.ai"
IMG = ("https://example.com/a.jpg", "https://example.com/b.jpg", "https://example.com/c.jpg")


def sim_settings(duration: float = 0.2) -> SimSettings:
    return SimSettings(api_key=KEY, duration=(duration, duration), queue_delay=0.05, seed=5)


@pytest.fixture
async def sim() -> AsyncIterator[Starlette]:
    app = create_app(sim_settings(), callback_retry_delays=(0.05, 0.1, 0.15))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def http(sim: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim)) as client:
        yield client


@pytest.fixture
def apixo(http: httpx.AsyncClient) -> ApixoProvider:
    return ApixoProvider(http, base_url=BASE, api_key=KEY)


def job(prompt: str = "a fox in the snow", **fields: Any) -> TrackedJob:
    return TrackedJob(id="job_1", request=JobRequest(provider="apixo", prompt=prompt, **fields))


async def sent_body(apixo: ApixoProvider, sim: Starlette, tracked: TrackedJob,
                    callback_url: str | None = None) -> dict[str, Any]:
    """Submit through the adapter; the body the simulator received (and accepted)."""
    submission = await apixo.submit(tracked, callback_url=callback_url)
    body: dict[str, Any] = sim.state.jobs[submission.provider_job_id].sim.body
    return body


async def life(apixo: ApixoProvider, tracked: TrackedJob) -> list[Snapshot]:
    """Poll until terminal; every snapshot seen."""
    seen: list[Snapshot] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        seen.append(await apixo.status(tracked))
        if seen[-1].status.terminal:
            return seen
        await asyncio.sleep(0.03)
    raise AssertionError("the task never ended")


async def finished(apixo: ApixoProvider, tracked: TrackedJob) -> Snapshot:
    submission = await apixo.submit(tracked, callback_url=None)
    return (await life(apixo, TrackedJob(id=tracked.id, request=tracked.request,
                                         provider_job_id=submission.provider_job_id)))[-1]


# --- what the adapter is ---------------------------------------------------------------------


async def test_adapter_declares_callback_tracking_without_cancel(apixo: ApixoProvider) -> None:
    assert (apixo.name, apixo.tracking) == ("apixo", Tracking.CALLBACK)
    assert apixo.max_concurrent == 1000 and apixo.can_cancel is False
    assert isinstance(apixo, CallbackProvider)


async def test_list_models_returns_the_documented_veo_3_1(apixo: ApixoProvider) -> None:
    [model] = await apixo.list_models()
    assert (model.provider, model.id, model.tracking) == ("apixo", "veo-3-1", Tracking.CALLBACK)
    assert set(model.modes) == {"text", "image", "reference", "first_last"}
    assert set(model.aspect_ratios) == {"16:9", "9:16", "auto"}
    assert model.min_duration_seconds is None and model.durations is None


# --- body translation (each body is also accepted by the simulator) ---------------------------


async def test_text_mode_sends_text_2_video(apixo: ApixoProvider, sim: Starlette) -> None:
    body = await sent_body(apixo, sim, job(aspect_ratio="9:16", seed=42))
    assert body == {"request_type": "async", "input": {
        "mode": "quality", "prompt": "a fox in the snow", "generationType": "TEXT_2_VIDEO",
        "aspect_ratio": "9:16", "seed": 42}}


async def test_image_mode_sends_the_first_frame_only(apixo: ApixoProvider, sim: Starlette) -> None:
    body = await sent_body(apixo, sim, job(mode="image", images=IMG[:1]))
    assert body["input"]["generationType"] == "FIRST_AND_LAST_FRAMES_2_VIDEO"
    assert body["input"]["image_urls"] == [IMG[0]]


async def test_first_last_mode_sends_both_frames(apixo: ApixoProvider, sim: Starlette) -> None:
    body = await sent_body(apixo, sim, job(mode="first_last", images=IMG[:2]))
    assert body["input"]["generationType"] == "FIRST_AND_LAST_FRAMES_2_VIDEO"
    assert body["input"]["image_urls"] == list(IMG[:2])


async def test_reference_mode_defaults_to_fast(apixo: ApixoProvider, sim: Starlette) -> None:
    body = await sent_body(apixo, sim, job(mode="reference", images=IMG, aspect_ratio="16:9"))
    assert body["input"]["generationType"] == "REFERENCE_2_VIDEO"
    assert body["input"]["mode"] == "fast"
    assert body["input"]["image_urls"] == list(IMG)


async def test_options_mode_sets_input_mode(apixo: ApixoProvider, sim: Starlette) -> None:
    body = await sent_body(apixo, sim, job(options={"mode": "fast"}))
    assert body["input"]["mode"] == "fast"


async def test_options_provider_goes_top_level_and_the_rest_into_input(
    apixo: ApixoProvider, sim: Starlette
) -> None:
    options = {"provider": "official", "watermark": "acme", "enableTranslation": False}
    body = await sent_body(apixo, sim, job(options=options))
    assert body["provider"] == "official" and "provider" not in body["input"]
    assert body["input"]["watermark"] == "acme"
    assert body["input"]["enableTranslation"] is False


async def test_fields_apixo_lacks_are_not_sent(apixo: ApixoProvider, sim: Starlette) -> None:
    tracked = job(duration_seconds=8, resolution="720p", negative_prompt="blur", audio=True)
    body = await sent_body(apixo, sim, tracked)
    assert set(body["input"]) == {"mode", "prompt", "generationType"}


async def test_callback_url_switches_to_callback_request_type() -> None:
    # A long task, so the lifespan cancels the delivery before it would be attempted.
    sim = create_app(sim_settings(duration=30.0))
    async with sim.router.lifespan_context(sim), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim)
    ) as http:
        apixo = ApixoProvider(http, base_url=BASE, api_key=KEY)
        body = await sent_body(apixo, sim, job(), callback_url="https://bridge.test/cb/tok")
    assert body["request_type"] == "callback"
    assert body["callback_url"] == "https://bridge.test/cb/tok"


async def test_submit_answers_a_submitted_snapshot_with_the_task_id(
    apixo: ApixoProvider, sim: Starlette
) -> None:
    submission = await apixo.submit(job(), callback_url=None)
    assert submission.provider_job_id in sim.state.jobs
    assert submission.snapshot.status is JobStatus.SUBMITTED
    assert submission.estimated_cost_usd is None


# --- check -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"mode": "reference", "images": IMG[:1], "options": {"mode": "quality"}},
         "options.mode"),
        ({"mode": "reference", "images": IMG[:1], "aspect_ratio": "9:16"}, "aspect_ratio"),
        ({"mode": "reference", "images": IMG[:1], "aspect_ratio": "auto"}, "aspect_ratio"),
        ({"mode": "reference", "images": (*IMG, IMG[0])}, "images"),
        ({"mode": "reference", "images": ()}, "images"),
        ({"mode": "first_last", "images": IMG[:1]}, "images"),
        ({"mode": "first_last", "images": IMG}, "images"),
        ({"mode": "image", "images": IMG[:2]}, "images"),
        ({"mode": "image", "images": ()}, "images"),
        ({"mode": "text", "images": IMG[:1]}, "images"),
        ({"mode": "image", "images": ("data:image/png;base64,AAAA",)}, "images"),
        ({"prompt": "x" * 10_001}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"model": "veo-9"}, "model"),
        ({"options": {"mode": "turbo"}}, "options.mode"),
        ({"options": {"provider": "cheapest"}}, "options.provider"),
        ({"options": {"watermark": 5}}, "options.watermark"),
        ({"options": {"enableTranslation": "no"}}, "options.enableTranslation"),
        ({"options": {"generationType": "REFERENCE_2_VIDEO"}}, "options.generationType"),
        ({"options": {"callback_url": "https://evil.test"}}, "options.callback_url"),
    ],
)
async def test_check_refuses_what_apixo_would_refuse(
    apixo: ApixoProvider, fields: dict[str, Any], field: str
) -> None:
    request = JobRequest(**{"provider": "apixo", "prompt": "a fox", **fields})
    with pytest.raises(InvalidRequest) as caught:
        apixo.check(request, None)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "fields",
    [
        {"mode": "text", "prompt": "x" * 10_000},
        {"mode": "image", "images": IMG[:1], "aspect_ratio": "auto"},
        {"mode": "first_last", "images": IMG[:2], "options": {"mode": "fast"}},
        {"mode": "reference", "images": IMG, "aspect_ratio": "16:9"},
        {"mode": "reference", "images": IMG[:1], "options": {"mode": "fast"}},
    ],
)
async def test_check_accepts_what_apixo_accepts(
    apixo: ApixoProvider, fields: dict[str, Any]
) -> None:
    apixo.check(JobRequest(**{"provider": "apixo", "prompt": "a fox", **fields}), None)


# --- states ----------------------------------------------------------------------------------


async def test_polling_follows_submitted_running_succeeded(apixo: ApixoProvider) -> None:
    submission = await apixo.submit(job(), callback_url=None)
    tracked = TrackedJob(id="job_1", request=job().request,
                         provider_job_id=submission.provider_job_id)
    statuses = [snapshot.status for snapshot in await life(apixo, tracked)]
    assert statuses[0] is JobStatus.SUBMITTED
    assert JobStatus.RUNNING in statuses
    assert statuses[-1] is JobStatus.SUCCEEDED
    assert statuses == sorted(statuses, key=[JobStatus.SUBMITTED, JobStatus.RUNNING,
                                             JobStatus.SUCCEEDED].index)


async def test_success_carries_the_result_url_and_its_expiry(
    apixo: ApixoProvider, http: httpx.AsyncClient
) -> None:
    snapshot = await finished(apixo, job())
    assert snapshot.video_url is not None
    assert (await http.get(snapshot.video_url)).status_code == 200
    assert snapshot.expires_at is not None
    assert snapshot.expires_at - datetime.now(UTC) > timedelta(days=14, hours=23)
    assert snapshot.cost_usd is None


def test_seed_success_example_expires_15_days_after_complete_time() -> None:
    data = {"taskId": "task_12345678", "state": "success",
            "resultJson": "{\"resultUrls\":[\"https://r2.apixo.ai/video.mp4\"]}",
            "createTime": 1767965610929, "completeTime": 1767965730929, "costTime": 120000}
    snapshot = parse_status(data)
    assert snapshot.status is JobStatus.SUCCEEDED
    assert snapshot.video_url == "https://r2.apixo.ai/video.mp4"
    completed = datetime.fromtimestamp(1767965730.929, UTC)
    assert snapshot.expires_at == completed + timedelta(days=15)


@pytest.mark.parametrize("result_json", [
    '{"resultUrls":["https://r2.apixo.ai/\\ud800.mp4"]}',  # a lone surrogate
    '{"resultUrls":["https://r2.apixo.ai/a.mp4"],"resultUrls":["https://evil.example/b.mp4"]}',
    '{"resultUrls":["https://r2.apixo.ai/a.mp4"],"n":NaN}',
])
def test_a_result_json_that_is_not_strict_json_is_a_success_without_a_url(
    result_json: str,
) -> None:
    snapshot = parse_status({"taskId": "task_12345678", "state": "success",
                             "resultJson": result_json, "completeTime": 1767965730929})
    assert snapshot.status is JobStatus.FAILED and snapshot.error is not None
    assert snapshot.error.code == "provider_unavailable"


@pytest.mark.parametrize(
    ("prompt", "images", "code", "fail_code"),
    [
        ("[sim:violation] x", (), "content_violation", "CONTENT_VIOLATION"),
        ("x", ("https://example.com/invalid.jpg",), "provider_rejected", "INVALID_IMAGE_URL"),
        ("[sim:fail] x", (), "generation_failed", "GENERATION_FAILED"),
    ],
)
async def test_fail_code_maps_to_a_job_error(
    apixo: ApixoProvider, prompt: str, images: tuple[str, ...], code: str, fail_code: str
) -> None:
    mode = "image" if images else "text"
    snapshot = await finished(apixo, job(prompt, mode=mode, images=images))
    assert snapshot.status is JobStatus.FAILED and snapshot.error is not None
    assert (snapshot.error.code, snapshot.error.provider_code) == (code, fail_code)
    assert snapshot.error.message


def test_seed_failed_example_keeps_the_fail_message() -> None:
    snapshot = parse_status({"taskId": "task_12345678", "state": "failed",
                             "failCode": "CONTENT_VIOLATION",
                             "failMsg": "Content does not meet safety guidelines"})
    assert snapshot.error is not None
    assert snapshot.error.message == "Content does not meet safety guidelines"


# --- callbacks -------------------------------------------------------------------------------


async def test_parse_callback_reads_a_real_callback_body(
    apixo: ApixoProvider, sim: Starlette
) -> None:
    received: list[bytes] = []
    arrived = asyncio.Event()

    async def hook(request: Request) -> Response:
        received.append(await request.body())
        arrived.set()
        return Response(status_code=200)

    receiver = Starlette(routes=[Route("/cb", hook, methods=["POST"])])
    async with serve_in_background(receiver) as url:
        submission = await apixo.submit(job(), callback_url=f"{url}/cb")
        await asyncio.wait_for(arrived.wait(), timeout=5)
    task_id, snapshot = apixo.parse_callback(received[0])
    assert task_id == submission.provider_job_id
    assert snapshot.status is JobStatus.SUCCEEDED
    assert snapshot.video_url is not None and task_id in snapshot.video_url


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"code":200,"message":"success","data":null}',
     b'{"code":400,"message":"Insufficient credits","data":null}',
     b'{"code":200,"message":"success","data":{"taskId":"task_1","state":"weird"}}',
     b'{"taskId":"task_1","state":"success"}'],
)
async def test_parse_callback_refuses_what_is_not_an_apixo_envelope(
    apixo: ApixoProvider, body: bytes
) -> None:
    with pytest.raises(ValueError):
        apixo.parse_callback(body)


# --- errors ----------------------------------------------------------------------------------


async def test_insufficient_credits_is_insufficient_credit(
    apixo: ApixoProvider, sim: Starlette
) -> None:
    sim.state.credits = 0
    with pytest.raises(ProviderError) as caught:
        await apixo.submit(job(), callback_url=None)
    assert caught.value.code == "insufficient_credit" and not caught.value.retryable


async def test_refused_body_is_provider_rejected(apixo: ApixoProvider) -> None:
    tracked = job(mode="reference", images=IMG[:1], options={"mode": "quality"})  # unchecked
    with pytest.raises(ProviderError) as caught:
        await apixo.submit(tracked, callback_url=None)
    assert caught.value.code == "provider_rejected" and not caught.value.retryable
    assert "fast" in caught.value.message


async def test_unauthorized_key_is_provider_rejected_401(http: httpx.AsyncClient) -> None:
    apixo = ApixoProvider(http, base_url=BASE, api_key="wrong-secret-key")
    with pytest.raises(ProviderError) as caught:
        await apixo.submit(job(), callback_url=None)
    error = caught.value
    assert (error.code, error.http_status, error.retryable) == ("provider_rejected", 401, False)
    assert "wrong-secret-key" not in str(error) and "wrong-secret-key" not in repr(error)


async def test_rate_limit_is_retryable_after_the_given_delay(
    apixo: ApixoProvider, sim: Starlette
) -> None:
    sim.state.faults.add("/generateTask/", status=429, retry_after=7)
    with pytest.raises(ProviderError) as caught:
        await apixo.submit(job(), callback_url=None)
    assert (caught.value.code, caught.value.retryable) == ("rate_limited", True)
    assert caught.value.retry_after == 7
    assert sim.state.submissions == 0


async def test_server_error_is_retryable(apixo: ApixoProvider, sim: Starlette) -> None:
    sim.state.faults.add("/statusTask/", status=500)
    with pytest.raises(ProviderError) as caught:
        await apixo.status(TrackedJob(id="job_1", request=job().request,
                                      provider_job_id="task_1"))
    assert (caught.value.code, caught.value.retryable) == ("provider_unavailable", True)


async def test_envelope_code_wins_over_http_200(apixo: ApixoProvider, sim: Starlette) -> None:
    sim.state.faults.add("/generateTask/", status=200,
                         body={"code": 429, "message": "Rate limit exceeded", "data": None})
    with pytest.raises(ProviderError) as caught:
        await apixo.submit(job(), callback_url=None)
    assert (caught.value.code, caught.value.retryable) == ("rate_limited", True)


async def test_unreadable_submit_answer_is_an_unknown_outcome(
    apixo: ApixoProvider, sim: Starlette
) -> None:
    sim.state.faults.add("/generateTask/", status=200, body="<html>ok</html>")
    with pytest.raises(SubmitOutcomeUnknown):
        await apixo.submit(job(), callback_url=None)


async def test_status_of_an_unknown_task_is_provider_rejected(apixo: ApixoProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        await apixo.status(TrackedJob(id="job_1", request=job().request,
                                      provider_job_id="task_000000000000"))
    assert (caught.value.code, caught.value.retryable) == ("provider_rejected", False)


async def test_hanging_submit_raises_submit_outcome_unknown() -> None:
    sim = create_app(sim_settings())
    sim.state.faults.add("/generateTask/", hang=True)
    async with serve_in_background(sim) as url, httpx.AsyncClient(timeout=0.3) as http:
        apixo = ApixoProvider(http, base_url=url, api_key=KEY)
        with pytest.raises(SubmitOutcomeUnknown):
            await apixo.submit(job(), callback_url=None)
    assert sim.state.submissions == 1  # the task exists although its id never came back


async def test_find_submission_cannot_tell(apixo: ApixoProvider) -> None:
    with pytest.raises(SubmitOutcomeUnknown):
        await apixo.find_submission(job(), datetime.now(UTC))


async def test_cancel_is_refused(apixo: ApixoProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        await apixo.cancel(TrackedJob(id="job_1", request=job().request,
                                      provider_job_id="task_1"))
    assert caught.value.code == "provider_rejected"


async def test_base_url_with_trailing_slash_reaches_the_documented_path(
    http: httpx.AsyncClient, sim: Starlette
) -> None:
    apixo = ApixoProvider(http, base_url=BASE + "/", api_key=KEY)
    await apixo.submit(job(), callback_url=None)
    assert sim.state.submissions == 1


async def test_callback_body_from_the_seed_parses(apixo: ApixoProvider) -> None:
    body = json.dumps({"code": 200, "message": "success", "data": {
        "taskId": "task_12345678", "state": "failed", "failCode": "INVALID_IMAGE_URL",
        "failMsg": "Cannot access provided image URL",
        "createTime": 1767965610929, "completeTime": 1767965730929}}).encode()
    task_id, snapshot = apixo.parse_callback(body)
    assert task_id == "task_12345678" and snapshot.status is JobStatus.FAILED
