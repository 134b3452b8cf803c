"""Shared fixtures: the four provider simulators and the bridge, each on a real loopback
socket, with a real SQLite file in the test's temporary directory."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.app import create_app
from bridge.core import Bridge
from bridge.models import TERMINAL, JobStatus, utcnow
from bridge.serving import bind, serve_in_background, url_of
from bridge.settings import Settings
from bridge.simulators import FACTORIES, bridge_env
from bridge.simulators.base import SimSettings
from bridge.timings import Timings
from tests.postgres import new_database

API_KEY = "brk_test_key_default_tenant"


@dataclass
class Sims:
    apps: dict[str, Starlette]
    urls: dict[str, str]

    def env(self) -> dict[str, str]:
        return bridge_env(self.urls)


@contextlib.asynccontextmanager
async def serving(apps: dict[str, Starlette]) -> AsyncIterator[dict[str, str]]:
    """Each app on a loopback socket of its own (their URLs by name), all stopped together:
    a uvicorn server takes a few tenths of a second to stop."""
    servers = {name: serve_in_background(app) for name, app in apps.items()}
    urls: dict[str, str] = {}
    try:
        for name, server in servers.items():
            urls[name] = await server.__aenter__()
        yield urls
    finally:
        await asyncio.gather(*(servers[name].__aexit__(None, None, None) for name in urls))


@pytest.fixture
async def sims() -> AsyncIterator[Sims]:
    """The four simulators with fast jobs (0.3-0.6 s of processing)."""
    apps = {
        name: make(SimSettings(api_key=f"sim-{name}-key", duration=(0.3, 0.6), queue_delay=0.05))
        for name, make in FACTORIES.items()
    }
    async with serving(apps) as urls:
        yield Sims(apps, urls)


@dataclass
class Harness:
    """A running bridge: its URL, an authenticated client, and its insides for assertions."""

    url: str
    client: httpx.AsyncClient
    app: Starlette
    env: dict[str, str]
    sims: Sims
    events: list[Any] = field(default_factory=list)

    @property
    def bridge(self) -> Bridge:
        bridge: Bridge = self.app.state.bridge
        return bridge

    async def create(self, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        answer = await self.client.post("/v1/jobs", json=body, headers=headers)
        assert answer.status_code in (200, 202), answer.text
        job: dict[str, Any] = answer.json()
        return job

    async def job(self, job_id: str) -> dict[str, Any]:
        answer = await self.client.get(f"/v1/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        job: dict[str, Any] = answer.json()
        return job

    async def wait(self, job_id: str, statuses: set[str] | None = None,
                   seconds: float = 15.0, hurry: bool = True) -> dict[str, Any]:
        """Wait until the job reaches one of ``statuses`` (default: any terminal state).

        With ``hurry`` the job is made due again and again, so the test does not sit out the
        polling policy's real-world intervals (seconds to minutes): it only skips waiting,
        every status request is still real.
        """
        wanted = statuses or {str(s) for s in TERMINAL}
        deadline = time.monotonic() + seconds
        while True:
            job = await self.job(job_id)
            if job["status"] in wanted:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {seconds}s")
            if hurry and job["status"] not in (JobStatus.QUEUED,):
                await self.bridge.store.release_job(job_id, utcnow())
                self.bridge.tracker.wake()
            await asyncio.sleep(0.1)


# The database behind a test's bridge: a SQLite file, and a PostgreSQL database of its own.
@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "bridge.db")
    else:
        with new_database() as url:
            yield url


# For a test of what only one backend has (SQLite's file, its locks).
SQLITE_ONLY = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


@contextlib.asynccontextmanager
async def running_bridge(
    tmp_path: Path, sims: Sims, timings: Timings | None = None, **overrides: str
) -> AsyncIterator[Harness]:
    """Start a bridge on a loopback socket; ``overrides`` are extra BRIDGE_* variables,
    ``timings`` its workers' (default: the service's own). Private targets are allowed unless
    overridden: the simulators' result links are plain http on loopback, which only that flag
    lets a job keep."""
    sock = bind()
    env = {
        "BRIDGE_ALLOW_PRIVATE_TARGETS": "1",
        "BRIDGE_DATABASE": str(tmp_path / "bridge.db"),
        "BRIDGE_MEDIA_DIR": str(tmp_path / "media"),
        "BRIDGE_PUBLIC_URL": url_of(sock),
        "BRIDGE_API_KEY": API_KEY,
        **sims.env(),
        **overrides,
    }
    app = create_app(Settings.from_env(env), timings=timings)
    async with serve_in_background(app, sock=sock) as url, httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    ) as client:
        harness = Harness(url, client, app, env, sims)
        harness.bridge.tracker.listeners.append(harness.events.append)
        yield harness


@pytest.fixture
async def harness(tmp_path: Path, sims: Sims, database: str) -> AsyncIterator[Harness]:
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database) as running:
        yield running


# -- a bridge whose webhooks are retried quickly, and an endpoint registered on it ----------
FAST = {"BRIDGE_ALLOW_PRIVATE_TARGETS": "1", "BRIDGE_RETRY_SCHEDULE": "200ms,200ms,200ms"}


@pytest.fixture
async def hooks(tmp_path: Path, sims: Sims, database: str) -> AsyncIterator[Harness]:
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database, **FAST) as running:
        yield running


async def register(harness: Harness, url: str, **fields: Any) -> dict[str, Any]:
    answer = await harness.client.post("/v1/endpoints", json={"url": url, **fields})
    assert answer.status_code == 201, answer.text
    endpoint: dict[str, Any] = answer.json()
    return endpoint


# -- a webhook receiver ----------------------------------------------------------------------
@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        import json

        return json.loads(self.body)


class Receiver:
    """A loopback HTTP receiver that records every POST and answers as scripted:
    ``script`` is consumed first (``(status, headers, delay)``), then ``default``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[tuple[int, dict[str, str], float]] = []
        self.default: tuple[int, dict[str, str], float] = (200, {}, 0.0)
        self.body = b"ok"
        self._arrived = asyncio.Event()
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        self.url = ""

    async def _handle(self, request: Request) -> Response:
        self.received.append(Received(request.url.path, dict(request.headers),
                                      await request.body(), time.monotonic()))
        self._arrived.set()
        status, headers, delay = self.script.pop(0) if self.script else self.default
        if delay:
            await asyncio.sleep(delay)
        return Response(self.body, status_code=status, headers=headers)

    def answer(self, status: int, times: int = 1, headers: dict[str, str] | None = None,
               delay: float = 0.0) -> None:
        self.script.extend([(status, headers or {}, delay)] * times)

    async def wait_for(self, done: Callable[[list[Received]], bool],
                       seconds: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + seconds
        while not done(self.received):
            left = deadline - time.monotonic()
            if left <= 0:
                types = [r.json.get("type") for r in self.received]
                raise AssertionError(f"receiver still waiting after {seconds}s; got {types}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.2))
        return self.received

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.received if r.json.get("type") == event_type]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver()
    async with serve_in_background(made.app) as url:
        made.url = url
        yield made


# -- each phase's report on its test item (the portal's browser tests screenshot a failure) --
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
