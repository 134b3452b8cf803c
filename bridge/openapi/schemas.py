"""The component schemas: every object the API takes or answers, and the enums they share."""

from __future__ import annotations

from typing import Any

from bridge.models import DEFAULT_MAX_CONCURRENCY, EVENT_TYPES, MAX_CONCURRENCY, JobStatus
from bridge.providers.base import MODES
from bridge.settings import PROVIDERS

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], required: list[str] | None = None,
        additional: bool = True) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if not additional:
        schema["additionalProperties"] = False
    return schema


TIME = {"type": "string", "format": "date-time"}
STR = {"type": "string"}
# Enums as components: a generated client gets one class for each, not one per use.
EVENT_TYPE, JOB_STATUS, PROVIDER = ref("EventType"), ref("JobStatus"), ref("Provider")
MAX_IN_FLIGHT = {"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY,
                 "default": DEFAULT_MAX_CONCURRENCY,
                 "description": "delivery attempts in flight to this endpoint at once"}

def _optional_nullable(schema: Schema, required: list[str]) -> Schema:
    """Every property not in ``required`` may also be null (the API reads null as absent)."""
    schema["properties"] = {
        name: value if name in required else nullable(value)
        for name, value in schema["properties"].items()
    }
    return schema


SCHEMAS: dict[str, Schema] = {
    "EventType": {"type": "string", "enum": list(EVENT_TYPES)},
    "JobStatus": {"type": "string", "enum": [str(s) for s in JobStatus]},
    "Provider": {"type": "string", "enum": list(PROVIDERS)},
    "Error": obj({"error": ref("ErrorDetail")}, ["error"]),
    "ErrorDetail": obj({
        "code": {"type": "string", "examples": ["invalid_request"]},
        "message": STR,
        "field": STR,
    }, ["code", "message"]),
    "JobError": obj({
        "code": {"type": "string", "examples": ["generation_failed", "needs_consent"]},
        "message": STR,
        "provider_code": nullable(STR),
        "details": {},
    }, ["code", "message"]),
    "JobResult": obj({
        "video_url": nullable({"type": "string", "format": "uri"}),
        "expires_at": nullable(TIME),
    }),
    "JobRequest": _optional_nullable(obj({
        "provider": PROVIDER,
        "model": STR,
        "prompt": {"type": "string", "minLength": 1, "maxLength": 20000},
        "mode": {"type": "string", "enum": list(MODES), "default": "text"},
        "duration_seconds": {"type": "integer", "minimum": 1, "maximum": 600},
        "aspect_ratio": {"type": "string", "examples": ["16:9"]},
        "resolution": {"type": "string", "examples": ["720p"]},
        "images": {"type": "array", "maxItems": 16, "items": STR,
                   "description": "http(s) URLs or data: URLs (base64 ones must decode); "
                                  "the job shows each data: URL as an InlineMedia summary"},
        "negative_prompt": STR,
        "seed": {"type": "integer"},
        "audio": {"type": "boolean"},
        "options": {"type": "object", "description": "provider-specific extras; data: URLs "
                                                     "in it are shown as InlineMedia too"},
        "webhook_url": {"type": "string", "format": "uri",
                        "description": "this job's own webhook, signed with the tenant's "
                                       "signing_secret"},
        "events": {"type": "array", "items": EVENT_TYPE,
                   "description": "the event types webhook_url gets"},
        "metadata": {"type": "object", "description": "yours, returned as given (16 KiB)"},
    }, ["provider", "prompt"]), ["provider", "prompt"]),
    "InlineMedia": obj({
        "media_type": {"type": "string", "examples": ["image/png"]},
        "bytes": {"type": "integer", "minimum": 0},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    }, ["media_type", "bytes", "sha256"]),
    "Job": obj({
        "id": {"type": "string", "pattern": "^job_"},
        "object": {"const": "job"},
        "provider": STR,
        "model": nullable(STR),
        "provider_job_id": nullable(STR),
        "status": JOB_STATUS,
        "progress": nullable({"type": "integer"}),
        "tracking": {"type": "string", "enum": ["callback", "stream", "poll"]},
        # Titled: a generator would name it JobRequest, which is the body's schema.
        "request": {"type": "object", "title": "AcceptedRequest",
                    "description": "the request as accepted; each data: URL in images and "
                                   "options is shown as an InlineMedia summary of its bytes"},
        "result": nullable(ref("JobResult")),
        "error": nullable(ref("JobError")),
        "cost": nullable({"type": "object"}),
        "metadata": nullable({"type": "object"}),
        "created_at": TIME,
        "updated_at": TIME,
        "completed_at": nullable(TIME),
    }, ["id", "object", "provider", "status", "tracking", "created_at", "updated_at"]),
    "Event": obj({
        "id": {"type": "string", "pattern": "^evt_"},
        "type": EVENT_TYPE,
        "timestamp": TIME,
        "data": {"type": "object", "description": "the job at that moment, with its sequence "
                                                  "(endpoint.test: the endpoint's id)"},
    }, ["id", "type", "timestamp", "data"]),
    "Endpoint": obj({
        "id": {"type": "string", "pattern": "^ep_"},
        "url": {"type": "string"},
        "events": nullable({"type": "array", "items": EVENT_TYPE}),
        "description": nullable(STR),
        "headers": {"type": "object", "additionalProperties": STR},
        "disabled": {"type": "boolean"},
        "disabled_reason": nullable(STR),
        "max_concurrency": MAX_IN_FLIGHT,
        "created_at": TIME,
    }, ["id", "url", "events", "headers", "disabled", "max_concurrency", "created_at"]),
    "EndpointWithSecret": {"allOf": [ref("Endpoint"), obj({
        "secret": {"type": "string", "pattern": "^whsec_"}}, ["secret"])]},
    "EndpointCreate": obj({
        "url": {"type": "string", "format": "uri", "description": "https (http only with "
                                                                  "BRIDGE_ALLOW_PRIVATE_TARGETS=1)"},
        "events": nullable({"type": "array", "items": EVENT_TYPE, "minItems": 1}),
        "description": nullable({"type": "string", "maxLength": 500}),
        "headers": {"type": "object", "additionalProperties": STR,
                    "description": "sent with every delivery; never the signature headers"},
        "max_concurrency": MAX_IN_FLIGHT,
    }, ["url"], additional=False),
    "EndpointUpdate": obj({
        "url": {"type": "string", "format": "uri"},
        "events": nullable({"type": "array", "items": EVENT_TYPE, "minItems": 1}),
        "description": nullable({"type": "string", "maxLength": 500}),
        "headers": {"type": "object", "additionalProperties": STR},
        "disabled": {"type": "boolean"},
        "max_concurrency": MAX_IN_FLIGHT,
    }, additional=False),
    "Delivery": obj({
        "id": {"type": "string", "pattern": "^del_"},
        "event_id": STR,
        "endpoint_id": nullable(STR),
        "attempt": {"type": "integer", "minimum": 1},
        "status": {"type": "string", "enum": ["succeeded", "failed", "pending", "skipped"]},
        "response_status": nullable({"type": "integer"}),
        "duration_ms": nullable({"type": "integer"}),
        "error": nullable(STR),
        "response_excerpt": nullable(STR),
        "created_at": TIME,
        "next_attempt_at": nullable(TIME),
    }, ["id", "event_id", "attempt", "status", "created_at"]),
    "Model": obj({
        "provider": STR, "id": STR,
        "modes": {"type": "array", "items": STR},
        "aspect_ratios": {"type": "array", "items": STR},
        "resolutions": {"type": "array", "items": STR},
        "durations": {"type": "array", "items": {"type": "integer"}},
        "min_duration_seconds": nullable({"type": "integer"}),
        "max_duration_seconds": nullable({"type": "integer"}),
        "price_per_second_usd": {"type": "number"},
        "tracking": STR,
    }, ["provider", "id"]),
    "Me": obj({"tenant": STR, "signing_secret": {"type": "string", "pattern": "^whsec_"}},
              ["tenant", "signing_secret"]),
    "ApiKey": obj({
        "prefix": {"type": "string", "description": "names the key; not secret",
                   "examples": ["brk_Xq2v9LmA", "sha256:3f9a0c1e"]},
        "tenant": STR,
        "source": {"type": "string", "enum": ["cli", "env", "unknown"],
                   "description": "cli: bridge keys create; env: BRIDGE_API_KEY"},
        "created_at": TIME,
        "last_used_at": nullable({**TIME, "description": "kept to the minute"}),
        "revoked_at": nullable(TIME),
    }, ["prefix", "tenant", "source", "created_at", "last_used_at", "revoked_at"]),
    "Hook": obj({"id": {"type": "string", "pattern": "^ep_"}, "target_url": STR,
                 "event": EVENT_TYPE}, ["id"]),
    "PortalSession": obj({
        "url": {"type": "string", "format": "uri",
                "description": "signs in once, then opens the portal"},
        "expires_at": TIME}, ["url", "expires_at"]),
    "PortalSessionCreate": obj({
        "ttl_seconds": {"type": "number", "minimum": 60, "maximum": 86400, "default": 900,
                        "description": "how long the link may be used"}}, additional=False),
    "Replay": obj({"endpoint_id": {"type": "string", "description": "one endpoint; "
                                                                   "none: all that want it"}}),
    "DeliveryList": obj({"data": {"type": "array", "items": ref("Delivery")}}, ["data"]),
    "Recover": obj({"since": TIME}, ["since"]),
    "Recovering": obj({
        "recovering": {"type": "integer", "description": "events queued again"},
        "more": {"type": "boolean", "description": "more remain: call again"}},
        ["recovering", "more"]),
    "HookCreate": obj({"target_url": {"type": "string", "format": "uri"},
                       "event": EVENT_TYPE}, ["target_url", "event"]),
    "CallbackReceived": obj({"received": {"type": "boolean"}}),
    "Health": obj({"status": {"const": "ok"}}, ["status"]),
    "Ready": obj({"status": {"const": "ready"}}, ["status"]),
    "Unready": obj({
        "status": {"const": "unavailable"},
        "down": {"type": "object", "additionalProperties": {"type": "string"},
                 "description": "What is down (a worker, the database) and why."}},
        ["status", "down"]),
    "Tick": obj({"jobs": {"type": "integer"}, "deliveries": {"type": "integer"},
                 "rounds": {"type": "integer"}, "finished": {"type": "boolean"},
                 "seconds": {"type": "number"}},
                ["jobs", "deliveries", "finished", "seconds"]),
}
for name, item in (("JobPage", "Job"), ("EventPage", "Event"), ("EndpointPage", "Endpoint"),
                   ("DeliveryPage", "Delivery"), ("ModelPage", "Model"),
                   ("ApiKeyPage", "ApiKey")):
    SCHEMAS[name] = obj({"data": {"type": "array", "items": ref(item)},
                         "next_cursor": nullable(STR)}, ["data", "next_cursor"])
SCHEMAS["ModelPage"]["properties"]["unavailable"] = {
    "type": "array", "description": "enabled providers whose models cannot be read now",
    "items": ref("UnavailableProvider")}
SCHEMAS["ModelPage"]["required"].append("unavailable")
SCHEMAS["UnavailableProvider"] = obj({"provider": STR, "reason": STR}, ["provider", "reason"])
