"""Logs as JSON lines: one per request, per job status change, per provider request and
per delivery attempt.

What is logged is chosen, never dumped: a request is logged by its route template
(``/callbacks/{provider}/{token}``, not the token), its tenant, status and duration; a job's
change by its id, provider and states, never its prompt or metadata; a provider request by
its operation (``GET /v1/video/tasks/{id}``), never its URL (query strings and pre-signed
links carry keys); a delivery by its ids and outcome, not its URL (hook URLs often carry
credentials). Headers, bodies, keys and secrets never reach a log line.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge import metrics
from bridge.models import TERMINAL, Job, JobStatus, new_id

access = logging.getLogger("bridge.access")
errors = logging.getLogger("bridge")
jobs = logging.getLogger("bridge.jobs")
providers = logging.getLogger("bridge.providers")

# Attributes every LogRecord has; anything else was passed in ``extra`` and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message",  # uvicorn adds a terminal-coloured copy
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class RequestLog:
    """ASGI middleware: a request id (the caller's ``X-Request-Id`` if it is sane, else a new
    one, echoed in the answer) and one log line when the answer is complete."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id  # for the 500 handler
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            log_request(request_id, scope["method"], getattr(route, "path", None), status,
                        started, tenant=scope["state"].get("tenant"))


def log_request(request_id: str, method: str, route: str | None, status: int,
                started: float, tenant: str | None = None) -> None:
    """The access line of one request (``started``: its ``time.perf_counter()``; ``tenant``:
    whose API key it carried), and its count in the metrics."""
    seconds = time.perf_counter() - started
    metrics.count_request(method, route or "(no route)", status, seconds)
    if access.isEnabledFor(logging.INFO):
        access.info("request", extra={
            "request_id": request_id,
            "method": method,
            "route": route or "(no route)",
            "status": status,
            "tenant": tenant,
            "duration_ms": round(seconds * 1000, 2),
        })


def log_status_change(job: Job, before: JobStatus) -> None:
    """A job's status changed from ``before`` to ``job.status`` (and was stored)."""
    if jobs.isEnabledFor(logging.INFO):
        line = {"job_id": job.id, "tenant": job.tenant, "provider": job.provider,
                "from": str(before), "to": str(job.status)}
        if job.error is not None and job.status in TERMINAL:
            line["error_code"] = job.error.code
        jobs.info("job status", extra=line)


def log_provider_request(provider: str, method: str, operation: str, status: int | None,
                         error: str | None, seconds: float) -> None:
    """One request to a provider: ``operation`` is its route template, ``error`` the kind of
    transport failure when there was no answer (``ReadTimeout``)."""
    if providers.isEnabledFor(logging.INFO):
        providers.info("provider request", extra={
            "provider": provider, "method": method, "operation": operation,
            "status": status, "error": error, "duration_ms": round(seconds * 1000, 2),
        })


def log_unhandled(exc: BaseException, request_id: str, method: str, route: str) -> None:
    """A request that failed with an error no handler knows: the route template, never the
    path (paths carry callback and media tokens)."""
    errors.error("unhandled error", exc_info=exc, extra={
        "request_id": request_id, "method": method, "route": route})


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = bytes(value).decode("latin-1")
            if 1 <= len(text) <= 100 and all(c.isalnum() or c in "-_.:" for c in text):
                return text
    return new_id("req")


class RepeatFilter(logging.Filter):
    """Lets the same message (its first line) through at most once per ``interval`` seconds;
    the next one let through says in ``suppressed`` how many were left out since.

    ``bridge serve`` puts it on the ``asyncio`` logger, which logs every accept that fails
    for want of file descriptors (thousands a second), and on ``uvicorn.error``.
    """

    MAX_MESSAGES = 1000  # distinct first lines remembered; then it starts afresh

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__()
        self.interval = interval
        self.last: dict[str, float] = {}
        self.left_out: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        first_line = str(record.msg).partition("\n")[0]
        key = f"{record.name}:{first_line}"
        now = time.monotonic()
        last = self.last.get(key)
        if last is not None and now - last < self.interval:
            self.left_out[key] = self.left_out.get(key, 0) + 1
            return False
        if len(self.last) >= self.MAX_MESSAGES:
            self.last.clear()
            self.left_out.clear()
        self.last[key] = now
        left_out = self.left_out.pop(key, 0)
        if left_out:
            record.suppressed = left_out
        return True
