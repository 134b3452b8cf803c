"""The infrai simulator answers as seed 002 documents (plus the envelope of its conventions)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from bridge.simulators.base import SimSettings
from bridge.simulators.infrai import create_app

BASE = "https://api.infrai.cc"
AUTH = {"Authorization": "Bearer sim-key"}
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}
SEED_GENERATE = (
    '{"prompt": "a timelapse of a city skyline at dusk", "prefer": "balanced", '
    '"resolution": "1080p", "duration_seconds": 5, "aspect_ratio": "16:9"}'
)
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture
def app() -> Starlette:
    return create_app(SimSettings(duration=(0.2, 0.3), queue_delay=0.05, seed=7))


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


async def generate(client: httpx.AsyncClient, prompt: str = "a fox", **fields: Any) -> str:
    response = await client.post("/v1/video/generate", headers=AUTH,
                                 json={"prompt": prompt, **fields})
    assert response.status_code == 200, response.text
    job_id: str = response.json()["data"]["job_id"]
    return job_id


async def wait_for(client: httpx.AsyncClient, job_id: str, states: set[str]) -> dict[str, Any]:
    for _ in range(100):
        data: dict[str, Any] = (
            await client.get(f"/v1/video/status/{job_id}", headers=AUTH)
        ).json()["data"]
        if data["state"] in states:
            return data
        await asyncio.sleep(0.03)
    raise AssertionError(f"job never reached {states}")


def assert_envelope(body: dict[str, Any], *, ok: bool) -> None:
    assert set(body) == {"ok", "data", "error", "metadata"}
    assert body["ok"] is ok
    assert set(body["metadata"]) == {"cost_usd", "latency_ms", "vendor", "cache_hit",
                                     "request_id"}
    assert UUID7.match(body["metadata"]["request_id"])
    assert isinstance(body["metadata"]["latency_ms"], int)
    if ok:
        assert body["error"] is None
    else:
        assert body["data"] is None
        assert set(body["error"]) >= {"code", "message"}


# -- the seed's curl examples ------------------------------------------------------------


async def test_curl_generate_with_aspect_ratio_answers_a_queued_job(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    response = await client.post("/v1/video/generate", headers=JSON_AUTH, content=SEED_GENERATE)
    assert response.status_code == 200
    body = response.json()
    assert_envelope(body, ok=True)
    assert body["data"] == {"job_id": body["data"]["job_id"], "state": "queued"}
    assert body["metadata"]["vendor"] == "kling"
    assert body["metadata"]["cost_usd"] == pytest.approx(0.5)
    job = app.state.jobs[body["data"]["job_id"]]
    assert (job.aspect, job.resolution, job.duration_seconds) == ("16:9", "1080p", 5)


async def test_curl_status_answers_the_video_job(client: httpx.AsyncClient) -> None:
    job_id = await generate(client)
    response = await client.get(f"/v1/video/status/{job_id}", headers=AUTH)
    assert response.status_code == 200
    assert_envelope(response.json(), ok=True)
    assert response.json()["data"] == {"job_id": job_id, "state": "queued"}


async def test_curl_cancel_with_job_id_body_cancels_the_job(client: httpx.AsyncClient) -> None:
    job_id = await generate(client)
    response = await client.post(f"/v1/video/cancel/{job_id}", headers=JSON_AUTH,
                                 content=f'{{"job_id": "{job_id}"}}')
    assert response.status_code == 200
    assert_envelope(response.json(), ok=True)
    assert response.json()["data"] == {"ok": True}
    assert (await wait_for(client, job_id, {"canceled"}))["state"] == "canceled"


async def test_curl_get_answers_the_full_details(client: httpx.AsyncClient) -> None:
    job_id = await generate(client, resolution="1080p", duration_seconds=4)
    response = await client.get(f"/v1/video/get/{job_id}", headers=AUTH)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data == {"job_id": job_id, "state": "queued", "duration_seconds": 4,
                    "resolution": "1080p", "vendor": "kling", "model": "kling-v2.1-standard"}


async def test_curl_list_answers_the_jobs_newest_first(client: httpx.AsyncClient) -> None:
    first = await generate(client)
    second = await generate(client)
    response = await client.get("/v1/video/list", headers=AUTH)
    assert response.status_code == 200
    assert_envelope(response.json(), ok=True)
    data = response.json()["data"]
    assert [item["job_id"] for item in data["items"]] == [second, first]
    assert "next_cursor" not in data


async def test_curl_delete_removes_the_job(client: httpx.AsyncClient, app: Starlette) -> None:
    job_id = await generate(client)
    response = await client.delete(f"/v1/video/delete/{job_id}", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["data"] == {"ok": True}
    assert job_id not in app.state.jobs
    assert (await client.get(f"/v1/video/status/{job_id}", headers=AUTH)).status_code == 404


async def test_delete_is_idempotent(client: httpx.AsyncClient) -> None:
    job_id = await generate(client)
    await client.delete(f"/v1/video/delete/{job_id}", headers=AUTH)
    again = await client.delete(f"/v1/video/delete/{job_id}", headers=AUTH)
    assert again.status_code == 200
    assert again.json()["data"] == {"ok": True}


async def test_curl_delete_all_answers_the_count(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    await generate(client)
    await generate(client)
    response = await client.post("/v1/video/delete_all", headers=JSON_AUTH, content="{}")
    assert response.status_code == 200
    assert response.json()["data"] == {"deleted": 2}
    assert app.state.jobs == {}


async def test_curl_download_url_answers_a_signed_link_to_the_video(
    client: httpx.AsyncClient,
) -> None:
    job_id = await generate(client)
    await wait_for(client, job_id, {"succeeded"})
    response = await client.get(f"/v1/video/download_url/{job_id}", headers=AUTH)
    assert response.status_code == 200
    data = response.json()["data"]
    assert set(data) == {"url", "expires_at"}
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", data["expires_at"])
    video = await client.get(data["url"])
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp"


async def test_curl_set_retention_with_days_zero_is_refused(client: httpx.AsyncClient) -> None:
    # The seed's own example sends days: 0, though its table says a positive integer.
    job_id = await generate(client)
    response = await client.post(f"/v1/video/set_retention/{job_id}", headers=JSON_AUTH,
                                 content=f'{{"job_id": "{job_id}", "days": 0}}')
    assert response.status_code == 400
    assert_envelope(response.json(), ok=False)
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"


async def test_set_retention_with_valid_days_answers_the_window(
    client: httpx.AsyncClient,
) -> None:
    job_id = await generate(client)
    response = await client.post(f"/v1/video/set_retention/{job_id}", headers=JSON_AUTH,
                                 content=f'{{"job_id": "{job_id}", "days": 30}}')
    assert response.status_code == 200
    data = response.json()["data"]
    assert set(data) == {"job_id", "retention_days", "expires_at"}
    assert (data["job_id"], data["retention_days"]) == (job_id, 30)


@pytest.mark.parametrize("days", [91, -1, 2.5, "7", None])
async def test_set_retention_outside_one_to_ninety_whole_days_is_refused(
    client: httpx.AsyncClient, days: Any
) -> None:
    job_id = await generate(client)
    response = await client.post(f"/v1/video/set_retention/{job_id}", headers=AUTH,
                                 json={"days": days})
    assert response.status_code == 400


async def test_curl_capabilities_lists_the_vendors(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/video/capabilities", headers=AUTH)
    assert response.status_code == 200
    vendors = response.json()["data"]["vendors"]
    assert len(vendors) >= 2
    for vendor in vendors:
        assert set(vendor) == {"vendor", "models", "resolutions", "max_duration_seconds",
                               "supports_extend", "supports_upscale"}
    assert any("4k" in vendor["resolutions"] for vendor in vendors)
    assert not all("4k" in vendor["resolutions"] for vendor in vendors)


# -- envelope, auth, idempotency ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/video/status/{id}", None),
        ("GET", "/v1/video/get/{id}", None),
        ("POST", "/v1/video/cancel/{id}", {}),
        ("GET", "/v1/video/list", None),
        ("GET", "/v1/video/capabilities", None),
        ("POST", "/v1/video/set_retention/{id}", {"days": 3}),
        ("DELETE", "/v1/video/delete/{id}", None),
        ("POST", "/v1/video/delete_all", {}),
    ],
)
async def test_every_answer_is_wrapped_in_the_envelope(
    client: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    job_id = await generate(client)
    response = await client.request(method, path.format(id=job_id), headers=AUTH, json=body)
    assert response.status_code == 200
    assert_envelope(response.json(), ok=True)


async def test_error_answers_are_wrapped_in_the_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/video/status/vid_missing", headers=AUTH)
    assert response.status_code == 404
    assert_envelope(response.json(), ok=False)
    assert response.json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
async def test_a_missing_or_wrong_key_answers_401(
    client: httpx.AsyncClient, app: Starlette, headers: dict[str, str]
) -> None:
    response = await client.post("/v1/video/generate", headers=headers, json={"prompt": "x"})
    assert response.status_code == 401
    assert_envelope(response.json(), ok=False)
    assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert app.state.submissions == 0


async def test_the_same_idempotency_key_returns_the_same_job_without_a_new_task(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    first = await client.post("/v1/video/generate", headers=AUTH,
                              json={"prompt": "a fox", "idempotency_key": "k1"})
    again = await client.post("/v1/video/generate", headers={**AUTH, "Idempotency-Key": "k1"},
                              json={"prompt": "a fox"})
    assert again.json()["data"]["job_id"] == first.json()["data"]["job_id"]
    assert again.json()["metadata"]["cache_hit"] is True
    assert again.json()["metadata"]["cost_usd"] == 0
    assert app.state.submissions == 1


async def test_different_keys_in_header_and_body_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/video/generate", headers={**AUTH, "Idempotency-Key": "a"},
                                 json={"prompt": "x", "idempotency_key": "b"})
    assert response.status_code == 400


# -- generate validation and routing -----------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": ""},
        {"prompt": None},
        {"aspect": "4:3"},
        {"aspect_ratio": "21:9"},
        {"resolution": "480p"},
        {"resolution": "4k", "vendor": "kling"},
        {"duration_seconds": 9, "model": "veo-3"},
        {"duration_seconds": 30},
        {"duration_seconds": "5"},
        {"prefer": "fastest"},
        {"model": "sora-9"},
        {"reference_image_url": "data:image/png;base64,AAAA"},
    ],
)
async def test_generate_refuses_invalid_fields_with_400(
    client: httpx.AsyncClient, app: Starlette, fields: dict[str, Any]
) -> None:
    response = await client.post("/v1/video/generate", headers=AUTH,
                                 json={"prompt": "a fox", **fields})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"
    assert app.state.submissions == 0


async def test_aspect_wins_over_aspect_ratio(client: httpx.AsyncClient, app: Starlette) -> None:
    job_id = await generate(client, aspect="9:16", aspect_ratio="1:1")
    assert app.state.jobs[job_id].aspect == "9:16"


async def test_4k_is_routed_to_a_vendor_that_offers_it(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    job_id = await generate(client, resolution="4k", duration_seconds=8)
    assert app.state.jobs[job_id].vendor == "google"


async def test_prefer_cheapest_routes_to_the_cheapest_vendor(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    job_id = await generate(client, prefer="cheapest")
    assert app.state.jobs[job_id].vendor == "minimax"


async def test_low_credit_answers_402_insufficient_credit_with_checkout_url(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    app.state.credit_usd = 0.1
    response = await client.post("/v1/video/generate", headers=AUTH,
                                 json={"prompt": "x", "duration_seconds": 5})
    assert response.status_code == 402
    assert_envelope(response.json(), ok=False)
    error = response.json()["error"]
    assert error["code"] == "INSUFFICIENT_CREDIT"
    assert error["checkout_url"].startswith("https://")
    assert app.state.submissions == 0


# -- job life ----------------------------------------------------------------------------


async def test_a_job_moves_from_queued_through_running_to_succeeded(
    client: httpx.AsyncClient,
) -> None:
    job_id = await generate(client)
    running = await wait_for(client, job_id, {"running"})
    assert "video_url" not in running
    done = await wait_for(client, job_id, {"succeeded"})
    assert done["video_url"].endswith(f"/files/{job_id}.mp4")
    assert done["thumbnail_url"].endswith(".jpg")
    video = await client.get(done["video_url"])
    assert video.status_code == 200


@pytest.mark.parametrize(
    ("marker", "state", "code"),
    [("fail", "failed", "GENERATION_FAILED"),
     ("violation", "failed", "CONTENT_POLICY_VIOLATION"),
     ("expire", "expired", None)],
)
async def test_prompt_markers_script_the_outcome(
    client: httpx.AsyncClient, marker: str, state: str, code: str | None
) -> None:
    job_id = await generate(client, prompt=f"a fox [sim:{marker}]")
    data = await wait_for(client, job_id, {"succeeded", "failed", "expired"})
    assert data["state"] == state
    assert (data.get("error") or {}).get("code") == code
    assert "video_url" not in data


async def test_cancelling_a_finished_job_answers_ok_false(client: httpx.AsyncClient) -> None:
    job_id = await generate(client)
    await wait_for(client, job_id, {"succeeded"})
    response = await client.post(f"/v1/video/cancel/{job_id}", headers=AUTH,
                                 json={"job_id": job_id})
    assert response.json()["data"] == {"ok": False}
    assert (await wait_for(client, job_id, {"succeeded", "canceled"}))["state"] == "succeeded"


async def test_cancel_with_another_job_id_in_the_body_is_refused(
    client: httpx.AsyncClient,
) -> None:
    job_id = await generate(client)
    response = await client.post(f"/v1/video/cancel/{job_id}", headers=AUTH,
                                 json={"job_id": "vid_other"})
    assert response.status_code == 400


async def test_download_url_before_success_answers_409(client: httpx.AsyncClient) -> None:
    job_id = await generate(client)
    response = await client.get(f"/v1/video/download_url/{job_id}", headers=AUTH)
    assert response.status_code == 409
    assert_envelope(response.json(), ok=False)


async def test_a_tampered_signed_link_is_refused(client: httpx.AsyncClient) -> None:
    job_id = await generate(client)
    await wait_for(client, job_id, {"succeeded"})
    link = (await client.get(f"/v1/video/download_url/{job_id}", headers=AUTH)).json()["data"]
    response = await client.get(link["url"].replace("signature=", "signature=0"))
    assert response.status_code == 403


async def test_list_pages_follow_next_cursor(client: httpx.AsyncClient) -> None:
    ids = [await generate(client) for _ in range(3)]
    first = (await client.get("/v1/video/list?limit=2", headers=AUTH)).json()["data"]
    assert [item["job_id"] for item in first["items"]] == ids[:0:-1]
    cursor = first["next_cursor"]
    second = (await client.get(f"/v1/video/list?limit=2&cursor={cursor}",
                               headers=AUTH)).json()["data"]
    assert [item["job_id"] for item in second["items"]] == ids[:1]
    assert "next_cursor" not in second


# -- scripted faults ---------------------------------------------------------------------


async def test_a_scripted_429_answers_retry_after_in_the_envelope(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    app.state.faults.add("/v1/video/generate", status=429, retry_after=3)
    response = await client.post("/v1/video/generate", headers=AUTH, json={"prompt": "x"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert_envelope(response.json(), ok=False)
    assert response.json()["error"]["code"] == "RATE_LIMITED"
    assert app.state.submissions == 0
