"""``/healthz`` (the process answers), ``/readyz`` (the database answers, its schema is
current and every background worker runs) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge import __version__
from bridge.api.common import JSONResponse, bearer_is, get_bridge
from bridge.errors import Unauthorized
from bridge.models import utcnow


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    bridge = get_bridge(request)
    down = bridge.supervisor.down()
    if not await bridge.store.ping():
        down["database"] = "does not answer, or its schema is not current"
    if down:
        return JSONResponse({"status": "unavailable", "down": down}, status_code=503)
    return JSONResponse({"status": "ready"})


async def openapi(request: Request) -> JSONResponse:
    from bridge.openapi import document  # built on the first request for it, not at start-up

    return JSONResponse(document(__version__, get_bridge(request).settings.public_url))


async def prometheus(request: Request) -> Response:
    """Open, unless ``BRIDGE_METRICS_TOKEN`` is set: then it must come as a Bearer token."""
    bridge = get_bridge(request)
    token = bridge.settings.metrics_token
    if token is not None and not bearer_is(request, token):
        raise Unauthorized("metrics require Authorization: Bearer <BRIDGE_METRICS_TOKEN>")
    from bridge import exposition  # with prometheus-client, on the first scrape

    stats = await bridge.store.stats(utcnow())
    return Response(exposition.render(stats), media_type=exposition.CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", prometheus, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
