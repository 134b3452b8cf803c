"""The portal's deliveries: every attempt (filtered by endpoint and outcome, paged), an
event's page with its attempts, and replaying one event."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge import actions
from bridge.core import Bridge
from bridge.errors import InvalidRequest, NotFound
from bridge.models import DeliveryStatus
from bridge.portal.charts import RANGES, chosen_range, outcomes_chart
from bridge.portal.endpoints import recover_since
from bridge.portal.forms import read_form
from bridge.portal.pages import back, page, query, render
from bridge.portal.sessions import Session

PAGE_SIZE = 50
ENDPOINT_CHOICES = 100  # endpoints offered in the filter


@page
async def deliveries(request: Request, bridge: Bridge, session: Session) -> Response:
    outcomes = tuple(str(status) for status in DeliveryStatus)
    outcome = request.query_params.get("outcome") or None
    if outcome is not None and outcome not in outcomes:
        raise InvalidRequest(f"outcome must be one of {', '.join(outcomes)}", field="outcome",
                             status_code=400)
    endpoint_id = request.query_params.get("endpoint") or None
    endpoint = None
    if endpoint_id is not None:
        endpoint = await actions.endpoint(bridge, session.tenant, endpoint_id)
    chosen = chosen_range(request)
    cursor = request.query_params.get("cursor") or None
    found = await bridge.store.list_deliveries(
        session.tenant.id, endpoint_id=endpoint_id, event_id=None, status=outcome,
        limit=PAGE_SIZE, cursor=cursor)
    chart = await outcomes_chart(bridge, session.tenant.id, endpoint_id, chosen)
    choices = await bridge.store.list_endpoints(session.tenant.id, limit=ENDPOINT_CHOICES,
                                                cursor=None)
    return render(request, "deliveries.html", session, title="Deliveries",
                  active="deliveries", deliveries=found.data, next_cursor=found.next_cursor,
                  paged=cursor is not None, outcome=outcome, outcomes=outcomes,
                  endpoint=endpoint, endpoints=choices.data, since=recover_since(),
                  chart=chart, chart_ranges=RANGES,
                  chart_query=query(endpoint=endpoint_id, outcome=outcome),
                  query=query(endpoint=endpoint_id, outcome=outcome, range=chosen.key))


@page
async def event(request: Request, bridge: Bridge, session: Session) -> Response:
    found = await bridge.store.get_event(request.path_params["event_id"], session.tenant.id)
    if found is None:
        raise NotFound("no such event")
    cursor = request.query_params.get("cursor") or None
    attempts = await bridge.store.list_deliveries(
        session.tenant.id, endpoint_id=None, event_id=found.id, status=None,
        limit=PAGE_SIZE, cursor=cursor)
    return render(request, "event.html", session, title=f"Event {found.id}",
                  active="deliveries", event=found, deliveries=attempts.data,
                  next_cursor=attempts.next_cursor, paged=cursor is not None, query={})


@page
async def replay(request: Request, bridge: Bridge, session: Session) -> Response:
    form = await read_form(request, session)
    event_id = request.path_params["event_id"]
    await actions.replay(bridge, session.tenant, event_id, form.text("endpoint_id") or None)
    return back(f"/portal/events/{event_id}", "replayed")


routes = [
    Route("/portal/deliveries", deliveries, methods=["GET"]),
    Route("/portal/events/{event_id}", event, methods=["GET"]),
    Route("/portal/events/{event_id}/replay", replay, methods=["POST"]),
]
