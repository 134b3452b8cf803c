"""Fair delivery: one tenant's endpoints that accept connections and never answer do not
hold up another tenant's deliveries, and no endpoint gets more attempts at once than its
``max_concurrency``. Real sockets on loopback, a real SQLite file, signatures checked with the
third-party ``standardwebhooks`` package."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bridge.core import new_signing_secret
from bridge.delivery import Deliverer
from bridge.models import Change, Endpoint, Event, Job, JobStatus, Tracking, new_id, utcnow
from bridge.serving import serve_in_background
from bridge.store import Store, open_store
from bridge.targets import Guard
from bridge.timings import Timings
from tests.conftest import Harness, Receiver, Sims, running_bridge

FAST = {"BRIDGE_ALLOW_PRIVATE_TARGETS": "1", "BRIDGE_RETRY_SCHEDULE": "200ms,200ms,200ms"}


class BlackHole:
    """A loopback TCP server that accepts every connection, reads what comes and never
    answers; it counts the connections it holds."""

    def __init__(self) -> None:
        self.held = 0
        self.accepted = 0
        self.most: dict[str, int] = {}  # the most requests held at once, per path
        self._now: dict[str, int] = {}
        self._writers: set[asyncio.StreamWriter] = set()
        self.url = ""

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.held += 1
        self._writers.add(writer)
        path = ""
        try:
            first = await reader.read(65536)  # "POST /path HTTP/1.1 ..."
            path = first.split(b" ", 2)[1].decode() if first.count(b" ") >= 2 else ""
            self._now[path] = self._now.get(path, 0) + 1
            self.most[path] = max(self.most.get(path, 0), self._now[path])
            while first and await reader.read(65536):
                pass
        except ConnectionError:
            pass
        finally:
            if path in self._now:
                self._now[path] -= 1
            self.held -= 1
            self._writers.discard(writer)
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BlackHole]:
        server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self
        finally:
            server.close()
            for writer in list(self._writers):
                writer.close()
            await server.wait_closed()

    async def wait_held(self, count: int, seconds: float = 15.0) -> None:
        deadline = time.monotonic() + seconds
        while self.held < count:
            assert time.monotonic() < deadline, f"only {self.held} connections after {seconds}s"
            await asyncio.sleep(0.02)


@pytest.fixture
async def hooks(tmp_path: Path, sims: Sims) -> AsyncIterator[Harness]:
    async with running_bridge(tmp_path, sims, **FAST) as running:
        yield running


async def register(client: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    answer = await client.post("/v1/endpoints", json={"url": url, **fields})
    assert answer.status_code == 201, answer.text
    endpoint: dict[str, Any] = answer.json()
    return endpoint


async def test_another_tenants_black_holes_do_not_delay_a_delivery(
    hooks: Harness, receiver: Receiver,
) -> None:
    async with BlackHole().running() as hole:
        for number in range(20):
            endpoint = await register(hooks.client, f"{hole.url}/hole/{number}")
            for _ in range(5):
                answer = await hooks.client.post(f"/v1/endpoints/{endpoint['id']}/test")
                assert answer.status_code == 202, answer.text
        await hole.wait_held(30)  # the black holes hold their share of the worker's slots

        key = await hooks.bridge.create_api_key("tenant-b")
        async with httpx.AsyncClient(base_url=hooks.url, timeout=10,
                                     headers={"Authorization": f"Bearer {key}"}) as other:
            mine = await register(other, receiver.url + "/b", events=["endpoint.test"])
            sent = time.monotonic()
            answer = await other.post(f"/v1/endpoints/{mine['id']}/test")
            assert answer.status_code == 202, answer.text
            got = await receiver.wait_for(lambda g: len(g) >= 1, seconds=5)
        assert got[0].at - sent < 1.0
        assert Webhook(mine["secret"]).verify(got[0].body, got[0].headers)["type"] == (
            "endpoint.test")
        assert hole.held <= 32  # tenant A holds at most its share of the 64 slots


class CountingReceiver:
    """A loopback receiver that holds each request ``delay`` seconds and records the most
    requests it had in flight at once, per path."""

    def __init__(self, delay: float = 0.2) -> None:
        self.delay = delay
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.received: list[str] = []
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> PlainTextResponse:
        path = request.url.path
        await request.body()
        self.now[path] = self.now.get(path, 0) + 1
        self.most[path] = max(self.most.get(path, 0), self.now[path])
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.now[path] -= 1
        self.received.append(request.headers["webhook-id"])
        return PlainTextResponse("ok")

    async def wait_for(self, count: int, seconds: float = 20.0) -> None:
        deadline = time.monotonic() + seconds
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} received"
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(("fields", "cap"), [({}, 4), ({"max_concurrency": 2}, 2),
                                             ({"max_concurrency": 6}, 6)])
async def test_an_endpoint_gets_at_most_its_max_concurrency_at_once(
    hooks: Harness, fields: dict[str, Any], cap: int,
) -> None:
    counting = CountingReceiver()
    async with serve_in_background(counting.app) as url:
        endpoint = await register(hooks.client, url + "/hook", **fields)
        for _ in range(3 * cap):  # straight into the outbox: the test route is rate-limited
            await hooks.bridge.store.add_event(Event(
                id=new_id("evt"), tenant="default", type="endpoint.test", job_id=None,
                created_at=utcnow(), data={"endpoint_id": endpoint["id"]},
            ), endpoint_id=endpoint["id"])
        hooks.bridge.deliverer.wake()
        await counting.wait_for(3 * cap)
    assert counting.most["/hook"] == cap  # reached, never passed
    assert endpoint.get("max_concurrency") == cap


async def test_max_concurrency_is_changed_by_patch_and_checked(hooks: Harness) -> None:
    endpoint = await register(hooks.client, "http://127.0.0.1:1/x")
    answer = await hooks.client.patch(f"/v1/endpoints/{endpoint['id']}",
                                      json={"max_concurrency": 32})
    assert answer.status_code == 200, answer.text
    assert answer.json()["max_concurrency"] == 32
    got = (await hooks.client.get(f"/v1/endpoints/{endpoint['id']}")).json()
    assert got["max_concurrency"] == 32
    for bad in (0, 33, -1, "4", 2.5, True, None):
        for method, path, body in (
            ("POST", "/v1/endpoints", {"url": "http://127.0.0.1:1/y", "max_concurrency": bad}),
            ("PATCH", f"/v1/endpoints/{endpoint['id']}", {"max_concurrency": bad}),
        ):
            answer = await hooks.client.request(method, path, json=body)
            assert answer.status_code == 422, (method, bad, answer.text)
            assert answer.json()["error"]["field"] == "max_concurrency"
    listed = (await hooks.client.get("/v1/endpoints")).json()["data"]
    assert [e["max_concurrency"] for e in listed] == [32]  # nothing half-stored


# -- the deliverer on its own ------------------------------------------------------------------
@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(str(tmp_path / "bridge.db"))
    for tenant in ("a", "b"):
        await opened.ensure_tenant(tenant, new_signing_secret)
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_jobs_own_webhook_counts_against_its_tenants_share(
    store: Store, receiver: Receiver,
) -> None:
    async with BlackHole().running() as hole:
        for number in range(12):  # twelve jobs, each with its own black-hole webhook_url
            job = Job(id=new_id("job"), tenant="a", provider="airforce", model="wan-2.6",
                      status=JobStatus.QUEUED, tracking=Tracking.POLL,
                      request={"provider": "airforce", "prompt": "a fox", "mode": "text"},
                      created_at=utcnow(), updated_at=utcnow(),
                      webhook_url=f"{hole.url}/job/{number}")
            await store.create_job(job, idempotency_window=60)
            await store.update_job(job.id, lambda current: Change(
                current, "job.submitted"))
        deliverer = Deliverer(store, Guard(allow_private=True), (1.0,), concurrency=8)
        await deliverer.start()
        try:
            await hole.wait_held(4)  # the share of the one tenant with work: 8 // (1 + 1)
            mine = await store.create_endpoint(Endpoint(
                id=new_id("ep"), tenant="b", url=receiver.url + "/b", events=None,
                description=None, headers={}, secret=new_signing_secret(),
                created_at=utcnow()))
            sent = time.monotonic()
            await store.add_event(Event(id=new_id("evt"), tenant="b", type="endpoint.test",
                                        job_id=None, created_at=utcnow(), data={}),
                                  endpoint_id=mine.id)
            deliverer.wake()
            got = await receiver.wait_for(lambda g: len(g) >= 1, seconds=5)
            assert got[0].at - sent < 1.0
            assert hole.held == 4  # tenant a's share, never the whole worker
        finally:
            await deliverer.stop()


# -- tenants whose endpoints all hang, on both stores ------------------------------------------
# An attempt to a black hole ends after 2 s (the lease leaves 5 s to start one, as in service).
HANGING = Timings(delivery_timeout=2.0, record_margin=1.0, delivery_lease=8.0)
SLOTS = 64  # the deliverer's own default


@pytest.fixture
async def tenants_store(database: str) -> AsyncIterator[Store]:
    opened = await open_store(database)
    try:
        yield opened
    finally:
        await opened.close()


async def backlog(store: Store, tenant: str, url: str, endpoints: int = 12,
                  each: int = 6) -> None:
    """``endpoints`` endpoints of ``tenant`` under ``url``, with ``each`` deliveries due."""
    await store.ensure_tenant(tenant, new_signing_secret)
    for number in range(endpoints):
        endpoint = await store.create_endpoint(Endpoint(
            id=new_id("ep"), tenant=tenant, url=f"{url}/{tenant}/{number}", events=None,
            description=None, headers={}, secret=new_signing_secret(), created_at=utcnow()))
        for _ in range(each):
            await store.add_event(Event(id=new_id("evt"), tenant=tenant, type="endpoint.test",
                                        job_id=None, created_at=utcnow(), data={}),
                                  endpoint_id=endpoint.id)


@contextlib.asynccontextmanager
async def delivering(store: Store) -> AsyncIterator[Deliverer]:
    deliverer = Deliverer(store, Guard(allow_private=True), (0.2, 0.2, 0.2, 0.2),
                          timings=HANGING)
    store.outbox_listeners.append(deliverer.wake)  # as the service does: woken by new work
    await deliverer.start()
    try:
        yield deliverer
    finally:
        await deliverer.stop()
        store.outbox_listeners.remove(deliverer.wake)


@pytest.mark.parametrize("hanging", [1, 2, 5])
async def test_tenants_whose_endpoints_hang_do_not_delay_another_tenants_deliveries(
    tenants_store: Store, receiver: Receiver, hanging: int,
) -> None:
    store = tenants_store
    await store.ensure_tenant("healthy", new_signing_secret)
    async with contextlib.AsyncExitStack() as stack:
        holes = [await stack.enter_async_context(BlackHole().running())
                 for _ in range(hanging)]
        await stack.enter_async_context(delivering(store))
        for number, hole in enumerate(holes):  # one after another: shares fall as they come
            await backlog(store, f"hanging-{number}", hole.url)
            await hole.wait_held(1)
            await asyncio.sleep(0.2)
        mine = [await store.create_endpoint(Endpoint(
            id=new_id("ep"), tenant="healthy", url=f"{receiver.url}/healthy/{number}",
            events=None, description=None, headers={}, secret=new_signing_secret(),
            created_at=utcnow())) for number in range(3)]
        due: dict[str, float] = {}
        for number in range(30):  # while the black holes' attempts time out and come back
            event = Event(id=new_id("evt"), tenant="healthy", type="endpoint.test",
                          job_id=None, created_at=utcnow(), data={})
            due[event.id] = time.monotonic()
            await store.add_event(event, endpoint_id=mine[number % 3].id)
            await asyncio.sleep(0.05)
        got = await receiver.wait_for(lambda g: len(g) >= 30, seconds=15)
        waits = sorted(r.at - due[r.headers["webhook-id"]] for r in got)
        assert len(waits) == 30
        assert waits[-1] < 1.0, f"waits from due to start: {waits}"
        for hole in holes:  # and no endpoint had more than its max_concurrency at once
            assert hole.most and max(hole.most.values()) <= 4, hole.most
        assert max(holes[0].most.values()) == 4  # the first tenant's endpoints reached it
    assert Webhook(mine[0].secret or "").verify(got[0].body, got[0].headers)


@pytest.mark.parametrize("hanging", [1, 2, 5])
async def test_a_tenants_share_of_the_slots_falls_as_more_tenants_have_work(
    tenants_store: Store, hanging: int,
) -> None:
    store = tenants_store
    async with contextlib.AsyncExitStack() as stack:
        holes = [await stack.enter_async_context(BlackHole().running())
                 for _ in range(hanging)]
        for number, hole in enumerate(holes):  # all due before the deliverer starts
            await backlog(store, f"hanging-{number}", hole.url)
        deliverer = await stack.enter_async_context(delivering(store))
        share = SLOTS // (hanging + 1)  # room is left for one more tenant
        for hole in holes:
            await hole.wait_held(share)
        await asyncio.sleep(0.3)  # no more than that comes (the attempts last 2 s)
        assert [hole.held for hole in holes] == [share] * hanging
        assert deliverer.sending <= SLOTS - share
