"""The portal's event catalog: each event type with its JSON schema and example, read from
the OpenAPI document's ``webhooks`` section (whose examples are ``docs/events/*.json``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge import __version__
from bridge.core import Bridge
from bridge.portal.pages import page, render
from bridge.portal.sessions import Session

DESCRIPTIONS = {
    "job.submitted": "The provider accepted the job.",
    "job.running": "The provider started working on the job.",
    "job.progress": "The job moved on (at most one every 5 seconds per job). Endpoints get "
                    "it only when they ask for it.",
    "job.succeeded": "The video is ready: data.result.video_url.",
    "job.failed": "The job failed: data.error says why.",
    "job.canceled": "The job was canceled.",
    "job.expired": "The provider expired the job before it finished.",
    "endpoint.test": "Sent by the Send test event button or POST /v1/endpoints/{id}/test.",
    "endpoint.disabled": "Another of your endpoints was disabled for failing (it answered 410 "
                         "Gone, or every delivery failed for 5 days): data is that endpoint, "
                         "with disabled_reason. Never sent to the endpoint it is about.",
}


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    schema: dict[str, Any]
    example: dict[str, Any]


def _inline(value: Any, schemas: dict[str, Any]) -> Any:
    """``value`` with each ``$ref`` to a component schema replaced by the schema itself."""
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            return _inline(schemas[ref.rsplit("/", 1)[1]], schemas)
        return {key: _inline(item, schemas) for key, item in value.items()}
    if isinstance(value, list):
        return [_inline(item, schemas) for item in value]
    return value


@functools.cache
def event_types() -> tuple[EventType, ...]:
    from bridge.openapi import document  # on the catalog page's first showing

    described = document(__version__)
    schemas = described["components"]["schemas"]
    found = []
    for name, hook in described["webhooks"].items():
        content = hook["post"]["requestBody"]["content"]["application/json"]
        found.append(EventType(name, DESCRIPTIONS.get(name, ""),
                               _inline(content["schema"], schemas), content["example"]))
    return tuple(found)


@page
async def catalog(request: Request, bridge: Bridge, session: Session) -> Response:
    return render(request, "catalog.html", session, title="Event types", active="catalog",
                  event_types=event_types())


routes = [Route("/portal/event-types", catalog, methods=["GET"])]
