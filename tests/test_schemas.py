"""The body models (bridge.schemas): refusals name the field in today's words, every answer a
domain object's ``to_json`` makes is the model's shape exactly, and /openapi.json's
components carry the domain's own enums and limits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from bridge import schemas
from bridge.endpoints import MAX_DESCRIPTION, MAX_HEADERS, MAX_URL
from bridge.errors import InvalidRequest
from bridge.jobs import MAX_DURATION, MAX_IMAGES, MAX_PROMPT
from bridge.models import (
    EVENT_TYPES,
    MAX_CONCURRENCY,
    ApiKey,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    Job,
    JobError,
    JobStatus,
    Tracking,
)
from bridge.openapi import document
from bridge.providers.base import MODES, ModelInfo
from bridge.schemas import responses
from bridge.settings import PROVIDERS

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
JOB = {"provider": "airforce", "prompt": "a fox"}
ENDPOINT = {"url": "https://hooks.example.com/in"}

REFUSALS: list[tuple[type[schemas.Body], dict[str, Any], str, str]] = [
    (schemas.JobRequest, {**JOB, "colour": "red", "prompt": 5}, "colour",
     "unknown field 'colour'"),
    (schemas.JobRequest, {"prompt": "a fox"}, "provider", "provider is required"),
    (schemas.JobRequest, {**JOB, "provider": None}, "provider", "provider is required"),
    (schemas.JobRequest, {**JOB, "provider": "sora"}, "provider",
     "provider must be one of 'airforce', 'infrai', 'apixo' or 'venice'"),
    (schemas.JobRequest, {**JOB, "provider": "apixo"}, "provider",
     "provider 'apixo' is not enabled on this bridge (no API key configured)"),
    (schemas.JobRequest, {**JOB, "prompt": "  ", "mode": "video"}, "prompt",
     "prompt must be a non-empty string"),
    (schemas.JobRequest, {**JOB, "prompt": "x" * (MAX_PROMPT + 1)}, "prompt",
     f"prompt is longer than {MAX_PROMPT} characters"),
    (schemas.JobRequest, {**JOB, "duration_seconds": True}, "duration_seconds",
     f"duration_seconds must be an integer from 1 to {MAX_DURATION}"),
    (schemas.JobRequest, {**JOB, "duration_seconds": MAX_DURATION + 1}, "duration_seconds",
     f"duration_seconds must be an integer from 1 to {MAX_DURATION}"),
    (schemas.JobRequest, {**JOB, "audio": 1}, "audio", "audio must be true or false"),
    (schemas.JobRequest, {**JOB, "images": ["https://x.example/a.jpg"] * (MAX_IMAGES + 1)},
     "images", f"images may have at most {MAX_IMAGES} entries"),
    (schemas.JobRequest, {**JOB, "images": ["https://x.example/a.jpg", "a.jpg"]}, "images[1]",
     "each image must be an http(s) URL or a data: URL"),
    (schemas.JobRequest, {**JOB, "options": []}, "options", "options must be an object"),
    (schemas.JobRequest, {**JOB, "webhook_url": "ftp://x.example"}, "webhook_url",
     "webhook_url must be an http(s) URL"),
    (schemas.JobRequest, {**JOB, "events": ["job.failed", "job.done"]}, "events[1]",
     "events[1] must be one of " + ", ".join(f"'{t}'" for t in EVENT_TYPES[:-1])
     + f" or '{EVENT_TYPES[-1]}'"),
    (schemas.JobRequest, {**JOB, "metadata": {"blob": "x" * 20_000}}, "metadata",
     "metadata is larger than 16 KiB"),
    (schemas.EndpointCreate, {}, "url", "url is required"),
    (schemas.EndpointCreate, {**ENDPOINT, "disabled": True}, "disabled",
     "unknown field 'disabled'"),
    (schemas.EndpointCreate, {"url": "x" * (MAX_URL + 1)}, "url",
     f"url is longer than {MAX_URL} characters"),
    (schemas.EndpointCreate, {**ENDPOINT, "events": []}, "events", "events must not be empty"),
    (schemas.EndpointCreate, {**ENDPOINT, "description": "x" * (MAX_DESCRIPTION + 1)},
     "description", f"description is longer than {MAX_DESCRIPTION} characters"),
    (schemas.EndpointCreate, {**ENDPOINT, "headers": {f"X-{n}": "v" for n in range(21)}},
     "headers", f"headers may have at most {MAX_HEADERS} entries"),
    (schemas.EndpointCreate, {**ENDPOINT, "headers": {"X-Ok": "v", "Bad Name": "v"}},
     "headers.Bad Name", "'Bad Name' is not a valid header name"),
    (schemas.EndpointCreate, {**ENDPOINT, "headers": {"X-Line": "a\nb"}}, "headers.X-Line",
     "X-Line must be a single-line string of at most 1024 characters"),
    (schemas.EndpointCreate, {**ENDPOINT, "max_concurrency": None}, "max_concurrency",
     f"max_concurrency must be an integer from 1 to {MAX_CONCURRENCY}"),
    (schemas.EndpointUpdate, {"url": None}, "url", "url must be a URL string"),
    (schemas.EndpointUpdate, {"disabled": None}, "disabled", "disabled must be true or false"),
    (schemas.EndpointUpdate, {"disabled": "yes"}, "disabled", "disabled must be true or false"),
    (schemas.HookCreate, {"event": "job.failed"}, "target_url", "target_url is required"),
    (schemas.Replay, {"endpoint_id": 5}, "endpoint_id", "endpoint_id must be a string"),
    (schemas.Recover, {}, "since", "since is required"),
    (schemas.Recover, {"since": 5}, "since", "since is required: an RFC 3339 time"),
    (schemas.Recover, {"since": "yesterday"}, "since",
     "since must be an RFC 3339 time, e.g. 2026-11-22T10:00:00Z"),
    (schemas.PortalSessionCreate, {"ttl_seconds": True}, "ttl_seconds",
     "ttl_seconds must be a number from 60 to 86400"),
    (schemas.PortalSessionCreate, {"ttl_seconds": 59}, "ttl_seconds",
     "ttl_seconds must be a number from 60 to 86400"),
]


@pytest.mark.parametrize(("kind", "body", "field", "message"), REFUSALS,
                         ids=[f"{kind.__name__}-{field}" for kind, _, field, _ in REFUSALS])
def test_a_refusal_names_the_field_in_todays_words(
    kind: type[schemas.Body], body: dict[str, Any], field: str, message: str,
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        schemas.parse(kind, body, enabled={"airforce", "infrai", "venice"})
    assert (caught.value.status_code, caught.value.code) == (422, "invalid_request")
    assert (caught.value.field, caught.value.message) == (field, message)


@pytest.mark.parametrize("body", [[], "x", 5, None, True])
def test_a_body_that_is_no_object_is_a_400(body: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        schemas.parse(schemas.EndpointCreate, body)
    assert caught.value.status_code == 400 and caught.value.field is None


def test_what_each_body_accepts() -> None:
    update = schemas.parse(schemas.EndpointUpdate, {"events": None, "disabled": False})
    assert update.model_fields_set == {"events", "disabled"}  # only these change
    hook = schemas.parse(schemas.HookCreate, {"target_url": "https://z.example/h",
                                              "event": "job.failed", "zap": 1})
    assert (hook.target_url, hook.event) == ("https://z.example/h", "job.failed")
    assert type(hook.event) is str  # the enum's plain value, as the domain keeps it
    ttl = schemas.parse(schemas.PortalSessionCreate, {"ttl_seconds": 60})
    assert ttl.ttl.total_seconds() == 60
    assert schemas.parse(schemas.PortalSessionCreate, {}).ttl.total_seconds() == 900
    recover = schemas.parse(schemas.Recover, {"since": "2026-11-22T10:00:00Z"})
    assert recover.since == T0


def _same(model: type[BaseModel], answer: dict[str, Any]) -> None:
    """``answer`` is the model's shape: no key it does not declare, and it validates."""
    assert set(answer) <= set(model.model_fields), set(answer) - set(model.model_fields)
    required = {name for name, info in model.model_fields.items() if info.is_required()}
    assert required <= set(answer)
    model.model_validate(answer)


