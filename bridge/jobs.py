"""Jobs: the limits of the unified request (``bridge.schemas.JobRequest`` declares it),
checking it against a model, and the pure rules by which provider snapshots move a job from
state to state (and which events that makes)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from bridge.errors import InvalidRequest
from bridge.models import (
    PROGRESS_EVENT_INTERVAL,
    STATUS_RANK,
    TERMINAL,
    Job,
    JobError,
    JobStatus,
    rfc3339,
)
from bridge.providers.base import JobRequest, ModelInfo, Snapshot, Submission
from bridge.store import Change

MAX_PROMPT = 20_000
MAX_IMAGES = 16
MAX_METADATA_BYTES = 16 * 1024
MAX_DURATION = 600  # seconds
MAX_IDEMPOTENCY_KEY = 255  # characters

# Builds a public link for a file in the media store: (url, expires_at).
MediaLink = Callable[[str], tuple[str, datetime]]


def check_idempotency_key(key: str | None) -> None:
    """An ``Idempotency-Key`` header, when there is one, is 1 to 255 characters (400)."""
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
                             field="Idempotency-Key", status_code=400)


def fingerprint(body: Any) -> str:
    """sha256 of the body as parsed, keys sorted: the same for the same JSON whatever its
    key order or whitespace (an ``Idempotency-Key`` must not be reused with another)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def is_image_ref(value: str) -> bool:
    """An http(s) URL, or a data: URL (whose base64 is checked where it is split off)."""
    if value.startswith("data:"):
        return "," in value
    return is_http_url(value)


def is_link(value: str) -> bool:
    """An http(s) URL with a host and nothing a browser strips (spaces, tabs, controls):
    what may go into an ``href`` or a result."""
    if any(ch <= " " or ch == "\x7f" for ch in value):
        return False
    try:
        return is_http_url(value)
    except ValueError:  # a malformed [IPv6] host
        return False


def result_url_problem(url: str, allow_http: bool) -> str | None:
    """Why a provider's result URL is not passed on, or ``None``: only ``https`` URLs are
    (``http`` too with ``allow_http``); never ``javascript:``, ``data:``, ``file:``."""
    scheme = url.partition(":")[0].lower() if ":" in url else ""
    if not is_link(url):
        if scheme in ("http", "https"):
            return "is not a valid URL (no host, or spaces or control characters in it)"
        if scheme.isascii() and scheme.isalnum() and len(scheme) <= 20:
            return f"is a {scheme}: URL, not https"
        return "is not an https URL"
    if scheme != "https" and not allow_http:
        return "is plain http, not https (http needs BRIDGE_ALLOW_PRIVATE_TARGETS=1)"
    return None


def _vetted(snapshot: Snapshot, provider: str, allow_http: bool) -> Snapshot:
    """A success whose link may not be passed on becomes a failure saying why."""
    if snapshot.status is not JobStatus.SUCCEEDED or snapshot.media_file is not None \
            or snapshot.video_url is None:
        return snapshot
    url: object = snapshot.video_url
    problem = result_url_problem(url, allow_http) if isinstance(url, str) else "is no text"
    if problem is None:
        return snapshot
    error = JobError("invalid_result", f"{provider}'s link to the video {problem}; it was "
                                       "not kept or sent on")
    return replace(snapshot, status=JobStatus.FAILED, video_url=None, error=error)


def check_capabilities(request: JobRequest, model: ModelInfo) -> None:
    """Refuse, naming the field, what the model's published capabilities do not allow."""
    if model.modes and request.mode not in model.modes:
        raise InvalidRequest(
            f"model {model.id} supports modes {', '.join(model.modes)}", field="mode"
        )
    if request.duration_seconds is not None:
        duration = request.duration_seconds
        if model.durations is not None and duration not in model.durations:
            allowed = ", ".join(str(d) for d in model.durations)
            raise InvalidRequest(f"model {model.id} supports durations {allowed} seconds",
                                 field="duration_seconds")
        low, high = model.min_duration_seconds, model.max_duration_seconds
        if (low is not None and duration < low) or (high is not None and duration > high):
            raise InvalidRequest(
                f"model {model.id} supports {low or 1} to {high or 'any'} seconds",
                field="duration_seconds",
            )
    if request.aspect_ratio is not None and model.aspect_ratios and (
        request.aspect_ratio not in model.aspect_ratios
    ):
        raise InvalidRequest(
            f"model {model.id} supports aspect ratios {', '.join(model.aspect_ratios)}",
            field="aspect_ratio",
        )
    if request.resolution is not None and model.resolutions and (
        request.resolution not in model.resolutions
    ):
        raise InvalidRequest(
            f"model {model.id} supports resolutions {', '.join(model.resolutions)}",
            field="resolution",
        )
    if request.mode != "text" and not request.images:
        raise InvalidRequest(f"mode {request.mode} needs at least one image", field="images")
    if model.max_images is not None and len(request.images) > model.max_images:
        raise InvalidRequest(f"model {model.id} takes at most {model.max_images} images",
                             field="images")


