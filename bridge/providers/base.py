"""The seam between the bridge and a provider API.

An adapter translates the bridge's unified request into one provider's documented body,
and that provider's answers into :class:`Snapshot` objects with the bridge's common states.
It owns no state of its own: whatever it must remember about a job between calls (Venice's
one-time ``download_url``, say) it returns in ``Submission.provider_data``; the bridge stores
it with the job and hands it back in ``TrackedJob.provider_data``.

Adapters receive an ``httpx.AsyncClient``, the provider's base URL and API key through their
constructor, and never log or repeat the key. Every failure is a :class:`ProviderError`
(``retryable`` for timeouts, transport errors, 5xx and 429 with ``retry_after``); a
connection lost *after* the submit request was sent raises :class:`SubmitOutcomeUnknown`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from bridge.errors import ProviderError, SubmitOutcomeUnknown
from bridge.models import JobError, JobStatus, Tracking

__all__ = [
    "CallbackProvider",
    "JobRequest",
    "ModelInfo",
    "PollHints",
    "Provider",
    "ProviderError",
    "StreamingProvider",
    "Submission",
    "SubmitOutcomeUnknown",
    "TrackedJob",
]

MODES = ("text", "image", "reference", "first_last")


@dataclass(frozen=True)
class JobRequest:
    """The unified job request of ``POST /v1/jobs``, after parsing."""

    provider: str
    prompt: str
    model: str | None = None
    mode: str = "text"
    duration_seconds: int | None = None
    aspect_ratio: str | None = None
    resolution: str | None = None
    images: tuple[str, ...] = ()
    negative_prompt: str | None = None
    seed: int | None = None
    audio: bool | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRequest:
        return cls(
            provider=data["provider"],
            prompt=data["prompt"],
            model=data.get("model"),
            mode=data.get("mode") or "text",
            duration_seconds=data.get("duration_seconds"),
            aspect_ratio=data.get("aspect_ratio"),
            resolution=data.get("resolution"),
            images=tuple(data.get("images") or ()),
            negative_prompt=data.get("negative_prompt"),
            seed=data.get("seed"),
            audio=data.get("audio"),
            options=dict(data.get("options") or {}),
        )


@dataclass(frozen=True)
class ModelInfo:
    """A video model and what it accepts, as listed by ``GET /v1/models``.

    A capability the provider does not document is ``None`` (or empty): not checked.
    """

    provider: str
    id: str
    tracking: Tracking
    modes: tuple[str, ...] = ("text",)
    aspect_ratios: tuple[str, ...] = ()
    resolutions: tuple[str, ...] = ()
    min_duration_seconds: int | None = None
    max_duration_seconds: int | None = None
    durations: tuple[int, ...] | None = None
    price_per_second_usd: float | None = None
    max_images: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "provider": self.provider,
            "id": self.id,
            "modes": list(self.modes),
            "aspect_ratios": list(self.aspect_ratios),
            "resolutions": list(self.resolutions),
        }
        if self.durations is not None:
            out["durations"] = list(self.durations)
        else:
            out["min_duration_seconds"] = self.min_duration_seconds
            out["max_duration_seconds"] = self.max_duration_seconds
        if self.price_per_second_usd is not None:
            out["price_per_second_usd"] = self.price_per_second_usd
        out["tracking"] = str(self.tracking)
        return out


@dataclass(frozen=True)
class TrackedJob:
    """What an adapter is told about a job it follows."""

    id: str  # the bridge's job id; stable, so usable as a provider idempotency key
    request: JobRequest
    provider_job_id: str | None = None
    provider_data: dict[str, Any] = field(default_factory=dict)
    submitted_at: datetime | None = None


@dataclass(frozen=True)
class PollHints:
    """What a provider said about when a job should be done (Venice retrieve)."""

    average_execution_s: float | None = None  # Venice: a P80 estimate for the model
    execution_s: float | None = None  # how long it has been executing


@dataclass(frozen=True)
class Snapshot:
    """A provider's view of a job, in the bridge's common states.

    ``status`` is one of submitted, running, succeeded, failed, canceled, expired.
    ``media_file`` names a file the adapter stored in the media store (Venice bytes):
    the bridge serves it and builds the public ``video_url`` itself.
    """

    status: JobStatus
    progress: int | None = None
    video_url: str | None = None
    media_file: str | None = None
    expires_at: datetime | None = None
    error: JobError | None = None
    cost_usd: float | None = None
    hints: PollHints | None = None
    provider_state: str | None = None  # the provider's own word, for logs


@dataclass(frozen=True)
class Submission:
    provider_job_id: str
    snapshot: Snapshot
    provider_data: dict[str, Any] = field(default_factory=dict)
    estimated_cost_usd: float | None = None


class Provider(Protocol):
    """One provider API. Every adapter implements this; see the module docstring."""

    name: str  # "airforce", "infrai", "apixo", "venice"
    tracking: Tracking
    max_concurrent: int | None  # tasks per key the provider allows at once (None: no limit)
    can_cancel: bool  # whether cancel() stops the job at the provider

    async def list_models(self) -> list[ModelInfo]:
        """Read the provider's video models and their capabilities."""
        ...

    def check(self, request: JobRequest, model: ModelInfo | None) -> None:
        """Raise ``InvalidRequest(field=...)`` for what this provider would refuse.

        The generic checks against ``model`` (mode, duration, aspect ratio, resolution) are
        made by the bridge before this is called; this adds the provider's own rules.
        """
        ...

    async def submit(self, job: TrackedJob, *, callback_url: str | None) -> Submission:
        """Create the task at the provider. ``callback_url`` is set for callback tracking."""
        ...

    async def status(self, job: TrackedJob) -> Snapshot:
        """Ask the provider where the job is."""
        ...

    async def cancel(self, job: TrackedJob) -> None:
        """Cancel at the provider (only called when ``can_cancel``)."""
        ...

    async def find_submission(self, job: TrackedJob, sent_at: datetime) -> Submission | None:
        """After a submit whose outcome is unknown, find the task it may have created.

        Returns the task if found, ``None`` if the provider surely has no such task (so the
        bridge may submit again), and raises ``SubmitOutcomeUnknown`` if it cannot tell.
        """
        ...


@runtime_checkable
class StreamingProvider(Protocol):
    def stream(self, job: TrackedJob) -> AsyncIterator[Snapshot]:
        """Follow the job's event stream; ends after a terminal snapshot or when it breaks
        (raising ``ProviderError``)."""
        ...


@runtime_checkable
class CallbackProvider(Protocol):
    def parse_callback(self, body: bytes) -> tuple[str, Snapshot]:
        """Read a callback body: the provider's job id and the state it reports."""
        ...
