"""``/v1/tick``: one bounded round of work, for schedulers on serverless platforms."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from bridge.api.common import JSONResponse, bearer_is, get_bridge
from bridge.errors import NotFound, Unauthorized


async def tick(request: Request) -> JSONResponse:
    """``Authorization: Bearer $BRIDGE_TICK_SECRET`` (Vercel's cron sends its
    ``CRON_SECRET`` the same way, with GET); 404 while no secret is set."""
    bridge = get_bridge(request)
    secret = bridge.settings.tick_secret
    if secret is None:
        raise NotFound("tick is disabled: BRIDGE_TICK_SECRET is not set")
    if not bearer_is(request, secret):
        raise Unauthorized("tick requires Authorization: Bearer <BRIDGE_TICK_SECRET>")
    return JSONResponse(await bridge.tick())


routes = [Route("/v1/tick", tick, methods=["GET", "POST"])]
