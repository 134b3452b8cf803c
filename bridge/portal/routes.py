"""Every portal route: signing in by magic link and out, the pages, and the static files."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from bridge.api.common import get_bridge
from bridge.core import Bridge
from bridge.errors import BridgeError
from bridge.portal import catalog, deliveries, endpoints, jobs, sessions
from bridge.portal.forms import read_form
from bridge.portal.pages import back, error_page, page, render
from bridge.portal.sessions import Session


async def login(request: Request) -> Response:
    """A magic link: a new session, then the jobs list; a clear page when the link is
    expired, used already or not one of ours."""
    bridge = get_bridge(request)
    try:
        value, ends = await sessions.redeem_link(bridge, request.path_params["token"])
    except BridgeError as exc:
        return error_page(request, exc, link=True)
    answer = back("/portal")
    sessions.set_cookie(bridge, answer, value, ends)
    return answer


@page
async def logout(request: Request, bridge: Bridge, session: Session) -> Response:
    await read_form(request, session)
    await sessions.end(bridge, session)
    answer = render(request, "signed_out.html", None, message="You are signed out.")
    sessions.clear_cookie(bridge, answer)
    return answer


routes: list[BaseRoute] = [
    Route("/portal/login/{token}", login, methods=["GET"]),
    Route("/portal/logout", logout, methods=["POST"]),
    *jobs.routes,
    *endpoints.routes,
    *deliveries.routes,
    *catalog.routes,
    Mount("/portal/static", app=StaticFiles(directory=Path(__file__).with_name("static")),
          name="portal-static"),
]
