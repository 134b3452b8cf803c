"""``/v1/events``: every state change, newest first, for those who page instead of listen."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from bridge import actions
from bridge.api.common import (
    JSONResponse,
    authenticate,
    get_bridge,
    page,
    page_params,
    read_json,
)
from bridge.errors import InvalidRequest, NotFound
from bridge.models import EVENT_TYPES


async def list_events(request: Request) -> JSONResponse:
    tenant = await authenticate(request)
    limit, cursor = page_params(request)
    event_type = request.query_params.get("type") or None
    if event_type is not None and event_type not in EVENT_TYPES:
        raise InvalidRequest(f"type must be one of {', '.join(EVENT_TYPES)}", field="type",
                             status_code=400)
    result = await get_bridge(request).store.list_events(
        tenant.id, type=event_type, job_id=request.query_params.get("job_id") or None,
        limit=limit, cursor=cursor,
    )
    return page([event.to_json() for event in result.data], result.next_cursor)


async def get_event(request: Request) -> JSONResponse:
    tenant = await authenticate(request)
    event = await get_bridge(request).store.get_event(request.path_params["event_id"], tenant.id)
    if event is None:
        raise NotFound("no such event")
    return JSONResponse(event.to_json())


async def replay_event(request: Request) -> JSONResponse:
    """Send one event again: to ``endpoint_id``, or to every enabled endpoint that wants
    its type and its job's own webhook."""
    from bridge.schemas import Replay, parse  # pydantic: at the first body read

    tenant = await authenticate(request)
    body = await read_json(request, required=False)
    replay = parse(Replay, body or {})  # no body, or an empty one: to all
    deliveries = await actions.replay(get_bridge(request), tenant,
                                      request.path_params["event_id"], replay.endpoint_id)
    return JSONResponse({"data": [d.to_json() for d in deliveries]}, status_code=202)


routes = [
    Route("/v1/events", list_events, methods=["GET"]),
    Route("/v1/events/{event_id}", get_event, methods=["GET"]),
    Route("/v1/events/{event_id}/replay", replay_event, methods=["POST"]),
]
