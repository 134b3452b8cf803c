"""Where providers call back (``/callbacks/{provider}/{token}``) and where hosted videos are
served (``/media/{token}``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.api.common import get_bridge, parse_json, read_body
from bridge.core import Bridge
from bridge.errors import Forbidden, NotFound, Unauthorized
from bridge.signing import TokenExpired, TokenInvalid

MAX_CALLBACK_BODY = 1024 * 1024
CALLBACK_ROUTE = "/callbacks/{provider}/{token}"


def _callback_job(bridge: Bridge, provider: str, token: str) -> str:
    try:
        return bridge.signer.callback_job(provider, token)
    except TokenInvalid:
        # Refused before any database work: a forged callback costs us one HMAC.
        raise Unauthorized("invalid callback token") from None


async def callback(request: Request) -> JSONResponse:
    """A provider's callback: the token first (no database work for a forged one), then
    the body (at most 1 MiB, strict JSON), then the tracker."""
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
