"""The apixo simulator answers as seed 003 documents (curl examples, validation, callbacks)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.serving import serve_in_background
from bridge.simulators.apixo import create_app
from bridge.simulators.base import SimSettings

KEY = "YOUR_API_KEY"  # the seed's placeholder, so the curl examples run unchanged
BASE = "https://api.apixo.ai"
GENERATE = "/api/v1/generateTask/veo-3-1"
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
AUTH = {"Authorization": f"Bearer {KEY}"}
TASK_ID = re.compile(r"^task_[0-9a-f]{8,}$")
FAST_RETRIES = (0.05, 0.1, 0.15)


def settings(duration: float = 0.2) -> SimSettings:
    return SimSettings(api_key=KEY, duration=(duration, duration), queue_delay=0.05, seed=3)


@pytest.fixture
async def app() -> AsyncIterator[Starlette]:
    app = create_app(settings(), callback_retry_delays=FAST_RETRIES)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


def text_body(prompt: str = "a fox in the snow", **top: Any) -> dict[str, Any]:
    return {"request_type": "async", **top,
            "input": {"mode": "quality", "prompt": prompt, "generationType": "TEXT_2_VIDEO"}}


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    answer = await client.post(GENERATE, headers=HEADERS, json=body)
    assert answer.status_code == 200, answer.text
    task_id: str = answer.json()["data"]["taskId"]
    return task_id


async def status(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    answer = await client.get(f"/api/v1/statusTask/veo-3-1?taskId={task_id}", headers=AUTH)
    assert answer.status_code == 200, answer.text
    payload: dict[str, Any] = answer.json()
    return payload


async def final(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        payload = await status(client, task_id)
        if payload["data"]["state"] in ("success", "failed"):
            return payload
        await asyncio.sleep(0.05)
    raise AssertionError("the task never ended")


def receiver(answers: list[int]) -> tuple[Starlette, list[bytes]]:
    """A callback receiver answering ``answers`` in turn (the last one repeats)."""
    received: list[bytes] = []

    async def hook(request: Request) -> Response:
        received.append(await request.body())
        return Response(status_code=answers[min(len(received), len(answers)) - 1])

    return Starlette(routes=[Route("/hook", hook, methods=["POST"])]), received


async def deliveries_done(app: Starlette) -> None:
    await asyncio.wait_for(asyncio.gather(*app.state.callback_tasks), timeout=5)


# --- the seed's curl examples ---------------------------------------------------------------


async def test_text_to_video_example_answers_a_task_id(client: httpx.AsyncClient) -> None:
    body = {
        "request_type": "async",
        "input": {
            "mode": "quality",
            "prompt": "a cinematic flyover of a futuristic city at sunrise",
            "generationType": "TEXT_2_VIDEO",
            "aspect_ratio": "16:9",
        },
    }
    answer = await client.post(GENERATE, headers=HEADERS, content=json.dumps(body))
    assert answer.status_code == 200
    payload = answer.json()
    assert payload["code"] == 200 and payload["message"] == "success"
    assert list(payload["data"]) == ["taskId"]
    assert TASK_ID.match(payload["data"]["taskId"])


async def test_first_last_frame_example_answers_a_task_id() -> None:
    # The example's callback_url is not reachable from a test: the task runs long enough for
    # shutdown to cancel its delivery before any attempt.
    app = create_app(settings(duration=30.0))
    body = {
        "request_type": "callback",
        "callback_url": "https://your-server.com/callback",
        "input": {
            "mode": "quality",
            "prompt": "a calm ocean turning into a storm",
            "generationType": "FIRST_AND_LAST_FRAMES_2_VIDEO",
            "image_urls": [
                "https://example.com/frame_start.jpg",
                "https://example.com/frame_end.jpg",
            ],
            "aspect_ratio": "9:16",
        },
    }
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            answer = await client.post(GENERATE, headers=HEADERS, content=json.dumps(body))
    assert answer.status_code == 200
    assert answer.json()["code"] == 200
    assert TASK_ID.match(answer.json()["data"]["taskId"])
    assert app.state.callback_attempts == []


async def test_reference_example_answers_a_task_id(client: httpx.AsyncClient) -> None:
    body = {
        "request_type": "async",
        "input": {
            "mode": "fast",
            "prompt": "turn this sequence into a dynamic action shot",
            "generationType": "REFERENCE_2_VIDEO",
            "image_urls": ["https://example.com/ref1.jpg", "https://example.com/ref2.jpg"],
            "aspect_ratio": "16:9",
        },
    }
    answer = await client.post(GENERATE, headers=HEADERS, content=json.dumps(body))
    assert answer.status_code == 200
    assert answer.json() == {"code": 200, "message": "success",
                             "data": {"taskId": answer.json()["data"]["taskId"]}}


async def test_status_example_answers_the_success_shape(client: httpx.AsyncClient) -> None:
    task_id = await create(client, text_body())
    await final(client, task_id)
    answer = await client.get(
        f"https://api.apixo.ai/api/v1/statusTask/veo-3-1?taskId={task_id}",
        headers={"Authorization": "Bearer YOUR_API_KEY"},
    )
    payload = answer.json()
    assert answer.status_code == 200 and payload["code"] == 200
    assert payload["message"] == "success"
    data = payload["data"]
    assert set(data) == {"taskId", "state", "resultJson", "createTime", "completeTime",
                         "costTime"}
    assert data["taskId"] == task_id and data["state"] == "success"
    assert isinstance(data["resultJson"], str)
    urls = json.loads(data["resultJson"])["resultUrls"]
    assert len(urls) == 1 and urls[0].endswith(f"/files/{task_id}.mp4")
    assert data["costTime"] == data["completeTime"] - data["createTime"] > 0


async def test_status_answers_the_failed_shape_for_a_violation(
    client: httpx.AsyncClient,
) -> None:
    task_id = await create(client, text_body("[sim:violation] something unsafe"))
    data = (await final(client, task_id))["data"]
    assert data["state"] == "failed"
    assert data["failCode"] == "CONTENT_VIOLATION"
    assert isinstance(data["failMsg"], str) and data["failMsg"]
    assert set(data) == {"taskId", "state", "failCode", "failMsg", "createTime", "completeTime"}


async def test_insufficient_credits_answer_the_documented_error(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    app.state.credits = 0
    answer = await client.post(GENERATE, headers=HEADERS, json=text_body())
    assert answer.status_code == 400
    assert answer.json() == {"code": 400, "message": "Insufficient credits", "data": None}
    assert app.state.submissions == 0


# --- states ----------------------------------------------------------------------------------


async def test_pending_then_processing_carry_only_task_id_state_and_create_time() -> None:
    app = create_app(SimSettings(api_key=KEY, duration=(5.0, 5.0), queue_delay=0.3, seed=3))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        task_id = await create(client, text_body())
        pending = (await status(client, task_id))["data"]
        await asyncio.sleep(0.35)
        processing = (await status(client, task_id))["data"]
    assert pending["state"] == "pending" and processing["state"] == "processing"
    assert set(pending) == set(processing) == {"taskId", "state", "createTime"}


async def test_plain_failure_reports_generation_failed(client: httpx.AsyncClient) -> None:
    task_id = await create(client, text_body("[sim:fail] a fox"))
    data = (await final(client, task_id))["data"]
    assert (data["state"], data["failCode"]) == ("failed", "GENERATION_FAILED")


async def test_unreachable_image_url_reports_invalid_image_url(
    client: httpx.AsyncClient,
) -> None:
    body = {"input": {"prompt": "a fox", "generationType": "FIRST_AND_LAST_FRAMES_2_VIDEO",
                      "image_urls": ["https://example.com/invalid.jpg"]}}
    data = (await final(client, await create(client, body)))["data"]
    assert (data["state"], data["failCode"]) == ("failed", "INVALID_IMAGE_URL")


async def test_expire_marker_succeeds_as_apixo_has_no_expired_state(
    client: httpx.AsyncClient,
) -> None:
    task_id = await create(client, text_body("[sim:expire] a fox"))
    assert (await final(client, task_id))["data"]["state"] == "success"


async def test_result_url_serves_an_mp4_without_auth(client: httpx.AsyncClient) -> None:
    task_id = await create(client, text_body())
    url = json.loads((await final(client, task_id))["data"]["resultJson"])["resultUrls"][0]
    answer = await client.get(url)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "video/mp4"
    assert answer.content[4:8] == b"ftyp"


# --- validation ------------------------------------------------------------------------------

REF = {"mode": "fast", "prompt": "p", "generationType": "REFERENCE_2_VIDEO",
       "image_urls": ["https://e.com/1.jpg"], "aspect_ratio": "16:9"}
FLF = {"prompt": "p", "generationType": "FIRST_AND_LAST_FRAMES_2_VIDEO",
       "image_urls": ["https://e.com/1.jpg"]}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"input": {**REF, "mode": "quality"}}, "requires input.mode=fast"),
        ({"input": {**REF, "aspect_ratio": "9:16"}}, "requires input.aspect_ratio=16:9"),
        ({"input": {**REF, "aspect_ratio": "auto"}}, "requires input.aspect_ratio=16:9"),
        ({"input": {**REF, "image_urls": [f"https://e.com/{i}.jpg" for i in range(4)]}},
         "image_urls"),
        ({"input": {**REF, "image_urls": []}}, "image_urls"),
        ({"input": {**FLF, "image_urls": [f"https://e.com/{i}.jpg" for i in range(3)]}},
         "image_urls"),
        ({"input": {k: v for k, v in FLF.items() if k != "image_urls"}}, "image_urls"),
        ({"request_type": "callback", "input": {"prompt": "p"}}, "callback_url"),
        ({"request_type": "webhook", "input": {"prompt": "p"}}, "request_type"),
        ({"provider": "cheapest", "input": {"prompt": "p"}}, "provider"),
        ({"input": {"prompt": "p", "mode": "turbo"}}, "input.mode"),
        ({"input": {"prompt": "p", "generationType": "IMAGE_2_VIDEO"}}, "generationType"),
        ({"input": {"prompt": "p", "aspect_ratio": "1:1"}}, "aspect_ratio"),
        ({"input": {"prompt": ""}}, "prompt"),
        ({"input": {"prompt": "x" * 10_001}}, "prompt"),
        ({"input": {"mode": "fast"}}, "prompt"),
        ({"input": {"prompt": "p", "seed": "1234"}}, "seed"),
        ({"input": {"prompt": "p", "seed": 1.5}}, "seed"),
        ({"input": {"prompt": "p", "watermark": 5}}, "watermark"),
        ({"input": {"prompt": "p", "enableTranslation": "yes"}}, "enableTranslation"),
        ({"request_type": "async"}, "input"),
    ],
)
async def test_invalid_body_answers_400_naming_the_problem(
    app: Starlette, client: httpx.AsyncClient, body: dict[str, Any], problem: str
) -> None:
    answer = await client.post(GENERATE, headers=HEADERS, json=body)
    assert answer.status_code == 400
    payload = answer.json()
    assert payload["code"] == 400 and payload["data"] is None
    assert problem in payload["message"]
    assert app.state.submissions == 0


async def test_body_that_is_not_json_answers_400(client: httpx.AsyncClient) -> None:
    answer = await client.post(GENERATE, headers=HEADERS, content=b"{not json")
    assert answer.status_code == 400 and answer.json()["code"] == 400


async def test_documented_defaults_make_a_bare_prompt_valid(client: httpx.AsyncClient) -> None:
    answer = await client.post(GENERATE, headers=HEADERS, json={"input": {"prompt": "p"}})
    assert answer.json()["code"] == 200


async def test_limits_themselves_are_accepted(client: httpx.AsyncClient) -> None:
    three = [f"https://e.com/{i}.jpg" for i in range(3)]
    reference = {"input": {**REF, "prompt": "x" * 10_000, "image_urls": three}}
    answer = await client.post(GENERATE, headers=HEADERS, json=reference)
    assert answer.json()["code"] == 200


async def test_unknown_model_answers_400(client: httpx.AsyncClient) -> None:
    answer = await client.post("/api/v1/generateTask/veo-9", headers=HEADERS, json=text_body())
    assert answer.status_code == 400 and answer.json()["code"] == 400


async def test_status_of_unknown_task_answers_400(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/v1/statusTask/veo-3-1?taskId=task_00000000", headers=AUTH)
    assert answer.status_code == 400 and answer.json()["data"] is None


async def test_status_without_task_id_answers_400(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/v1/statusTask/veo-3-1", headers=AUTH)
    assert answer.status_code == 400 and "taskId" in answer.json()["message"]


# --- auth, counters, faults ------------------------------------------------------------------


async def test_wrong_key_answers_401_in_the_envelope(client: httpx.AsyncClient) -> None:
    answer = await client.post(GENERATE, headers={"Authorization": "Bearer nope"},
                               json=text_body())
    assert answer.status_code == 401
    assert answer.json() == {"code": 401, "message": "Invalid or missing API Key", "data": None}


async def test_missing_key_on_status_answers_401(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/v1/statusTask/veo-3-1?taskId=task_1")
    assert answer.status_code == 401 and answer.json()["code"] == 401


async def test_each_created_task_counts_one_submission(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    first = await create(client, text_body())
    second = await create(client, text_body())
    assert first != second
    assert app.state.submissions == 2 and set(app.state.jobs) == {first, second}


async def test_scripted_rate_limit_answers_429_envelope_with_retry_after(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    app.state.faults.add("/generateTask/", status=429, retry_after=3)
    answer = await client.post(GENERATE, headers=HEADERS, json=text_body())
    assert answer.status_code == 429 and answer.headers["retry-after"] == "3"
    assert answer.json() == {"code": 429, "message": "Rate limit exceeded", "data": None}
    assert app.state.submissions == 0


# --- callbacks -------------------------------------------------------------------------------


async def test_callback_posts_the_final_status_envelope_to_the_receiver(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    hook, received = receiver([200])
    async with serve_in_background(hook) as url:
        task_id = await create(client, text_body(request_type="callback",
                                                 callback_url=f"{url}/hook"))
        await deliveries_done(app)
    assert len(received) == 1
    assert json.loads(received[0]) == await status(client, task_id)
    assert app.state.callback_attempts == [(task_id, 200)]


async def test_failed_task_callback_carries_fail_code(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    hook, received = receiver([200])
    async with serve_in_background(hook) as url:
        await create(client, text_body("[sim:violation] x", request_type="callback",
                                       callback_url=f"{url}/hook"))
        await deliveries_done(app)
    data = json.loads(received[0])["data"]
    assert (data["state"], data["failCode"]) == ("failed", "CONTENT_VIOLATION")


async def test_receiver_answering_500_gets_one_attempt_and_three_retries(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    hook, received = receiver([500])
    async with serve_in_background(hook) as url:
        task_id = await create(client, text_body(request_type="callback",
                                                 callback_url=f"{url}/hook"))
        await deliveries_done(app)
    assert len(received) == 4
    assert app.state.callback_attempts == [(task_id, 500)] * 4


async def test_retries_stop_at_the_first_200(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    hook, received = receiver([503, 200])
    async with serve_in_background(hook) as url:
        task_id = await create(client, text_body(request_type="callback",
                                                 callback_url=f"{url}/hook"))
        await deliveries_done(app)
    assert app.state.callback_attempts == [(task_id, 503), (task_id, 200)]
    assert len(received) == 2


async def test_unreachable_receiver_records_the_transport_error(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    hook, _ = receiver([200])
    async with serve_in_background(hook) as url:
        pass  # the port is closed again: nothing listens there now
    task_id = await create(client, text_body(request_type="callback", callback_url=f"{url}/x"))
    await deliveries_done(app)
    assert app.state.callback_attempts == [(task_id, "ConnectError")] * 4


async def test_async_task_makes_no_callback(app: Starlette, client: httpx.AsyncClient) -> None:
    hook, received = receiver([200])
    async with serve_in_background(hook) as url:
        task_id = await create(client, text_body(callback_url=f"{url}/hook"))
        await final(client, task_id)
        await asyncio.sleep(0.05)
    assert received == [] and app.state.callback_attempts == []


async def test_shutdown_cancels_pending_callbacks() -> None:
    app = create_app(settings(duration=30.0))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            await create(client, text_body(request_type="callback",
                                           callback_url="http://127.0.0.1:9/hook"))
        pending = list(app.state.callback_tasks)
        assert len(pending) == 1
    assert pending[0].cancelled()
    assert app.state.callback_attempts == []
