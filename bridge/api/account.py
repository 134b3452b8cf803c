"""``/v1/me`` and ``/v1/models``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from bridge.api.common import JSONResponse, authenticate, get_bridge


async def me(request: Request) -> JSONResponse:
    tenant = await authenticate(request)
    return JSONResponse({"tenant": tenant.id, "signing_secret": tenant.signing_secret})


async def models(request: Request) -> JSONResponse:
    await authenticate(request)
    found = await get_bridge(request).catalog.all()
    return JSONResponse({"data": [model.to_json() for model in found], "next_cursor": None})


routes = [
    Route("/v1/me", me, methods=["GET"]),
    Route("/v1/models", models, methods=["GET"]),
]
