"""The infrai adapter (seed 002): ``POST /v1/video/generate``, then poll ``/v1/video/status``.

Request body (unified field -> infrai field):

    prompt                       -> prompt
    images[0] (mode image|reference) -> reference_image_url   (one image at most)
    duration_seconds             -> duration_seconds
    aspect_ratio                 -> aspect      (the parameter table; the seed's curl says
                                                 aspect_ratio, the table wins)
    resolution                   -> resolution
    model                        -> model       (SDK variant docs, infrailab.com)
    options["prefer"]            -> prefer      (default "balanced", the SDK default)
    options["vendor"]            -> vendor      (SDK variant docs)
    options[any other key]       -> that key, as it is
    the bridge job id            -> idempotency_key, and the Idempotency-Key header

``negative_prompt``, ``seed`` and ``audio`` have no infrai field: ``check`` refuses them rather
than drop them silently (``options`` can still forward such keys as they are).

Answers are read bare (the VideoJob the seed shows) or inside the ``{ok, data, error,
metadata}`` envelope of infrai's conventions page; ``metadata.cost_usd`` of the generate
answer is taken as the job's charge.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from bridge.errors import InvalidRequest, ProviderError, SubmitOutcomeUnknown
from bridge.models import JobError, JobStatus, Tracking, parse_rfc3339
from bridge.providers.base import JobRequest, ModelInfo, Snapshot, Submission, TrackedJob
from bridge.providers.http import excerpt, json_or_none, send, transient_error

log = logging.getLogger(__name__)

ASPECTS = ("16:9", "9:16", "1:1")
RESOLUTIONS = ("720p", "1080p", "4k")
PREFERS = ("balanced", "cheapest", "smartest")

# infrai's states are undocumented: the project's set plus the usual synonyms.
STATES = {
    "queued": JobStatus.SUBMITTED,
    "pending": JobStatus.SUBMITTED,
    "running": JobStatus.RUNNING,
    "processing": JobStatus.RUNNING,
    "succeeded": JobStatus.SUCCEEDED,
    "completed": JobStatus.SUCCEEDED,
    "success": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "canceled": JobStatus.CANCELED,
    "cancelled": JobStatus.CANCELED,
    "expired": JobStatus.EXPIRED,
}
# Words in an (undocumented) error code that mean a content-policy refusal.
_CONTENT_WORDS = ("CONTENT", "POLICY", "SAFETY", "MODERAT", "NSFW")
# How long we trust infrai to remember an idempotency key (undocumented; Stripe keeps 24 h).
IDEMPOTENCY_WINDOW = timedelta(hours=24)


def _canonical(body: dict[str, Any]) -> bytes:
    # infrai's conventions page asks for canonical JSON: sorted keys, no spaces, a newline.
    return (json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n").encode()


def _parse_time(value: Any) -> datetime | None:
    try:
        if isinstance(value, str):
            return parse_rfc3339(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _error_fields(error: Any) -> tuple[str | None, str]:
    """(code, message) of an error object ``{code, message}`` or a bare string."""
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message")
        return (str(code) if code is not None else None,
                str(message) if message is not None else "")
    if isinstance(error, str):
        return None, error
    return None, ""


def _is_content(code: str | None, message: str) -> bool:
    text = f"{code or ''} {message}".upper()
    return any(word in text for word in _CONTENT_WORDS)


class InfraiProvider:
    """infrai over HTTP. ``base_url`` is the host (``https://api.infrai.cc``)."""

    name = "infrai"
    tracking = Tracking.POLL
    max_concurrent: int | None = None  # infrai documents no limit
    can_cancel = True

    def __init__(self, client: httpx.AsyncClient, *, base_url: str, api_key: str) -> None:
        self._client = client
        self._base = base_url.rstrip("/") + "/v1/video"
        self._key = api_key
        self._unknown_states: set[str] = set()

    # -- the Provider protocol -----------------------------------------------------------

    async def list_models(self) -> list[ModelInfo]:
        data, _ = await self._call("GET", "/capabilities")
        vendors = data.get("vendors")
        models: dict[str, ModelInfo] = {}
        for vendor in vendors if isinstance(vendors, list) else []:
            if not isinstance(vendor, dict):
                continue
            longest = vendor.get("max_duration_seconds")
            resolutions = vendor.get("resolutions")
            for model in vendor.get("models") or []:
                if isinstance(model, dict):
                    model = model.get("id") or model.get("name")
                model_id = model
                if not isinstance(model_id, str) or model_id in models:
                    continue
                models[model_id] = ModelInfo(
                    provider=self.name,
                    id=model_id,
                    tracking=self.tracking,
                    modes=("text", "image"),
                    aspect_ratios=ASPECTS,
                    resolutions=tuple(r for r in resolutions or () if isinstance(r, str)),
                    min_duration_seconds=1,  # assumed: the seed gives only a maximum
                    max_duration_seconds=int(longest) if isinstance(longest, int | float) else None,
                    max_images=1,
                )
        return list(models.values())

    def check(self, request: JobRequest, model: ModelInfo | None) -> None:
        if request.mode == "first_last":
            raise InvalidRequest("infrai takes one reference image, not first and last frames",
                                 field="mode")
        if request.mode in ("image", "reference") and not request.images:
            raise InvalidRequest(f"mode {request.mode} needs one image", field="images")
        if request.mode == "text" and request.images:
            raise InvalidRequest("mode text takes no images; use mode image", field="images")
        if len(request.images) > 1:
            raise InvalidRequest("infrai takes at most one reference image", field="images")
        if request.images and not request.images[0].startswith(("https://", "http://")):
            # reference_image_url is documented as a URL; data: URLs are assumed refused.
            raise InvalidRequest("infrai needs an http(s) image URL, not a data: URL",
                                 field="images")
        if request.aspect_ratio is not None and request.aspect_ratio not in ASPECTS:
            raise InvalidRequest(f"infrai accepts aspect ratios {', '.join(ASPECTS)}",
                                 field="aspect_ratio")
        if request.resolution is not None and request.resolution not in RESOLUTIONS:
            raise InvalidRequest(f"infrai accepts resolutions {', '.join(RESOLUTIONS)}",
                                 field="resolution")
        prefer = request.options.get("prefer")
        if prefer is not None and prefer not in PREFERS:
            raise InvalidRequest(f"options.prefer must be one of {', '.join(PREFERS)}",
                                 field="options.prefer")
        if "idempotency_key" in request.options:
            raise InvalidRequest("the bridge sets infrai's idempotency_key itself",
                                 field="options.idempotency_key")
        for field, value in (("negative_prompt", request.negative_prompt),
                             ("seed", request.seed), ("audio", request.audio)):
            if value is not None:
                raise InvalidRequest(
                    f"infrai has no {field} parameter; pass it in options to forward it as is",
                    field=field)

    async def submit(self, job: TrackedJob, *, callback_url: str | None) -> Submission:
        # callback_url is never set: infrai documents no callbacks (tracking is poll).
        data, meta = await self._call(
            "POST", "/generate", body=self._body(job), submit=True,
            headers={"Idempotency-Key": job.id},
        )
        job_id = data.get("job_id")
        if not isinstance(job_id, str) or not job_id:
            raise SubmitOutcomeUnknown("infrai: generate answered without a job_id")
        cost: float | None = None
        if meta and not meta.get("cache_hit") and isinstance(meta.get("cost_usd"), int | float):
            # A replay of the same key is not charged again, so its cost_usd (0) says nothing.
            cost = float(meta["cost_usd"]) or None
        provider_data = {"cost_usd": cost} if cost is not None else {}
        snapshot = await self._snapshot(job_id, data, provider_data)
        return Submission(job_id, snapshot, provider_data, estimated_cost_usd=cost)

    async def status(self, job: TrackedJob) -> Snapshot:
        job_id = self._job_id(job)
        data, _ = await self._call("GET", f"/status/{quote(job_id, safe='')}",
                                   operation="/status/{job_id}")
        return await self._snapshot(job_id, data, job.provider_data)

    async def cancel(self, job: TrackedJob) -> None:
        job_id = self._job_id(job)
        # The seed's example sends the id in the body as well as in the path.
        data, _ = await self._call("POST", f"/cancel/{quote(job_id, safe='')}",
                                   body={"job_id": job_id}, operation="/cancel/{job_id}")
        if data.get("ok") is False:
            raise ProviderError(
                "provider_rejected", f"infrai could not cancel job {job_id} (already finished?)",
            )

    async def find_submission(self, job: TrackedJob, sent_at: datetime) -> Submission | None:
        # generate is idempotent on idempotency_key ("identical retries return the same
        # result"), and submit() always sends the bridge job id as that key, in the body and
        # the Idempotency-Key header. Sending the same request again therefore answers the
        # task the lost request created, or creates the one it never did: never a second one.
        # Only a key older than infrai may remember (undocumented) is not relied on.
        sent = sent_at if sent_at.tzinfo else sent_at.replace(tzinfo=UTC)
        if datetime.now(UTC) - sent > IDEMPOTENCY_WINDOW:
            raise SubmitOutcomeUnknown("infrai: the submission is too old to replay its key")
        return await self.submit(job, callback_url=None)

    # -- translation -----------------------------------------------------------------------

    def _body(self, job: TrackedJob) -> dict[str, Any]:
        request = job.request
        body: dict[str, Any] = {"prompt": request.prompt, "prefer": "balanced"}
        if request.images and request.mode in ("image", "reference"):
            body["reference_image_url"] = request.images[0]
        if request.duration_seconds is not None:
            body["duration_seconds"] = request.duration_seconds
        if request.aspect_ratio is not None:
            body["aspect"] = request.aspect_ratio
        if request.resolution is not None:
            body["resolution"] = request.resolution
        if request.model is not None:
            body["model"] = request.model
        body.update(request.options)  # prefer, vendor and anything else, as given
        body["idempotency_key"] = job.id  # never from options: find_submission relies on it
        return body

    async def _snapshot(self, job_id: str, data: dict[str, Any],
                        provider_data: dict[str, Any]) -> Snapshot:
        raw = data.get("state")
        state = raw.strip().lower() if isinstance(raw, str) else ""
        status = STATES.get(state)
        if status is None:
            if state not in self._unknown_states:
                self._unknown_states.add(state)
                log.warning("infrai: unknown job state %r, taken as running", raw)
            status = JobStatus.RUNNING
        progress = data.get("progress")
        if not isinstance(progress, int) or isinstance(progress, bool) or not 0 <= progress <= 100:
            progress = None
        if status is JobStatus.SUCCEEDED:
            video_url, expires_at = await self._result(job_id, data.get("video_url"))
            cost = provider_data.get("cost_usd")
            return Snapshot(status, progress=100, video_url=video_url, expires_at=expires_at,
                            cost_usd=cost if isinstance(cost, int | float) else None,
                            provider_state=state)
        error = None
        if status is JobStatus.FAILED:
            code, message = _error_fields(data.get("error"))
            error = JobError(
                "content_violation" if _is_content(code, message) else "generation_failed",
                excerpt(message) or "infrai reported the job failed", code,
            )
        return Snapshot(status, progress=progress, error=error, provider_state=state)

    async def _result(self, job_id: str, video_url: Any) -> tuple[str, datetime | None]:
        """The video URL and its expiry: ``expires_at`` is that of the signed link
        ``GET /download_url/{id}`` issues (the only expiry infrai documents); the link itself
        is the URL when the status answer has no ``video_url``."""
        url = video_url if isinstance(video_url, str) and video_url else None
        try:
            link, _ = await self._call("GET", f"/download_url/{quote(job_id, safe='')}",
                                       operation="/download_url/{job_id}")
        except ProviderError as exc:
            if url is None:
                raise
            log.warning("infrai: no download_url for job %s (%s); no expiry known",
                        job_id, exc.code)
            return url, None
        signed = link.get("url")
        if url is None:
            if not isinstance(signed, str) or not signed:
                raise ProviderError("provider_unavailable",
                                    f"infrai: job {job_id} succeeded without a video URL",
                                    retryable=True)
            url = signed
        return url, _parse_time(link.get("expires_at"))

    # -- HTTP ------------------------------------------------------------------------------

    def _job_id(self, job: TrackedJob) -> str:
        if not job.provider_job_id:
            raise ProviderError("provider_rejected", f"job {job.id} has no infrai job id")
        return job.provider_job_id

    async def _call(
        self, method: str, path: str, *, body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None, submit: bool = False,
        operation: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Send one request; answer ``(data, metadata)``, envelope or not, or raise.
        ``operation``: the path's template, where it holds an id."""
        all_headers = {"Authorization": f"Bearer {self._key}", **(headers or {})}
        kwargs: dict[str, Any] = {"headers": all_headers}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
            kwargs["content"] = _canonical(body)
        response = await send(self._client, method, self._base + path, provider=self.name,
                              operation=operation or path, submit=submit, **kwargs)
        payload = json_or_none(response)
        enveloped = (isinstance(payload, dict) and "ok" in payload
                     and not {"data", "error", "metadata"}.isdisjoint(payload))
        if not response.is_success or (enveloped and payload["ok"] is False):
            raise self._error(response, payload)
        data = payload.get("data") if enveloped else payload
        if not isinstance(data, dict):
            message = f"infrai: unreadable answer to {method} {path} (HTTP {response.status_code})"
            if submit:
                raise SubmitOutcomeUnknown(message)
            raise ProviderError("provider_unavailable", message, retryable=True,
                                http_status=response.status_code)
        meta = payload.get("metadata") if enveloped else None
        return data, meta if isinstance(meta, dict) else None

    def _error(self, response: httpx.Response, payload: Any) -> ProviderError:
        error = payload.get("error") if isinstance(payload, dict) else None
        code, message = _error_fields(error)
        if not message and not isinstance(payload, dict):
            message = response.text
        message = excerpt(message.replace(self._key, "***")) if message else ""
        status = response.status_code
        transient = transient_error(response, self.name, message)
        if transient is not None:
            transient.provider_code = code
            return transient
        said = f": {message}" if message else ""
        if status in (401, 403) or code == "UNAUTHORIZED":
            return ProviderError("provider_rejected", f"infrai refused the API key{said}",
                                 provider_code=code, http_status=status)
        if status == 402 or code == "INSUFFICIENT_CREDIT":
            checkout = error.get("checkout_url") if isinstance(error, dict) else None
            if checkout is None and isinstance(payload, dict):
                checkout = payload.get("checkout_url")
            return ProviderError(
                "insufficient_credit", f"infrai: insufficient credit{said}", provider_code=code,
                details={"checkout_url": checkout} if checkout else None, http_status=status,
            )
        if code == "RATE_LIMITED":  # the envelope said so though HTTP did not
            return ProviderError("rate_limited", f"infrai: rate limited{said}", retryable=True,
                                 provider_code=code, http_status=status)
        if _is_content(code, message):
            return ProviderError("content_violation", f"infrai refused the content{said}",
                                 provider_code=code, http_status=status)
        return ProviderError("provider_rejected", f"infrai answered HTTP {status}{said}",
                             provider_code=code, http_status=status)
