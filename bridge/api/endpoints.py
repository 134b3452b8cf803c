"""``/v1/endpoints`` and ``/v1/hooks``: where a tenant's events are delivered."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
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
from bridge.endpoints import check_url
from bridge.errors import NotFound
from bridge.models import Endpoint, new_id, utcnow


async def create_endpoint(request: Request) -> JSONResponse:
    from bridge.schemas import EndpointCreate, parse  # pydantic: at the first body read

    tenant = await authenticate(request)
    bridge = get_bridge(request)
    body = parse(EndpointCreate, await read_json(request))
    endpoint = await actions.create_endpoint(bridge, tenant, body)
    return JSONResponse({**endpoint.to_json(), "secret": endpoint.secret}, status_code=201)


async def list_endpoints(request: Request) -> JSONResponse:
    tenant = await authenticate(request)
    limit, cursor = page_params(request)
    result = await get_bridge(request).store.list_endpoints(tenant.id, limit=limit,
                                                            cursor=cursor)
    return page([endpoint.to_json() for endpoint in result.data], result.next_cursor)


async def get_endpoint(request: Request) -> JSONResponse:
    tenant = await authenticate(request)
    endpoint = await actions.endpoint(get_bridge(request), tenant,
                                      request.path_params["endpoint_id"])
    return JSONResponse(endpoint.to_json())


async def update_endpoint(request: Request) -> JSONResponse:
    from bridge.schemas import EndpointUpdate, parse  # pydantic: at the first body read

    tenant = await authenticate(request)
    bridge = get_bridge(request)
    endpoint_id = request.path_params["endpoint_id"]
    await actions.endpoint(bridge, tenant, endpoint_id)  # 404 before the body is read
    body = parse(EndpointUpdate, await read_json(request))
    updated = await actions.update_endpoint(bridge, tenant, endpoint_id, body)
    return JSONResponse(updated.to_json())


async def delete_endpoint(request: Request) -> Response:
    tenant = await authenticate(request)
    await actions.delete_endpoint(get_bridge(request), tenant,
                                  request.path_params["endpoint_id"])
    return Response(status_code=204)


async def rotate_secret(request: Request) -> JSONResponse:
    tenant = await authenticate(request)
    updated, secret = await actions.rotate_secret(get_bridge(request), tenant,
                                                  request.path_params["endpoint_id"])
    return JSONResponse({**updated.to_json(), "secret": secret})


async def test_endpoint(request: Request) -> JSONResponse:
    tenant = await authenticate(request)
    delivery = await actions.send_test(get_bridge(request), tenant,
                                       request.path_params["endpoint_id"])
    return JSONResponse(delivery.to_json(), status_code=202)


async def endpoint_deliveries(request: Request) -> JSONResponse:
    tenant = await authenticate(request)
    bridge = get_bridge(request)
    endpoint = await actions.endpoint(bridge, tenant, request.path_params["endpoint_id"])
    limit, cursor = page_params(request)
    result = await bridge.store.endpoint_deliveries(endpoint.id, limit=limit, cursor=cursor)
    return page([delivery.to_json() for delivery in result.data], result.next_cursor)


async def recover(request: Request) -> JSONResponse:
    from bridge.schemas import Recover, parse  # pydantic: at the first body read

    tenant = await authenticate(request)
    bridge = get_bridge(request)
    endpoint_id = request.path_params["endpoint_id"]
    await actions.endpoint(bridge, tenant, endpoint_id)  # 404 before the body is read
    body = await read_json(request)
    # A body that is no object has no since: 422 naming it, as ever.
    since = parse(Recover, body if isinstance(body, dict) else {}).since
    count, more = await actions.recover(bridge, tenant, endpoint_id, since)
    # ``more``: the cap was reached; the same call again queues the next ones.
    return JSONResponse({"recovering": count, "more": more}, status_code=202)


# -- REST Hooks (Zapier) ---------------------------------------------------------------
async def subscribe_hook(request: Request) -> JSONResponse:
    from bridge.schemas import HookCreate, parse  # pydantic: at the first body read

    tenant = await authenticate(request)
    bridge = get_bridge(request)
    body = parse(HookCreate, await read_json(request))
    event_type = body.event
    endpoint = Endpoint(
        id=new_id("ep"), tenant=tenant.id,
        url=await check_url(bridge.guard, body.target_url, "target_url"),
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
