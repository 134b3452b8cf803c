"""The portal's endpoints: list, create (the secret shown once), edit, disable and enable,
rotate the secret, send ``endpoint.test``, recover since a time, and delete after a
confirmation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge import actions
from bridge.core import Bridge
from bridge.errors import InvalidRequest
from bridge.models import (
    DEFAULT_ENDPOINT_EVENTS,
    DEFAULT_MAX_CONCURRENCY,
    EVENT_TYPES,
    MAX_CONCURRENCY,
    Endpoint,
    rfc3339,
    utcnow,
)
from bridge.portal.charts import RANGES, chosen_range, outcomes_chart
from bridge.portal.forms import Form, endpoint_body, headers_text, read_form
from bridge.portal.health import health
from bridge.portal.pages import back, page, render
from bridge.portal.sessions import Session

PAGE_SIZE = 25
RECENT = 10  # deliveries shown on an endpoint's page
RECOVER_SINCE = timedelta(hours=1)  # what the recover form offers first


def recover_since() -> str | None:
    return rfc3339(utcnow() - RECOVER_SINCE)


def _values(form: Form | None = None, endpoint: Endpoint | None = None) -> dict[str, Any]:
    """What an endpoint form shows: as posted, or as stored."""
    if form is not None:
        return {"url": form.text("url"), "description": form.text("description"),
                "events": form.all("events"), "headers": form.get("headers") or "",
                "max_concurrency": form.text("max_concurrency")}
    if endpoint is not None:
        return {"url": endpoint.url, "description": endpoint.description or "",
                "events": list(endpoint.events or ()), "headers": headers_text(endpoint.headers),
                "max_concurrency": endpoint.max_concurrency}
    return {"url": "", "description": "", "events": [], "headers": "",
            "max_concurrency": DEFAULT_MAX_CONCURRENCY}


def _form(request: Request, session: Session, *, values: dict[str, Any],
          endpoint: Endpoint | None = None, error: InvalidRequest | None = None) -> Response:
    return render(request, "endpoint_form.html", session,
                  status_code=error.status_code if error else 200,
                  title="Edit endpoint" if endpoint else "New endpoint", active="endpoints",
                  endpoint=endpoint, values=values, error=error, event_types=EVENT_TYPES,
                  default_events=DEFAULT_ENDPOINT_EVENTS, max_concurrency=MAX_CONCURRENCY)


async def _show(request: Request, bridge: Bridge, session: Session, endpoint: Endpoint, *,
                secret: str | None = None, status_code: int = 200) -> Response:
    chosen = chosen_range(request)
    recent = await bridge.store.list_deliveries(
        session.tenant.id, endpoint_id=endpoint.id, event_id=None, status=None, limit=RECENT,
        cursor=None)
    chart = await outcomes_chart(bridge, session.tenant.id, endpoint.id, chosen)
    found = await health(bridge, session.tenant.id, [endpoint])
    return render(request, "endpoint.html", session, status_code=status_code,
                  title=f"Endpoint {endpoint.id}", active="endpoints", endpoint=endpoint,
                  secret=secret, deliveries=recent.data, since=recover_since(),
                  health=found[endpoint.id], chart=chart, chart_ranges=RANGES, chart_query={})


@page
async def endpoints(request: Request, bridge: Bridge, session: Session) -> Response:
    cursor = request.query_params.get("cursor") or None
    found = await bridge.store.list_endpoints(session.tenant.id, limit=PAGE_SIZE, cursor=cursor)
    return render(request, "endpoints.html", session, title="Endpoints", active="endpoints",
                  endpoints=found.data, next_cursor=found.next_cursor, paged=cursor is not None,
                  health=await health(bridge, session.tenant.id, found.data), query={})


@page
async def new(request: Request, bridge: Bridge, session: Session) -> Response:
    return _form(request, session, values=_values())


@page
async def create(request: Request, bridge: Bridge, session: Session) -> Response:
    from bridge.schemas import EndpointCreate, parse  # pydantic: at the first body read

    form = await read_form(request, session)
    try:
        made = await actions.create_endpoint(bridge, session.tenant,
                                             parse(EndpointCreate, endpoint_body(form)))
    except InvalidRequest as exc:
        return _form(request, session, values=_values(form), error=exc)
    return await _show(request, bridge, session, made, secret=made.secret, status_code=201)


@page
async def show(request: Request, bridge: Bridge, session: Session) -> Response:
    found = await actions.endpoint(bridge, session.tenant, request.path_params["endpoint_id"])
    return await _show(request, bridge, session, found)


@page
async def edit(request: Request, bridge: Bridge, session: Session) -> Response:
    found = await actions.endpoint(bridge, session.tenant, request.path_params["endpoint_id"])
    return _form(request, session, values=_values(endpoint=found), endpoint=found)


@page
async def update(request: Request, bridge: Bridge, session: Session) -> Response:
    from bridge.schemas import EndpointUpdate, parse  # pydantic: at the first body read

    form = await read_form(request, session)
    found = await actions.endpoint(bridge, session.tenant, request.path_params["endpoint_id"])
    try:
        await actions.update_endpoint(bridge, session.tenant, found.id,
                                      parse(EndpointUpdate, endpoint_body(form)))
    except InvalidRequest as exc:
        return _form(request, session, values=_values(form), endpoint=found, error=exc)
    return back(f"/portal/endpoints/{found.id}", "updated")


def _switch(disabled: bool) -> Any:
    @page
    async def switch(request: Request, bridge: Bridge, session: Session) -> Response:
        from bridge.schemas import EndpointUpdate  # pydantic: at the first body read

        await read_form(request, session)
        endpoint_id = request.path_params["endpoint_id"]
        await actions.update_endpoint(bridge, session.tenant, endpoint_id,
                                      EndpointUpdate(disabled=disabled))
        return back(f"/portal/endpoints/{endpoint_id}", "disabled" if disabled else "enabled")

    return switch


@page
async def rotate(request: Request, bridge: Bridge, session: Session) -> Response:
    await read_form(request, session)
    updated, secret = await actions.rotate_secret(bridge, session.tenant,
                                                  request.path_params["endpoint_id"])
    return await _show(request, bridge, session, updated, secret=secret)


@page
async def test(request: Request, bridge: Bridge, session: Session) -> Response:
    await read_form(request, session)
    delivery = await actions.send_test(bridge, session.tenant,
                                       request.path_params["endpoint_id"])
    return back(f"/portal/endpoints/{delivery.endpoint_id}", "test_sent")


@page
async def recover(request: Request, bridge: Bridge, session: Session) -> Response:
    from bridge.schemas import Recover, parse  # pydantic: at the first body read

    form = await read_form(request, session)
    endpoint_id = request.path_params["endpoint_id"]
    await actions.endpoint(bridge, session.tenant, endpoint_id)  # 404 before the form's since
    since = parse(Recover, {"since": form.text("since")}).since
    await actions.recover(bridge, session.tenant, endpoint_id, since)
    return back("/portal/deliveries", "recovering", endpoint=endpoint_id)


@page
async def confirm_delete(request: Request, bridge: Bridge, session: Session) -> Response:
    found = await actions.endpoint(bridge, session.tenant, request.path_params["endpoint_id"])
    return render(request, "endpoint_delete.html", session, title=f"Delete {found.id}?",
                  active="endpoints", endpoint=found)


@page
async def delete(request: Request, bridge: Bridge, session: Session) -> Response:
    await read_form(request, session)
    await actions.delete_endpoint(bridge, session.tenant, request.path_params["endpoint_id"])
    return back("/portal/endpoints", "deleted")


routes = [
    Route("/portal/endpoints", endpoints, methods=["GET"]),
    Route("/portal/endpoints", create, methods=["POST"]),
    Route("/portal/endpoints/new", new, methods=["GET"]),
    Route("/portal/endpoints/{endpoint_id}", show, methods=["GET"]),
    Route("/portal/endpoints/{endpoint_id}", update, methods=["POST"]),
    Route("/portal/endpoints/{endpoint_id}/edit", edit, methods=["GET"]),
    Route("/portal/endpoints/{endpoint_id}/disable", _switch(True), methods=["POST"]),
    Route("/portal/endpoints/{endpoint_id}/enable", _switch(False), methods=["POST"]),
    Route("/portal/endpoints/{endpoint_id}/rotate-secret", rotate, methods=["POST"]),
    Route("/portal/endpoints/{endpoint_id}/test", test, methods=["POST"]),
    Route("/portal/endpoints/{endpoint_id}/recover", recover, methods=["POST"]),
    Route("/portal/endpoints/{endpoint_id}/delete", confirm_delete, methods=["GET"]),
    Route("/portal/endpoints/{endpoint_id}/delete", delete, methods=["POST"]),
]
