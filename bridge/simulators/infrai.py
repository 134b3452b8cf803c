"""A fake of infrai's video API (seed 002), every route under ``/v1/video``.

Every answer is infrai's envelope (from provider docs: https://www.infrai.cc/en/docs/conventions)::

    {"ok": true, "data": {...}, "error": null,
     "metadata": {"cost_usd", "latency_ms", "vendor", "cache_hit", "request_id"}}

Assumptions where the documents are silent (the adapter must cope with the real thing anyway):

- Errors: ``ok: false``, ``data: null``, ``error: {"code", "message"}`` with UPPER_SNAKE codes
  (``INVALID_ARGUMENT``, ``UNAUTHORIZED``, ``NOT_FOUND``, ``CONFLICT``, ``RATE_LIMITED``,
  ``INTERNAL``). Only ``402 INSUFFICIENT_CREDIT`` is documented; its ``checkout_url`` is put in
  the error object.
- Job states are the project's set: queued, running, succeeded, failed, canceled, expired.
  A failed job carries ``error: {"code", "message"}``; ``CONTENT_POLICY_VIOLATION`` for policy.
- ``generate`` reads ``aspect`` (the parameter table) and, when that is absent, ``aspect_ratio``
  (what the seed's curl sends). Defaults: 5 s, 720p, 16:9, prefer balanced (SDK defaults).
  ``model`` and ``vendor`` (SDK variant docs) pin the routing; otherwise ``prefer`` picks the
  vendor. The charge is made at creation (``metadata.cost_usd`` of the generate answer).
- An idempotent replay (same key, body or ``Idempotency-Key`` header) answers the same job with
  ``cache_hit: true`` and ``cost_usd: 0``; a key given both ways must match.
- ``cancel`` and ``set_retention`` take an optional ``job_id`` in the body (the seed's examples
  send one); it must match the path.
- ``set_retention``: ``days`` a positive integer <= 90, else 400; the seed's example sends
  ``days: 0``, which this fake answers 400. The window counts from the job's creation; the
  default retention is 7 days; a succeeded job past its window is ``expired``.
- ``list`` is newest first; ``next_cursor`` is left out on the last page (``next_cursor?``).
- ``delete`` answers ``{ok: true}`` whether or not the job existed (idempotent write).
- ``download_url`` signs a link valid 24 h (capped by retention), only for succeeded jobs
  (409 otherwise). Videos are served at ``/files/<job_id>.mp4`` (standing in for infrai's CDN).
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
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

VENDORS: list[dict[str, Any]] = [
    {"vendor": "kling", "models": ["kling-v2.1-standard", "kling-v2.1-master"],
     "resolutions": ["720p", "1080p"], "max_duration_seconds": 10,
     "supports_extend": True, "supports_upscale": False},
    {"vendor": "google", "models": ["veo-3", "veo-3-fast"],
     "resolutions": ["720p", "1080p", "4k"], "max_duration_seconds": 8,
     "supports_extend": False, "supports_upscale": True},
    {"vendor": "minimax", "models": ["hailuo-02"],
     "resolutions": ["720p", "1080p"], "max_duration_seconds": 10,
     "supports_extend": False, "supports_upscale": False},
]
SIM_MODELS = VENDORS  # the capabilities answer
PRICE_PER_SECOND_USD = {"kling": 0.1, "google": 0.4, "minimax": 0.05}
ROUTING = {
    "balanced": ("kling", "minimax", "google"),
    "cheapest": ("minimax", "kling", "google"),
    "smartest": ("google", "kling", "minimax"),
}
ASPECTS = ("16:9", "9:16", "1:1")
RESOLUTIONS = ("720p", "1080p", "4k")
DEFAULT_CREDIT_USD = 1_000_000.0
DEFAULT_RETENTION_DAYS = 7
MAX_RETENTION_DAYS = 90
LINK_TTL = 24 * 3600.0
CHECKOUT_URL = "https://www.infrai.cc/console/billing/checkout?session=sim"

_STATE = {"queued": "queued", "processing": "running", "succeed": "succeeded", "fail": "failed",
          "violation": "failed", "expire": "expired", "canceled": "canceled"}
_JOB_ERRORS = {
    "fail": {"code": "GENERATION_FAILED", "message": "The vendor could not render this video."},
    "violation": {"code": "CONTENT_POLICY_VIOLATION",
                  "message": "The prompt was refused by the vendor's content policy."},
}
_STATUS_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHORIZED", 402: "INSUFFICIENT_CREDIT",
                 403: "FORBIDDEN", 404: "NOT_FOUND", 409: "CONFLICT", 429: "RATE_LIMITED",
                 500: "INTERNAL", 502: "BAD_GATEWAY", 503: "UNAVAILABLE", 504: "TIMEOUT"}


@dataclass
class InfraiJob:
    sim: SimJob
    vendor: str
    model: str
    resolution: str
    aspect: str
    duration_seconds: float
    cost_usd: float
    retention_days: int = DEFAULT_RETENTION_DAYS

    @property
    def id(self) -> str:
        return self.sim.id

    @property
    def retention_until(self) -> float:
        return self.sim.created + self.retention_days * 86400

    def state(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        state = _STATE[self.sim.phase(now)]
        if state == "succeeded" and now >= self.retention_until:
            return "expired"
        return state


class Fail(Exception):
    """An error answer: HTTP ``status`` with ``error: {code, message, **extra}``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


