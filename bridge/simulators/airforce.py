"""A fake of api.airforce's video API (seeds 000/001), for the demo and the tests.

    POST   /v1/video/generations          create a task (validated against /v1/models)
    GET    /v1/video/tasks/{task_id}      the task
    GET    /v1/video/tasks/{task_id}/stream   SSE: one ``state`` event per change, then ``done``
    GET    /v1/video/tasks                the 100 most recent tasks, newest first
    DELETE /v1/video/tasks/{task_id}      forget the history record; always ``{"deleted": true}``
    GET    /v1/models                     the catalogue, video models with ``video_caps``
    GET    /files/{task_id}.mp4           the "pre-signed" result the task's ``result_url`` names

State a test can read: ``app.state.submissions`` (tasks created), ``app.state.jobs`` (task id ->
:class:`Task`), ``app.state.faults`` (scripted faults), and ``app.state.stream_cut_after``: when
set to N, every stream closes after N events without reaching a terminal state (a dropped
connection, which the real service may do at any time).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bridge.simulators.base import (
    FaultMiddleware,
    Faults,
    SimJob,
    SimSettings,
    bearer_ok,
    fake_mp4,
    read_json,
)

__all__ = ["MAX_CONCURRENT", "SIM_MODELS", "Task", "create_app"]

MAX_CONCURRENT = 4  # seed: "Max 4 concurrent video tasks per API key"
HISTORY_LIMIT = 100  # seed: the list returns up to the 100 most recent tasks
TTL = 86400  # seed: expires_at is exactly created + 86400
STREAM_TICK = 0.1  # seconds between looks at the job clock while streaming
MODES = ("text", "image", "reference")

# Plausible catalogue values (the seed calls its own "illustrative"). wan-2.6 at 40 cents/s
# matches the seed's example (8 s -> cost_cents 320); kling-1 does image mode at 16:9 and 5 s
# as the seed's image-to-video example needs. The Model fields besides video_caps follow
# https://api.airforce/docs/api/models/.
SIM_MODELS: list[dict[str, Any]] = [
    {
        "id": "wan-2.6",
        "object": "model",
        "created": 1735689600,
        "owned_by": "alibaba",
        "input_modalities": ["text", "image"],
        "output_modalities": ["video"],
        "supports_streaming": False,
        "supports_vision": True,
        "video_caps": {
            "aspect_ratios": ["16:9", "9:16", "1:1"],
            "qualities": ["480p", "720p", "1080p"],
            "min_duration_s": 5,
            "max_duration_s": 10,
            "modes": ["text", "image", "reference"],
            "price_per_second_cents": 40,
        },
    },
    {
        "id": "kling-1",
        "object": "model",
        "created": 1730419200,
        "owned_by": "kuaishou",
        "input_modalities": ["text", "image"],
        "output_modalities": ["video"],
        "supports_streaming": False,
        "supports_vision": True,
        "video_caps": {
            "aspect_ratios": ["16:9", "9:16", "1:1", "4:3"],
            "qualities": ["720p", "1080p"],
            "min_duration_s": 5,
            "max_duration_s": 10,
            "modes": ["text", "image"],
            "price_per_second_cents": 35,
        },
    },
    {
        "id": "gpt-4.1-mini",
        "object": "model",
        "created": 1744588800,
        "owned_by": "openai",
        "input_modalities": ["text", "image"],
        "output_modalities": ["text"],
        "supports_streaming": True,
        "supports_vision": True,
    },
]

_STATUS = {
    "queued": "queued",
    "processing": "processing",
    "succeed": "completed",
    "fail": "failed",
    "violation": "failed",
    "expire": "expired",
}
_TERMINAL = frozenset({"completed", "failed", "expired"})
_FAIL_MESSAGES = {
    "fail": "Upstream provider error: the generation did not finish",
    "violation": "Request blocked by the upstream content policy (safety filter)",
}


@dataclass
class Task:
    """One task as the fake keeps it: the job clock plus what the answers show."""

    sim: SimJob
    model: str
    duration_seconds: int
    created: int
    cost_cents: int
    deleted: bool = False  # DELETE forgets the history record; the task itself runs on

    @property
    def id(self) -> str:
        return self.sim.id

    def status(self, now: float | None = None) -> str:
        return _STATUS[self.sim.phase(now)]

    def to_json(self, base_url: str, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        status = self.status(now)
        out: dict[str, Any] = {
            "task_id": self.id,
            "status": status,
            "progress": self.sim.progress(now),
            "model": self.model,
            "duration_seconds": self.duration_seconds,
            "created": self.created,
            "expires_at": self.created + TTL,
            # Estimated until settled; failed and expired tasks are not charged (seed).
            "cost_cents": 0 if status in ("failed", "expired") else self.cost_cents,
        }
        if status == "completed":
            out["result_url"] = f"{base_url}files/{self.id}.mp4"
        if status == "failed":
            out["error"] = _FAIL_MESSAGES[self.sim.scenario.outcome]
        return out


# The seed documents no error body for the video API. Assumed: the OpenAI-style envelope
# api.airforce's OpenAI-compatible surfaces answer, {"error": {"message", "type", "code"}}.
def error_body(status: int, message: str | None = None, code: str | None = None) -> Any:
    kind, default_code, default_message = {
        400: ("invalid_request_error", "invalid_request", "Invalid request"),
        401: ("authentication_error", "invalid_api_key", "Invalid API key"),
        402: ("billing_error", "insufficient_balance", "Insufficient balance"),
        404: ("invalid_request_error", "not_found", "Not found"),
        429: ("rate_limit_error", "rate_limit_exceeded", "Too many requests"),
    }.get(status, ("server_error", "internal_error", "Internal server error"))
    return {
        "error": {
            "message": message or default_message,
            "type": kind,
            "code": code or default_code,
        }
    }


def _error(status: int, message: str, code: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code), status_code=status, headers=headers)


def _bad(message: str, code: str = "invalid_request") -> JSONResponse:
    return _error(400, message, code)


def _json(data: Any, status: int = 200) -> JSONResponse:
    # X-Request-ID on every answer (from provider docs: https://api.airforce/docs/api/parameters/).
    return JSONResponse(data, status_code=status, headers={"x-request-id": str(uuid.uuid4())})


def _caps(model_id: str) -> dict[str, Any] | None:
    for model in SIM_MODELS:
        if model["id"] == model_id and "video" in model["output_modalities"]:
            caps: dict[str, Any] = model["video_caps"]
            return caps
    return None


def _validate(body: dict[str, Any]) -> tuple[str, int] | JSONResponse:
    """The task's (model, duration) or the 400 the service answers; names the bad field."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _bad("model: required (a video model id from /v1/models)")
    if not any(m["id"] == model for m in SIM_MODELS):
        return _bad(f"model: unknown model '{model}'", "unknown_model")
    caps = _caps(model)
    if caps is None:
        return _bad(f"model: '{model}' is not a video model (output_modalities lacks video)")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return _bad("prompt: required")
    mode = body.get("mode", "text")
    if mode not in MODES:
        return _bad(f"mode: must be one of {', '.join(MODES)}")
    if mode not in caps["modes"]:
        return _bad(f"mode: '{mode}' is not supported by {model}")
    duration = body.get("duration_seconds", caps["min_duration_s"])
    if isinstance(duration, bool) or not isinstance(duration, int):
        return _bad("duration_seconds: must be an integer")
    if not caps["min_duration_s"] <= duration <= caps["max_duration_s"]:
        return _bad(f"duration_seconds: must be between {caps['min_duration_s']} and "
                    f"{caps['max_duration_s']} for {model}")
    for field, allowed in (("aspect_ratio", caps["aspect_ratios"]),
                           ("quality", caps["qualities"])):
        if field in body and body[field] not in allowed:
            return _bad(f"{field}: must be one of {', '.join(allowed)} for {model}")
    images = body.get("input_images")
    if images is not None or mode in ("image", "reference"):
        if not isinstance(images, list) or not images:
            return _bad(f"input_images: required for mode '{mode}'")
        for item in images:
            if not (isinstance(item, dict) and len(item) == 1
                    and isinstance(item.get("url", item.get("b64_json")), str)):
                return _bad("input_images: each item must be {\"url\": ...} or {\"b64_json\": ...}")
    return model, duration


