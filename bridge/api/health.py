"""``/healthz`` (the process answers), ``/readyz`` (the database answers, schema current) and
``/metrics`` (Prometheus text)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge import __version__, metrics
from bridge.api.common import JSONResponse, get_bridge
from bridge.models import utcnow
from bridge.openapi import document


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    if await get_bridge(request).store.ping():
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "unavailable"}, status_code=503)


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(document(__version__))


async def prometheus(request: Request) -> Response:
    stats = await get_bridge(request).store.stats(utcnow())
    return Response(metrics.render(stats), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", prometheus, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
