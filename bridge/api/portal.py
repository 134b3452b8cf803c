"""``/v1/portal-sessions``: a single-use sign-in link to the portal for the caller's tenant."""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.api.common import authenticate, get_bridge, read_json
from bridge.errors import InvalidRequest, NotFound
from bridge.models import rfc3339
from bridge.portal.sessions import LINK_TTL, MAX_LINK_TTL, MIN_LINK_TTL, issue_link


async def create_portal_session(request: Request) -> JSONResponse:
    """``{"url", "expires_at"}``; the body may set ``ttl_seconds`` (60 to 86400, default
    900)."""
    tenant = await authenticate(request)
    body = await read_json(request, required=False)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", status_code=400)
    for name in body:
        if name != "ttl_seconds":
            raise InvalidRequest(f"unknown field {name!r}", field=name)
    ttl = body.get("ttl_seconds", LINK_TTL.total_seconds())
    low, high = int(MIN_LINK_TTL.total_seconds()), int(MAX_LINK_TTL.total_seconds())
    if type(ttl) not in (int, float) or not low <= ttl <= high:
        raise InvalidRequest(f"ttl_seconds must be a number from {low} to {high}",
                             field="ttl_seconds")
    link = await issue_link(get_bridge(request), tenant.id, timedelta(seconds=ttl))
    if link is None:  # the tenant went away since the key was checked
        raise NotFound("no such tenant")
    url, expires_at = link
    return JSONResponse({"url": url, "expires_at": rfc3339(expires_at)}, status_code=201)


routes = [Route("/v1/portal-sessions", create_portal_session, methods=["POST"])]
