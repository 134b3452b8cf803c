"""The ``webhooks`` section: each event type as a Standard Webhook, with its example (the
same as ``docs/events/*.json``, checked by the tests)."""

from __future__ import annotations

from typing import Any

from bridge.models import DEFAULT_MAX_CONCURRENCY, EVENT_TYPES
from bridge.openapi.schemas import STR, Schema, obj, ref


def example_job(event_type: str) -> dict[str, Any]:
    """The job inside an example event of ``event_type``."""
    status = {"job.submitted": "submitted", "job.running": "running",
              "job.progress": "running", "job.succeeded": "succeeded", "job.failed": "failed",
              "job.canceled": "canceled", "job.expired": "expired"}[event_type]
    sequence = {"job.submitted": 1, "job.running": 2, "job.progress": 3}.get(event_type, 4)
    done = status in ("succeeded", "failed", "canceled", "expired")
    return {
        "id": "job_00VbgY7PE5YoVGWoySV5Ad", "object": "job", "provider": "apixo",
        "model": "veo-3-1", "provider_job_id": "task_480548589169", "status": status,
        "progress": {"submitted": 0, "running": 40 if event_type == "job.progress" else 5,
                     "succeeded": 100}.get(status),
        "tracking": "callback",
        "request": {"provider": "apixo", "model": "veo-3-1", "mode": "text",
                    "prompt": "A cinematic flyover of a futuristic city at sunrise",
                    "aspect_ratio": "16:9"},
        "result": {"video_url": "https://r2.apixo.ai/task_480548589169.mp4",
                   "expires_at": "2026-12-06T10:01:30Z"} if status == "succeeded" else None,
        "error": {"code": "generation_failed", "message": "apixo: the generation failed",
                  "provider_code": "500"} if status == "failed" else (
            {"code": "expired", "message": "the provider expired the task",
             "provider_code": None} if status == "expired" else None),
        "cost": None,
        "metadata": {"order": 42},
        "created_at": "2026-11-22T10:00:00Z",
        "updated_at": "2026-11-22T10:01:30Z" if done else "2026-11-22T10:00:05Z",
        "completed_at": "2026-11-22T10:01:30Z" if done else None,
        "sequence": sequence,
    }


def example_event(event_type: str) -> dict[str, Any]:
    """An event as a webhook body carries it."""
    if event_type == "endpoint.test":
        data: dict[str, Any] = {"endpoint_id": "ep_00VbgY7PE5DCcwbUc5Mwfk",
                                "message": "a test event from bridge"}
    elif event_type == "endpoint.disabled":
        data = {"id": "ep_00VbgY7PE5DCcwbUc5Mwfk", "url": "https://hooks.example.com/bridge",
                "events": None, "description": "orders service", "headers": {},
                "disabled": True, "disabled_reason": "the endpoint answered 410 Gone",
                "max_concurrency": DEFAULT_MAX_CONCURRENCY,
                "created_at": "2026-11-20T09:00:00Z"}
    else:
        data = example_job(event_type)
    return {"id": "evt_00VbgekiybFcJqrvThqBKe", "type": event_type,
            "timestamp": "2026-11-22T10:01:30Z", "data": data}


def _event_fields(event_type: str) -> Schema:
    fields: Schema = {"type": {"const": event_type}}
    if event_type == "endpoint.disabled":
        fields["data"] = {"allOf": [ref("Endpoint")], "description": (
            "the endpoint disabled for failing (410 Gone, or 5 days of failed deliveries), as "
            "GET /v1/endpoints/{id} shows it; sent to the tenant's other endpoints only")}
    return fields


def webhooks() -> dict[str, Schema]:
    hooks = {}
    for event_type in EVENT_TYPES:
        hooks[event_type] = {"post": {
            "summary": f"{event_type}, as a Standard Webhook",
            "description": "Signed per Standard Webhooks: headers webhook-id (the event id, "
                           "the same on every retry), webhook-timestamp and webhook-signature "
                           "(v1,<base64 HMAC-SHA256 of id.timestamp.body>). Answer any 2xx.",
            "parameters": [
                {"name": name, "in": "header", "required": True, "description": description,
                 "schema": STR} for name, description in (
                    ("webhook-id", "the event's id, the same on every retry"),
                    ("webhook-timestamp", "when this attempt was signed, in Unix seconds"),
                    ("webhook-signature", "v1,<signature>, space-separated while a secret "
                                          "rotates"))],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"allOf": [ref("Event"), obj(_event_fields(event_type))]},
                "example": example_event(event_type)}}},
            "responses": {"2XX": {"description": "Received; anything else is retried."}},
        }}
    return hooks
