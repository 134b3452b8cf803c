"""A fake of Venice's video API (``/api/v1/video/queue|retrieve|quote|complete``).

Jobs move by :class:`SimJob`'s wall clock. There is no queued or failed state at Venice:
while a job waits or runs, retrieve answers ``{"status": "PROCESSING", ...}``; a public model's
finished job answers the MP4 bytes, a private ("VPS-backed") model's answers
``{"status": "COMPLETED"}`` and the video is fetched without a key from the one-time
``download_url`` the queue answer carried. Failures are HTTP errors on retrieve (422 content
policy, 500), and expired or deleted media answer 404.

State a test can read on ``app.state``: ``jobs`` (queue_id -> :class:`VeniceJob`),
``downloads`` (token -> :class:`Download`), ``submissions`` (tasks created), ``retrieves``,
``completes``, ``download_auth`` (the Authorization header of each download GET, ``None``
when absent) and ``balance_usd`` (a test may lower it to get 402).
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
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

__all__ = ["SIM_MODELS", "Download", "VeniceJob", "create_app"]

# The seed's enums: every value Venice knows; each model accepts a subset.
DURATIONS = (*(f"{n}s" for n in range(2, 17)), "18s", "20s", "25s", "30s", "1 gen", "Auto")
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9")
RESOLUTIONS = ("256p", "360p", "480p", "540p", "580p", "720p", "1080p", "1440p", "2160p",
               "4k", "2x", "4x", "true_1080p")
PROMPT_MAX = 10_000
DEFAULT_PROMPT_MAX = 2_500
MAX_REFERENCE_IMAGES = 9
DOWNLOAD_USES = 3  # "a few GET retries are allowed"; then 410
DOWNLOAD_TTL = 24 * 3600.0
CONSENT_FIELDS = frozenset(
    {"confirmed_terms_and_privacy", "confirmed_legal_right", "confirmed_screening_acknowledged"}
)
CONSENT_DOCS = "https://docs.venice.ai/guides/media/seedance-face-consent"
POLICY_TEXT = (
    "By continuing you confirm that you accept the Seedance terms and privacy notice, that you "
    "have the legal right to use the likeness of every person shown, and that the media will "
    "be screened by the model provider."
)


def _model(
    model_id: str,
    name: str,
    model_type: str,
    *,
    durations: list[str],
    aspect_ratios: list[str],
    resolutions: list[str],
    audio: bool,
    usd_per_second: float,
    prompt_max: int = DEFAULT_PROMPT_MAX,
    end_image: bool = False,
    private: bool = False,
) -> dict[str, Any]:
    # Assumption: the seed does not show GET /models?type=video; this follows the shape of
    # Venice's other model lists ({"data": [{"id", "type", "model_spec": {...}}]}) with the
    # video constraints in model_spec.constraints. "supports_end_image", "prompt_max_length",
    # "max_reference_images" and pricing.usd_per_second are our names for what the docs give
    # only in prose.
    constraints: dict[str, Any] = {
        "model_type": model_type,
        "durations": durations,
        "aspect_ratios": aspect_ratios,
        "resolutions": resolutions,
        "audio": audio,
        "audio_configurable": audio,
        "supports_end_image": end_image,
        "prompt_max_length": prompt_max,
    }
    if model_type == "reference-to-video":
        constraints["max_reference_images"] = MAX_REFERENCE_IMAGES
    return {
        "id": model_id,
        "object": "model",
        "created": 1_767_225_600,
        "owned_by": "venice.ai",
        "type": "video",
        "model_spec": {
            "name": name,
            "private": private,
            "privacy": "private" if private else "anonymized",
            "offline": False,
            "pricing": {"usd_per_second": usd_per_second},
            "constraints": constraints,
        },
    }


def _seedance(model_type: str, name: str, *, end_image: bool = False) -> dict[str, Any]:
    return _model(
        f"seedance-2-0-{model_type}", name, model_type,
        durations=[f"{n}s" for n in range(4, 16)],
        aspect_ratios=["16:9", "9:16", "1:1", "4:3", "3:4", "21:9"],
        resolutions=["480p", "720p", "1080p"],
        audio=True, usd_per_second=0.12, prompt_max=PROMPT_MAX, end_image=end_image,
    )


SIM_MODELS: list[dict[str, Any]] = [
    _seedance("text-to-video", "Seedance 2.0"),
    _seedance("image-to-video", "Seedance 2.0 I2V", end_image=True),
    _seedance("reference-to-video", "Seedance 2.0 R2V"),
    _model("wan-2-2-private-text-to-video", "Wan 2.2 (private)", "text-to-video",
           durations=["5s", "8s"], aspect_ratios=["16:9", "9:16", "1:1"],
           resolutions=["480p", "720p"], audio=False, usd_per_second=0.05, private=True),
]

_RESOLUTION_FACTOR = {"480p": 0.6, "720p": 1.0, "1080p": 2.0}


@dataclass
class VeniceJob:
    clock: SimJob
    model: str
    private: bool
    quote_usd: float
    media_deleted: bool = False


@dataclass
class Download:
    queue_id: str
    created: float
    uses_left: int = DOWNLOAD_USES
    revoked: bool = False


class _Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _invalid(exc: _Invalid) -> JSONResponse:
    # Venice's documented validation answer (zod-style "details" + "issues").
    return JSONResponse(
        {
            "error": "Invalid request parameters",
            "details": {"_errors": [], exc.field: {"_errors": [exc.message]}},
            "issues": [{"code": "custom", "path": exc.field.split("."), "message": exc.message}],
        },
        status_code=400,
    )


def _error_body(status: int) -> dict[str, Any]:
    if status == 429:
        return {"error": "Rate limit exceeded"}
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return {"error": phrase}


def _spec(model_id: Any) -> dict[str, Any] | None:
    for model in SIM_MODELS:
        if model["id"] == model_id:
            return model
    return None


def _constraints(model: dict[str, Any]) -> dict[str, Any]:
    constraints: dict[str, Any] = model["model_spec"]["constraints"]
    return constraints


def _seconds(duration: str, model: dict[str, Any]) -> float:
    if duration.endswith("s") and duration[:-1].isdigit():
        return float(duration[:-1])
    # "Auto" and "1 gen": assume the model's longest duration for pricing.
    numeric = [float(d[:-1]) for d in _constraints(model)["durations"] if d[:-1].isdigit()]
    return max(numeric, default=5.0)


def _quote(body: dict[str, Any], model: dict[str, Any]) -> float:
    per_second = float(model["model_spec"]["pricing"]["usd_per_second"])
    factor = _RESOLUTION_FACTOR.get(str(body.get("resolution")), 1.0)
    return round(per_second * _seconds(str(body["duration"]), model) * factor, 4)


def _is_media_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://", "data:"))


def _check_url_list(body: dict[str, Any], field: str, limit: int) -> list[Any]:
    value = body.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Invalid(field, "Expected array")
    if len(value) > limit:
        raise _Invalid(field, f"Array must contain at most {limit} element(s)")
    for item in value:
        if not _is_media_url(item):
            raise _Invalid(field, "Each entry must be a URL (http/https) or a data URL")
    return value


def _check_text(body: dict[str, Any], field: str, limit: int, *, required: bool) -> None:
    value = body.get(field)
    if value is None:
        if required:
            raise _Invalid(field, "Required")
        return
    if not isinstance(value, str):
        raise _Invalid(field, "Expected string")
    if required and not value:
        raise _Invalid(field, "String must contain at least 1 character(s)")
    if len(value) > limit:
        raise _Invalid(field, f"String must contain at most {limit} character(s)")


def _check_choice(
    body: dict[str, Any], field: str, known: tuple[str, ...], allowed: list[str],
    *, required: bool = False,
) -> None:
    value = body.get(field)
    if value is None:
        if required:
            raise _Invalid(field, "Required")
        return
    if value not in known:
        raise _Invalid(field, f"Invalid enum value. Expected {' | '.join(known)}")
    if allowed and value not in allowed:
        raise _Invalid(field, f"Not supported by this model. Expected {' | '.join(allowed)}")


def _check_consents(body: dict[str, Any]) -> bool:
    """Validate ``consents``; whether a valid Seedance attestation is present."""
    consents = body.get("consents")
    if consents is None:
        return False
    if not isinstance(consents, dict):
        raise _Invalid("consents", "Expected object")
    seedance = consents.get("seedance")
    if seedance is None:
        return False
    # Exactly the three attestations, each true; any extra or false field is refused.
    if (not isinstance(seedance, dict) or set(seedance) != CONSENT_FIELDS
            or any(value is not True for value in seedance.values())):
        raise _Invalid(
            "consents.seedance",
            "Must be exactly {confirmed_terms_and_privacy, confirmed_legal_right, "
            "confirmed_screening_acknowledged}, each true",
        )
    return True


def _validate_queue(body: dict[str, Any], model: dict[str, Any]) -> bool:
    """Check a queue body against the seed's limits; whether Seedance consent was given."""
    c = _constraints(model)
    model_type = c["model_type"]
    prompt_max = min(PROMPT_MAX, int(c.get("prompt_max_length", DEFAULT_PROMPT_MAX)))
    _check_text(body, "prompt", prompt_max, required=True)
    _check_text(body, "negative_prompt", prompt_max, required=False)
    _check_choice(body, "duration", DURATIONS, c["durations"], required=True)
    _check_choice(body, "aspect_ratio", ASPECT_RATIOS, c["aspect_ratios"])
    _check_choice(body, "resolution", RESOLUTIONS, c["resolutions"])
    if "audio" in body and not isinstance(body["audio"], bool):
        raise _Invalid("audio", "Expected boolean")
    if "upscale_factor" in body and body["upscale_factor"] not in (1, 2, 4):
        raise _Invalid("upscale_factor", "Expected 1 | 2 | 4")
    for field in ("image_url", "end_image_url", "audio_url", "video_url"):
        if body.get(field) is not None and not _is_media_url(body[field]):
            raise _Invalid(field, "Must be a URL (http/https) or a data URL")
    if model_type == "image-to-video" and body.get("image_url") is None:
        raise _Invalid("image_url", "Required for image-to-video models")
    if body.get("end_image_url") is not None and not c.get("supports_end_image"):
        raise _Invalid("end_image_url", "This model does not support end images")
    images = _check_url_list(body, "reference_image_urls", MAX_REFERENCE_IMAGES)
    videos = _check_url_list(body, "reference_video_urls", 3)
    if _check_url_list(body, "reference_audio_urls", 3) and not (images or videos):
        raise _Invalid("reference_audio_urls", "Needs at least one reference image or video")
    if model_type == "reference-to-video" and not (images or videos):
        raise _Invalid("reference_image_urls", "Required for reference-to-video models")
    _check_url_list(body, "scene_image_urls", 4)
    elements = body.get("elements")
    if elements is not None and (not isinstance(elements, list) or len(elements) > 4):
        raise _Invalid("elements", "Array must contain at most 4 element(s)")
    return _check_consents(body)


