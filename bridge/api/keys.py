"""``/v1/keys``: the caller's tenant's API keys, shown by prefix, and their revocation."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.api.common import authenticate, get_bridge, page
from bridge.errors import NotFound
from bridge.models import utcnow


async def list_keys(request: Request) -> JSONResponse:
    """Every active key of the tenant, newest first, on one page (a tenant has a few)."""
    tenant = await authenticate(request)
    keys = await get_bridge(request).store.list_api_keys(tenant.id)
    return page([key.to_json() for key in keys], None)


async def revoke_key(request: Request) -> JSONResponse:
    """Revoke at once, everywhere; answers the revoked key (200, as Stripe answers a
    deletion with the deleted object). Another tenant's prefix answers 404."""
    tenant = await authenticate(request)
    revoked = await get_bridge(request).store.revoke_api_key(
        request.path_params["prefix"], tenant.id, utcnow())
    if revoked is None:
        raise NotFound("no such key")
    return JSONResponse(revoked.to_json())


routes = [
    Route("/v1/keys", list_keys, methods=["GET"]),
    Route("/v1/keys/{prefix}", revoke_key, methods=["DELETE"]),
]
