"""The apixo adapter (veo-3-1): callback tracking, status by taskId (seed 003).

Unified request -> apixo body::

    mode text        -> input.generationType TEXT_2_VIDEO (no images)
    mode first_last  -> FIRST_AND_LAST_FRAMES_2_VIDEO, image_urls = the 2 frames
    mode image       -> FIRST_AND_LAST_FRAMES_2_VIDEO with one image: the first frame
                        (assumed: apixo has no plain image-to-video type; one frame is allowed,
                        the seed only gives "max 2")
    mode reference   -> REFERENCE_2_VIDEO, 1-3 image_urls, aspect 16:9, input.mode fast
    prompt, aspect_ratio, seed -> input.prompt, input.aspect_ratio, input.seed
    options.provider           -> top-level "provider" (routing: auto | value | official)
    options.mode               -> input.mode (default "quality"; "fast" for reference)
    any other option           -> merged into "input" as given (watermark, enableTranslation,
                                  and whatever apixo adds later)

duration_seconds, resolution, negative_prompt and audio have no apixo field (veo-3-1 documents
none) and are not sent. The model id is a path segment: /api/v1/generateTask/{model}.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from bridge import jsoninput
from bridge.errors import InvalidRequest, ProviderError, SubmitOutcomeUnknown
from bridge.models import JobError, JobStatus, Tracking
from bridge.providers.base import JobRequest, ModelInfo, Snapshot, Submission, TrackedJob
from bridge.providers.http import excerpt, json_or_none, retry_after, send, transient_error

__all__ = ["DEFAULT_MODEL", "ApixoProvider", "build_body", "parse_status"]

NAME = "apixo"
DEFAULT_MODEL = "veo-3-1"
MAX_PROMPT = 10_000
RESULT_TTL = timedelta(days=15)  # "Result URLs are valid for 15 days"
ROUTING = ("auto", "value", "official")
INPUT_MODES = ("quality", "fast")
_GENERATION_TYPES = {
    "text": "TEXT_2_VIDEO",
    "image": "FIRST_AND_LAST_FRAMES_2_VIDEO",
    "first_last": "FIRST_AND_LAST_FRAMES_2_VIDEO",
    "reference": "REFERENCE_2_VIDEO",
}
_IMAGE_COUNTS = {"text": (0, 0), "image": (1, 1), "first_last": (2, 2), "reference": (1, 3)}
# Body keys the unified fields or the bridge own; options may not set them.
_OWNED_OPTIONS = ("prompt", "generationType", "image_urls", "aspect_ratio", "seed",
                  "request_type", "callback_url", "input")
_STATES = {"pending": JobStatus.SUBMITTED, "processing": JobStatus.RUNNING}
# Task-level failCodes; any other code is the provider refusing the job.
_FAIL_CODES = {"CONTENT_VIOLATION": "content_violation", "INVALID_IMAGE_URL": "provider_rejected"}

MODELS = (
    ModelInfo(
        provider=NAME,
        id=DEFAULT_MODEL,
        tracking=Tracking.CALLBACK,
        modes=("text", "image", "reference", "first_last"),
        aspect_ratios=("16:9", "9:16", "auto"),
        # The seed documents no duration or resolution choice: left unchecked.
        max_images=3,
    ),
)


def _model(request: JobRequest) -> str:
    return request.model or DEFAULT_MODEL


def build_body(request: JobRequest, callback_url: str | None) -> dict[str, Any]:
    """The generateTask body for ``request`` (see the module docstring)."""
    options = dict(request.options)
    routing = options.pop("provider", None)
    default_mode = "fast" if request.mode == "reference" else "quality"
    data: dict[str, Any] = {
        "mode": options.pop("mode", default_mode),
        "prompt": request.prompt,
        "generationType": _GENERATION_TYPES[request.mode],
    }
    if request.aspect_ratio is not None:
        data["aspect_ratio"] = request.aspect_ratio
    if request.mode != "text":
        data["image_urls"] = list(request.images)
    if request.seed is not None:
        data["seed"] = request.seed
    data.update(options)
    body: dict[str, Any] = {"request_type": "async"}
    if callback_url is not None:
        body = {"request_type": "callback", "callback_url": callback_url}
    if routing is not None:
        body["provider"] = routing
    body["input"] = data
    return body


def _ms(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(value / 1000, UTC)


def parse_status(data: Any) -> Snapshot:
    """A status ``data`` object (as in statusTask answers and callbacks) as a Snapshot.

    Raises ``ValueError`` when it is not one.
    """
    if not isinstance(data, dict):
        raise ValueError("apixo status data is not an object")
    state = data.get("state")
    if state in _STATES:
        return Snapshot(status=_STATES[state], provider_state=state)
    if state == "failed":
        fail_code = data.get("failCode")
        code = _FAIL_CODES.get(str(fail_code), "generation_failed")
        message = data.get("failMsg") or fail_code or "apixo: the task failed"
        error = JobError(code, excerpt(str(message)), str(fail_code) if fail_code else None)
        return Snapshot(status=JobStatus.FAILED, error=error, provider_state=state)
    if state == "success":
        result = data.get("resultJson")
        try:
            # resultJson is a JSON *string* (read as strictly as the body); an object is taken
            # as well.
            parsed: Any = jsoninput.loads(result) if isinstance(result, str) else result
            url = parsed["resultUrls"][0]
        except (ValueError, TypeError, KeyError, IndexError):
            url = None
        if not isinstance(url, str) or not url:
            error = JobError("provider_unavailable", "apixo: success without a result URL")
            return Snapshot(status=JobStatus.FAILED, error=error, provider_state=state)
        completed = _ms(data.get("completeTime"))
        return Snapshot(
            status=JobStatus.SUCCEEDED,
            progress=100,
            video_url=url,
            expires_at=completed + RESULT_TTL if completed else None,
            provider_state=state,
            # apixo reports no price per task: cost_usd stays unknown.
        )
    raise ValueError(f"apixo: unknown task state {state!r}")


def _envelope_error(response: httpx.Response, code: int, message: str) -> ProviderError:
    """The error an envelope ``code`` other than 200 means."""
    text = f"apixo: {excerpt(message)}" if message else f"apixo: answered code {code}"
    provider_code = str(code)
    if code == 429:
        return ProviderError("rate_limited", text, retryable=True,
                             retry_after=retry_after(response), provider_code=provider_code,
                             http_status=response.status_code)
    if code >= 500:
        return ProviderError("provider_unavailable", text, retryable=True,
                             retry_after=retry_after(response), provider_code=provider_code,
                             http_status=response.status_code)
    if code == 401:
        return ProviderError("provider_rejected", "apixo: invalid or missing API key",
                             provider_code=provider_code, http_status=401)
    # The seed's example: {"code":400,"message":"Insufficient credits","data":null}.
    kind = "insufficient_credit" if "credit" in message.lower() else "provider_rejected"
    return ProviderError(kind, text, provider_code=provider_code, http_status=response.status_code)


def _unwrap(response: httpx.Response) -> Any:
    """The envelope's ``data``; raises ``ProviderError`` for an error answer.

    The envelope ``code`` decides even when the HTTP status is 200; the HTTP status decides
    when the body is no envelope. Raises ``ValueError`` for a 2xx answer that is no envelope.
    """
    transient = transient_error(response, NAME)
    if transient is not None:
        raise transient
    payload = json_or_none(response)
    code = payload.get("code") if isinstance(payload, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        if response.is_success:
            raise ValueError("apixo: the answer is not an envelope")
        raise _envelope_error(response, response.status_code, excerpt(response.text))
    assert isinstance(payload, dict)
    if code != 200:
        raise _envelope_error(response, code, str(payload.get("message") or ""))
    if not response.is_success:
        raise _envelope_error(response, response.status_code, str(payload.get("message") or ""))
    return payload.get("data")


class ApixoProvider:
    """apixo (veo-3-1). Tracks by callback; the status endpoint confirms what a callback says."""

    name = NAME
    tracking = Tracking.CALLBACK
    max_concurrent: int | None = 1000  # "Concurrent tasks 1000" per key (seed's limits)
    can_cancel = False  # apixo has no cancel or delete

    def __init__(self, client: httpx.AsyncClient, *, base_url: str, api_key: str) -> None:
        self._client = client
        self._base = base_url.rstrip("/") + "/api/v1"
        self._headers = {"Authorization": f"Bearer {api_key}"}

    def _url(self, verb: str, request: JobRequest) -> str:
        return f"{self._base}/{verb}/{quote(_model(request), safe='')}"

    async def list_models(self) -> list[ModelInfo]:
        # apixo has no capability endpoint: the model page of the seed, written down.
        return list(MODELS)

    def check(self, request: JobRequest, model: ModelInfo | None) -> None:
        if _model(request) not in {m.id for m in MODELS}:
            raise InvalidRequest(f"apixo has no video model {_model(request)!r}", field="model")
        if not 1 <= len(request.prompt) <= MAX_PROMPT:
            raise InvalidRequest(f"apixo takes a prompt of 1-{MAX_PROMPT} characters",
                                 field="prompt")
        if request.mode not in _GENERATION_TYPES:
            raise InvalidRequest(f"apixo has no mode {request.mode!r}", field="mode")
        low, high = _IMAGE_COUNTS[request.mode]
        count = len(request.images)
        if not low <= count <= high:
            wanted = str(low) if low == high else f"{low}-{high}"
            raise InvalidRequest(f"apixo mode {request.mode} takes {wanted} images, got {count}",
                                 field="images")
        if any(not url.startswith(("https://", "http://")) for url in request.images):
            # Assumed: image_urls must be fetchable URLs (INVALID_IMAGE_URL otherwise).
            raise InvalidRequest("apixo takes image URLs, not data: URLs", field="images")
        options = request.options
        for key in _OWNED_OPTIONS:
            if key in options:
                raise InvalidRequest(f"options.{key} is set by the bridge for apixo",
                                     field=f"options.{key}")
        if "mode" in options and options["mode"] not in INPUT_MODES:
            raise InvalidRequest("apixo options.mode is quality or fast", field="options.mode")
        if "provider" in options and options["provider"] not in ROUTING:
            raise InvalidRequest("apixo options.provider is auto, value or official",
                                 field="options.provider")
        if "watermark" in options and not isinstance(options["watermark"], str):
            raise InvalidRequest("apixo options.watermark is a string", field="options.watermark")
        if "enableTranslation" in options and not isinstance(options["enableTranslation"], bool):
            raise InvalidRequest("apixo options.enableTranslation is a boolean",
                                 field="options.enableTranslation")
        if request.mode == "reference":
            if options.get("mode", "fast") != "fast":
                raise InvalidRequest("apixo reference mode requires options.mode fast",
                                     field="options.mode")
            if request.aspect_ratio not in (None, "16:9"):
                raise InvalidRequest("apixo reference mode requires aspect_ratio 16:9",
                                     field="aspect_ratio")

    async def submit(self, job: TrackedJob, *, callback_url: str | None) -> Submission:
        response = await send(
            self._client, "POST", self._url("generateTask", job.request), provider=NAME,
            operation="/generateTask/{model}", submit=True, headers=self._headers,
            json=build_body(job.request, callback_url),
        )
        try:
            data = _unwrap(response)
        except ValueError:
            # A 2xx we cannot read: apixo may well have created (and charged) the task.
            raise SubmitOutcomeUnknown("apixo: unreadable answer to generateTask") from None
        task_id = data.get("taskId") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise SubmitOutcomeUnknown("apixo: generateTask answered without a taskId")
        return Submission(
            provider_job_id=task_id,
            snapshot=Snapshot(status=JobStatus.SUBMITTED, provider_state="pending"),
        )

    async def status(self, job: TrackedJob) -> Snapshot:
        if not job.provider_job_id:
            raise ProviderError("provider_rejected", "apixo: the job has no taskId")
        response = await send(
            self._client, "GET", self._url("statusTask", job.request), provider=NAME,
            operation="/statusTask/{model}", headers=self._headers,
            params={"taskId": job.provider_job_id},
        )
        try:
            return parse_status(_unwrap(response))
        except ValueError as exc:
            raise ProviderError("provider_unavailable", str(exc), retryable=True) from None

    async def cancel(self, job: TrackedJob) -> None:
        raise ProviderError("provider_rejected", "apixo cannot cancel a task")

    async def find_submission(self, job: TrackedJob, sent_at: datetime) -> Submission | None:
        # apixo has no task listing: a lost taskId cannot be found again.
        raise SubmitOutcomeUnknown("apixo cannot look a task up without its id")

    def parse_callback(self, body: bytes) -> tuple[str, Snapshot]:
        """A callback body is the status envelope; raises ``ValueError`` for anything else."""
        try:
            payload = jsoninput.loads(body)
        except ValueError:
            raise ValueError("apixo callback: body is not JSON") from None
        if not isinstance(payload, dict) or payload.get("code") != 200:
            raise ValueError("apixo callback: not a success envelope")
        data = payload.get("data")
        task_id = data.get("taskId") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise ValueError("apixo callback: no taskId")
        return task_id, parse_status(data)
