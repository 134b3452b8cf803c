"""The api.airforce adapter: one task per job, followed over its SSE stream.

Request translation (unified field -> api.airforce ``POST /v1/video/generations`` key):

    model -> model              prompt -> prompt            mode -> mode (text|image|reference)
    duration_seconds -> duration_seconds                    aspect_ratio -> aspect_ratio
    resolution -> quality       images -> input_images ({"url"} or {"b64_json"} per item)
    seed -> seed                audio -> sound              negative_prompt -> negative_prompt
    options -> merged last into the body as they are (they may override any key above)

``seed``, ``sound`` and ``negative_prompt`` are not in the documented table: the seed says any
other key is forwarded to the upstream model unvalidated, so they go as extra keys.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bridge import jsoninput
from bridge.errors import InvalidRequest, ProviderError, SubmitOutcomeUnknown
from bridge.models import JobError, JobStatus, Tracking
from bridge.providers.base import JobRequest, ModelInfo, Snapshot, Submission, TrackedJob
from bridge.providers.http import excerpt, json_or_none, record, send, transient_error

__all__ = ["AirforceProvider"]

NAME = "airforce"
STREAM_OPERATION = "/v1/video/tasks/{id}/stream"

_STATES = {
    "queued": JobStatus.SUBMITTED,
    "processing": JobStatus.RUNNING,
    "completed": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "expired": JobStatus.EXPIRED,
}
# The failure is a free-form string; these words mean the content was refused.
_CONTENT_WORDS = re.compile(r"content|safety|policy|moderat|nsfw", re.IGNORECASE)
_DATA_URL = re.compile(r"^data:[^,]*;base64,(.*)$", re.DOTALL)

# How far around the submit time find_submission looks for the task it may have created.
MATCH_BEFORE = timedelta(seconds=5)
MATCH_AFTER = timedelta(seconds=120)
HISTORY_LIMIT = 100  # seed: GET /v1/video/tasks lists "up to your 100 most recent tasks"


class AirforceProvider:
    """api.airforce: ``base_url`` is the service root (``https://api.airforce``)."""

    name = NAME
    tracking = Tracking.STREAM
    max_concurrent: int | None = 4  # seed: max 4 concurrent video tasks per API key
    can_cancel = False  # the seed documents no cancel; DELETE only forgets the record
    # The stream only speaks when progress changes, so a queued task may be silent for long;
    # a read on it waits this long before the stream counts as broken.
    stream_idle_timeout = 300.0

    def __init__(self, client: httpx.AsyncClient, *, base_url: str, api_key: str) -> None:
        self._client = client
        base = base_url.rstrip("/")
        # The provider's docs call https://api.airforce/v1 the base URL; accept both spellings.
        self._base = base[: -len("/v1")] if base.endswith("/v1") else base
        self._headers = {"Authorization": f"Bearer {api_key}"}

    # -- capabilities --------------------------------------------------------------------

    async def list_models(self) -> list[ModelInfo]:
        data = await self._get_json("/v1/models", "list models")
        models: list[ModelInfo] = []
        for item in data.get("data") or []:
            if not isinstance(item, dict) or "video" not in (item.get("output_modalities") or []):
                continue
            caps = item.get("video_caps") or {}
            price = caps.get("price_per_second_cents")
            models.append(ModelInfo(
                provider=NAME,
                id=str(item["id"]),
                tracking=Tracking.STREAM,
                modes=tuple(caps.get("modes") or ("text",)),
                aspect_ratios=tuple(caps.get("aspect_ratios") or ()),
                resolutions=tuple(caps.get("qualities") or ()),
                min_duration_seconds=caps.get("min_duration_s"),
                max_duration_seconds=caps.get("max_duration_s"),
                price_per_second_usd=price / 100 if isinstance(price, int | float) else None,
            ))
        return models

    def check(self, request: JobRequest, model: ModelInfo | None) -> None:
        if request.mode == "first_last":
            raise InvalidRequest(
                "api.airforce has no first/last-frame mode (text, image, reference)",
                field="mode",
            )
        if not request.model:
            raise InvalidRequest("api.airforce needs a model (see GET /v1/models)", field="model")
        if request.mode in ("image", "reference") and not request.images:
            raise InvalidRequest(f"mode {request.mode} needs at least one image", field="images")
        # Assumed from the seed's wording ("animate a first-frame image"): one image.
        if request.mode == "image" and len(request.images) > 1:
            raise InvalidRequest("mode image animates exactly one image", field="images")
        for image in request.images:
            if image.startswith("data:"):
                if not _DATA_URL.match(image):
                    raise InvalidRequest("a data: URL image must be base64-encoded",
                                         field="images")
            elif not image.startswith(("https://", "http://")):
                raise InvalidRequest("images must be http(s) or data: URLs", field="images")

    # -- one task ------------------------------------------------------------------------

    def body(self, request: JobRequest) -> dict[str, Any]:
        """The ``POST /v1/video/generations`` body for a unified request."""
        body: dict[str, Any] = {"model": request.model, "prompt": request.prompt,
                                "mode": request.mode}
        if request.duration_seconds is not None:
            body["duration_seconds"] = request.duration_seconds
        if request.aspect_ratio is not None:
            body["aspect_ratio"] = request.aspect_ratio
        if request.resolution is not None:
            body["quality"] = request.resolution
        if request.images:
            body["input_images"] = [_image(url) for url in request.images]
        if request.seed is not None:
            body["seed"] = request.seed
        if request.audio is not None:
            body["sound"] = request.audio
        if request.negative_prompt is not None:
            body["negative_prompt"] = request.negative_prompt
        body.update(request.options)
        return body

    async def submit(self, job: TrackedJob, *, callback_url: str | None) -> Submission:
        response = await send(
            self._client, "POST", self._url("/v1/video/generations"), provider=NAME,
            operation="/v1/video/generations", submit=True, headers=self._headers,
            json=self.body(job.request),
        )
        if response.status_code >= 300:
            raise self._error(response, "create task")
        task = json_or_none(response)
        if not isinstance(task, dict) or not task.get("task_id"):
            # Accepted, but unreadable: a task may exist, so it must not be sent again blindly.
            raise SubmitOutcomeUnknown(
                f"api.airforce: create answered HTTP {response.status_code} without a task_id"
            )
        return _submission(task)

    async def status(self, job: TrackedJob) -> Snapshot:
        task_id = _task_id(job)
        response = await send(self._client, "GET", self._url(f"/v1/video/tasks/{task_id}"),
                              provider=NAME, operation="/v1/video/tasks/{id}",
                              headers=self._headers)
        if response.status_code == 404:
            # Records are purged at expires_at; a missing task past it has expired.
            expires_at = _time(job.provider_data.get("expires_at"))
            if expires_at is not None and datetime.now(UTC) >= expires_at:
                return Snapshot(JobStatus.EXPIRED, expires_at=expires_at,
                                provider_state="purged")
        return _snapshot(self._object_or_raise(response, "get task"))

    async def cancel(self, job: TrackedJob) -> None:
        raise ProviderError("provider_rejected", "api.airforce cannot cancel a task")

    async def stream(self, job: TrackedJob) -> AsyncIterator[Snapshot]:
        """Follow ``GET /v1/video/tasks/{id}/stream`` until a terminal state or ``done``."""
        task_id = _task_id(job)
        url = self._url(f"/v1/video/tasks/{task_id}/stream")
        limits = self._client.timeout
        timeout = httpx.Timeout(connect=limits.connect, read=self.stream_idle_timeout,
                                write=limits.write, pool=limits.pool)
        headers = {**self._headers, "Accept": "text/event-stream"}
        answered = False  # a stream that breaks after its answer began is counted once
        started = time.perf_counter()
        try:
            async with self._client.stream("GET", url, headers=headers,
                                           timeout=timeout) as response:
                answered = True
                record(NAME, "GET", STREAM_OPERATION, response.status_code, started)
                if response.status_code != 200:
                    await response.aread()
                    raise self._error(response, "stream task")
                async for event, data in _sse(response.aiter_lines()):
                    if event == "done":
                        return
                    if event != "state":
                        continue
                    task = _json(data)
                    if task is None:
                        continue
                    snapshot = _snapshot(task)
                    yield snapshot
                    if snapshot.status.terminal:
                        return
        except httpx.TimeoutException as exc:
            if not answered:
                record(NAME, "GET", STREAM_OPERATION, None, started, type(exc).__name__)
            raise ProviderError("timeout", "api.airforce: the task stream went silent",
                                retryable=True) from None
        except httpx.TransportError as exc:
            if not answered:
                record(NAME, "GET", STREAM_OPERATION, None, started, type(exc).__name__)
            raise ProviderError(
                "provider_unavailable",
                f"api.airforce: the task stream broke ({type(exc).__name__})", retryable=True,
            ) from None
        raise ProviderError("provider_unavailable",
                            "api.airforce: the task stream closed before the task ended",
                            retryable=True)

    async def find_submission(self, job: TrackedJob, sent_at: datetime) -> Submission | None:
        # The task list shows no prompt (nor mode or aspect ratio), so the task is matched by
        # model, duration and creation time (whole seconds), within [sent_at - 5 s, sent_at +
        # 120 s]. Two such tasks cannot be told apart: rather than guess (and follow another
        # job's task, perhaps another tenant's), the outcome is unknown. A failure to list
        # raises the usual (retryable) ProviderError: the bridge can look again later.
        data = await self._get_json("/v1/video/tasks", "list tasks")
        tasks = [task for task in data.get("data") or [] if isinstance(task, dict)]
        request = job.request
        sent = sent_at.astimezone(UTC)
        matches = []
        for task in tasks:
            if task.get("model") != request.model:
                continue
            shown = task.get("duration_seconds")
            if (request.duration_seconds is not None and shown is not None
                    and shown != request.duration_seconds):
                continue
            created = _time(task.get("created"))
            if created is not None and sent - MATCH_BEFORE <= created <= sent + MATCH_AFTER:
                matches.append(task)
        if len(matches) > 1:
            raise SubmitOutcomeUnknown(
                f"api.airforce: {len(matches)} tasks of this model and duration were created "
                "around the submission, and its list cannot tell which one it made")
        if matches:
            return _submission(matches[0])
        # The list holds only the 100 most recent tasks: when all of them are newer than the
        # window's start, the task may have been pushed out of it.
        times = [t for t in (_time(task.get("created")) for task in tasks) if t is not None]
        if len(tasks) >= HISTORY_LIMIT and (not times or min(times) > sent - MATCH_BEFORE):
            raise SubmitOutcomeUnknown(
                f"api.airforce: {len(tasks)} newer tasks hide whether the submission arrived"
            )
        return None

    # -- plumbing ------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self._base + path

    async def _get_json(self, path: str, what: str) -> dict[str, Any]:
        """``GET path`` (a path without ids: its own operation name), read as an object."""
        response = await send(self._client, "GET", self._url(path), provider=NAME,
                              operation=path, headers=self._headers)
        return self._object_or_raise(response, what)

    def _object_or_raise(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code >= 300:
            raise self._error(response, what)
        data = json_or_none(response)
        if not isinstance(data, dict):
            raise ProviderError("provider_unavailable",
                                f"api.airforce: {what} answered no JSON object", retryable=True,
                                http_status=response.status_code)
        return data

    def _error(self, response: httpx.Response, what: str) -> ProviderError:
        """The ProviderError for a non-2xx answer (body shape assumed OpenAI-style)."""
        message, code = _error_fields(json_or_none(response))
        detail = excerpt(message) if message else ""
        transient = transient_error(response, NAME, detail)
        if transient is not None:
            transient.provider_code = code
            return transient
        status = response.status_code
        if status in (401, 403):
            return ProviderError(
                "provider_rejected", f"api.airforce refused the API key (HTTP {status})",
                http_status=status, provider_code=code,
            )
        suffix = f": {detail}" if detail else ""
        if status == 402:  # not in the seed; assumed to mean what HTTP says
            return ProviderError("insufficient_credit", f"api.airforce: payment required{suffix}",
                                 http_status=status, provider_code=code)
        return ProviderError(
            "provider_rejected", f"api.airforce: {what} answered HTTP {status}{suffix}",
            http_status=status, provider_code=code,
        )


def _task_id(job: TrackedJob) -> str:
    if not job.provider_job_id:
        raise ProviderError("provider_rejected", "api.airforce: the job has no task id")
    return job.provider_job_id


def _image(url: str) -> dict[str, str]:
    match = _DATA_URL.match(url)
    if match:
        return {"b64_json": match.group(1)}
    return {"url": url}


def _time(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(value, UTC)


def _cents(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value / 100


def _error_fields(body: Any) -> tuple[str, str | None]:
    """(message, code) from an error body: {"error": {"message", "code"}} or similar."""
    if not isinstance(body, dict):
        return "", None
    error = body.get("error", body)
    if isinstance(error, str):
        return error, None
    if not isinstance(error, dict):
        return "", None
    code = error.get("code") or error.get("type")
    return str(error.get("message") or ""), str(code) if code else None


def _submission(task: dict[str, Any]) -> Submission:
    snapshot = _snapshot(task)
    data: dict[str, Any] = {}
    if isinstance(task.get("expires_at"), int):
        data["expires_at"] = task["expires_at"]
    return Submission(
        provider_job_id=str(task["task_id"]),
        snapshot=snapshot,
        provider_data=data,
        estimated_cost_usd=_cents(task.get("cost_cents")),
    )


def _snapshot(task: dict[str, Any]) -> Snapshot:
    state = str(task.get("status") or "")
    # An unknown state word is taken as still running; the word is kept for the logs.
    status = _STATES.get(state, JobStatus.RUNNING)
    progress = task.get("progress")
    error = None
    if status is JobStatus.FAILED:
        text = str(task.get("error") or "api.airforce reported the task failed")
        code = "content_violation" if _CONTENT_WORDS.search(text) else "generation_failed"
        error = JobError(code, f"api.airforce: {excerpt(text)}", provider_code=excerpt(text, 80))
    return Snapshot(
        status=status,
        progress=progress if isinstance(progress, int) and not isinstance(progress, bool) else None,
        video_url=task.get("result_url") if status is JobStatus.SUCCEEDED else None,
        expires_at=_time(task.get("expires_at")),
        error=error,
        # cost_cents is an estimate until the task ends, then the settled cost.
        cost_usd=_cents(task.get("cost_cents")) if status.terminal else None,
        provider_state=state or None,
    )


def _json(data: str) -> dict[str, Any] | None:
    """A stream event's object, read strictly: ``None`` for another value, and a retryable
    error (the stream is given up for polling) for JSON the bridge does not accept."""
    try:
        value = jsoninput.loads(data)
    except jsoninput.Refused as exc:
        raise ProviderError("provider_unavailable",
                            f"api.airforce: the task stream sent an event the bridge does not "
                            f"accept ({exc.message})", retryable=True) from None
    return value if isinstance(value, dict) else None


async def _sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs from SSE lines: fields until a blank line, comments skipped."""
    event = "message"
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
    # An event cut off before its blank line is dropped, as the SSE specification says.
