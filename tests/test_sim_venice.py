"""The Venice simulator answers like the documented API (seed 004, providers.md section 4)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from bridge.simulators.base import SimSettings, fake_mp4
from bridge.simulators.venice import SIM_MODELS, create_app

KEY = "sim-key"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
PRIVATE = "wan-2-2-private-text-to-video"
FAST = "[sim:duration=0.1]"
CONSENT = {
    "confirmed_terms_and_privacy": True,
    "confirmed_legal_right": True,
    "confirmed_screening_acknowledged": True,
}


@pytest.fixture
def app() -> Starlette:
    return create_app(SimSettings(api_key=KEY, duration=(0.2, 0.4), queue_delay=0.05, seed=7))


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://api.venice.ai") as c:
        yield c


def text_body(prompt: str = f"A gondola at dawn {FAST}", **extra: Any) -> dict[str, Any]:
    return {"model": "seedance-2-0-text-to-video", "prompt": prompt, "duration": "5s", **extra}


async def queue(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/api/v1/video/queue", headers=AUTH, json=body)


async def retrieve(client: httpx.AsyncClient, model: str, queue_id: str,
                   **extra: Any) -> httpx.Response:
    return await client.post("/api/v1/video/retrieve", headers=AUTH,
                             json={"model": model, "queue_id": queue_id, **extra})


async def queued(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await queue(client, body)
    assert response.status_code == 200, response.text
    queue_id: str = response.json()["queue_id"]
    return queue_id


async def finished(client: httpx.AsyncClient, model: str, queue_id: str) -> httpx.Response:
    for _ in range(100):
        response = await retrieve(client, model, queue_id)
        is_json = response.headers["content-type"].startswith("application/json")
        if not (response.status_code == 200 and is_json
                and response.json().get("status") == "PROCESSING"):
            return response
        await asyncio.sleep(0.05)
    raise AssertionError("the job never finished")


# -- the seed's example ---------------------------------------------------------------------


async def test_seed_example_queue_request_answers_model_and_queue_id(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    # The seed's documented fields and example values, as the reference's curl sends them.
    response = await client.post(
        "/api/v1/video/queue",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        json={
            "model": "seedance-2-0-text-to-video",
            "prompt": "Commerce being conducted in the city of Venice, Italy.",
            "duration": "10s",
            "consents": {},
            "negative_prompt": "low resolution, error, worst quality, low quality, defects",
            "aspect_ratio": "16:9",
            "resolution": "720p",
            "audio": True,
        },
    )
    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"model", "queue_id"}
    assert data["model"] == "seedance-2-0-text-to-video"
    assert uuid.UUID(data["queue_id"]).version == 4
    assert app.state.submissions == 1


async def test_queue_without_key_answers_401_in_venice_error_shape(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    response = await client.post("/api/v1/video/queue", json=text_body())
    assert response.status_code == 401
    assert response.json() == {"error": "Authentication failed"}
    assert app.state.submissions == 0


# -- retrieve ---------------------------------------------------------------------------------


async def test_retrieve_while_processing_gives_status_and_both_times(
    client: httpx.AsyncClient,
) -> None:
    queue_id = await queued(client, text_body("slow [sim:duration=5]"))
    await asyncio.sleep(0.1)
    response = await retrieve(client, "seedance-2-0-text-to-video", queue_id)
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "PROCESSING"
    # P80 of the uniform 0.2..0.4 s draw, in ms.
    assert data["average_execution_time"] == 360
    assert 0 < data["execution_duration"] < 5000


async def test_retrieve_when_done_answers_mp4_bytes(client: httpx.AsyncClient) -> None:
    queue_id = await queued(client, text_body())
    response = await finished(client, "seedance-2-0-text-to-video", queue_id)
    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert response.content[4:8] == b"ftyp"
    assert response.content == fake_mp4(queue_id)


async def test_retrieve_of_violating_job_answers_422_content_policy(
    client: httpx.AsyncClient,
) -> None:
    queue_id = await queued(client, text_body(f"[sim:violation] {FAST}"))
    response = await finished(client, "seedance-2-0-text-to-video", queue_id)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "provider_content_policy"
    assert error["credits_refunded"] is True
    assert error["message"]


async def test_retrieve_of_failed_job_answers_500(client: httpx.AsyncClient) -> None:
    queue_id = await queued(client, text_body(f"[sim:fail] {FAST}"))
    response = await finished(client, "seedance-2-0-text-to-video", queue_id)
    assert response.status_code == 500
    assert isinstance(response.json()["error"], str)


async def test_retrieve_of_expired_job_answers_404_media_not_found(
    client: httpx.AsyncClient,
) -> None:
    queue_id = await queued(client, text_body(f"[sim:expire] {FAST}"))
    response = await finished(client, "seedance-2-0-text-to-video", queue_id)
    assert response.status_code == 404
    assert response.json() == {"error": "Media could not be found"}


async def test_retrieve_of_unknown_queue_id_answers_404(client: httpx.AsyncClient) -> None:
    response = await retrieve(client, "seedance-2-0-text-to-video", str(uuid.uuid4()))
    assert response.status_code == 404


async def test_complete_answers_success_and_later_retrieve_answers_404(
    client: httpx.AsyncClient,
) -> None:
    queue_id = await queued(client, text_body())
    assert (await finished(client, "seedance-2-0-text-to-video", queue_id)).status_code == 200
    response = await client.post("/api/v1/video/complete", headers=AUTH,
                                 json={"model": "seedance-2-0-text-to-video",
                                       "queue_id": queue_id})
    assert response.status_code == 200
    assert response.json() == {"success": True}
    again = await retrieve(client, "seedance-2-0-text-to-video", queue_id)
    assert again.status_code == 404
    assert again.json() == {"error": "Media could not be found"}


async def test_delete_media_on_completion_deletes_after_the_download(
    client: httpx.AsyncClient,
) -> None:
    queue_id = await queued(client, text_body())
    await finished(client, "seedance-2-0-text-to-video", queue_id)
    first = await retrieve(client, "seedance-2-0-text-to-video", queue_id,
                           delete_media_on_completion=True)
    assert first.headers["content-type"] == "video/mp4"
    second = await retrieve(client, "seedance-2-0-text-to-video", queue_id)
    assert second.status_code == 404


# -- private (VPS-backed) models -----------------------------------------------------------


async def test_private_model_queue_answer_carries_a_download_url(
    client: httpx.AsyncClient,
) -> None:
    response = await queue(client, {"model": PRIVATE, "prompt": f"x {FAST}", "duration": "5s"})
    data = response.json()
    assert set(data) == {"model", "queue_id", "download_url"}
    assert data["download_url"].startswith("https://api.venice.ai/api/v1/downloads/")


async def test_private_model_retrieve_answers_completed_json_not_bytes(
    client: httpx.AsyncClient,
) -> None:
    queue_id = await queued(client, {"model": PRIVATE, "prompt": f"x {FAST}", "duration": "5s"})
    response = await finished(client, PRIVATE, queue_id)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["status"] == "COMPLETED"


async def test_download_url_serves_the_video_without_a_key_three_times_then_410(
    client: httpx.AsyncClient,
) -> None:
    answer = (await queue(client, {"model": PRIVATE, "prompt": f"x {FAST}",
                                   "duration": "5s"})).json()
    await finished(client, PRIVATE, answer["queue_id"])
    for _ in range(3):
        response = await client.get(answer["download_url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "video/mp4"
        assert response.content == fake_mp4(answer["queue_id"])
    assert (await client.get(answer["download_url"])).status_code == 410


async def test_delete_on_the_download_url_revokes_it(client: httpx.AsyncClient) -> None:
    answer = (await queue(client, {"model": PRIVATE, "prompt": f"x {FAST}",
                                   "duration": "5s"})).json()
    await finished(client, PRIVATE, answer["queue_id"])
    assert (await client.delete(answer["download_url"])).status_code == 204
    assert (await client.get(answer["download_url"])).status_code == 410


async def test_unknown_download_token_answers_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/downloads/0123456789abcdef")
    assert response.status_code == 404


# -- face consent ---------------------------------------------------------------------------


def reference_body(**extra: Any) -> dict[str, Any]:
    return {"model": "seedance-2-0-reference-to-video", "prompt": f"[sim:faces] {FAST}",
            "duration": "5s", "reference_image_urls": ["https://example.com/face.png"], **extra}


async def test_faces_without_consent_answer_409_needs_consent(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    response = await queue(client, reference_body())
    assert response.status_code == 409
    data = response.json()
    assert data["error"]["code"] == "needs_consent"
    assert data["error"]["message"]
    assert data["consent_flow"] == "seedance"
    assert data["face_media_roles"] == ["reference_image"]
    assert data["consent"]["consent_version"] == "v2.0"
    assert data["consent"]["policy_text"]
    assert data["docs_url"].startswith("https://")
    assert app.state.submissions == 0


async def test_resubmission_with_valid_seedance_consent_is_queued(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    assert (await queue(client, reference_body())).status_code == 409
    response = await queue(client, reference_body(consents={"seedance": CONSENT}))
    assert response.status_code == 200
    assert app.state.submissions == 1


@pytest.mark.parametrize("seedance", [
    {**CONSENT, "confirmed_extra": True},
    {**CONSENT, "confirmed_legal_right": False},
    {"confirmed_terms_and_privacy": True, "confirmed_legal_right": True},
], ids=["extra-field", "false-field", "missing-field"])
async def test_seedance_consent_not_exactly_three_true_fields_answers_400(
    client: httpx.AsyncClient, seedance: dict[str, Any]
) -> None:
    response = await queue(client, reference_body(consents={"seedance": seedance}))
    assert response.status_code == 400
    assert "consents.seedance" in response.json()["details"]


async def test_image_to_video_faces_name_the_image_role(client: httpx.AsyncClient) -> None:
    response = await queue(client, {
        "model": "seedance-2-0-image-to-video", "prompt": "[sim:faces]", "duration": "5s",
        "image_url": "data:image/png;base64,iVBORw0K", "end_image_url": "https://e.com/b.png",
    })
    assert response.status_code == 409
    assert response.json()["face_media_roles"] == ["image", "end_image"]


async def test_text_to_video_with_faces_needs_no_consent(client: httpx.AsyncClient) -> None:
    response = await queue(client, text_body("[sim:faces] a crowd"))
    assert response.status_code == 200


# -- money, limits ---------------------------------------------------------------------------


async def test_queue_answers_402_when_the_balance_is_below_the_quote(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    app.state.balance_usd = 0.01
    response = await queue(client, text_body())
    assert response.status_code == 402
    assert response.json()["error"].startswith("Insufficient USD or Diem balance")
    assert app.state.submissions == 0


async def test_quote_answers_the_price_in_usd(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/video/quote", headers=AUTH,
                                 json={"model": "seedance-2-0-text-to-video", "duration": "10s",
                                       "resolution": "720p"})
    assert response.status_code == 200
    assert response.json() == {"quote": pytest.approx(1.2)}


async def test_quote_creates_no_job(client: httpx.AsyncClient, app: Starlette) -> None:
    await client.post("/api/v1/video/quote", headers=AUTH,
                      json={"model": "seedance-2-0-text-to-video", "duration": "5s"})
    assert app.state.submissions == 0
    assert app.state.jobs == {}


async def test_queue_over_its_rpm_answers_429_with_retry_after() -> None:
    app = create_app(SimSettings(api_key=KEY), queue_rpm=2)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://api.venice.ai") as client:
        for _ in range(2):
            assert (await queue(client, text_body())).status_code == 200
        response = await queue(client, text_body())
    assert response.status_code == 429
    assert response.json() == {"error": "Rate limit exceeded"}
    assert 0 < int(response.headers["retry-after"]) <= 60
    assert app.state.submissions == 2


async def test_retrieve_over_its_rpm_answers_429_with_retry_after() -> None:
    app = create_app(SimSettings(api_key=KEY), retrieve_rpm=1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://api.venice.ai") as client:
        queue_id = await queued(client, text_body())
        assert (await retrieve(client, "seedance-2-0-text-to-video", queue_id)).status_code == 200
        response = await retrieve(client, "seedance-2-0-text-to-video", queue_id)
    assert response.status_code == 429
    assert "retry-after" in response.headers


async def test_scripted_fault_answers_in_venice_error_shape(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    app.state.faults.add(r"/video/queue$", status=429, retry_after=7)
    response = await queue(client, text_body())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json() == {"error": "Rate limit exceeded"}


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "field"), [
    ({"model": "no-such-model"}, "model"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "x" * 10_001}, "prompt"),
    ({"duration": "17s"}, "duration"),
    ({"duration": "2s"}, "duration"),  # in the seed's enum, not in this model's subset
    ({"duration": None}, "duration"),
    ({"aspect_ratio": "5:4"}, "aspect_ratio"),
    ({"resolution": "2160p"}, "resolution"),  # known to Venice, not to this model
    ({"negative_prompt": "x" * 10_001}, "negative_prompt"),
    ({"image_url": "ftp://example.com/a.png"}, "image_url"),
    ({"reference_image_urls": ["https://e.com/a.png"] * 10}, "reference_image_urls"),
    ({"upscale_factor": 3}, "upscale_factor"),
], ids=lambda v: str(v)[:30])
async def test_queue_refuses_values_outside_the_documented_limits(
    client: httpx.AsyncClient, app: Starlette, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in {**text_body(), **change}.items() if v is not None}
    response = await queue(client, body)
    assert response.status_code == 400
    data = response.json()
    assert data["error"] == "Invalid request parameters"
    assert data["details"][field]["_errors"]
    assert app.state.submissions == 0


async def test_prompt_limit_is_per_model(client: httpx.AsyncClient) -> None:
    long_prompt = "x" * 3000
    seedance = await queue(client, text_body(long_prompt))
    private = await queue(client, {"model": PRIVATE, "prompt": long_prompt, "duration": "5s"})
    assert seedance.status_code == 200
    assert private.status_code == 400


async def test_image_to_video_without_image_url_answers_400(client: httpx.AsyncClient) -> None:
    response = await queue(client, {"model": "seedance-2-0-image-to-video", "prompt": "x",
                                    "duration": "5s"})
    assert response.status_code == 400
    assert "image_url" in response.json()["details"]


# -- models ----------------------------------------------------------------------------------


async def test_models_of_type_video_list_constraints(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/models", params={"type": "video"})
    assert response.status_code == 200
    data = response.json()["data"]
    assert [m["id"] for m in data] == [m["id"] for m in SIM_MODELS]
    first = data[0]
    assert first["type"] == "video"
    constraints = first["model_spec"]["constraints"]
    assert constraints["model_type"] == "text-to-video"
    assert "10s" in constraints["durations"]
    assert "16:9" in constraints["aspect_ratios"]
    assert "720p" in constraints["resolutions"]
    assert isinstance(first["model_spec"]["private"], bool)
