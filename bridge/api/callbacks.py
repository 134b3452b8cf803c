"""Where providers call back (``/callbacks/{provider}/{token}``) and where hosted videos are
served (``/media/{token}``)."""

from __future__ import annotations

import json
import time

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.api.common import get_bridge, parse_json, read_body, receive_body
from bridge.core import Bridge
from bridge.errors import BridgeError, Forbidden, NotFound, Unauthorized, Unavailable
from bridge.logs import log_request, log_unhandled, request_id_of
from bridge.signing import TokenExpired, TokenInvalid

MAX_CALLBACK_BODY = 1024 * 1024
CALLBACK_ROUTE = "/callbacks/{provider}/{token}"
_PREFIX = "/callbacks/"
_RECEIVED = b'{"received":true}'


def _callback_job(bridge: Bridge, provider: str, token: str) -> str:
    try:
        return bridge.signer.callback_job(provider, token)
    except TokenInvalid:
        # Refused before any database work: a forged callback costs us one HMAC.
        raise Unauthorized("invalid callback token") from None


async def callback(request: Request) -> JSONResponse:
    bridge = get_bridge(request)
    provider = request.path_params["provider"]
    job_id = _callback_job(bridge, provider, request.path_params["token"])
    body = await read_body(request, MAX_CALLBACK_BODY)
    _check_json(body)
    await bridge.tracker.on_callback(provider, job_id, body)
    return JSONResponse({"received": True})


def _check_json(body: bytes) -> None:
    """A callback body, when there is one, is strict JSON (400 otherwise), whether or not
    the bridge reads more of it than the provider's status answer confirms."""
    if body.strip():
        parse_json(body)


class CallbackIngress:
    """ASGI middleware, the app's outermost, that answers ``POST /callbacks/{provider}/{token}``
    itself and hands every other request on.

    Callbacks are the bridge's busiest route (a burst of finished jobs is a burst of them),
    and Starlette's middleware stack, router and request objects cost a callback more CPU
    than its own token check and body parsing (bench/ingest.py). This does for the one
    route what those do: the request id (``X-Request-Id``) and access line of
    ``RequestLog``, the body limit of ``receive_body``, the strict JSON of ``parse_json``, the
    JSON errors of the app's handlers.
    A path of any other shape (or under a ``root_path``) goes to the app's router, which
    has the same route and answers as it always does.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path")
                or not scope["path"].startswith(_PREFIX)):
            await self.app(scope, receive, send)
            return
        provider, slash, token = scope["path"][len(_PREFIX):].partition("/")
        if not provider or not slash or not token or "/" in token:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope)
        headers = [(b"x-request-id", request_id.encode())]
        try:
            bridge: Bridge = scope["app"].state.bridge
            job_id = _callback_job(bridge, provider, token)
            body = await receive_body(scope, receive, MAX_CALLBACK_BODY)
            _check_json(body)
            await bridge.tracker.on_callback(provider, job_id, body)
            status, content = 200, _RECEIVED
        except BridgeError as exc:
            status, content = exc.status_code, json.dumps(exc.to_json()).encode()
            if isinstance(exc, Unavailable):  # the provider may call again; most do
                headers.append((b"retry-after", str(exc.retry_after).encode()))
        except ClientDisconnect:  # the provider hung up first: it will call again
            log_request(request_id, "POST", CALLBACK_ROUTE, 499, started)
            return
        except Exception as exc:
            log_unhandled(exc, request_id, "POST", CALLBACK_ROUTE)
            status, content = 500, json.dumps({"error": {
                "code": "internal_error", "message": "internal error",
                "request_id": request_id}}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            *headers,
        ]})
        await send({"type": "http.response.body", "body": content})
        log_request(request_id, "POST", CALLBACK_ROUTE, status, started)


async def media(request: Request) -> Response:
    bridge = get_bridge(request)
    try:
        name = bridge.signer.media_name(request.path_params["token"])
    except TokenInvalid:
        raise Forbidden("invalid media link") from None
    except TokenExpired:
        raise NotFound("this media link has expired") from None
    # A directory answers the bytes (Range included); an object store, 302 to a presigned URL.
    return await bridge.media.response(name)


routes = [
    Route(CALLBACK_ROUTE, callback, methods=["POST"]),
    Route("/media/{token}", media, methods=["GET", "HEAD"]),
]