def create_app(settings: SimSettings | None = None) -> Starlette:
    settings = settings or SimSettings()
    rng = random.Random(settings.seed)
    jobs: dict[str, Task] = {}

    def authorized(request: Request) -> JSONResponse | None:
        if bearer_ok(request, settings.api_key):
            return None
        return _error(401, "Invalid API key", "invalid_api_key")

    def find(request: Request) -> Task | None:
        task = jobs.get(request.path_params["task_id"])
        return None if task is None or task.deleted else task

    def not_found(task_id: str) -> JSONResponse:
        return _error(404, f"task '{task_id}' not found", "task_not_found")

    def running(now: float) -> list[Task]:
        return [t for t in jobs.values() if t.sim.phase(now) in ("queued", "processing")]

    async def generate(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        body = await read_json(request)
        if not isinstance(body, dict):
            return _bad("body: must be a JSON object")
        checked = _validate(body)
        if isinstance(checked, JSONResponse):
            return checked
        model, duration = checked
        now = time.time()
        busy = running(now)
        if len(busy) >= MAX_CONCURRENT:
            # Assumed: the 429 names the limit and tells, in Retry-After, when the first
            # running task should end (the seed only states the limit).
            wait = max(1, math.ceil(min(t.sim.done_at for t in busy) - now))
            return _error(429, f"Max {MAX_CONCURRENT} concurrent video tasks per API key",
                          "concurrency_limit", headers={"retry-after": str(wait)})
        task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        sim = SimJob.start(task_id, settings, rng, body["prompt"], body)
        caps = _caps(model)
        assert caps is not None
        task = Task(sim, model, duration, int(sim.created),
                    duration * caps["price_per_second_cents"])
        jobs[task_id] = task
        app.state.submissions += 1
        return _json({
            "task_id": task_id,
            "status": "queued",
            "model": model,
            "created": task.created,
            "expires_at": task.created + TTL,
            "progress": 0,
            "cost_cents": task.cost_cents,
        })

    async def get_task(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        task = find(request)
        if task is None:
            return not_found(request.path_params["task_id"])
        return _json(task.to_json(str(request.base_url)))

    async def stream_task(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        task = find(request)
        if task is None:
            return not_found(request.path_params["task_id"])
        base_url = str(request.base_url)
        cut_after: int | None = app.state.stream_cut_after

        async def events() -> AsyncIterator[str]:
            last: tuple[str, int] | None = None
            sent = 0
            while True:
                state = task.to_json(base_url)
                key = (state["status"], state["progress"])
                if key != last:
                    last = key
                    yield f"event: state\ndata: {json.dumps(state)}\n\n"
                    sent += 1
                    if state["status"] in _TERMINAL:
                        yield "event: done\ndata: [DONE]\n\n"
                        return
                    if cut_after is not None and sent >= cut_after:
                        return  # the connection drops before the task ends
                await asyncio.sleep(STREAM_TICK)

        return StreamingResponse(
            events(), media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-request-id": str(uuid.uuid4())},
        )

    async def list_tasks(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        base_url = str(request.base_url)
        recent = sorted((t for t in jobs.values() if not t.deleted),
                        key=lambda t: t.sim.created, reverse=True)[:HISTORY_LIMIT]
        return _json({"data": [t.to_json(base_url) for t in recent]})

    async def delete_task(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        task = jobs.get(request.path_params["task_id"])
        if task is not None:
            task.deleted = True
        return _json({"deleted": True})

    async def list_models(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        return _json({"object": "list", "data": SIM_MODELS})

    async def download(request: Request) -> Response:
        # Pre-signed: no key needed, valid until expires_at; stored media outlive DELETE.
        task = jobs.get(request.path_params["task_id"])
        now = time.time()
        if task is None or task.status(now) != "completed" or now >= task.created + TTL:
            return _error(404, "file not found", "not_found")
        return Response(fake_mp4(task.id), media_type="video/mp4")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, exc.detail)

    app = Starlette(
        routes=[
            Route("/v1/video/generations", generate, methods=["POST"]),
            Route("/v1/video/tasks", list_tasks, methods=["GET"]),
            Route("/v1/video/tasks/{task_id}", get_task, methods=["GET"]),
            Route("/v1/video/tasks/{task_id}", delete_task, methods=["DELETE"]),
            Route("/v1/video/tasks/{task_id}/stream", stream_task, methods=["GET"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/files/{task_id}.mp4", download, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.settings = settings
    app.state.jobs = jobs
    app.state.submissions = 0
    app.state.faults = Faults()
    app.state.stream_cut_after = None
    app.add_middleware(FaultMiddleware, faults=app.state.faults, settings=settings,
                       error_body=error_body)
    return app
