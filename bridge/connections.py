"""What one client may hold of a serving process: time and connections.

- :class:`RequestDeadline` (ASGI middleware, in every app): a body that has not arrived
  ``timeout`` seconds after its headers answers 408 and closes the connection.
- :func:`protocol_class` (``bridge serve``): uvicorn's h11 protocol with a deadline on the
  request line and headers, which uvicorn has no option for, and a cap on open connections
  that closes the oldest idle one to make room for a new one.
- :func:`open_file_limit` and :func:`default_max_connections`: the cap sized to the
  process's file descriptors, so that accepting never runs out of them.
"""

from __future__ import annotations

import asyncio
import math
import resource

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from bridge.errors import RequestTimeout

OUTBOUND_CONNECTIONS = 100  # the provider and webhook client's pool (bridge.core)
SPARE_FILES = 64  # the listening socket, logs, SQLite's files, media being sent
BACKLOG = 2048  # uvicorn's listen backlog; asyncio accepts up to this many at a time


class RequestDeadline:
    """ASGI middleware: ``receive()`` raises :class:`RequestTimeout` once the body has taken
    more than ``timeout`` seconds; the answer then carries ``Connection: close``. Once the
    body is complete, ``receive()`` (which then waits for a disconnect) is not bounded."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout
        body_done = False
        expired = False

        async def bounded_receive() -> Message:
            nonlocal body_done, expired
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                expired = True
                raise RequestTimeout(f"the request body did not arrive within "
                                     f"{self.timeout:g} s") from None
            body_done = message["type"] != "http.request" or not message.get("more_body")
            return message

        async def closing_send(message: Message) -> None:
            if expired and message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, bounded_receive, closing_send)


def protocol_class(request_timeout: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol, for ``uvicorn.Config(http=...)``, bounded so that:

    - a connection that has not sent a whole request line and headers ``request_timeout``
      seconds after it opened (or after its first byte, between keep-alive requests) is
      closed, with a 408 if part of a request came;
    - when more than ``max_connections`` are open, the oldest one waiting for a request
      (none sent yet, or idle between keep-alive requests) is closed for the new one; if
      none is waiting, uvicorn's ``limit_concurrency`` answers the new one's request 503.
    """
    # Subclassed: uvicorn has no header deadline. Uses Protocol methods, `conn` via h11's API.
    class Bounded(H11Protocol):
        header_timer: asyncio.TimerHandle | None = None
        link: asyncio.Transport | None = None
        partial = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.link = transport
            open_connections[self] = None
            self.start_header_timer()
            if len(open_connections) > max_connections:
                self.close_oldest_waiting()

        def data_received(self, data: bytes) -> None:
            if self.header_timer is None and self.waiting():
                self.start_header_timer()
            self.partial = True
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self.stop_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self.stop_header_timer()
            open_connections.pop(self, None)
            super().connection_lost(exc)

        def waiting(self) -> bool:
            """Between requests: nothing of a request parsed, nothing being answered."""
            return self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE

        def start_header_timer(self) -> None:
            self.partial = False
            loop = asyncio.get_running_loop()
            self.header_timer = loop.call_later(request_timeout, self.headers_late)

        def stop_header_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def headers_late(self) -> None:
            self.header_timer = None
            if self.link is None or self.link.is_closing() or not self.waiting():
                return
            if self.partial:
                self.link.write(_request_timeout_answer(request_timeout))
            self.link.close()

        def close_oldest_waiting(self) -> None:
            for other in open_connections:
                if other is not self and other.waiting() and other.link is not None \
                        and not other.link.is_closing():
                    other.link.close()
                    return

    open_connections: dict[Bounded, None] = {}  # every open connection, oldest first
    return Bounded


def _request_timeout_answer(timeout: float) -> bytes:
    """The 408 for headers that came too slowly, framed by h11 (a connection of its own,
    since the request never reached the app)."""
    body = (b'{"error": {"code": "request_timeout", "message": "the request headers did not '
            b'arrive within ' + f"{timeout:g}".encode() + b' s"}}')
    framer = h11.Connection(h11.SERVER)
    head = framer.send(h11.Response(status_code=408, reason=b"Request Timeout", headers=[
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]))
    return b"".join(part or b"" for part in (head, framer.send(h11.Data(data=body)),
                                              framer.send(h11.EndOfMessage())))


def open_file_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit, as most servers do at
    start-up; ``(before, after)``. Where the hard limit is unlimited or refused, unchanged."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, hard
    return soft, soft


def default_max_connections(open_files: int, database_pool: int) -> int:
    """The open-file limit less what the process needs besides clients' connections:
    ``OUTBOUND_CONNECTIONS``, the database pool and one for ``LISTEN``, ``SPARE_FILES``, and
    two accept bursts (connections are accepted up to ``BACKLOG`` at a time, and counted
    against the cap only a loop turn or two later); at least a quarter of the limit."""
    if open_files == resource.RLIM_INFINITY:
        open_files = 1 << 20
    reserve = OUTBOUND_CONNECTIONS + database_pool + 1 + SPARE_FILES + 2 * BACKLOG
    return max(open_files - reserve, math.ceil(open_files / 4))
