"""What every handler shares: the bridge instance, authentication, bodies, pagination."""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope

from bridge.core import Bridge
from bridge.errors import InvalidRequest, PayloadTooLarge, Unauthorized
from bridge.models import Tenant
from bridge.settings import Secret

MAX_BODY = 1024 * 1024  # bytes; job bodies may carry data: URLs and get more (see jobs.py)
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def get_bridge(request: Request) -> Bridge:
    bridge: Bridge = request.app.state.bridge
    return bridge


async def authenticate(request: Request) -> Tenant:
    """The tenant of the request's API key (``Authorization: Bearer`` or ``X-API-Key``)."""
    key = request.headers.get("x-api-key", "").strip()
    if not key:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            key = token.strip()
    tenant = await get_bridge(request).authenticate(key) if key else None
    if tenant is None:
        raise Unauthorized("a valid API key is required (Authorization: Bearer <key> "
                           "or X-API-Key: <key>)")
    return tenant


def bearer_is(request: Request, secret: Secret) -> bool:
    """Whether the request carries ``Authorization: Bearer <secret>`` (compared in constant
    time: how long it takes tells nothing of the secret)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), secret.reveal().encode())


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The raw body, refusing (413) more than ``limit`` bytes without reading them all."""
    return await receive_body(request.scope, request.receive, limit)


async def receive_body(scope: Scope, receive: Receive, limit: int = MAX_BODY) -> bytes:
    """``read_body`` for a plain ASGI request; ``ClientDisconnect`` if the client leaves."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_json(request: Request, limit: int = MAX_BODY, *, required: bool = True) -> Any:
    body = await read_body(request, limit)
    if not body.strip():
        if required:
            raise InvalidRequest("a JSON body is required", status_code=400)
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the body is not valid JSON", status_code=400) from None


def page_params(request: Request) -> tuple[int, str | None]:
    raw = request.query_params.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIMIT}",
                                 field="limit", status_code=400)
        limit = int(raw)
    return limit, request.query_params.get("cursor") or None


def page(data: list[Any], next_cursor: str | None) -> JSONResponse:
    return JSONResponse({"data": data, "next_cursor": next_cursor})
