"""The Venice video adapter: ``POST /video/queue``, then poll ``POST /video/retrieve``.

Venice has no callbacks, no stream and no job list. A public model's finished video comes back
as the MP4 bytes of the retrieve answer; a private ("VPS-backed") model's queue answer carries
a one-time ``download_url`` (kept in ``provider_data``) and retrieve only says ``COMPLETED``.
Either way the adapter streams the video into the bridge's media store as
``<job id>.mp4`` and reports it as ``Snapshot.media_file``.

Request translation (unified field -> queue body):

    model              model (required)
    prompt             prompt
    duration_seconds   duration as "<n>s" (required; ``options.duration`` may say "Auto")
    negative_prompt    negative_prompt
    aspect_ratio       aspect_ratio
    resolution         resolution
    audio              audio
    images             mode image: image_url; first_last: image_url + end_image_url;
                       reference: reference_image_urls (at most 9)
    seed               not sent: Venice's queue has no seed field
    options            merged last into the queue body as given, e.g. consents,
                       upscale_factor, video_url, audio_url, reference_video_urls,
                       reference_audio_urls, elements, scene_image_urls
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from datetime import datetime
from typing import Any

import httpx

from bridge.errors import InvalidRequest, ProviderError, SubmitOutcomeUnknown
from bridge.media.base import MediaStore
from bridge.models import JobError, JobStatus, Tracking
from bridge.providers.base import JobRequest, ModelInfo, PollHints, Snapshot, Submission, TrackedJob
from bridge.providers.http import excerpt, json_or_none, record, send, transient_error

__all__ = ["VeniceProvider"]

NAME = "venice"
DOWNLOAD = "(pre-signed download URL)"  # the operation name of a request to it: never the URL
# The seed's enums (POST /video/queue); each model accepts a subset, listed by GET /models.
DURATION_SECONDS = frozenset([*range(2, 17), 18, 20, 25, 30])
ASPECT_RATIOS = frozenset({"1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9"})
RESOLUTIONS = frozenset({"256p", "360p", "480p", "540p", "580p", "720p", "1080p", "1440p",
                         "2160p", "4k", "2x", "4x", "true_1080p"})
PROMPT_MAX = 10_000
MAX_REFERENCE_IMAGES = 9
IMAGES_BY_MODE = {"text": (0, 0), "image": (1, 1), "first_last": (2, 2),
                  "reference": (1, MAX_REFERENCE_IMAGES)}
_SECONDS = re.compile(r"^(\d+)s$")
_QUOTE_FIELDS = ("model", "duration", "resolution", "aspect_ratio", "audio", "upscale_factor",
                 "video_url", "reference_video_total_duration")


def _is_media_url(value: str) -> bool:
    return value.startswith(("http://", "https://", "data:"))


def _message(data: Any, fallback: str) -> str:
    """The provider's words from ``{"error": "..."}`` or ``{"error": {"message": ...}}``,
    with the field errors of a 400 ``details`` object appended."""
    if not isinstance(data, dict):
        return fallback
    error = data.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    message = error if isinstance(error, str) and error else fallback
    details = data.get("details")
    if isinstance(details, dict):
        problems = [
            f"{field}: {'; '.join(map(str, value['_errors']))}"
            for field, value in details.items()
            if isinstance(value, dict) and value.get("_errors")
        ]
        if problems:
            message = f"{message} ({', '.join(problems)})"
    return excerpt(message)


class VeniceProvider:
    """Venice video generation, tracked by polling ``/video/retrieve``."""

    name = NAME
    tracking = Tracking.POLL
    max_concurrent: int | None = None  # Venice documents rate limits (40/120 rpm), no slots
    can_cancel = False

    def __init__(
        self, client: httpx.AsyncClient, *, base_url: str, api_key: str, media: MediaStore
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {api_key}"}
        self._media = media

    # -- capabilities -------------------------------------------------------------------

    async def list_models(self) -> list[ModelInfo]:
        response = await send(self._client, "GET", f"{self._base}/models", provider=NAME,
                              operation="/models", params={"type": "video"}, headers=self._auth)
        self._raise_for(response)
        data = json_or_none(response)
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise ProviderError("provider_unavailable", "venice: unreadable model list",
                                retryable=True, http_status=response.status_code)
        models = []
        for entry in entries:
            if isinstance(entry, dict) and entry.get("type", "video") == "video":
                info = self._model_info(entry)
                if info is not None:
                    models.append(info)
        return models

    def _model_info(self, entry: dict[str, Any]) -> ModelInfo | None:
        raw_spec = entry.get("model_spec")
        spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
        raw_constraints = spec.get("constraints")
        c: dict[str, Any] = raw_constraints if isinstance(raw_constraints, dict) else {}
        model_type = c.get("model_type")
        if model_type == "text-to-video":
            modes: tuple[str, ...] = ("text",)
            max_images = 0
        elif model_type == "image-to-video":
            end_image = bool(c.get("supports_end_image"))
            modes = ("image", "first_last") if end_image else ("image",)
            max_images = 2 if end_image else 1
        elif model_type == "reference-to-video":
            modes = ("reference",)
            max_images = int(c.get("max_reference_images") or MAX_REFERENCE_IMAGES)
        else:
            # Upscale / video-to-video models fit none of the unified modes: not listed.
            return None
        durations = sorted({int(m.group(1)) for d in c.get("durations") or ()
                            if isinstance(d, str) and (m := _SECONDS.match(d))})
        pricing = spec.get("pricing")
        price = pricing.get("usd_per_second") if isinstance(pricing, dict) else None
        return ModelInfo(
            provider=NAME,
            id=str(entry["id"]),
            tracking=self.tracking,
            modes=modes,
            aspect_ratios=tuple(c.get("aspect_ratios") or ()),
            resolutions=tuple(c.get("resolutions") or ()),
            min_duration_seconds=durations[0] if durations else None,
            max_duration_seconds=durations[-1] if durations else None,
            durations=tuple(durations) if durations else None,
            price_per_second_usd=float(price) if isinstance(price, int | float) else None,
            max_images=max_images,
        )

    def check(self, request: JobRequest, model: ModelInfo | None) -> None:
        if not request.model:
            raise InvalidRequest("Venice needs a model", field="model")
        if not request.prompt or len(request.prompt) > PROMPT_MAX:
            raise InvalidRequest(f"prompt must be 1 to {PROMPT_MAX} characters", field="prompt")
        if request.negative_prompt is not None and len(request.negative_prompt) > PROMPT_MAX:
            raise InvalidRequest(f"negative_prompt must be at most {PROMPT_MAX} characters",
                                 field="negative_prompt")
        if request.duration_seconds is None:
            if "duration" not in request.options:
                # Venice requires a duration; there is no default we could choose safely.
                raise InvalidRequest("Venice needs duration_seconds (or options.duration)",
                                     field="duration_seconds")
        elif request.duration_seconds not in DURATION_SECONDS:
            raise InvalidRequest(
                f"Venice durations are {', '.join(map(str, sorted(DURATION_SECONDS)))} seconds",
                field="duration_seconds",
            )
        if request.aspect_ratio is not None and request.aspect_ratio not in ASPECT_RATIOS:
            raise InvalidRequest("aspect ratio not known to Venice", field="aspect_ratio")
        if request.resolution is not None and request.resolution not in RESOLUTIONS:
            raise InvalidRequest("resolution not known to Venice", field="resolution")
        if request.mode not in IMAGES_BY_MODE:
            raise InvalidRequest(f"Venice has no mode {request.mode!r}", field="mode")
        low, high = IMAGES_BY_MODE[request.mode]
        if not low <= len(request.images) <= high:
            want = f"{low}" if low == high else f"{low} to {high}"
            raise InvalidRequest(f"mode {request.mode} takes {want} image(s) at Venice",
                                 field="images")
        if not all(_is_media_url(image) for image in request.images):
            raise InvalidRequest("images must be http(s) or data: URLs", field="images")
        consents = request.options.get("consents")
        if consents is not None and not isinstance(consents, dict):
            raise InvalidRequest("consents must be an object", field="options.consents")
        factor = request.options.get("upscale_factor")
        if factor is not None and factor not in (1, 2, 4):
            raise InvalidRequest("upscale_factor is 1, 2 or 4", field="options.upscale_factor")

    # -- jobs ---------------------------------------------------------------------------

    def body(self, request: JobRequest) -> dict[str, Any]:
        """The ``/video/queue`` body for a unified request (see the module docstring)."""
        body: dict[str, Any] = {"model": request.model, "prompt": request.prompt}
        if request.duration_seconds is not None:
            body["duration"] = f"{request.duration_seconds}s"
        for field in ("negative_prompt", "aspect_ratio", "resolution", "audio"):
            value = getattr(request, field)
            if value is not None:
                body[field] = value
        images = list(request.images)
        if request.mode == "image" and images:
            body["image_url"] = images[0]
        elif request.mode == "first_last" and images:
            body["image_url"] = images[0]
            if len(images) > 1:
                body["end_image_url"] = images[1]
        elif request.mode == "reference" and images:
            body["reference_image_urls"] = images
        body.update(request.options)
        return body

    async def submit(self, job: TrackedJob, *, callback_url: str | None) -> Submission:
        body = self.body(job.request)
        estimate = await self._quote(body)
        response = await send(self._client, "POST", f"{self._base}/video/queue", provider=NAME,
                              operation="/video/queue", submit=True, json=body, headers=self._auth)
        if response.status_code != 200:
            raise self._queue_error(response)
        data = json_or_none(response)
        queue_id = data.get("queue_id") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(queue_id, str):
            # Accepted (200) but unreadable: a task may exist that we cannot name.
            raise SubmitOutcomeUnknown("venice: queue answered 200 without a queue_id")
        provider_data: dict[str, Any] = {}
        if isinstance(data.get("download_url"), str):
            # Given only once: the bridge must keep it with the job.
            provider_data["download_url"] = data["download_url"]
        if isinstance(data.get("model"), str) and data["model"] != body["model"]:
            provider_data["model"] = data["model"]
        return Submission(
            provider_job_id=queue_id,
            snapshot=Snapshot(status=JobStatus.SUBMITTED, provider_state="QUEUED"),
            provider_data=provider_data,
            estimated_cost_usd=estimate,
        )

    async def _quote(self, body: dict[str, Any]) -> float | None:
        """The price ``/video/quote`` gives, or ``None``: a failed quote never stops a job."""
        if "duration" not in body:
            return None
        quote_body = {key: body[key] for key in _QUOTE_FIELDS if key in body}
        try:
            response = await send(self._client, "POST", f"{self._base}/video/quote",
                                  provider=NAME, operation="/video/quote", json=quote_body,
                                  headers=self._auth)
        except ProviderError:
            return None
        data = json_or_none(response)
        if response.status_code != 200 or not isinstance(data, dict):
            return None
        quote = data.get("quote")
        return float(quote) if isinstance(quote, int | float) else None

    def _queue_error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        data = json_or_none(response)
        message = _message(data, f"HTTP {status}")
        transient = transient_error(response, NAME, message)
        if transient is not None:
            return transient
        error = data.get("error") if isinstance(data, dict) else None
        if (status == 409 and isinstance(data, dict) and isinstance(error, dict)
                and error.get("code") == "needs_consent"):
            details = {key: data.get(key)
                       for key in ("consent", "face_media_roles", "consent_flow", "docs_url")}
            return ProviderError("needs_consent", f"venice: {message}", details=details,
                                 provider_code="needs_consent", http_status=status)
        if status == 402:
            return ProviderError("insufficient_credit", f"venice: {message}", http_status=status)
        if status == 422:
            provider_code = error.get("type") if isinstance(error, dict) else None
            return ProviderError("content_violation", f"venice: {message}",
                                 provider_code=provider_code, http_status=status)
        return ProviderError("provider_rejected", f"venice refused the request: {message}",
                             http_status=status)

    def _raise_for(self, response: httpx.Response) -> None:
        """Raise for anything but 200 on a call that is not the submit."""
        if response.status_code == 200:
            return
        message = _message(json_or_none(response), f"HTTP {response.status_code}")
        raise transient_error(response, NAME, message) or ProviderError(
            "provider_rejected", f"venice: {message}", http_status=response.status_code
        )

    async def status(self, job: TrackedJob) -> Snapshot:
        media_file = f"{job.id}.mp4"
        if await self._media.exists(media_file):
            # Already stored by an earlier call whose answer was not recorded: the provider
            # may have deleted its copy since, so do not ask again.
            return Snapshot(status=JobStatus.SUCCEEDED, progress=100, media_file=media_file)
        model = job.provider_data.get("model") or job.request.model
        body = {"model": model, "queue_id": job.provider_job_id}
        async with self._stream("POST", f"{self._base}/video/retrieve", "/video/retrieve",
                                json=body, headers=self._auth) as response:
            if response.status_code == 200 and _is_video(response):
                await self._media.put(media_file, response.aiter_bytes())
                stored = True
            else:
                stored = False
                await response.aread()
        if stored:
            await self._complete(body)
            return Snapshot(status=JobStatus.SUCCEEDED, progress=100, media_file=media_file,
                            provider_state="video/mp4")
        return await self._retrieve_answer(job, response, media_file)

    async def _retrieve_answer(
        self, job: TrackedJob, response: httpx.Response, media_file: str
    ) -> Snapshot:
        status = response.status_code
        data = json_or_none(response)
        if status == 422:
            error = data.get("error") if isinstance(data, dict) else None
            provider_code = error.get("type") if isinstance(error, dict) else None
            return Snapshot(status=JobStatus.FAILED, provider_state="422", error=JobError(
                "content_violation", _message(data, "blocked by the provider's content policy"),
                provider_code if isinstance(provider_code, str) else "provider_content_policy",
            ))
        if status == 404:
            # Expired, or deleted (complete / delete_media_on_completion).
            return Snapshot(status=JobStatus.EXPIRED, provider_state=_message(data, "404"))
        self._raise_for(response)
        state = data.get("status") if isinstance(data, dict) else None
        if state == "PROCESSING" and isinstance(data, dict):
            return _running(data)
        if state == "COMPLETED":
            url = job.provider_data.get("download_url")
            if not isinstance(url, str):
                return Snapshot(status=JobStatus.FAILED, provider_state="COMPLETED", error=JobError(
                    "provider_rejected",
                    "Venice finished the video but its download_url was not kept",
                ))
            return await self._download(url, media_file)
        raise ProviderError("provider_unavailable",
                            f"venice: unexpected retrieve answer {excerpt(response.text, 100)!r}",
                            retryable=True, http_status=status)

    async def _download(self, url: str, media_file: str) -> Snapshot:
        """Fetch a private model's video from its pre-signed URL, without the API key."""
        request = self._client.build_request("GET", url)
        request.headers.pop("authorization", None)
        async with self._stream_request(request, DOWNLOAD) as response:
            if response.status_code == 200:
                await self._media.put(media_file, response.aiter_bytes())
            else:
                await response.aread()
        if response.status_code in (404, 410):
            return Snapshot(status=JobStatus.FAILED, provider_state=str(response.status_code),
                            error=JobError("provider_rejected",
                                           "download URL expired or used up",
                                           str(response.status_code)))
        self._raise_for(response)
        # Optional, for privacy: revoke the link now that the bridge holds the video.
        started = time.perf_counter()
        try:
            revoke = self._client.build_request("DELETE", url)
            revoke.headers.pop("authorization", None)
            revoked = await self._client.send(revoke)
            record(NAME, "DELETE", DOWNLOAD, revoked.status_code, started)
        except httpx.HTTPError as exc:
            record(NAME, "DELETE", DOWNLOAD, None, started, type(exc).__name__)
        return Snapshot(status=JobStatus.SUCCEEDED, progress=100, media_file=media_file,
                        provider_state="COMPLETED")

    async def _complete(self, body: dict[str, Any]) -> None:
        """Best effort: ask Venice to delete its copy now that the bridge holds the video."""
        with suppress(ProviderError):
            await send(self._client, "POST", f"{self._base}/video/complete", provider=NAME,
                       operation="/video/complete", json=body, headers=self._auth)

    def _stream(
        self, method: str, url: str, operation: str, **kwargs: Any
    ) -> AbstractAsyncContextManager[httpx.Response]:
        return self._stream_request(self._client.build_request(method, url, **kwargs),
                                    operation)

    @asynccontextmanager
    async def _stream_request(self, request: httpx.Request,
                              operation: str) -> AsyncIterator[httpx.Response]:
        """Send ``request`` streaming its answer; transport failures become ProviderError.
        Counted and logged as ``operation`` once the answer begins."""
        started = time.perf_counter()
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            record(NAME, request.method, operation, None, started, type(exc).__name__)
            raise _transport_error(exc) from None
        record(NAME, request.method, operation, response.status_code, started)
        try:
            yield response
        except httpx.TransportError as exc:  # the answer broke off: counted above
            raise _transport_error(exc) from None
        finally:
            await response.aclose()

    async def cancel(self, job: TrackedJob) -> None:
        raise ProviderError("provider_rejected", "Venice cannot cancel a queued video")

    async def find_submission(self, job: TrackedJob, sent_at: datetime) -> Submission | None:
        raise SubmitOutcomeUnknown(
            "venice: queued videos cannot be listed, so a lost submission cannot be found"
        )


def _is_video(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.split(";")[0].strip().startswith("video/")


def _running(data: dict[str, Any]) -> Snapshot:
    average = data.get("average_execution_time")
    execution = data.get("execution_duration")
    average_s = average / 1000 if isinstance(average, int | float) else None
    execution_s = execution / 1000 if isinstance(execution, int | float) else None
    progress = None
    if average_s and execution_s is not None:
        progress = min(99, int(100 * execution_s / average_s))
    return Snapshot(
        status=JobStatus.RUNNING,
        progress=progress,
        hints=PollHints(average_execution_s=average_s, execution_s=execution_s),
        provider_state="PROCESSING",
    )


def _transport_error(exc: httpx.TransportError) -> ProviderError:
    code = "timeout" if isinstance(exc, httpx.TimeoutException) else "provider_unavailable"
    return ProviderError(code, f"venice: {type(exc).__name__} while waiting for an answer",
                         retryable=True)
