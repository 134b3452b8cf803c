"""A fake of apixo's veo-3-1 API (seed 003, providers.md section 3).

    POST /api/v1/generateTask/{model}           create a task: {"code":200,...,"data":{"taskId"}}
    GET  /api/v1/statusTask/{model}?taskId=...  where the task is
    GET  /files/{taskId}.mp4                    the result (stands in for r2.apixo.ai)

Every answer is the envelope ``{"code", "message", "data"}``. Assumption: the HTTP status
equals ``code`` (the seed shows only bodies; its error table lists 400, 401 and 429 as codes).

A task is ``pending`` during SimJob's queue delay, ``processing`` while it runs, then
``success`` or ``failed``. Outcomes come from the prompt markers: ``[sim:fail]`` fails with
``GENERATION_FAILED`` (assumed: the seed names no generic failCode), ``[sim:violation]`` with
``CONTENT_VIOLATION``, an image URL containing "invalid" with ``INVALID_IMAGE_URL``. apixo has
no expired state, so ``[sim:expire]`` simply succeeds (result URLs expire 15 days later).

In callback mode the final status envelope is POSTed to ``callback_url`` when the task ends;
a receiver that does not answer 200 gets up to 3 retries (``callback_retry_delays``; the seed
says "increasing delays" without the schedule). Every attempt is recorded in
``app.state.callback_attempts`` as ``(task_id, status_code_or_error)``.

Test-visible state: ``app.state.jobs`` (task id -> :class:`SimTask`), ``app.state.submissions``
(tasks created), ``app.state.status_calls`` (statusTask requests answered, per task id: a
``Counter``), ``app.state.credits`` (tasks still affordable; 0 answers
"Insufficient credits"), ``app.state.callback_tasks`` (pending deliveries) and
``app.state.faults``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
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

MODEL = "veo-3-1"
REQUEST_TYPES = ("async", "callback")
ROUTING = ("auto", "value", "official")
INPUT_MODES = ("quality", "fast")
GENERATION_TYPES = ("TEXT_2_VIDEO", "FIRST_AND_LAST_FRAMES_2_VIDEO", "REFERENCE_2_VIDEO")
ASPECT_RATIOS = ("9:16", "16:9", "auto")
MAX_IMAGES = {"FIRST_AND_LAST_FRAMES_2_VIDEO": 2, "REFERENCE_2_VIDEO": 3}
MAX_PROMPT = 10_000
CALLBACK_TIMEOUT = 30.0  # the receiver must answer within 30 s

# apixo has no capability endpoint; this is what its model page states, for demos and docs.
SIM_MODELS: dict[str, dict[str, Any]] = {
    MODEL: {
        "modes": list(INPUT_MODES),
        "generation_types": list(GENERATION_TYPES),
        "aspect_ratios": list(ASPECT_RATIOS),
        "max_images": dict(MAX_IMAGES),
        "prompt_max_chars": MAX_PROMPT,
    }
}

_FAILURES = {
    "fail": ("GENERATION_FAILED", "Video generation failed"),
    "violation": ("CONTENT_VIOLATION", "Content does not meet safety guidelines"),
}
_MESSAGES = {
    400: "Invalid parameters or request error",
    401: "Invalid or missing API Key",
    429: "Rate limit exceeded",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
}


@dataclass
class SimTask:
    sim: SimJob  # sim.body is the request body as received
    model: str
    base_url: str  # where /files/ is served, for resultUrls
    callback_url: str | None
    invalid_image: bool

    def data(self, now: float | None = None) -> dict[str, Any]:
        """The status ``data`` object at ``now``."""
        now = time.time() if now is None else now
        created = int(self.sim.created * 1000)
        out: dict[str, Any] = {"taskId": self.sim.id}
        phase = self.sim.phase(now)
        if phase in ("queued", "processing"):
            out.update(state="pending" if phase == "queued" else "processing", createTime=created)
            return out
        completed = int(self.sim.done_at * 1000)
        failure = _FAILURES.get(phase)
        if self.invalid_image:
            failure = ("INVALID_IMAGE_URL", "Cannot access provided image URL")
        if failure is not None:
            out.update(state="failed", failCode=failure[0], failMsg=failure[1],
                       createTime=created, completeTime=completed)
            return out
        url = f"{self.base_url}/files/{self.sim.id}.mp4"
        out.update(state="success", resultJson=json.dumps({"resultUrls": [url]}),
                   createTime=created, completeTime=completed, costTime=completed - created)
        return out


def envelope(code: int, message: str, data: Any = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "data": data}, status_code=code)


def _error_body(status: int) -> dict[str, Any]:
    return {"code": status, "message": _MESSAGES.get(status, "Request error"), "data": None}


def _problem(body: Any) -> str | None:
    """What is wrong with a generateTask body, in apixo's words, or None."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    request_type = body.get("request_type", "async")
    if request_type not in REQUEST_TYPES:
        return "request_type must be one of: async, callback"
    callback_url = body.get("callback_url")
    # The seed asks for a public HTTPS URL; the simulator also takes http so that tests and
    # `bridge demo` can receive callbacks on loopback. For async, callback_url is ignored
    # (the seed's own sample body carries both).
    if request_type == "callback" and not (
        isinstance(callback_url, str) and callback_url.startswith(("https://", "http://"))
    ):
        return "callback_url is required when request_type=callback"
    if body.get("provider", "auto") not in ROUTING:
        return "provider must be one of: auto, value, official"
    data = body.get("input")
    if not isinstance(data, dict):
        return "input is required"
    mode = data.get("mode", "quality")
    if mode not in INPUT_MODES:
        return "input.mode must be one of: quality, fast"
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not 1 <= len(prompt) <= MAX_PROMPT:
        return f"input.prompt is required, 1-{MAX_PROMPT} characters"
    kind = data.get("generationType", "TEXT_2_VIDEO")
    if kind not in GENERATION_TYPES:
        return "input.generationType must be one of: " + ", ".join(GENERATION_TYPES)
    aspect = data.get("aspect_ratio", "16:9")
    if aspect not in ASPECT_RATIOS:
        return "input.aspect_ratio must be one of: 9:16, 16:9, auto"
    images = data.get("image_urls")
    if images is not None and not (
        isinstance(images, list) and all(isinstance(u, str) and u for u in images)
    ):
        return "input.image_urls must be an array of URLs"
    if kind in MAX_IMAGES:
        # TEXT_2_VIDEO ignores image_urls (the seed's sample body sends both).
        limit = MAX_IMAGES[kind]
        if not images or len(images) > limit:
            return f"input.image_urls is required for {kind} (1-{limit} images)"
    if kind == "REFERENCE_2_VIDEO":
        if mode != "fast":
            return "REFERENCE_2_VIDEO requires input.mode=fast"
        if aspect != "16:9":
            return "REFERENCE_2_VIDEO requires input.aspect_ratio=16:9"
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        return "input.seed must be an integer"
    if "watermark" in data and not isinstance(data["watermark"], str):
        return "input.watermark must be a string"
    if "enableTranslation" in data and not isinstance(data["enableTranslation"], bool):
        return "input.enableTranslation must be a boolean"
    return None


