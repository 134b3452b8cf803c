"""``/v1/portal-sessions``: a single-use sign-in link to the portal for the caller's tenant."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.api.common import authenticate, get_bridge, read_json
from bridge.errors import NotFound
from bridge.models import rfc3339
from bridge.portal.sessions import issue_link


async def create_portal_session(request: Request) -> JSONResponse:
    """``{"url", "expires_at"}``; the body may set ``ttl_seconds`` (60 to 86400, default
    900)."""
    from bridge.schemas import PortalSessionCreate, parse  # pydantic: at the first body read

    tenant = await authenticate(request)
    body = await read_json(request, required=False)
    asked = parse(PortalSessionCreate, {} if body is None else body)
    link = await issue_link(get_bridge(request), tenant.id, asked.ttl)
    if link is None:  # the tenant went away since the key was checked
        raise NotFound("no such tenant")
    url, expires_at = link
    return JSONResponse({"url": url, "expires_at": rfc3339(expires_at)}, status_code=201)


routes = [Route("/v1/portal-sessions", create_portal_session, methods=["POST"])]