def _face_roles(body: dict[str, Any]) -> list[str]:
    # Assumption: role names for the media the faces were found in; the docs show only
    # "reference_image".
    roles = []
    for field, role in (("image_url", "image"), ("end_image_url", "end_image"),
                        ("reference_image_urls", "reference_image"),
                        ("reference_video_urls", "reference_video")):
        if body.get(field):
            roles.append(role)
    return roles


class _Window:
    """A sliding 60 s window of request times, for the documented rpm limits."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.times: deque[float] = deque()

    def admit(self) -> float | None:
        """Record a request; ``None`` if admitted, else the seconds until one would be."""
        now = time.monotonic()
        while self.times and self.times[0] <= now - 60.0:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return self.times[0] + 60.0 - now
        self.times.append(now)
        return None

    def headers(self) -> dict[str, str]:
        return {"x-ratelimit-limit-requests": str(self.limit),
                "x-ratelimit-remaining-requests": str(max(0, self.limit - len(self.times)))}


def create_app(
    settings: SimSettings | None = None, *, queue_rpm: int = 40, retrieve_rpm: int = 120
) -> Starlette:
    settings = settings or SimSettings()
    rng = random.Random(settings.seed)
    jobs: dict[str, VeniceJob] = {}
    downloads: dict[str, Download] = {}
    windows = {"queue": _Window(queue_rpm), "retrieve": _Window(retrieve_rpm)}
    low, high = settings.duration
    # P80 of the uniform processing-time draw, in ms: what Venice calls average_execution_time.
    p80_ms = int(1000 * (low + 0.8 * (high - low)))

    def authorize(request: Request) -> JSONResponse | None:
        if bearer_ok(request, settings.api_key):
            return None
        return _error(401, "Authentication failed")

    def limit(kind: str) -> JSONResponse | None:
        wait = windows[kind].admit()
        if wait is None:
            return None
        response = _error(429, "Rate limit exceeded")
        response.headers["retry-after"] = str(max(1, math.ceil(wait)))
        response.headers.update(windows[kind].headers())
        return response

    async def body_of(request: Request) -> dict[str, Any] | JSONResponse:
        body = await read_json(request)
        if not isinstance(body, dict):
            return _error(400, "Invalid request parameters",
                          details={"_errors": ["Expected a JSON object"]}, issues=[])
        return body

    def lookup(body: dict[str, Any]) -> VeniceJob | JSONResponse:
        for field in ("model", "queue_id"):
            if not isinstance(body.get(field), str):
                return _invalid(_Invalid(field, "Required"))
        job = jobs.get(body["queue_id"])
        if job is None or job.model != body["model"] or job.media_deleted:
            return _error(404, "Media could not be found")
        return job

    async def queue(request: Request) -> Response:
        refused = authorize(request) or limit("queue")
        if refused is not None:
            return refused
        body = await body_of(request)
        if isinstance(body, JSONResponse):
            return body
        model = _spec(body.get("model"))
        if model is None:
            return _invalid(_Invalid("model", f"Unknown video model: {body.get('model')!r}"))
        try:
            consented = _validate_queue(body, model)
        except _Invalid as exc:
            return _invalid(exc)
        prompt = body["prompt"]
        model_type = _constraints(model)["model_type"]
        clock = SimJob.start("", settings, rng, prompt, body)
        if (clock.scenario.faces and not consented and model["id"].startswith("seedance-")
                and model_type in ("image-to-video", "reference-to-video")):
            return JSONResponse(
                {
                    "error": {
                        "code": "needs_consent",
                        "message": "The submitted media contains human faces. Review the "
                                   "Seedance consent policy and resend the same request with "
                                   "consents.seedance.",
                    },
                    "consent_flow": "seedance",
                    "face_media_roles": _face_roles(body),
                    "consent": {"consent_version": "v2.0", "policy_text": POLICY_TEXT},
                    "docs_url": CONSENT_DOCS,
                },
                status_code=409,
            )
        quote = _quote(body, model)
        if request.app.state.balance_usd < quote:
            return _error(402, "Insufficient USD or Diem balance to complete request")
        request.app.state.balance_usd -= quote
        queue_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        clock.id = queue_id
        private = bool(model["model_spec"]["private"])
        jobs[queue_id] = VeniceJob(clock, model["id"], private, quote)
        request.app.state.submissions += 1
        answer: dict[str, Any] = {"model": model["id"], "queue_id": queue_id}
        if private:
            token = f"{rng.getrandbits(128):032x}"
            downloads[token] = Download(queue_id, time.time())
            answer["download_url"] = str(request.url_for("download", token=token))
        return JSONResponse(answer, headers=windows["queue"].headers())

    async def retrieve(request: Request) -> Response:
        refused = authorize(request) or limit("retrieve")
        if refused is not None:
            return refused
        request.app.state.retrieves += 1
        body = await body_of(request)
        if isinstance(body, JSONResponse):
            return body
        job = lookup(body)
        if isinstance(job, JSONResponse):
            return job
        phase = job.clock.phase()
        if phase in ("queued", "processing"):
            return JSONResponse({
                "status": "PROCESSING",
                "average_execution_time": p80_ms,
                "execution_duration": int(1000 * job.clock.elapsed_processing()),
            })
        if phase == "violation":
            return JSONResponse({"error": {
                "message": "Your generation was blocked due to the model provider's content "
                           "policies. Credits have been refunded.",
                "type": "provider_content_policy",
                "credits_refunded": True,
            }}, status_code=422)
        if phase == "fail":
            return _error(500, "Video generation failed")
        if phase == "expire":
            return _error(404, "Media could not be found")
        if job.private:
            return JSONResponse({
                "status": "COMPLETED",
                "average_execution_time": p80_ms,
                "execution_duration": int(1000 * job.clock.duration),
            })
        if body.get("delete_media_on_completion") is True:
            job.media_deleted = True
        return Response(fake_mp4(job.clock.id), media_type="video/mp4")

    async def quote(request: Request) -> Response:
        refused = authorize(request)
        if refused is not None:
            return refused
        body = await body_of(request)
        if isinstance(body, JSONResponse):
            return body
        model = _spec(body.get("model"))
        if model is None:
            return _invalid(_Invalid("model", f"Unknown video model: {body.get('model')!r}"))
        c = _constraints(model)
        try:
            _check_choice(body, "duration", DURATIONS, c["durations"], required=True)
            _check_choice(body, "resolution", RESOLUTIONS, c["resolutions"])
            _check_choice(body, "aspect_ratio", ASPECT_RATIOS, c["aspect_ratios"])
        except _Invalid as exc:
            return _invalid(exc)
        return JSONResponse({"quote": _quote(body, model)})

    async def complete(request: Request) -> Response:
        refused = authorize(request)
        if refused is not None:
            return refused
        body = await body_of(request)
        if isinstance(body, JSONResponse):
            return body
        job = lookup(body)
        if isinstance(job, JSONResponse):
            return job
        job.media_deleted = True
        request.app.state.completes += 1
        return JSONResponse({"success": True})

    async def models(request: Request) -> Response:
        # GET /models is readable without a key; Venice's default type is "text".
        kind = request.query_params.get("type", "text")
        data = SIM_MODELS if kind in ("video", "all") else []
        return JSONResponse({"object": "list", "type": kind, "data": data})

    async def download(request: Request) -> Response:
        # The pre-signed URL needs no key; record what came so tests can see none was sent.
        token = request.path_params["token"]
        entry = downloads.get(token)
        if entry is None:
            return _error(404, "Not found")
        gone = entry.revoked or time.time() > entry.created + DOWNLOAD_TTL
        if request.method == "DELETE":
            entry.revoked = True
            return Response(status_code=204)
        request.app.state.download_auth.append(request.headers.get("authorization"))
        if gone or entry.uses_left <= 0:
            return _error(410, "Download link expired, used up or revoked")
        job = jobs[entry.queue_id]
        if job.clock.phase() != "succeed":
            return _error(404, "Video is not ready")
        entry.uses_left -= 1
        return Response(fake_mp4(job.clock.id), media_type="video/mp4")

    app = Starlette(routes=[
        Route("/api/v1/video/queue", queue, methods=["POST"]),
        Route("/api/v1/video/retrieve", retrieve, methods=["POST"]),
        Route("/api/v1/video/quote", quote, methods=["POST"]),
        Route("/api/v1/video/complete", complete, methods=["POST"]),
        Route("/api/v1/models", models, methods=["GET"]),
        Route("/api/v1/downloads/{token}", download, methods=["GET", "DELETE"], name="download"),
    ])
    app.state.settings = settings
    app.state.faults = Faults()
    app.state.jobs = jobs
    app.state.downloads = downloads
    app.state.submissions = 0
    app.state.retrieves = 0
    app.state.completes = 0
    app.state.download_auth = []
    app.state.balance_usd = 1_000_000.0
    app.add_middleware(FaultMiddleware, faults=app.state.faults, settings=settings,
                       error_body=_error_body)
    return app