# -- transitions ---------------------------------------------------------------------------


def _status_event(status: JobStatus) -> str:
    return f"job.{status}"


def apply_submission(job: Job, submission: Submission, now: datetime) -> Change:
    """The provider accepted the job: record its id and what it said; ``job.submitted``."""
    cost = dict(job.cost or {})
    if submission.estimated_cost_usd is not None:
        cost["estimated_usd"] = round(submission.estimated_cost_usd, 4)
    accepted = job.evolve(
        status=JobStatus.SUBMITTED,
        provider_job_id=submission.provider_job_id,
        provider_data={**job.provider_data, **submission.provider_data},
        cost=cost or None,
        submitted_at=now,
        submit_started_at=None,
        updated_at=now,
        error_streak=0,
        progress=job.progress if job.progress is not None else 0,
    )
    # Announce the submission first; a snapshot that is already further along (a fast
    # provider) is applied by the caller as a second change.
    return Change(accepted, "job.submitted")


def apply_snapshot(job: Job, snapshot: Snapshot, now: datetime,
                   media_link: MediaLink, *, allow_http: bool = False) -> Change:
    """Fold a provider snapshot into the job. Never moves a job backwards; emits one event
    per state change, and ``job.progress`` at most once per 5 s. A result link that is not
    https (http with ``allow_http``) fails the job instead (``invalid_result``)."""
    snapshot = _vetted(snapshot, job.provider, allow_http)
    status = job.status
    if STATUS_RANK[snapshot.status] > STATUS_RANK[job.status]:
        status = snapshot.status
    changed = status != job.status

    progress = job.progress
    if snapshot.progress is not None and (progress is None or snapshot.progress > progress):
        progress = min(100, max(0, snapshot.progress))
    if status == JobStatus.SUCCEEDED:
        progress = 100

    updated = job.evolve(status=status, progress=progress)
    if snapshot.cost_usd is not None:
        updated.cost = {**(job.cost or {}), "usd": round(snapshot.cost_usd, 4)}
    if changed or progress != job.progress or updated.cost != job.cost:
        updated.updated_at = now  # a snapshot that tells nothing new leaves the job as it was

    if changed and status in TERMINAL:
        updated.completed_at = now
        updated.next_check_at = None
        if status == JobStatus.SUCCEEDED:
            updated.result = _result(snapshot, now, media_link)
        elif snapshot.error is not None:
            updated.error = snapshot.error
        elif status == JobStatus.EXPIRED:
            updated.error = JobError("expired", "the provider expired the job")
        elif status == JobStatus.FAILED:
            updated.error = JobError("generation_failed", "the provider reported a failure")
        return Change(updated, _status_event(status))
    if changed:
        return Change(updated, _status_event(status))
    if progress != job.progress and (
        job.progress_event_at is None
        or (now - job.progress_event_at).total_seconds() >= PROGRESS_EVENT_INTERVAL
    ):
        updated.progress_event_at = now
        return Change(updated, "job.progress")
    return Change(updated)


def _result(snapshot: Snapshot, now: datetime, media_link: MediaLink) -> dict[str, Any]:
    if snapshot.media_file is not None:
        url, expires_at = media_link(snapshot.media_file)
        return {"video_url": url, "expires_at": rfc3339(expires_at)}
    return {"video_url": snapshot.video_url, "expires_at": rfc3339(snapshot.expires_at)}


def end_job(job: Job, status: JobStatus, error: JobError | None, now: datetime) -> Change:
    """Finish a job for a reason of the bridge's own (cancel, give up, unknown submit)."""
    ended = job.evolve(status=status, error=error, updated_at=now, completed_at=now,
                    next_check_at=None, submit_started_at=None)
    return Change(ended, _status_event(status))


def due_in(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)
