"""The file host that providers' result links point at (their CDN or object store), with the
links a mirror must survive: ones that expire or disappear, fail, redirect, never end, or are
not a video. A test picks one by the path it gives the bridge:

    GET /files/{name}.mp4[?size=N&type=T]
                                        the video (``fake_mp4``); ``size``: padded to N bytes
                                        with an MP4 ``free`` box, streamed (bench/media.py);
                                        ``type``: its Content-Type (default video/mp4)
    GET /expiring/{name}.mp4?expires=T  the video until the unix time T, then 403 AccessDenied
                                        "Request has expired", as a presigned S3 URL answers
    GET /gone/{name}.mp4                404 NoSuchKey: the provider deleted it
    GET /flaky/{name}.mp4               500 twice (per name), then the video
    GET /redirect/{n}/{name}.mp4        302 to ``/redirect/{n-1}/...``; at 0, to the video
    GET /redirect-to?url=U              302 to U, wherever that is
    GET /zeros?size=N&chunk=C&interval=S&length=1
                                        N bytes of zeros (default 3 GiB) as ``video/mp4``, C
                                        bytes every S seconds; ``length=0``: no Content-Length
    GET /html/{name}                    a 200 text/html page (a login or error page)
    GET /cut/{name}.mp4                 announces the whole video, sends half, hangs up

``app.state.requests`` counts the requests each path received.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.simulators.base import fake_mp4

GiB = 1024**3
PAD = 1024 * 1024  # bytes per chunk of a padded video
_XML = "application/xml"


def _s3_error(status: int, code: str, message: str) -> Response:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>")
    return Response(body, status_code=status, media_type=_XML)


def expiring_link(base_url: str, name: str, seconds: float) -> str:
    """A link to ``name``'s video that works for ``seconds`` more."""
    return f"{base_url}/expiring/{name}.mp4?{urlencode({'expires': time.time() + seconds})}"


def _int(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    return int(value) if value is not None and value.isdigit() else default


def _video(name: str, size: int | None = None, kind: str = "video/mp4") -> Response:
    video = fake_mp4(name)
    if size is None or size <= len(video) + 8:
        return Response(video, media_type=kind)
    padding = size - len(video)

    async def chunks() -> AsyncIterator[bytes]:
        yield video + padding.to_bytes(4, "big") + b"free"
        left = padding - 8
        block = bytes(PAD)
        while left > 0:
            yield block[:left] if left < PAD else block
            left -= PAD

    return StreamingResponse(chunks(), media_type=kind, headers={"Content-Length": str(size)})


def create_app() -> Starlette:
    requests: collections.Counter[str] = collections.Counter()
    flaky: collections.Counter[str] = collections.Counter()

    async def files(request: Request) -> Response:
        name = request.path_params["name"]
        size = request.query_params.get("size")
        return _video(name, int(size) if size and size.isdigit() else None,
                      request.query_params.get("type", "video/mp4"))

    async def expiring(request: Request) -> Response:
        try:
            expires = float(request.query_params.get("expires", "0"))
        except ValueError:
            expires = 0.0
        if time.time() >= expires:
            return _s3_error(403, "AccessDenied", "Request has expired")
        return _video(request.path_params["name"])

    async def gone(request: Request) -> Response:
        return _s3_error(404, "NoSuchKey", "The specified key does not exist.")

    async def flaky_file(request: Request) -> Response:
        name = request.path_params["name"]
        flaky[name] += 1
        if flaky[name] <= 2:
            return _s3_error(500, "InternalError", "We encountered an internal error.")
        return _video(name)

    async def redirect(request: Request) -> Response:
        hops, name = request.path_params["hops"], request.path_params["name"]
        target = f"/redirect/{hops - 1}/{name}.mp4" if hops > 0 else f"/files/{name}.mp4"
        return RedirectResponse(target, status_code=302)

    async def redirect_to(request: Request) -> Response:
        return RedirectResponse(request.query_params.get("url", "/"), status_code=302)

    async def zeros(request: Request) -> Response:
        size = _int(request, "size", 3 * GiB)
        chunk = max(1, _int(request, "chunk", 64 * 1024))
        interval = float(request.query_params.get("interval", "0.01"))

        async def body() -> AsyncIterator[bytes]:
            block = bytes(chunk)
            left = size
            while left > 0:
                yield block[:left] if left < chunk else block
                left -= chunk
                await asyncio.sleep(interval)

        headers = {} if request.query_params.get("length") == "0" else {
            "Content-Length": str(size)}
        return StreamingResponse(body(), media_type="video/mp4", headers=headers)

    async def html(request: Request) -> Response:
        return Response("<!doctype html><title>Sign in</title><p>Please sign in.</p>",
                        media_type="text/html; charset=utf-8")

    routes = [
        Route("/files/{name}.mp4", files),
        Route("/expiring/{name}.mp4", expiring),
        Route("/gone/{name}.mp4", gone),
        Route("/flaky/{name}.mp4", flaky_file),
        Route("/redirect/{hops:int}/{name}.mp4", redirect),
        Route("/redirect-to", redirect_to),
        Route("/zeros", zeros),
        Route("/html/{name}", html),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_Counted, requests=requests)])
    app.state.requests = requests
    return app


class _Counted:
    """Counts each path's requests, and answers ``/cut/`` itself (no route can break off)."""

    def __init__(self, app: ASGIApp, requests: collections.Counter[str]) -> None:
        self.app = app
        self.requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests[scope["path"]] += 1
            if scope["path"].startswith("/cut/"):
                await _cut(scope, send)
                return
        await self.app(scope, receive, send)


async def _cut(scope: Scope, send: Send) -> None:
    """Half the video, then the connection closes (the answer never completes)."""
    video = fake_mp4(scope["path"].rsplit("/", 1)[-1])
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"video/mp4"), (b"content-length", str(len(video)).encode())]})
    await send({"type": "http.response.body", "body": video[:len(video) // 2],
                "more_body": True})