def test_every_domain_answer_is_its_models_shape() -> None:
    job = Job(id="job_1", tenant="acme", provider="airforce", model="wan-2.6",
              status=JobStatus.SUCCEEDED, tracking=Tracking.STREAM,
              request={"provider": "airforce", "prompt": "a fox", "mode": "text"},
              created_at=T0, updated_at=T0, completed_at=T0, progress=100,
              result={"video_url": "https://x.example/v.mp4", "expires_at": "2026-11-23T10:00:00Z"},
              error=JobError("generation_failed", "no", "500", {"why": 1}), cost={"usd": 1.0},
              metadata={"order": 42})
    _same(responses.Job, job.to_json())
    assert set(job.to_json()) == set(responses.Job.model_fields)
    event = Event(id="evt_1", tenant="acme", type="job.succeeded", job_id="job_1",
                  created_at=T0, data=job.to_json())
    _same(responses.Event, event.to_json())
    endpoint = Endpoint(id="ep_1", tenant="acme", url="https://h.example/in",
                        events=("job.failed",), description="d", headers={"X-A": "b"},
                        secret="whsec_x", created_at=T0, disabled=True, disabled_reason="410")
    assert set(endpoint.to_json()) == set(responses.Endpoint.model_fields)
    _same(responses.EndpointWithSecret, {**endpoint.to_json(), "secret": "whsec_x"})
    delivery = Delivery(id="del_1", tenant="acme", event_id="evt_1", event_type="job.failed",
                        endpoint_id="ep_1", url=None, job_id="job_1", sequence=1, attempt=2,
                        status=DeliveryStatus.FAILED, created_at=T0, next_attempt_at=T0,
                        response_status=500, duration_ms=12, error="500",
                        response_excerpt="no")
    assert set(delivery.to_json()) == set(responses.Delivery.model_fields)
    _same(responses.Delivery, delivery.to_json())
    key = ApiKey(prefix="brk_x", tenant="acme", source="cli", created_at=T0)
    assert set(key.to_json()) == set(responses.ApiKey.model_fields)
    _same(responses.ApiKey, key.to_json())
    for model in (ModelInfo("infrai", "kling", Tracking.POLL, durations=(5, 10)),
                  ModelInfo("airforce", "wan", Tracking.STREAM, min_duration_seconds=4,
                            max_duration_seconds=10, price_per_second_usd=0.1)):
        _same(responses.Model, model.to_json())
    _same(responses.Error, InvalidRequest("no", field="prompt").to_json())