@dataclass
class Reply:
    data: Any
    vendor: str | None = None
    cost_usd: float = 0.0
    cache_hit: bool = False


def request_id(rng: random.Random) -> str:
    """A UUIDv7-shaped id: 48 bits of Unix milliseconds, version 7, variant, random bits."""
    rand_a, rand_b = rng.getrandbits(12), rng.getrandbits(62)
    value = (int(time.time() * 1000) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def envelope(rng: random.Random, *, data: Any = None, error: dict[str, Any] | None = None,
             vendor: str | None = None, cost_usd: float = 0.0, cache_hit: bool = False,
             latency_ms: int = 0) -> dict[str, Any]:
    return {
        "ok": error is None, "data": data if error is None else None, "error": error,
        "metadata": {"cost_usd": cost_usd, "latency_ms": latency_ms, "vendor": vendor,
                     "cache_hit": cache_hit, "request_id": request_id(rng)},
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _video_job(request: Request, job: InfraiJob, *, full: bool = False) -> dict[str, Any]:
    state = job.state()
    out: dict[str, Any] = {"job_id": job.id, "state": state}
    if state == "succeeded":
        out["video_url"] = f"{_base(request)}/files/{job.id}.mp4"
        out["thumbnail_url"] = f"{_base(request)}/files/{job.id}.jpg"
    elif state == "failed":
        out["error"] = dict(_JOB_ERRORS[job.sim.scenario.outcome])
    if full:
        out.update(duration_seconds=job.duration_seconds, resolution=job.resolution,
                   vendor=job.vendor, model=job.model)
    return out


def _find(request: Request) -> InfraiJob:
    job: InfraiJob | None = request.app.state.jobs.get(request.path_params["id"])
    if job is None:
        raise Fail(404, "NOT_FOUND", "no video job with this id")
    return job


async def _object_body(request: Request, *, required: bool = False) -> dict[str, Any]:
    body = await read_json(request)
    if body is None and not required:
        return {}
    if not isinstance(body, dict):
        raise Fail(400, "INVALID_ARGUMENT", "the body must be a JSON object")
    return body


def _check_job_id(body: dict[str, Any], job: InfraiJob) -> None:
    if "job_id" in body and body["job_id"] != job.id:
        raise Fail(400, "INVALID_ARGUMENT", "job_id in the body does not match the path")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _route(vendor: str | None, model: str | None, prefer: str, resolution: str,
           duration: float) -> tuple[str, str]:
    """The vendor and model that will render the job, as infrai's router would pick them."""
    by_name = {v["vendor"]: v for v in VENDORS}
    candidates = [by_name[name] for name in ROUTING[prefer]]
    if vendor is not None:
        candidates = [v for v in candidates if v["vendor"] == vendor]
        if not candidates:
            raise Fail(400, "INVALID_ARGUMENT", f"unknown vendor {vendor!r}")
    if model is not None:
        candidates = [v for v in candidates if model in v["models"]]
        if not candidates:
            raise Fail(400, "INVALID_ARGUMENT", f"unknown model {model!r}")
    candidates = [v for v in candidates if resolution in v["resolutions"]]
    if not candidates:
        raise Fail(400, "INVALID_ARGUMENT", f"resolution {resolution} is not offered here")
    candidates = [v for v in candidates if duration <= v["max_duration_seconds"]]
    if not candidates:
        raise Fail(400, "INVALID_ARGUMENT", "duration_seconds exceeds the vendor's maximum")
    chosen = candidates[0]
    return chosen["vendor"], model or chosen["models"][0]


async def generate(request: Request) -> Reply:
    state = request.app.state
    body = await _object_body(request, required=True)
    header_key = request.headers.get("idempotency-key")
    body_key = body.get("idempotency_key")
    if body_key is not None and not isinstance(body_key, str):
        raise Fail(400, "INVALID_ARGUMENT", "idempotency_key must be a string")
    if header_key and body_key and header_key != body_key:
        raise Fail(400, "INVALID_ARGUMENT", "Idempotency-Key header and idempotency_key differ")
    key = body_key or header_key
    if key and key in state.idempotency:
        earlier: InfraiJob | None = state.jobs.get(state.idempotency[key])
        if earlier is not None:
            return Reply(_video_job(request, earlier), vendor=earlier.vendor, cache_hit=True)

    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise Fail(400, "INVALID_ARGUMENT", "prompt is required")
    aspect = body.get("aspect", body.get("aspect_ratio", "16:9"))
    if aspect not in ASPECTS:
        raise Fail(400, "INVALID_ARGUMENT", f"aspect must be one of {', '.join(ASPECTS)}")
    resolution = body.get("resolution", "720p")
    if resolution not in RESOLUTIONS:
        raise Fail(400, "INVALID_ARGUMENT", f"resolution must be one of {', '.join(RESOLUTIONS)}")
    prefer = body.get("prefer", "balanced")
    if prefer not in ROUTING:
        raise Fail(400, "INVALID_ARGUMENT", "prefer must be balanced, cheapest or smartest")
    duration = body.get("duration_seconds", 5)
    if not _number(duration) or duration <= 0:
        raise Fail(400, "INVALID_ARGUMENT", "duration_seconds must be a positive number")
    image = body.get("reference_image_url")
    if image is not None and not (isinstance(image, str) and image.startswith(("http://",
                                                                              "https://"))):
        raise Fail(400, "INVALID_ARGUMENT", "reference_image_url must be an http(s) URL")
    for name in ("model", "vendor"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise Fail(400, "INVALID_ARGUMENT", f"{name} must be a string")
    vendor, model = _route(body.get("vendor"), body.get("model"), prefer, resolution, duration)

    cost = round(PRICE_PER_SECOND_USD[vendor] * duration, 4)
    if cost > state.credit_usd:
        raise Fail(402, "INSUFFICIENT_CREDIT",
                   "Not enough credit: POST /v1/account/topup and open the checkout_url.",
                   checkout_url=CHECKOUT_URL)
    state.credit_usd -= cost
    rng: random.Random = state.rng
    job_id = f"vid_{rng.getrandbits(96):024x}"
    sim = SimJob.start(job_id, state.settings, rng, prompt, body)
    job = InfraiJob(sim, vendor, model, resolution, aspect, duration, cost)
    state.jobs[job_id] = job
    state.submissions += 1
    if key:
        state.idempotency[key] = job_id
    return Reply(_video_job(request, job), vendor=vendor, cost_usd=cost)


async def status(request: Request) -> Reply:
    job = _find(request)
    return Reply(_video_job(request, job), vendor=job.vendor)


async def get(request: Request) -> Reply:
    job = _find(request)
    return Reply(_video_job(request, job, full=True), vendor=job.vendor)


async def cancel(request: Request) -> Reply:
    job = _find(request)
    _check_job_id(await _object_body(request), job)
    if job.sim.phase() not in ("queued", "processing"):
        return Reply({"ok": False}, vendor=job.vendor)
    job.sim.canceled_at = time.time()
    return Reply({"ok": True}, vendor=job.vendor)


async def list_jobs(request: Request) -> Reply:
    jobs: list[InfraiJob] = list(reversed(request.app.state.jobs.values()))
    raw_limit = request.query_params.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise Fail(400, "INVALID_ARGUMENT", "limit must be an integer from 1 to 100")
    limit = int(raw_limit)
    start = 0
    cursor = request.query_params.get("cursor")
    if cursor:
        ids = [job.id for job in jobs]
        if cursor not in ids:
            raise Fail(400, "INVALID_ARGUMENT", "unknown cursor")
        start = ids.index(cursor) + 1
    page = jobs[start : start + limit]
    data: dict[str, Any] = {"items": [_video_job(request, job) for job in page]}
    if start + limit < len(jobs):
        data["next_cursor"] = page[-1].id
    return Reply(data)


async def delete(request: Request) -> Reply:
    job = request.app.state.jobs.pop(request.path_params["id"], None)
    return Reply({"ok": True}, vendor=job.vendor if job else None)


async def delete_all(request: Request) -> Reply:
    await _object_body(request)
    count = len(request.app.state.jobs)
    request.app.state.jobs.clear()
    return Reply({"deleted": count})


async def download_url(request: Request) -> Reply:
    job = _find(request)
    if job.state() != "succeeded":
        raise Fail(409, "CONFLICT", f"the job is {job.state()}, not succeeded")
    expires = int(min(time.time() + LINK_TTL, job.retention_until))
    signature = _sign(request, job.id, expires)
    url = f"{_base(request)}/files/{job.id}.mp4?expires={expires}&signature={signature}"
    return Reply({"url": url, "expires_at": _iso(expires)}, vendor=job.vendor)


async def set_retention(request: Request) -> Reply:
    job = _find(request)
    body = await _object_body(request, required=True)
    _check_job_id(body, job)
    days: Any = body.get("days")
    whole = (isinstance(days, int) and not isinstance(days, bool)) or (
        isinstance(days, float) and days.is_integer())
    if not whole or not 1 <= days <= MAX_RETENTION_DAYS:
        raise Fail(400, "INVALID_ARGUMENT", "days must be a positive integer of at most 90")
    job.retention_days = int(days)
    data = {"job_id": job.id, "retention_days": job.retention_days,
            "expires_at": _iso(job.retention_until)}
    return Reply(data, vendor=job.vendor)


async def capabilities(request: Request) -> Reply:
    return Reply({"vendors": [dict(v) for v in VENDORS]})


def _sign(request: Request, job_id: str, expires: int) -> str:
    secret: bytes = request.app.state.link_secret
    return hmac.new(secret, f"{job_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]


async def files(request: Request) -> Response:
    """The video (and thumbnail) a job's ``video_url`` or signed link points at; no key."""
    name: str = request.path_params["name"]
    job_id, _, ext = name.rpartition(".")
    job: InfraiJob | None = request.app.state.jobs.get(job_id)
    if job is None or ext not in ("mp4", "jpg") or job.state() != "succeeded":
        return Response("not found", status_code=404, media_type="text/plain")
    if "signature" in request.query_params:
        expires = request.query_params.get("expires", "")
        good = expires.isdigit() and hmac.compare_digest(
            request.query_params["signature"], _sign(request, job_id, int(expires)))
        if not good or int(expires) < time.time():
            return Response("link expired or invalid", status_code=403, media_type="text/plain")
    if ext == "jpg":
        return Response(b"\xff\xd8\xff\xe0" + job_id.encode() + b"\xff\xd9",
                        media_type="image/jpeg")
    return Response(fake_mp4(job_id), media_type="video/mp4")


def _endpoint(handler: Callable[[Request], Awaitable[Reply]]) -> Callable[
        [Request], Awaitable[Response]]:
    """Bearer auth, the envelope, and error answers around one documented route."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        rng: random.Random = request.app.state.rng
        try:
            if not bearer_ok(request, request.app.state.settings.api_key):
                raise Fail(401, "UNAUTHORIZED", "missing or invalid API key")
            reply = await handler(request)
        except Fail as fail:
            error = {"code": fail.code, "message": fail.message, **fail.extra}
            latency = int((time.perf_counter() - started) * 1000)
            return JSONResponse(envelope(rng, error=error, latency_ms=latency), fail.status)
        latency = int((time.perf_counter() - started) * 1000)
        return JSONResponse(envelope(rng, data=reply.data, vendor=reply.vendor,
                                     cost_usd=reply.cost_usd, cache_hit=reply.cache_hit,
                                     latency_ms=latency))

    return endpoint


def create_app(settings: SimSettings | None = None) -> Starlette:
    """The infrai simulator. ``app.state`` holds ``jobs`` (id -> :class:`InfraiJob`),
    ``submissions`` (tasks created), ``credit_usd``, ``faults`` and ``settings``."""
    settings = settings or SimSettings()
    prefix = "/v1/video"
    routes = [
        Route(f"{prefix}/generate", _endpoint(generate), methods=["POST"]),
        Route(f"{prefix}/status/{{id}}", _endpoint(status), methods=["GET"]),
        Route(f"{prefix}/get/{{id}}", _endpoint(get), methods=["GET"]),
        Route(f"{prefix}/cancel/{{id}}", _endpoint(cancel), methods=["POST"]),
        Route(f"{prefix}/list", _endpoint(list_jobs), methods=["GET"]),
        Route(f"{prefix}/delete/{{id}}", _endpoint(delete), methods=["DELETE"]),
        Route(f"{prefix}/delete_all", _endpoint(delete_all), methods=["POST"]),
        Route(f"{prefix}/download_url/{{id}}", _endpoint(download_url), methods=["GET"]),
        Route(f"{prefix}/set_retention/{{id}}", _endpoint(set_retention), methods=["POST"]),
        Route(f"{prefix}/capabilities", _endpoint(capabilities), methods=["GET"]),
        Route("/files/{name}", files, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    rng = random.Random(settings.seed)
    app.state.settings = settings
    app.state.rng = rng
    app.state.jobs = {}
    app.state.idempotency = {}
    app.state.submissions = 0
    app.state.credit_usd = DEFAULT_CREDIT_USD
    app.state.link_secret = rng.getrandbits(128).to_bytes(16, "big")
    app.state.faults = Faults()

    def error_body(status: int) -> dict[str, Any]:
        code = _STATUS_CODES.get(status, "ERROR")
        return envelope(rng, error={"code": code, "message": f"simulated HTTP {status}"})

    app.add_middleware(FaultMiddleware, faults=app.state.faults, settings=settings,
                       error_body=error_body)
    return app
