"""The request bodies: what each route that takes JSON accepts, with its limits."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from bridge.endpoints import MAX_DESCRIPTION, MAX_HEADERS, MAX_URL, header_problem
from bridge.jobs import (
    MAX_DURATION,
    MAX_IMAGES,
    MAX_METADATA_BYTES,
    MAX_PROMPT,
    is_http_url,
    is_image_ref,
)
from bridge.models import DEFAULT_MAX_CONCURRENCY, EVENT_TYPES, MAX_CONCURRENCY, parse_rfc3339
from bridge.portal.sessions import LINK_TTL, MAX_LINK_TTL, MIN_LINK_TTL
from bridge.providers.base import MODES
from bridge.providers.base import JobRequest as ProviderRequest
from bridge.schemas.base import Body, choice, refuse
from bridge.settings import PROVIDERS

if TYPE_CHECKING:  # to mypy the enums are their values' type
    EventType = str
    Mode = str
    Provider = str
else:
    EventType = choice("EventType", EVENT_TYPES, "An event type.")
    Mode = choice("Mode", MODES, "What a job is made from: a prompt, or images as well.")
    Provider = choice("Provider", PROVIDERS, "A video provider.")

__all__ = ["EndpointCreate", "EndpointUpdate", "EventType", "HookCreate", "JobRequest",
           "Mode", "PortalSessionCreate", "Provider", "Recover", "Replay"]


# -- validators: each refuses with the message today's API gives --------------------------


def _prompt(value: str) -> str:
    if not value.strip():
        raise refuse("prompt must be a non-empty string")
    return value


def _image(value: str) -> str:
    if not is_image_ref(value):
        raise refuse("each image must be an http(s) URL or a data: URL")
    return value


def _webhook_url(value: str) -> str:
    if not is_http_url(value):
        raise refuse("webhook_url must be an http(s) URL")
    return value


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    if len(repr(value)) > MAX_METADATA_BYTES:
        raise refuse(f"metadata is larger than {MAX_METADATA_BYTES >> 10} KiB")
    return value


def _headers(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        problem = header_problem(name, text)
        if problem is not None:
            raise refuse(problem, f"headers.{name}")
    return value


def _since(value: Any) -> datetime:
    if not isinstance(value, str):
        raise refuse("since is required: an RFC 3339 time")
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise refuse("since must be an RFC 3339 time, e.g. 2026-11-22T10:00:00Z") from None


URI: dict[str, Any] = {"format": "uri"}
Url = Annotated[StrictStr, Field(min_length=1, max_length=MAX_URL,
                                 json_schema_extra=URI)]
EventTypes = Annotated[list[EventType] | None, Field(min_length=1)]
Description = Annotated[StrictStr | None, Field(max_length=MAX_DESCRIPTION)]
Headers = Annotated[dict[str, StrictStr] | None, Field(
    max_length=MAX_HEADERS, description="sent with every delivery; never the signature "
                                        "headers"),
    AfterValidator(lambda value: value if value is None else _headers(value))]
MaxConcurrency = Annotated[StrictInt, Field(
    ge=1, le=MAX_CONCURRENCY, description="delivery attempts in flight to this endpoint at "
                                          "once")]


def _not_null(schema: dict[str, Any]) -> None:
    """The schema of an optional field that may not be null: its first variant."""
    variants = schema.pop("anyOf")
    assert isinstance(variants, list) and isinstance(variants[0], dict)
    schema.update(variants[0])


# -- jobs --------------------------------------------------------------------------------


class JobRequest(Body):
    """``POST /v1/jobs``. A field that is null is taken as absent."""

    provider: Provider
    prompt: Annotated[StrictStr, Field(max_length=MAX_PROMPT,
                                       json_schema_extra={"minLength": 1}),
                      AfterValidator(_prompt)]
    model: StrictStr | None = None
    mode: Mode | None = "text"
    duration_seconds: StrictInt | None = Field(None, ge=1, le=MAX_DURATION)
    aspect_ratio: StrictStr | None = Field(None, examples=["16:9"])
    resolution: StrictStr | None = Field(None, examples=["720p"])
    images: list[Annotated[StrictStr, AfterValidator(_image)]] | None = Field(
        None, max_length=MAX_IMAGES,
        description="http(s) URLs or data: URLs (base64 ones must decode); the job shows "
                    "each data: URL as an InlineMedia summary")
    negative_prompt: StrictStr | None = None
    seed: StrictInt | None = None
    audio: StrictBool | None = None
    options: dict[str, Any] | None = Field(
        None, description="provider-specific extras; data: URLs in it are shown as "
                          "InlineMedia too")
    webhook_url: Annotated[StrictStr, AfterValidator(_webhook_url)] | None = Field(
        None, json_schema_extra=URI,
        description="this job's own webhook, signed with the tenant's signing_secret")
    events: list[EventType] | None = Field(None,
                                           description="the event types webhook_url gets")
    metadata: Annotated[dict[str, Any], AfterValidator(_metadata)] | None = Field(
        None, description=f"yours, returned as given ({MAX_METADATA_BYTES >> 10} KiB)")

    @field_validator("provider")
    @classmethod
    def _enabled(cls, value: str, info: ValidationInfo) -> str:
        enabled = (info.context or {}).get("enabled")
        if enabled is not None and value not in enabled:
            raise refuse(f"provider {value!r} is not enabled on this bridge (no API key "
                         "configured)")
        return value

    @field_validator("mode")
    @classmethod
    def _text(cls, value: str | None) -> str:
        return value or "text"

    def accepted(self) -> dict[str, Any]:
        """The request as the job keeps it: what was given (no null, no empty array or
        object) but its webhook, its events and its metadata, which the job keeps apart."""
        return {name: value for name, value in self.model_dump(
            exclude={"webhook_url", "events", "metadata"}).items()
            if value not in (None, [], {}) or name == "mode"}

    def for_provider(self) -> ProviderRequest:
        """What the provider adapters take (with any data: URLs as given)."""
        return ProviderRequest.from_json(self.model_dump())


# -- endpoints and hooks -----------------------------------------------------------------


class EndpointCreate(Body):
    """``POST /v1/endpoints``; the url is checked further where it is used (it may not
    resolve to a private address)."""

    url: Annotated[Url, Field(description="https (http only with "
                                          "BRIDGE_ALLOW_PRIVATE_TARGETS=1)")]
    events: EventTypes = None
    description: Description = None
    headers: Headers = None
    max_concurrency: MaxConcurrency = DEFAULT_MAX_CONCURRENCY


class EndpointUpdate(Body):
    """``PATCH /v1/endpoints/{id}``: only the fields given change; ``disabled`` disables
    or enables."""

    # Read only when given; null is refused (the schema says so: _not_null).
    url: Url | None = Field(default=None, json_schema_extra=_not_null)
    events: EventTypes = None
    description: Description = None
    headers: Headers = None
    disabled: StrictBool | None = Field(default=None, json_schema_extra=_not_null)
    max_concurrency: MaxConcurrency = DEFAULT_MAX_CONCURRENCY

    @field_validator("url", "disabled", mode="before")
    @classmethod
    def _given(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            kind = "a URL string" if info.field_name == "url" else "true or false"
            raise refuse(f"{info.field_name} must be {kind}")
        return value


class HookCreate(Body):
    """``POST /v1/hooks`` (Zapier's REST Hooks); other fields Zapier sends are ignored."""

    model_config = ConfigDict(extra="ignore")

    target_url: Url
    event: EventType


# -- events, recovery, portal sessions ----------------------------------------------------


class Replay(Body):
    """``POST /v1/events/{id}/replay``."""

    model_config = ConfigDict(extra="ignore")

    endpoint_id: StrictStr | None = Field(None, description="one endpoint; none: all that "
                                                            "want it")


class Recover(Body):
    """``POST /v1/endpoints/{id}/recover``: send again what the endpoint missed since."""

    model_config = ConfigDict(extra="ignore")

    since: Annotated[datetime, PlainValidator(_since),
                     WithJsonSchema({"type": "string", "format": "date-time"})]


class PortalSessionCreate(Body):
    """``POST /v1/portal-sessions``."""

    ttl_seconds: StrictFloat = Field(
        LINK_TTL.total_seconds(), ge=MIN_LINK_TTL.total_seconds(),
        le=MAX_LINK_TTL.total_seconds(), description="how long the link may be used")

    @property
    def ttl(self) -> timedelta:
        return timedelta(seconds=self.ttl_seconds)
