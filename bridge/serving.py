"""Run an ASGI app on a real loopback socket inside the current event loop.

Used by ``bridge demo`` (the bridge, four simulators and a receiver in one process),
``bridge simulators`` and the tests that need real sockets (SSE, callbacks, timeouts).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import signal
import socket
from collections.abc import AsyncIterator
from typing import IO

import uvicorn
from starlette.types import ASGIApp


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``port=0``: a free one), not yet listening."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only for sockets
    # that say they are TCP; without it every keep-alive answer waits ~40 ms for an ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def serve_in_background(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` until the block exits; yields its base URL (``http://127.0.0.1:PORT``).

    ``port=0`` picks a free port. Pass ``sock`` (from :func:`bind`) when the URL must be
    known before the app is built (the bridge's own public URL, say).
    """
    sock = sock or bind(host, port)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"serve:{bound_port}")
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError("server stopped before it started")
            await asyncio.sleep(0.01)
        yield url_of(sock)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
        sock.close()


async def until_interrupted(seconds: float | None = None) -> None:
    """Return on Ctrl-C or SIGTERM, or after ``seconds`` (``None``: no limit)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def hold_sqlite_file(database: str) -> IO[str] | None:
    """Claim a SQLite database for this serving process until it exits: an exclusive lock on
    ``<database>.lock``. ``None`` when another process holds it (the kernel frees it when
    its holder dies, however it dies)."""
    lock = open(f"{database}.lock", "a")  # noqa: SIM115 - held open for the process's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock
