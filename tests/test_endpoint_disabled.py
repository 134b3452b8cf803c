"""``endpoint.disabled``: an endpoint disabled for failing (410 Gone, or five days of failed
deliveries) is told to the tenant's other endpoints, as Svix's operational webhooks do. A
bridge, a receiver on loopback, both stores; signatures checked with ``standardwebhooks``."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from standardwebhooks.webhooks import Webhook

from bridge.models import utcnow
from tests.conftest import Harness, Received, Receiver, register


def at(receiver: Receiver, path: str) -> list[Received]:
    return [r for r in receiver.received if r.path == path]


async def test_a_410_tells_the_other_endpoints_with_a_verified_endpoint_disabled(
    hooks: Harness, receiver: Receiver,
) -> None:
    watcher = await register(hooks, receiver.url + "/watcher")  # the default filter
    jobs_only = await register(hooks, receiver.url + "/jobs-only", events=["job.succeeded"])
    gone = await register(hooks, receiver.url + "/gone", events=["endpoint.test"],
                          description="orders service")
    receiver.answer(410)  # the first request, the test event to /gone
    assert (await hooks.client.post(f"/v1/endpoints/{gone['id']}/test")).status_code == 202
    await receiver.wait_for(lambda got: len(at(receiver, "/watcher")) == 1)

    told = at(receiver, "/watcher")[0]
    payload = Webhook(watcher["secret"]).verify(told.body, told.headers)
    shown = (await hooks.client.get(f"/v1/endpoints/{gone['id']}")).json()
    assert payload["type"] == "endpoint.disabled"
    assert payload["data"] == shown  # the endpoint as the API shows it
    assert shown["disabled"] is True and "410" in shown["disabled_reason"]
    assert "secret" not in payload["data"] and gone["secret"] not in told.body.decode()

    listed = (await hooks.client.get("/v1/events", params={"type": "endpoint.disabled"})).json()
    assert [e["id"] for e in listed["data"]] == [told.headers["webhook-id"]]
    assert listed["data"][0]["data"] == shown
    await asyncio.sleep(0.5)
    assert len(at(receiver, "/gone")) == 1  # its test event only, never its own disabling
    assert at(receiver, "/jobs-only") == []  # its filter leaves the type out
    assert jobs_only["events"] == ["job.succeeded"]


async def test_the_disabled_endpoint_never_gets_its_own_event_once_enabled_again(
    hooks: Harness, receiver: Receiver,
) -> None:
    await register(hooks, receiver.url + "/watcher")
    started = utcnow()
    gone = await register(hooks, receiver.url + "/gone")  # it would want endpoint.disabled
    receiver.answer(410)
    await hooks.client.post(f"/v1/endpoints/{gone['id']}/test")
    await receiver.wait_for(lambda got: len(at(receiver, "/watcher")) == 1)
    event_id = at(receiver, "/watcher")[0].headers["webhook-id"]

    path = f"/v1/endpoints/{gone['id']}"
    assert (await hooks.client.patch(path, json={"disabled": False})).status_code == 200
    recovered = await hooks.client.post(path + "/recover", json={"since": started.isoformat()})
    assert recovered.status_code == 202 and recovered.json()["recovering"] == 0
    replayed = await hooks.client.post(f"/v1/events/{event_id}/replay", json={})
    assert replayed.status_code == 202, replayed.text
    await receiver.wait_for(lambda got: len(at(receiver, "/watcher")) == 2)
    await asyncio.sleep(0.5)
    assert [r.json["type"] for r in at(receiver, "/gone")] == ["endpoint.test"]


async def test_five_days_of_failures_tell_the_other_endpoints_too(
    hooks: Harness, receiver: Receiver,
) -> None:
    watcher = await register(hooks, receiver.url + "/watcher", events=["endpoint.disabled"])
    broken = await register(hooks, receiver.url + "/broken", events=["endpoint.test"])
    hooks.bridge.deliverer.schedule = (0.2,) * 10
    receiver.answer(500, times=2)
    await hooks.client.post(f"/v1/endpoints/{broken['id']}/test")
    await receiver.wait_for(lambda got: len(got) == 2)
    assert at(receiver, "/watcher") == []  # failing, not yet for five days
    hooks.bridge.deliverer.clock = lambda: utcnow() + timedelta(days=5, minutes=1)
    receiver.answer(500)
    await receiver.wait_for(lambda got: len(at(receiver, "/watcher")) == 1)
    told = at(receiver, "/watcher")[0]
    payload = Webhook(watcher["secret"]).verify(told.body, told.headers)
    assert payload["type"] == "endpoint.disabled" and payload["data"]["id"] == broken["id"]
    assert "5 days" in payload["data"]["disabled_reason"]
