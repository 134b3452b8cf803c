"""The api.airforce simulator answers as seeds 000/001 document."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from bridge.serving import serve_in_background
from bridge.simulators.airforce import MAX_CONCURRENT, create_app
from bridge.simulators.base import SimSettings

KEY = "sk-air-YOUR_API_KEY"  # the seed's examples send exactly this key
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}

TEXT_EXAMPLE = """{
"model": "wan-2.6",
"prompt": "A red fox darting across snowy hills at dawn",
"duration_seconds": 8,
"aspect_ratio": "16:9",
"quality": "720p",
"sound": true
}"""

IMAGE_EXAMPLE = """{
"model": "kling-1",
"mode": "image",
"prompt": "Camera pulls back as the dragon takes off",
"duration_seconds": 5,
"aspect_ratio": "16:9",
"input_images": [{"url": "https://example.com/dragon.jpg"}]
}"""

CREATE_KEYS = {"task_id", "status", "model", "created", "expires_at", "progress", "cost_cents"}


@pytest.fixture
def sim() -> Starlette:
    return create_app(SimSettings(api_key=KEY, duration=(0.2, 0.3), queue_delay=0.05, seed=7))


@pytest.fixture
async def client(sim: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sim)
    async with httpx.AsyncClient(transport=transport, base_url="https://api.airforce") as c:
        yield c


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"model": "wan-2.6", "prompt": "a fox", "duration_seconds": 5, **fields}
    response = await client.post("/v1/video/generations", headers=AUTH, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def wait_until_ended(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        task: dict[str, Any] = (await client.get(f"/v1/video/tasks/{task_id}", headers=AUTH)).json()
        if task["status"] in ("completed", "failed", "expired"):
            return task
        await asyncio.sleep(0.05)
    raise AssertionError("task did not end")


# -- the seed's examples ---------------------------------------------------------------------

async def test_text_to_video_example_answers_a_queued_task(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "https://api.airforce/v1/video/generations", headers=JSON_AUTH, content=TEXT_EXAMPLE
    )

    assert response.status_code == 200
    task = response.json()
    assert set(task) == CREATE_KEYS
    assert uuid.UUID(task["task_id"]).version == 4
    assert task["status"] == "queued"
    assert task["model"] == "wan-2.6"
    assert task["progress"] == 0
    assert task["expires_at"] == task["created"] + 86400
    assert task["cost_cents"] == 320  # 8 s x 40 cents, as in the seed's answer
    assert abs(task["created"] - time.time()) < 5


async def test_image_to_video_example_answers_a_queued_task(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "https://api.airforce/v1/video/generations", headers=JSON_AUTH, content=IMAGE_EXAMPLE
    )

    assert response.status_code == 200
    task = response.json()
    assert set(task) == CREATE_KEYS
    assert (task["status"], task["model"], task["progress"]) == ("queued", "kling-1", 0)
    assert task["cost_cents"] == 5 * 35


async def test_list_example_returns_recent_tasks_newest_first(client: httpx.AsyncClient) -> None:
    first = await create(client)
    second = await create(client, model="kling-1")

    response = await client.get("https://api.airforce/v1/video/tasks", headers=AUTH)

    assert response.status_code == 200
    ids = [task["task_id"] for task in response.json()["data"]]
    assert ids == [second["task_id"], first["task_id"]]


async def test_list_holds_at_most_100_tasks(sim: Starlette, client: httpx.AsyncClient) -> None:
    for _ in range(26):  # 4 at a time, each ends at once
        for _ in range(4):
            await create(client, prompt="quick [sim:duration=0]")
        await asyncio.sleep(0.06)

    tasks = (await client.get("/v1/video/tasks", headers=AUTH)).json()["data"]

    assert len(tasks) == 100
    assert sim.state.submissions == 104


async def test_get_task_shows_the_documented_fields_when_completed(
    client: httpx.AsyncClient,
) -> None:
    created = await create(client, duration_seconds=8)

    task = await wait_until_ended(client, created["task_id"])

    assert task["status"] == "completed"
    assert task["progress"] == 100
    assert task["result_url"].endswith(".mp4")
    assert task["model"] == "wan-2.6"
    assert task["duration_seconds"] == 8
    assert task["expires_at"] == created["expires_at"]
    assert task["cost_cents"] == 320
    assert "error" not in task


async def test_result_url_serves_an_mp4_without_a_key(client: httpx.AsyncClient) -> None:
    task = await wait_until_ended(client, (await create(client))["task_id"])

    response = await client.get(task["result_url"])

    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert response.content[4:8] == b"ftyp"


async def test_stream_example_sends_state_events_then_done(sim: Starlette) -> None:
    async with serve_in_background(sim) as base, httpx.AsyncClient(base_url=base) as client:
        task_id = (await create(client))["task_id"]
        async with client.stream(
            "GET", f"/v1/video/tasks/{task_id}/stream", headers=AUTH
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            text = (await response.aread()).decode()

    blocks = [block.split("\n") for block in text.strip().split("\n\n")]
    assert all(block[0] == "event: state" for block in blocks[:-1])
    assert blocks[-1] == ["event: done", "data: [DONE]"]
    states = [json.loads(block[1].removeprefix("data: ")) for block in blocks[:-1]]
    assert all(state["task_id"] == task_id for state in states)
    progress = [state["progress"] for state in states]
    assert progress == sorted(progress) and len(progress) >= 3
    assert states[-1]["status"] == "completed"
    assert states[-1]["result_url"].endswith(f"{task_id}.mp4")


# -- auth, limits, validation ----------------------------------------------------------------

async def test_bad_key_answers_401_with_an_error_object(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/video/generations", headers={"Authorization": "Bearer sk-air-wrong"},
        content=TEXT_EXAMPLE,
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


async def test_fifth_concurrent_task_answers_429(
    sim: Starlette, client: httpx.AsyncClient
) -> None:
    for _ in range(MAX_CONCURRENT):
        await create(client, prompt="slow [sim:duration=2]")

    response = await client.post("/v1/video/generations", headers=AUTH,
                                 json={"model": "wan-2.6", "prompt": "one more"})

    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert int(response.headers["retry-after"]) >= 1
    assert sim.state.submissions == MAX_CONCURRENT


async def test_a_slot_frees_when_a_task_ends(client: httpx.AsyncClient) -> None:
    short = await create(client, prompt="short [sim:duration=0.1]")
    for _ in range(MAX_CONCURRENT - 1):
        await create(client, prompt="slow [sim:duration=3]")
    await wait_until_ended(client, short["task_id"])

    response = await client.post("/v1/video/generations", headers=AUTH,
                                 json={"model": "wan-2.6", "prompt": "now it fits"})

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x"}, "model"),
        ({"model": "wan-2.6"}, "prompt"),
        ({"model": "wan-2.6", "prompt": "x", "mode": "video"}, "mode"),
        ({"model": "kling-1", "prompt": "x", "mode": "reference",
          "input_images": [{"url": "https://example.com/a.jpg"}]}, "mode"),
        ({"model": "wan-2.6", "prompt": "x", "duration_seconds": 30}, "duration_seconds"),
        ({"model": "wan-2.6", "prompt": "x", "duration_seconds": "8"}, "duration_seconds"),
        ({"model": "wan-2.6", "prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio"),
        ({"model": "kling-1", "prompt": "x", "quality": "480p"}, "quality"),
        ({"model": "wan-2.6", "prompt": "x", "mode": "image"}, "input_images"),
        ({"model": "wan-2.6", "prompt": "x", "mode": "reference",
          "input_images": [{"path": "/tmp/a.jpg"}]}, "input_images"),
    ],
)
async def test_invalid_field_answers_400_naming_it(
    sim: Starlette, client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/video/generations", headers=AUTH, json=body)

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(f"{field}:")
    assert sim.state.submissions == 0


async def test_unknown_model_answers_400_unknown_model(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/video/generations", headers=AUTH,
                                 json={"model": "wan-9", "prompt": "x"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_model"


async def test_non_video_model_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/video/generations", headers=AUTH,
                                 json={"model": "gpt-4.1-mini", "prompt": "x"})

    assert response.status_code == 400
    assert "not a video model" in response.json()["error"]["message"]


async def test_duration_defaults_to_the_model_minimum(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/video/generations", headers=AUTH,
                                 json={"model": "kling-1", "prompt": "x"})
    task_id = response.json()["task_id"]

    task = (await client.get(f"/v1/video/tasks/{task_id}", headers=AUTH)).json()

    assert task["duration_seconds"] == 5
    assert task["cost_cents"] == 5 * 35


async def test_other_keys_are_accepted_and_kept(sim: Starlette, client: httpx.AsyncClient) -> None:
    task = await create(client, seed=42, sound=True, anything={"nested": 1})

    assert sim.state.jobs[task["task_id"]].sim.body["anything"] == {"nested": 1}


async def test_wrong_path_answers_404_with_an_error_object(client: httpx.AsyncClient) -> None:
    response = await client.get("/video/tasks", headers=AUTH)  # base URL without /v1

    assert response.status_code == 404
    assert "message" in response.json()["error"]


# -- outcomes, delete, models ----------------------------------------------------------------

async def test_failing_task_ends_failed_with_an_error_and_no_charge(
    client: httpx.AsyncClient,
) -> None:
    task = await wait_until_ended(client, (await create(client, prompt="x [sim:fail]"))["task_id"])

    assert task["status"] == "failed"
    assert isinstance(task["error"], str) and task["error"]
    assert task["cost_cents"] == 0
    assert "result_url" not in task


async def test_violating_task_fails_naming_the_content_policy(client: httpx.AsyncClient) -> None:
    created = await create(client, prompt="x [sim:violation]")

    task = await wait_until_ended(client, created["task_id"])

    assert task["status"] == "failed"
    assert "content policy" in task["error"]


async def test_expiring_task_ends_expired(client: httpx.AsyncClient) -> None:
    created = await create(client, prompt="x [sim:expire]")

    task = await wait_until_ended(client, created["task_id"])

    assert task["status"] == "expired"
    assert task["cost_cents"] == 0


async def test_delete_forgets_the_task(client: httpx.AsyncClient) -> None:
    task_id = (await create(client))["task_id"]

    response = await client.delete(f"/v1/video/tasks/{task_id}", headers=AUTH)

    assert response.json() == {"deleted": True}
    assert (await client.get(f"/v1/video/tasks/{task_id}", headers=AUTH)).status_code == 404
    assert (await client.get("/v1/video/tasks", headers=AUTH)).json()["data"] == []


async def test_delete_of_an_unknown_task_still_answers_deleted(client: httpx.AsyncClient) -> None:
    response = await client.delete(f"/v1/video/tasks/{uuid.uuid4()}", headers=AUTH)

    assert (response.status_code, response.json()) == (200, {"deleted": True})


async def test_models_list_video_caps_and_a_non_video_model(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models", headers=AUTH)).json()

    assert body["object"] == "list"
    by_id = {model["id"]: model for model in body["data"]}
    kling = by_id["kling-1"]["video_caps"]
    assert "image" in kling["modes"] and "16:9" in kling["aspect_ratios"]
    assert kling["min_duration_s"] <= 5 <= kling["max_duration_s"]
    assert by_id["wan-2.6"]["output_modalities"] == ["video"]
    assert any("video" not in model["output_modalities"] for model in body["data"])