def create_app(
    settings: SimSettings | None = None,
    *,
    callback_retry_delays: Sequence[float] = (0.5, 1.0, 2.0),
) -> Starlette:
    settings = settings or SimSettings()
    rng = random.Random(settings.seed)
    jobs: dict[str, SimTask] = {}
    faults = Faults()
    callback_tasks: set[asyncio.Task[None]] = set()

    def unauthorized(request: Request) -> JSONResponse | None:
        if bearer_ok(request, settings.api_key):
            return None
        return envelope(401, _MESSAGES[401])

    def new_task_id() -> str:
        while True:
            task_id = f"task_{rng.randrange(10**11, 10**12)}"
            if task_id not in jobs:
                return task_id

    async def deliver(task: SimTask) -> None:
        """POST the final envelope to the task's callback_url, retrying a non-200 answer."""
        assert task.callback_url is not None
        await asyncio.sleep(max(0.0, task.sim.done_at - time.time()))
        payload = {"code": 200, "message": "success", "data": task.data()}
        async with httpx.AsyncClient(timeout=CALLBACK_TIMEOUT) as client:
            for delay in (0.0, *callback_retry_delays):
                if delay:
                    await asyncio.sleep(delay)
                outcome: int | str
                try:
                    answer = await client.post(task.callback_url, json=payload)
                    outcome = answer.status_code
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                app.state.callback_attempts.append((task.sim.id, outcome))
                if outcome == 200:
                    return

    async def generate(request: Request) -> Response:
        denied = unauthorized(request)
        if denied is not None:
            return denied
        model = request.path_params["model"]
        if model not in SIM_MODELS:
            # Assumed: an unknown model is an "invalid parameters" 400 like any other.
            return envelope(400, f"Unsupported model: {model}")
        body = await read_json(request)
        problem = _problem(body)
        if problem is not None:
            return envelope(400, problem)
        if app.state.credits <= 0:
            return envelope(400, "Insufficient credits")
        app.state.credits -= 1
        data = body["input"]
        kind = data.get("generationType", "TEXT_2_VIDEO")
        images = (data.get("image_urls") or []) if kind in MAX_IMAGES else []
        callback_url = body["callback_url"] if body.get("request_type") == "callback" else None
        task_id = new_task_id()
        task = SimTask(
            sim=SimJob.start(task_id, settings, rng, data["prompt"], body),
            model=model,
            base_url=str(request.base_url).rstrip("/"),
            callback_url=callback_url,
            invalid_image=any("invalid" in url for url in images),
        )
        jobs[task_id] = task
        app.state.submissions += 1
        if callback_url is not None:
            delivery = asyncio.create_task(deliver(task), name=f"apixo-callback:{task_id}")
            callback_tasks.add(delivery)
            delivery.add_done_callback(callback_tasks.discard)
        return envelope(200, "success", {"taskId": task_id})

    async def status(request: Request) -> Response:
        denied = unauthorized(request)
        if denied is not None:
            return denied
        model = request.path_params["model"]
        if model not in SIM_MODELS:
            return envelope(400, f"Unsupported model: {model}")
        task_id = request.query_params.get("taskId")
        if not task_id:
            return envelope(400, "taskId is required")
        task = jobs.get(task_id)
        if task is None or task.model != model:
            # Assumed: the seed documents no "not found" answer; a 400 like other bad input.
            return envelope(400, f"Task not found: {task_id}")
        app.state.status_calls[task_id] += 1
        return envelope(200, "success", task.data())

    async def file(request: Request) -> Response:
        # Result URLs are public links (r2.apixo.ai): no Authorization.
        task = jobs.get(request.path_params["task_id"])
        if task is None or task.data().get("state") != "success":
            return Response(status_code=404)
        return Response(fake_mp4(task.sim.id), media_type="video/mp4")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            pending = list(callback_tasks)
            for delivery in pending:
                delivery.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    app = Starlette(
        routes=[
            Route("/api/v1/generateTask/{model}", generate, methods=["POST"]),
            Route("/api/v1/statusTask/{model}", status, methods=["GET"]),
            Route("/files/{task_id}.mp4", file, methods=["GET"]),
        ],
        middleware=[
            Middleware(FaultMiddleware, faults=faults, settings=settings, error_body=_error_body)
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.faults = faults
    app.state.jobs = jobs
    app.state.submissions = 0
    app.state.status_calls = Counter[str]()
    app.state.credits = 1_000_000
    app.state.callback_attempts = []
    app.state.callback_tasks = callback_tasks
    return app
