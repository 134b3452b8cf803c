"""What every handler shares: the bridge instance, authentication, bodies, answers,
pagination."""

from __future__ import annotations

import hmac
import math
from typing import Any

from starlette import responses
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope

from bridge import jsoninput
from bridge.core import Bridge
from bridge.errors import InvalidRequest, PayloadTooLarge, Unauthorized
from bridge.models import Tenant
from bridge.settings import Secret

MAX_BODY = 1024 * 1024  # bytes; job bodies may carry data: URLs and get more (see jobs.py)


def get_bridge(request: Request) -> Bridge:
    bridge: Bridge = request.app.state.bridge
    return bridge


async def authenticate(request: Request) -> Tenant:
    """The tenant of the request's API key (``Authorization: Bearer`` or ``X-API-Key``),
    also named in the request's access line."""
    key = request.headers.get("x-api-key", "").strip()
    if not key:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            key = token.strip()
    tenant = await get_bridge(request).authenticate(key) if key else None
    if tenant is None:
        raise Unauthorized("a valid API key is required (Authorization: Bearer <key> "
                           "or X-API-Key: <key>)")
    request.scope.setdefault("state", {})["tenant"] = tenant.id  # read by RequestLog
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
    return parse_json(body)


def parse_json(body: bytes) -> Any:
    """A body read strictly (``bridge.jsoninput``); 400 naming what is wrong."""
    try:
        return jsoninput.loads(body)
    except jsoninput.Refused as exc:
        raise InvalidRequest(exc.message, field=exc.field, status_code=400) from None


class JSONResponse(responses.JSONResponse):
    """Starlette's, except that what JSON cannot carry (a lone surrogate, NaN) in a row
    stored before input was read strictly is shown as U+FFFD or null, not a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except ValueError:  # UnicodeEncodeError included
            return super().render(_showable(content))


def _showable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_showable(k): _showable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_showable(v) for v in value]
    return value


def page_params(request: Request) -> tuple[int, str | None]:
    from bridge.schemas.responses import DEFAULT_LIMIT, MAX_LIMIT  # with pydantic's models

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
