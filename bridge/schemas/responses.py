"""The response bodies: what each route answers. The domain objects' ``to_json`` make them
(the same dicts go into events and webhooks, at no cost of validation); the tests check
that each agrees with its model here, which /openapi.json is generated from."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from bridge.models import DeliveryStatus, JobStatus, Tracking
from bridge.schemas.base import Answer
from bridge.schemas.requests import EventType, MaxConcurrency

__all__ = [
    "ApiKey", "ApiKeyPage", "CallbackReceived", "Delivery", "DeliveryList", "DeliveryPage",
    "Endpoint", "EndpointPage", "EndpointWithSecret", "Error", "ErrorDetail", "Event",
    "EventPage", "Health", "Hook", "InlineMedia", "Job", "JobError", "JobPage", "JobResult",
    "Me", "Model", "ModelPage", "PortalSession", "Ready", "Recovering", "Tick",
    "UnavailableProvider", "Unready",
]

URI: dict[str, Any] = {"format": "uri"}


class ErrorDetail(Answer):
    code: str = Field(examples=["invalid_request"])
    message: str
    field: str | None = Field(None, description="the offending field, as a dotted path "
                                                "(images[0], headers.X-Tenant)")


class Error(Answer):
    """Every refusal and failure: 4xx and 5xx."""

    error: ErrorDetail


class JobError(Answer):
    code: str = Field(examples=["generation_failed", "needs_consent"])
    message: str
    provider_code: str | None = None
    details: Any = None


class JobResult(Answer):
    video_url: str | None = Field(None, json_schema_extra=URI)
    expires_at: datetime | None = None


class InlineMedia(Answer):
    """What a job shows of each data: URL it was sent (in images and options)."""

    media_type: str = Field(examples=["image/png"])
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")


class Job(Answer):
    id: str = Field(pattern="^job_")
    object: Literal["job"]
    provider: str
    model: str | None = None
    provider_job_id: str | None = None
    status: JobStatus
    progress: int | None = None
    tracking: Tracking
    # Titled: a generator would name it JobRequest, which is the body's schema.
    request: dict[str, Any] = Field(
        default_factory=dict, title="AcceptedRequest",
        description="the request as accepted; each data: URL in images and options is shown "
                    "as an InlineMedia summary of its bytes")
    result: JobResult | None = None
    error: JobError | None = None
    cost: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None


class Event(Answer):
    id: str = Field(pattern="^evt_")
    type: EventType
    timestamp: datetime
    data: dict[str, Any] = Field(description="the job at that moment, with its sequence "
                                             "(endpoint.test: the endpoint's id)")


class Endpoint(Answer):
    id: str = Field(pattern="^ep_")
    url: str
    events: list[EventType] | None
    description: str | None = None
    headers: dict[str, str]
    disabled: bool
    disabled_reason: str | None = None
    max_concurrency: MaxConcurrency
    created_at: datetime


class EndpointWithSecret(Endpoint):
    secret: str = Field(pattern="^whsec_")


class Delivery(Answer):
    id: str = Field(pattern="^del_")
    event_id: str
    endpoint_id: str | None = None
    attempt: int = Field(ge=1)
    status: DeliveryStatus
    response_status: int | None = None
    duration_ms: int | None = None
    error: str | None = None
    response_excerpt: str | None = None
    created_at: datetime
    next_attempt_at: datetime | None = None


class DeliveryList(Answer):
    data: list[Delivery]


class Model(Answer):
    provider: str
    id: str
    modes: list[str] | None = None
    aspect_ratios: list[str] | None = None
    resolutions: list[str] | None = None
    durations: list[int] | None = None
    min_duration_seconds: int | None = None
    max_duration_seconds: int | None = None
    price_per_second_usd: float | None = None
    tracking: Tracking | None = None


class UnavailableProvider(Answer):
    provider: str
    reason: str


class Me(Answer):
    tenant: str
    signing_secret: str = Field(pattern="^whsec_")


class ApiKey(Answer):
    prefix: str = Field(description="names the key; not secret",
                        examples=["brk_Xq2v9LmA", "sha256:3f9a0c1e"])
    tenant: str
    source: Literal["cli", "env", "unknown"] = Field(
        description="cli: bridge keys create; env: BRIDGE_API_KEY")
    created_at: datetime
    last_used_at: datetime | None = Field(description="kept to the minute")
    revoked_at: datetime | None


class Hook(Answer):
    id: str = Field(pattern="^ep_")
    target_url: str | None = None
    event: EventType | None = None


class PortalSession(Answer):
    url: str = Field(json_schema_extra=URI, description="signs in once, then opens the "
                                                        "portal")
    expires_at: datetime


class Recovering(Answer):
    recovering: int = Field(description="events queued again")
    more: bool = Field(description="more remain: call again")


class CallbackReceived(Answer):
    received: bool | None = None


class Health(Answer):
    status: Literal["ok"]


class Ready(Answer):
    status: Literal["ready"]


class Unready(Answer):
    status: Literal["unavailable"]
    down: dict[str, str] = Field(description="What is down (a worker, the database) and why.")


class Tick(Answer):
    jobs: int
    deliveries: int
    rounds: int | None = None
    finished: bool
    seconds: float


# A page's size, ?limit= of every list: the default and the most.
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class _Page(Answer):
    next_cursor: str | None


class JobPage(_Page):
    data: list[Job]


class EventPage(_Page):
    data: list[Event]


class EndpointPage(_Page):
    data: list[Endpoint]


class DeliveryPage(_Page):
    data: list[Delivery]


class ApiKeyPage(_Page):
    data: list[ApiKey]


class ModelPage(_Page):
    data: list[Model]
    unavailable: list[UnavailableProvider] = Field(
        description="enabled providers whose models cannot be read now")
