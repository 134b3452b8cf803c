"""What the four provider simulators share: timing, scripted outcomes and scripted faults.

Each simulator is a Starlette app built by ``create_app(SimSettings(...))`` that speaks one
provider's documented API. A simulated job moves by the wall clock: ``queue_delay`` seconds
queued, then ``duration`` seconds processing (progress grows linearly), then its outcome.

Outcomes are scripted per job by markers in the prompt, so a test or a demo reaching the
simulator over a real socket can ask for them:

    [sim:fail]          the job fails (provider's generic failure)
    [sim:violation]     the job fails for content policy
    [sim:expire]        the job ends expired
    [sim:duration=N]    the job takes N seconds to process
    [sim:faces]         (Venice) the media shows faces: 409 needs_consent without consents

Faults are scripted on ``app.state.faults`` (a :class:`Faults`): the next matching requests
answer a status (429 with Retry-After, 500, ...), answer late, or hang after the app handled
them (the client sees the connection time out after its request was processed).
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

OUTCOMES = ("succeed", "fail", "violation", "expire")
_MARKER = re.compile(r"\[sim:([a-z_]+)(?:=([0-9.]+))?\]")


@dataclass
class SimSettings:
    api_key: str = "sim-key"
    duration: tuple[float, float] = (2.0, 4.0)  # seconds of processing, drawn uniformly
    queue_delay: float = 0.2  # seconds a job waits before processing starts
    latency: float = 0.0  # seconds added to every answer
    seed: int | None = None


@dataclass
class Scenario:
    outcome: str = "succeed"
    duration: float | None = None
    faces: bool = False

    @classmethod
    def from_prompt(cls, prompt: str) -> Scenario:
        scenario = cls()
        for name, value in _MARKER.findall(prompt or ""):
            if name in OUTCOMES:
                scenario.outcome = name
            elif name == "duration" and value:
                scenario.duration = float(value)
            elif name == "faces":
                scenario.faces = True
        return scenario


@dataclass
class SimJob:
    """A simulated job's clock. ``phase()`` tells where it is now."""

    id: str
    created: float  # time.time() at creation
    queue_delay: float
    duration: float
    scenario: Scenario
    body: dict[str, Any] = field(default_factory=dict)
    canceled_at: float | None = None

    @classmethod
    def start(cls, job_id: str, settings: SimSettings, rng: random.Random, prompt: str,
              body: dict[str, Any] | None = None) -> SimJob:
        scenario = Scenario.from_prompt(prompt)
        duration = scenario.duration
        if duration is None:
            duration = rng.uniform(*settings.duration)
        return cls(job_id, time.time(), settings.queue_delay, duration, scenario, body or {})

    @property
    def done_at(self) -> float:
        return self.created + self.queue_delay + self.duration

    def elapsed_processing(self, now: float | None = None) -> float:
        now = time.time() if now is None else now
        return max(0.0, now - self.created - self.queue_delay)

    def phase(self, now: float | None = None) -> str:
        """One of ``queued``, ``processing``, ``canceled``, or the scenario's outcome."""
        now = time.time() if now is None else now
        if self.canceled_at is not None and self.canceled_at <= now:
            return "canceled"
        if now < self.created + self.queue_delay:
            return "queued"
        if now < self.done_at:
            return "processing"
        return self.scenario.outcome

    def progress(self, now: float | None = None) -> int:
        phase = self.phase(now)
        if phase == "queued":
            return 0
        if phase == "processing":
            return min(99, int(100 * self.elapsed_processing(now) / max(self.duration, 1e-6)))
        return 100


@dataclass
class Fault:
    method: str | None
    path: re.Pattern[str]
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    hang: bool = False  # let the app handle the request, then never answer
    body: Any = None
    times: int = 1


class Faults:
    """Scripted faults, consumed in the order they were added."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(
        self,
        path: str,
        *,
        method: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        delay: float = 0.0,
        hang: bool = False,
        body: Any = None,
        times: int = 1,
    ) -> None:
        """Script the next ``times`` requests whose path matches the regex ``path``."""
        self._faults.append(
            Fault(method, re.compile(path), status, retry_after, delay, hang, body, times)
        )

    def clear(self) -> None:
        self._faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.method not in (None, method) or not fault.path.search(path):
                continue
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)
            return fault
        return None


class FaultMiddleware:
    """Applies ``Faults`` and ``SimSettings.latency`` in front of a simulator app.

    ``error_body(status)`` gives the provider's own error shape for a scripted status.
    """

    def __init__(
        self,
        app: ASGIApp,
        faults: Faults,
        settings: SimSettings,
        error_body: Callable[[int], Any],
    ) -> None:
        self.app = app
        self.faults = faults
        self.settings = settings
        self.error_body = error_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.settings.latency:
            await asyncio.sleep(self.settings.latency)
        fault = self.faults.take(scope["method"], scope["path"])
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.hang:
            async def swallow(message: Message) -> None:
                return None

            await self.app(scope, receive, swallow)
            await asyncio.Event().wait()  # never answers; the client times out
            return
        if fault.status is None:
            await self.app(scope, receive, send)
            return
        body = fault.body if fault.body is not None else self.error_body(fault.status)
        payload = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(payload)).encode())]
        if fault.retry_after is not None:
            headers.append((b"retry-after", str(int(fault.retry_after)).encode()))
        await send({"type": "http.response.start", "status": fault.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def bearer_ok(request: Request, api_key: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <api_key>``."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and token.strip() == api_key


async def read_json(request: Request) -> Any:
    """The JSON body, or ``None`` when it is absent or not JSON."""
    try:
        return json.loads(await request.body() or b"null")
    except ValueError:
        return None


SAMPLE_VIDEO = Path(__file__).with_name("sample.mp4")


@functools.cache
def _sample() -> bytes:
    return SAMPLE_VIDEO.read_bytes()


def fake_mp4(job_id: str) -> bytes:
    """A real, playable video standing in for a generated one: 2 s of a test pattern, VP9 in
    MP4 (which every Chromium decodes), with the job id in a trailing ``free`` box (players
    skip it) so that each job's file is its own."""
    note = f"bridge-simulated-video:{job_id}".encode()
    return _sample() + (len(note) + 8).to_bytes(4, "big") + b"free" + note