def _enum(components: dict[str, Any], name: str) -> list[str]:
    values: list[str] = components[name]["enum"]
    return values


def test_the_components_carry_the_domains_enums_and_limits() -> None:
    components = document("1")["components"]["schemas"]
    assert _enum(components, "EventType") == list(EVENT_TYPES)
    assert _enum(components, "Provider") == list(PROVIDERS)
    assert _enum(components, "Mode") == list(MODES)
    assert _enum(components, "JobStatus") == [str(s) for s in JobStatus]
    assert _enum(components, "Tracking") == [str(t) for t in Tracking]
    assert _enum(components, "DeliveryStatus") == [str(s) for s in DeliveryStatus]
    job = components["JobRequest"]["properties"]
    assert job["prompt"]["maxLength"] == MAX_PROMPT
    assert job["images"]["anyOf"][0]["maxItems"] == MAX_IMAGES
    assert job["duration_seconds"]["anyOf"][0]["maximum"] == MAX_DURATION
    for name in ("EndpointCreate", "EndpointUpdate"):
        endpoint = components[name]["properties"]
        assert endpoint["url"]["maxLength"] == MAX_URL
        assert endpoint["headers"]["anyOf"][0]["maxProperties"] == MAX_HEADERS
        assert endpoint["headers"]["anyOf"][0]["additionalProperties"] == {"type": "string"}
    # What may not be null is not nullable.
    assert components["EndpointUpdate"]["properties"]["disabled"]["type"] == "boolean"
