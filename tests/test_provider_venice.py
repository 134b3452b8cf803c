"""The Venice adapter, against the Venice simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from bridge.errors import InvalidRequest, ProviderError, SubmitOutcomeUnknown
from bridge.media import DirectoryStore
from bridge.models import JobStatus, Tracking
from bridge.providers.base import JobRequest, Provider, Submission, TrackedJob
from bridge.providers.venice import VeniceProvider
from bridge.serving import serve_in_background
from bridge.simulators.base import SimSettings, fake_mp4
from bridge.simulators.venice import create_app

_: type[Provider] = VeniceProvider

KEY = "sim-key"
BASE = "https://api.venice.ai/api/v1"
T2V = "seedance-2-0-text-to-video"
PRIVATE = "wan-2-2-private-text-to-video"
FAST = "[sim:duration=0.1]"
CONSENT = {"seedance": {
    "confirmed_terms_and_privacy": True,
    "confirmed_legal_right": True,
    "confirmed_screening_acknowledged": True,
}}


@pytest.fixture
def sim() -> Starlette:
    return create_app(SimSettings(api_key=KEY, duration=(0.2, 0.4), queue_delay=0.05, seed=3))


@pytest.fixture
async def client(sim: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim)) as c:
        yield c


@pytest.fixture
def media(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "media")


@pytest.fixture
def venice(client: httpx.AsyncClient, media: DirectoryStore) -> VeniceProvider:
    return VeniceProvider(client, base_url=BASE, api_key=KEY, media=media)


def request(**fields: Any) -> JobRequest:
    values: dict[str, Any] = {"provider": "venice", "prompt": f"A gondola {FAST}",
                              "model": T2V, "duration_seconds": 5}
    values.update(fields)
    return JobRequest(**values)


def tracked(req: JobRequest, submission: Submission | None = None) -> TrackedJob:
    return TrackedJob(
        id="job_venice1", request=req,
        provider_job_id=submission.provider_job_id if submission else None,
        provider_data=dict(submission.provider_data) if submission else {},
    )


async def submitted(venice: VeniceProvider, req: JobRequest) -> TrackedJob:
    submission = await venice.submit(tracked(req), callback_url=None)
    return tracked(req, submission)


async def settle(seconds: float = 0.3) -> None:
    await asyncio.sleep(seconds)


# -- body translation -----------------------------------------------------------------------


def test_body_carries_every_unified_text_field(venice: VeniceProvider) -> None:
    body = venice.body(request(
        prompt="Commerce in Venice", duration_seconds=10, negative_prompt="blurry",
        aspect_ratio="16:9", resolution="720p", audio=False, seed=42,
    ))
    assert body == {"model": T2V, "prompt": "Commerce in Venice", "duration": "10s",
                    "negative_prompt": "blurry", "aspect_ratio": "16:9",
                    "resolution": "720p", "audio": False}


def test_body_of_image_mode_sends_image_url(venice: VeniceProvider) -> None:
    body = venice.body(request(mode="image", images=("https://e.com/a.png",)))
    assert body["image_url"] == "https://e.com/a.png"
    assert "end_image_url" not in body


def test_body_of_first_last_mode_sends_image_and_end_image(venice: VeniceProvider) -> None:
    body = venice.body(request(mode="first_last",
                               images=("https://e.com/a.png", "data:image/png;base64,AA")))
    assert body["image_url"] == "https://e.com/a.png"
    assert body["end_image_url"] == "data:image/png;base64,AA"


def test_body_of_reference_mode_sends_reference_image_urls(venice: VeniceProvider) -> None:
    images = tuple(f"https://e.com/{i}.png" for i in range(3))
    body = venice.body(request(mode="reference", images=images))
    assert body["reference_image_urls"] == list(images)
    assert "image_url" not in body


def test_body_of_text_mode_sends_no_image_fields(venice: VeniceProvider) -> None:
    body = venice.body(request())
    assert not {"image_url", "end_image_url", "reference_image_urls"} & set(body)


def test_options_are_merged_into_the_body_last(venice: VeniceProvider) -> None:
    body = venice.body(request(resolution="720p", options={
        "consents": CONSENT, "upscale_factor": 2, "resolution": "1080p",
    }))
    assert body["consents"] == CONSENT
    assert body["upscale_factor"] == 2
    assert body["resolution"] == "1080p"


# -- check ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "field"), [
    ({"model": None}, "model"),
    ({"duration_seconds": None}, "duration_seconds"),
    ({"duration_seconds": 17}, "duration_seconds"),
    ({"prompt": "x" * 10_001}, "prompt"),
    ({"aspect_ratio": "5:4"}, "aspect_ratio"),
    ({"resolution": "999p"}, "resolution"),
    ({"mode": "image"}, "images"),
    ({"mode": "first_last", "images": ("https://e.com/a.png",)}, "images"),
    ({"mode": "reference", "images": tuple(f"https://e.com/{i}.png" for i in range(10))},
     "images"),
    ({"mode": "image", "images": ("ftp://e.com/a.png",)}, "images"),
    ({"images": ("https://e.com/a.png",)}, "images"),
    ({"options": {"upscale_factor": 3}}, "options.upscale_factor"),
    ({"options": {"consents": "yes"}}, "options.consents"),
], ids=lambda v: str(v)[:40])
def test_check_refuses_what_venice_would(
    venice: VeniceProvider, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        venice.check(request(**fields), None)
    assert caught.value.field == field


def test_check_accepts_an_options_duration_instead_of_seconds(venice: VeniceProvider) -> None:
    venice.check(request(duration_seconds=None, options={"duration": "Auto"}), None)


def test_check_accepts_nine_reference_images(venice: VeniceProvider) -> None:
    images = tuple(f"https://e.com/{i}.png" for i in range(9))
    venice.check(request(mode="reference", images=images), None)


# -- submit ---------------------------------------------------------------------------------


async def test_submit_answers_the_queue_id_and_the_quote(
    venice: VeniceProvider, sim: Starlette
) -> None:
    submission = await venice.submit(tracked(request(duration_seconds=10)), callback_url=None)
    assert submission.provider_job_id in sim.state.jobs
    assert submission.snapshot.status is JobStatus.SUBMITTED
    assert submission.estimated_cost_usd == pytest.approx(1.2)
    assert submission.provider_data == {}
    assert sim.state.submissions == 1


async def test_submit_sends_the_translated_body(venice: VeniceProvider, sim: Starlette) -> None:
    req = request(mode="first_last", model="seedance-2-0-image-to-video", aspect_ratio="9:16",
                  images=("https://e.com/a.png", "https://e.com/b.png"), audio=True)
    submission = await venice.submit(tracked(req), callback_url=None)
    sent = sim.state.jobs[submission.provider_job_id].clock.body
    assert sent == venice.body(req)


async def test_a_failed_quote_does_not_stop_the_submit(
    venice: VeniceProvider, sim: Starlette
) -> None:
    sim.state.faults.add(r"/video/quote$", status=500)
    submission = await venice.submit(tracked(request()), callback_url=None)
    assert submission.estimated_cost_usd is None
    assert sim.state.submissions == 1


async def test_submit_to_a_private_model_keeps_the_download_url(venice: VeniceProvider) -> None:
    submission = await venice.submit(tracked(request(model=PRIVATE)), callback_url=None)
    assert submission.provider_data["download_url"].startswith(f"{BASE}/downloads/")


async def test_faces_without_consent_raise_needs_consent_with_the_policy(
    venice: VeniceProvider, sim: Starlette
) -> None:
    req = request(model="seedance-2-0-reference-to-video", mode="reference",
                  prompt=f"[sim:faces] {FAST}", images=("https://e.com/face.png",))
    with pytest.raises(ProviderError) as caught:
        await venice.submit(tracked(req), callback_url=None)
    error = caught.value
    assert error.code == "needs_consent"
    assert not error.retryable
    assert error.details["consent"]["consent_version"] == "v2.0"
    assert error.details["consent"]["policy_text"]
    assert error.details["face_media_roles"] == ["reference_image"]
    assert error.details["consent_flow"] == "seedance"
    assert error.details["docs_url"]
    assert sim.state.submissions == 0


async def test_resubmission_with_consents_in_options_is_queued(
    venice: VeniceProvider, sim: Starlette
) -> None:
    req = request(model="seedance-2-0-reference-to-video", mode="reference",
                  prompt=f"[sim:faces] {FAST}", images=("https://e.com/face.png",),
                  options={"consents": CONSENT})
    await venice.submit(tracked(req), callback_url=None)
    assert sim.state.submissions == 1


async def test_insufficient_balance_raises_insufficient_credit(
    venice: VeniceProvider, sim: Starlette
) -> None:
    sim.state.balance_usd = 0.0
    with pytest.raises(ProviderError) as caught:
        await venice.submit(tracked(request()), callback_url=None)
    assert caught.value.code == "insufficient_credit"
    assert caught.value.http_status == 402
    assert not caught.value.retryable


async def test_validation_refusal_raises_provider_rejected_naming_the_field(
    venice: VeniceProvider,
) -> None:
    with pytest.raises(ProviderError) as caught:
        await venice.submit(tracked(request(duration_seconds=2)), callback_url=None)
    assert caught.value.code == "provider_rejected"
    assert caught.value.http_status == 400
    assert "duration" in caught.value.message
    assert not caught.value.retryable


async def test_wrong_key_raises_provider_rejected_401_without_the_key(
    client: httpx.AsyncClient, media: DirectoryStore
) -> None:
    venice = VeniceProvider(client, base_url=BASE, api_key="wrong-secret-key", media=media)
    with pytest.raises(ProviderError) as caught:
        await venice.submit(tracked(request()), callback_url=None)
    assert caught.value.code == "provider_rejected"
    assert caught.value.http_status == 401
    assert not caught.value.retryable
    assert "wrong-secret-key" not in repr(caught.value)
    assert "wrong-secret-key" not in caught.value.message


@pytest.mark.parametrize(("status", "body", "code"), [
    (422, {"error": "Your prompt violates the content policy"}, "content_violation"),
    (413, {"code": "PAYLOAD_TOO_LARGE", "error": "Payload too large"}, "provider_rejected"),
    (403, {"error": "Region not supported"}, "provider_rejected"),
])
async def test_queue_refusals_map_to_job_error_codes(
    venice: VeniceProvider, sim: Starlette, status: int, body: dict[str, Any], code: str
) -> None:
    sim.state.faults.add(r"/video/queue$", status=status, body=body)
    with pytest.raises(ProviderError) as caught:
        await venice.submit(tracked(request()), callback_url=None)
    assert caught.value.code == code
    assert caught.value.http_status == status
    assert not caught.value.retryable
    assert body["error"] in caught.value.message


async def test_queue_429_raises_rate_limited_with_retry_after(
    venice: VeniceProvider, sim: Starlette
) -> None:
    sim.state.faults.add(r"/video/queue$", status=429, retry_after=12)
    with pytest.raises(ProviderError) as caught:
        await venice.submit(tracked(request()), callback_url=None)
    assert caught.value.code == "rate_limited"
    assert caught.value.retryable
    assert caught.value.retry_after == 12


@pytest.mark.parametrize("status", [500, 503])
async def test_queue_5xx_raises_retryable_provider_unavailable(
    venice: VeniceProvider, sim: Starlette, status: int
) -> None:
    sim.state.faults.add(r"/video/queue$", status=status, retry_after=3)
    with pytest.raises(ProviderError) as caught:
        await venice.submit(tracked(request()), callback_url=None)
    assert caught.value.code == "provider_unavailable"
    assert caught.value.retryable
    assert caught.value.retry_after == 3


async def test_hanging_submit_raises_submit_outcome_unknown(
    sim: Starlette, media: DirectoryStore
) -> None:
    sim.state.faults.add(r"/video/queue$", hang=True)
    async with serve_in_background(sim) as url, httpx.AsyncClient(timeout=0.5) as client:
        venice = VeniceProvider(client, base_url=f"{url}/api/v1", api_key=KEY, media=media)
        with pytest.raises(SubmitOutcomeUnknown):
            await venice.submit(tracked(request()), callback_url=None)
    assert sim.state.submissions == 1  # the task exists although the answer was lost


async def test_find_submission_cannot_tell_and_raises(venice: VeniceProvider) -> None:
    with pytest.raises(SubmitOutcomeUnknown):
        await venice.find_submission(tracked(request()), datetime.now(UTC))


async def test_cancel_is_refused(venice: VeniceProvider) -> None:
    assert venice.can_cancel is False
    with pytest.raises(ProviderError) as caught:
        await venice.cancel(tracked(request()))
    assert caught.value.code == "provider_rejected"


# -- status ---------------------------------------------------------------------------------


async def test_status_while_processing_is_running_with_hints_and_progress(
    venice: VeniceProvider,
) -> None:
    job = await submitted(venice, request(prompt="slow [sim:duration=5]"))
    await settle(0.1)
    snapshot = await venice.status(job)
    assert snapshot.status is JobStatus.RUNNING
    assert snapshot.hints is not None
    assert snapshot.hints.average_execution_s == pytest.approx(0.36)
    assert snapshot.hints.execution_s is not None
    assert 0 < snapshot.hints.execution_s < 5
    expected = min(99, int(100 * snapshot.hints.execution_s / 0.36))
    assert snapshot.progress == expected


async def test_status_when_done_stores_the_mp4_and_completes(
    venice: VeniceProvider, media: DirectoryStore, sim: Starlette
) -> None:
    job = await submitted(venice, request())
    await settle()
    snapshot = await venice.status(job)
    assert snapshot.status is JobStatus.SUCCEEDED
    assert snapshot.media_file == "job_venice1.mp4"
    stored = media.path("job_venice1.mp4").read_bytes()
    assert stored == fake_mp4(job.provider_job_id or "")
    assert stored[4:8] == b"ftyp"
    assert sim.state.completes == 1


async def test_status_after_the_video_is_stored_asks_nothing(
    venice: VeniceProvider, sim: Starlette
) -> None:
    job = await submitted(venice, request())
    await settle()
    await venice.status(job)
    retrieves = sim.state.retrieves
    again = await venice.status(job)
    assert again.status is JobStatus.SUCCEEDED
    assert sim.state.retrieves == retrieves


async def test_a_failed_complete_does_not_fail_the_job(
    venice: VeniceProvider, sim: Starlette
) -> None:
    job = await submitted(venice, request())
    await settle()
    sim.state.faults.add(r"/video/complete$", status=500)
    snapshot = await venice.status(job)
    assert snapshot.status is JobStatus.SUCCEEDED


async def test_private_model_video_is_downloaded_without_the_key(
    venice: VeniceProvider, media: DirectoryStore, sim: Starlette
) -> None:
    job = await submitted(venice, request(model=PRIVATE))
    await settle()
    snapshot = await venice.status(job)
    assert snapshot.status is JobStatus.SUCCEEDED
    assert media.path(snapshot.media_file or "").read_bytes() == fake_mp4(
        job.provider_job_id or "")
    assert sim.state.download_auth == [None]


async def test_private_model_download_link_is_revoked_after_the_download(
    venice: VeniceProvider, sim: Starlette
) -> None:
    job = await submitted(venice, request(model=PRIVATE))
    await settle()
    await venice.status(job)
    token = job.provider_data["download_url"].rsplit("/", 1)[1]
    assert sim.state.downloads[token].revoked


async def test_used_up_download_url_fails_the_job(
    venice: VeniceProvider, client: httpx.AsyncClient
) -> None:
    job = await submitted(venice, request(model=PRIVATE))
    await settle()
    for _ in range(3):
        await client.get(job.provider_data["download_url"])
    snapshot = await venice.status(job)
    assert snapshot.status is JobStatus.FAILED
    assert snapshot.error is not None
    assert snapshot.error.code == "provider_rejected"
    assert "download URL expired or used up" in snapshot.error.message


async def test_content_policy_on_retrieve_fails_the_job(venice: VeniceProvider) -> None:
    job = await submitted(venice, request(prompt=f"[sim:violation] {FAST}"))
    await settle()
    snapshot = await venice.status(job)
    assert snapshot.status is JobStatus.FAILED
    assert snapshot.error is not None
    assert snapshot.error.code == "content_violation"
    assert snapshot.error.provider_code == "provider_content_policy"


async def test_media_not_found_on_retrieve_is_expired(venice: VeniceProvider) -> None:
    job = await submitted(venice, request(prompt=f"[sim:expire] {FAST}"))
    await settle()
    snapshot = await venice.status(job)
    assert snapshot.status is JobStatus.EXPIRED


async def test_retrieve_500_raises_retryable_provider_unavailable(
    venice: VeniceProvider,
) -> None:
    job = await submitted(venice, request(prompt=f"[sim:fail] {FAST}"))
    await settle()
    with pytest.raises(ProviderError) as caught:
        await venice.status(job)
    assert caught.value.code == "provider_unavailable"
    assert caught.value.retryable


async def test_retrieve_429_raises_rate_limited_with_retry_after(
    venice: VeniceProvider, sim: Starlette
) -> None:
    job = await submitted(venice, request())
    sim.state.faults.add(r"/video/retrieve$", status=429, retry_after=5)
    with pytest.raises(ProviderError) as caught:
        await venice.status(job)
    assert caught.value.code == "rate_limited"
    assert caught.value.retry_after == 5


# -- models ---------------------------------------------------------------------------------


async def test_list_models_reads_modes_durations_and_price(venice: VeniceProvider) -> None:
    models = {m.id: m for m in await venice.list_models()}
    t2v = models[T2V]
    assert t2v.modes == ("text",)
    assert t2v.durations == tuple(range(4, 16))
    assert "16:9" in t2v.aspect_ratios
    assert "720p" in t2v.resolutions
    assert t2v.price_per_second_usd == pytest.approx(0.12)
    assert t2v.tracking is Tracking.POLL
    assert models["seedance-2-0-image-to-video"].modes == ("image", "first_last")
    assert models["seedance-2-0-reference-to-video"].modes == ("reference",)
    assert models["seedance-2-0-reference-to-video"].max_images == 9
    assert models[PRIVATE].durations == (5, 8)
