"""Where providers call back (``/callbacks/{provider}/{token}``) and where hosted videos are
served (``/media/{token}``)."""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from bridge.api.common import get_bridge, read_body
from bridge.errors import Forbidden, NotFound, Unauthorized
from bridge.signing import TokenExpired, TokenInvalid

MAX_CALLBACK_BODY = 1024 * 1024


async def callback(request: Request) -> JSONResponse:
    bridge = get_bridge(request)
    provider = request.path_params["provider"]
    try:
        job_id = bridge.signer.callback_job(provider, request.path_params["token"])
    except TokenInvalid:
        # Refused before any database work: a forged callback costs us one HMAC.
        raise Unauthorized("invalid callback token") from None
    body = await read_body(request, MAX_CALLBACK_BODY)
    await bridge.tracker.on_callback(provider, job_id, body)
    return JSONResponse({"received": True})



async def media(request: Request) -> Response:
    bridge = get_bridge(request)
    try:
        name = bridge.signer.media_name(request.path_params["token"])
    except TokenInvalid:
        raise Forbidden("invalid media link") from None
    except TokenExpired:
        raise NotFound("this media link has expired") from None
    if not bridge.media.exists(name):
        raise NotFound("no such media")
    path = bridge.media.path(name)
    # FileResponse answers Range requests (206, multipart, 416) itself.
    return FileResponse(path, media_type="video/mp4", filename=name,
                        content_disposition_type="inline",
                        stat_result=os.stat(path))


routes = [
    Route("/callbacks/{provider}/{token}", callback, methods=["POST"]),
    Route("/media/{token}", media, methods=["GET", "HEAD"]),
]
