"""The ASGI application: ``create_app(settings)``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.api import routes
from bridge.api.common import JSONResponse
from bridge.connections import RequestDeadline
from bridge.core import Bridge
from bridge.errors import BridgeError, Unavailable
from bridge.logs import RequestLog, log_unhandled
from bridge.portal.routes import routes as portal_routes
from bridge.settings import Settings
from bridge.timings import Timings

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("bridge")

PRIVATE_TARGETS_WARNING = (
    "BRIDGE_ALLOW_PRIVATE_TARGETS=1: webhooks may go over plain http and to loopback, private, "
    "link-local and cloud metadata addresses; use it for local development only")
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
               400: "invalid_request", 401: "unauthorized", 403: "forbidden"}


async def _bridge_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BridgeError)
    if isinstance(exc, Unavailable):
        log.warning("answered 503: %s", exc.message)
    return JSONResponse(exc.to_json(), status_code=exc.status_code, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    return JSONResponse({"error": {"code": code, "message": str(exc.detail)}},
                        status_code=exc.status_code, headers=exc.headers)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client hung up before its body arrived (a provider will call again): logged as
    499, nginx's word for it, not as an unhandled error; the answer goes nowhere."""
    return Response(status_code=499)


async def _server_error(request: Request, exc: Exception) -> Response:
    route = getattr(request.scope.get("route"), "path", None) or "(no route)"
    request_id = request.scope.get("state", {}).get("request_id", "")
    log_unhandled(exc, request_id, request.method, route)
    return JSONResponse(
        {"error": {"code": "internal_error", "message": "internal error",
                   "request_id": request_id}},
        status_code=500, headers={"X-Request-Id": request_id} if request_id else None)


class NulPaths:
    """ASGI middleware: a path holding a NUL character names nothing bridge keeps (no store
    keeps one in text), so it answers 404 at once, the same on every store."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "\x00" in scope["path"]:
            answer = JSONResponse({"error": {"code": "not_found", "message": "no such object"}},
                                  status_code=404)
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(settings: Settings, *, http: httpx.AsyncClient | None = None,
               timings: Timings | None = None) -> Starlette:
    """The bridge as an ASGI app. The lifespan opens the store and starts the workers.

    ``http`` replaces the client the provider adapters use (tests route it to simulators);
    ``timings`` the workers' leases and waits (tests shorten them).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        bridge = await Bridge.open(settings, http=http, timings=timings)
        app.state.bridge = bridge
        if settings.allow_private_targets:
            log.warning(PRIVATE_TARGETS_WARNING)
        try:
            await bridge.start()
            yield
        finally:
            await bridge.close()

    return Starlette(
        routes=[*routes, *portal_routes],
        lifespan=lifespan,
        middleware=[Middleware(RequestDeadline, timeout=settings.request_timeout),
                    Middleware(RequestLog), Middleware(NulPaths)],
        exception_handlers={
            BridgeError: _bridge_error,
            HTTPException: _http_error,
            ClientDisconnect: _client_gone,
            Exception: _server_error,
        },
    )
