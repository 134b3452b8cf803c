"""``/v1/me`` (with the rotation of the tenant's signing secret) and ``/v1/models``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from bridge.actions import ROTATION_OVERLAP
from bridge.api.common import JSONResponse, authenticate, get_bridge
from bridge.core import new_signing_secret
from bridge.errors import NotFound
from bridge.models import utcnow


async def me(request: Request) -> JSONResponse:
    tenant = await authenticate(request)
    return JSONResponse({"tenant": tenant.id, "signing_secret": tenant.signing_secret})


async def rotate_signing_secret(request: Request) -> JSONResponse:
    """A new signing secret for per-job webhooks and REST hooks; the old one keeps signing
    beside it for 24 hours, as with an endpoint's rotate-secret."""
    tenant = await authenticate(request)
    rotated = await get_bridge(request).store.rotate_signing_secret(
        tenant.id, new_signing_secret(), utcnow() + ROTATION_OVERLAP)
    if rotated is None:  # the tenant went away since the key was checked
        raise NotFound("no such tenant")
    return JSONResponse({"tenant": rotated.id, "signing_secret": rotated.signing_secret})


async def models(request: Request) -> JSONResponse:
    await authenticate(request)
    found, unavailable = await get_bridge(request).catalog.all()
    return JSONResponse({
        "data": [model.to_json() for model in found], "next_cursor": None,
        # Providers that are enabled but whose models cannot be read now, and why.
        "unavailable": [{"provider": name, "reason": reason}
                        for name, reason in unavailable.items()],
    })


routes = [
    Route("/v1/me", me, methods=["GET"]),
    Route("/v1/me/rotate-signing-secret", rotate_signing_secret, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
]
