"""``/v1/endpoints`` and ``/v1/hooks``: where a tenant's events are delivered."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.api.common import (
    JSONResponse,
    authenticate,
    get_bridge,
    page,
    page_params,
    read_json,
)
from bridge.core import TEST_BURST, TEST_PER_SECOND, Bridge, new_signing_secret
from bridge.endpoints import (
    check_description,
    check_events,
    check_fields,
    check_headers,
    check_max_concurrency,
    check_url,
)
from bridge.errors import Conflict, InvalidRequest, NotFound, RateLimited
from bridge.models import (
    DEFAULT_MAX_CONCURRENCY,
    EVENT_TYPES,
    Endpoint,
    Event,
    Tenant,
    new_id,
    parse_rfc3339,
    utcnow,
)

ROTATION_OVERLAP = timedelta(hours=24)  # the old secret keeps signing beside the new one


async def _endpoint(request: Request) -> tuple[Bridge, Tenant, Endpoint]:
    tenant = await authenticate(request)
    bridge = get_bridge(request)
    endpoint = await bridge.store.get_endpoint(request.path_params["endpoint_id"], tenant.id)
    if endpoint is None:
        raise NotFound("no such endpoint")
    return bridge, tenant, endpoint


def require_enabled(endpoint: Endpoint) -> None:
    """409 for a disabled endpoint: nothing is sent to it until it is enabled again."""
    if endpoint.disabled:
        raise Conflict("the endpoint is disabled; enable it first (PATCH disabled=false)")


async def create_endpoint(request: Request) -> JSONResponse:
    tenant = await authenticate(request)
    bridge = get_bridge(request)
    body = check_fields(await read_json(request), required_url=True)
    endpoint = Endpoint(
        id=new_id("ep"),
        tenant=tenant.id,
        url=await check_url(bridge.guard, body["url"]),
        events=check_events(body.get("events")),
        description=check_description(body.get("description")),
        headers=check_headers(body.get("headers")),
        secret=new_signing_secret(),
        created_at=utcnow(),
        max_concurrency=check_max_concurrency(body["max_concurrency"])
        if "max_concurrency" in body else DEFAULT_MAX_CONCURRENCY,
    )
    await bridge.store.create_endpoint(endpoint)
    return JSONResponse({**endpoint.to_json(), "secret": endpoint.secret}, status_code=201)


async def list_endpoints(request: Request) -> JSONResponse:
    tenant = await authenticate(request)
    limit, cursor = page_params(request)
    result = await get_bridge(request).store.list_endpoints(tenant.id, limit=limit,
                                                            cursor=cursor)
    return page([endpoint.to_json() for endpoint in result.data], result.next_cursor)


async def get_endpoint(request: Request) -> JSONResponse:
    _, _, endpoint = await _endpoint(request)
    return JSONResponse(endpoint.to_json())


async def update_endpoint(request: Request) -> JSONResponse:
    bridge, tenant, endpoint = await _endpoint(request)
    body = check_fields(await read_json(request), required_url=False)
    url = await check_url(bridge.guard, body["url"]) if "url" in body else endpoint.url
    events = check_events(body["events"]) if "events" in body else endpoint.events
    if endpoint.kind == "hook" and (events is None or len(events) != 1):
        raise InvalidRequest("a REST hook has exactly one event type", field="events")
    description = (check_description(body["description"]) if "description" in body
                   else endpoint.description)
    headers = check_headers(body["headers"]) if "headers" in body else endpoint.headers
    max_concurrency = (check_max_concurrency(body["max_concurrency"])
                       if "max_concurrency" in body else endpoint.max_concurrency)

    def change(current: Endpoint) -> Endpoint:
        updated = replace(current, url=url, events=events, description=description,
                          headers=headers, max_concurrency=max_concurrency)
        if body.get("disabled") is True and not current.disabled:
            updated = replace(updated, disabled=True, disabled_reason="disabled by the user")
        elif body.get("disabled") is False:
            updated = replace(updated, disabled=False)
        return updated

    updated = await bridge.store.update_endpoint(endpoint.id, tenant.id, change)
    if updated is None:
        raise NotFound("no such endpoint")
    return JSONResponse(updated.to_json())


async def delete_endpoint(request: Request) -> Response:
    tenant = await authenticate(request)
    if not await get_bridge(request).store.delete_endpoint(
        request.path_params["endpoint_id"], tenant.id
    ):
        raise NotFound("no such endpoint")
    return Response(status_code=204)


async def rotate_secret(request: Request) -> JSONResponse:
    bridge, tenant, endpoint = await _endpoint(request)
    if endpoint.secret is None:
        raise Conflict("a REST hook is signed with the tenant's signing secret (GET /v1/me); "
                       "it has no secret of its own to rotate")
    secret = new_signing_secret()
    now = utcnow()

    def rotate(current: Endpoint) -> Endpoint:
        return replace(current, secret=secret, previous_secret=current.secret,
                       previous_secret_until=now + ROTATION_OVERLAP)

    updated = await bridge.store.update_endpoint(endpoint.id, tenant.id, rotate)
    if updated is None:
        raise NotFound("no such endpoint")
    return JSONResponse({**updated.to_json(), "secret": secret})


async def test_endpoint(request: Request) -> JSONResponse:
    bridge, tenant, endpoint = await _endpoint(request)
    require_enabled(endpoint)
    wait = bridge.test_sends.take(endpoint.id)
    if wait:
        raise RateLimited(f"at most {TEST_BURST} test events at once to one endpoint, then "
                          f"{TEST_PER_SECOND:g} a second; try again later", retry_after=wait)
    event = Event(
        id=new_id("evt"), tenant=tenant.id, type="endpoint.test", job_id=None,
        created_at=utcnow(),
        data={"endpoint_id": endpoint.id, "message": "a test event from bridge"},
    )
    delivery = await bridge.store.add_event(event, endpoint_id=endpoint.id)
    bridge.deliverer.wake()
    assert delivery is not None
    return JSONResponse(delivery.to_json(), status_code=202)


async def endpoint_deliveries(request: Request) -> JSONResponse:
    bridge, _, endpoint = await _endpoint(request)
    limit, cursor = page_params(request)
    result = await bridge.store.endpoint_deliveries(endpoint.id, limit=limit, cursor=cursor)
    return page([delivery.to_json() for delivery in result.data], result.next_cursor)


async def recover(request: Request) -> JSONResponse:
    bridge, _, endpoint = await _endpoint(request)
    body = await read_json(request)
    since_text = body.get("since") if isinstance(body, dict) else None
    if not isinstance(since_text, str):
        raise InvalidRequest("since is required: an RFC 3339 time", field="since")
    try:
        since = parse_rfc3339(since_text)
    except ValueError:
        raise InvalidRequest("since must be an RFC 3339 time, e.g. 2026-11-22T10:00:00Z",
                             field="since") from None
    now = utcnow()
    if since > now:
        raise InvalidRequest("since is in the future", field="since")
    require_enabled(endpoint)
    count, more = await bridge.store.recover_endpoint(endpoint, since, now)
    bridge.deliverer.wake()
    # ``more``: the cap was reached; the same call again queues the next ones.
    return JSONResponse({"recovering": count, "more": more}, status_code=202)


# -- REST Hooks (Zapier) ---------------------------------------------------------------
async def subscribe_hook(request: Request) -> JSONResponse:
    tenant = await authenticate(request)
    bridge = get_bridge(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", status_code=400)
    if "target_url" not in body:
        raise InvalidRequest("target_url is required", field="target_url")
    event_type = body.get("event")
    if event_type not in EVENT_TYPES:
        raise InvalidRequest(f"event must be one of {', '.join(EVENT_TYPES)}", field="event")
    endpoint = Endpoint(
        id=new_id("ep"), tenant=tenant.id,
        url=await check_url(bridge.guard, body["target_url"], "target_url"),
        events=(event_type,), description="REST hook", headers={}, secret=None,
        created_at=utcnow(), kind="hook",
    )
    await bridge.store.create_endpoint(endpoint)
    return JSONResponse({"id": endpoint.id, "target_url": endpoint.url, "event": event_type},
                        status_code=201)


async def unsubscribe_hook(request: Request) -> Response:
    tenant = await authenticate(request)
    bridge = get_bridge(request)
    endpoint = await bridge.store.get_endpoint(request.path_params["hook_id"], tenant.id)
    if endpoint is None or endpoint.kind != "hook":
        raise NotFound("no such hook")
    await bridge.store.delete_endpoint(endpoint.id, tenant.id)
    return Response(status_code=204)


routes = [
    Route("/v1/endpoints", create_endpoint, methods=["POST"]),
    Route("/v1/endpoints", list_endpoints, methods=["GET"]),
    Route("/v1/endpoints/{endpoint_id}", get_endpoint, methods=["GET"]),
    Route("/v1/endpoints/{endpoint_id}", update_endpoint, methods=["PATCH"]),
    Route("/v1/endpoints/{endpoint_id}", delete_endpoint, methods=["DELETE"]),
    Route("/v1/endpoints/{endpoint_id}/rotate-secret", rotate_secret, methods=["POST"]),
    Route("/v1/endpoints/{endpoint_id}/test", test_endpoint, methods=["POST"]),
    Route("/v1/endpoints/{endpoint_id}/deliveries", endpoint_deliveries, methods=["GET"]),
    Route("/v1/endpoints/{endpoint_id}/recover", recover, methods=["POST"]),
    Route("/v1/hooks", subscribe_hook, methods=["POST"]),
    Route("/v1/hooks/{hook_id}", unsubscribe_hook, methods=["DELETE"]),
]
