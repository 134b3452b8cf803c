"""What the portal's pages say, read as HTML without a browser, on both stores: the chart of
delivery outcomes, endpoint health, the jobs search, paging that keeps the filters, times as
``<time>`` elements, max_concurrency on the endpoint form and failures in words."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.models import Event, new_id, utcnow
from tests.conftest import Harness, Receiver, Sims, running_bridge

RUNNING = {"provider": "infrai", "duration_seconds": 5, "aspect_ratio": "16:9",
           "prompt": "A long timelapse of a glacier [sim:duration=60]"}


@dataclass
class Portal:
    harness: Harness
    browser: httpx.AsyncClient  # signed in
    receiver: Receiver

    async def page(self, path: str, status: int = 200) -> str:
        answer = await self.browser.get(path)
        assert answer.status_code == status, (path, answer.status_code, answer.text[:500])
        return answer.text

    async def endpoint(self, url: str | None = None, **fields: Any) -> dict[str, Any]:
        answer = await self.harness.client.post(
            "/v1/endpoints", json={"url": url or f"{self.receiver.url}/hooks", **fields})
        assert answer.status_code == 201, answer.text
        made: dict[str, Any] = answer.json()
        return made


@pytest.fixture
async def portal(tmp_path: Path, sims: Sims, database: str,
                 receiver: Receiver) -> AsyncIterator[Portal]:
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database,
                              BRIDGE_ALLOW_PRIVATE_TARGETS="1",
                              BRIDGE_RETRY_SCHEDULE="1h") as harness:
        link = (await harness.client.post("/v1/portal-sessions")).json()["url"]
        async with httpx.AsyncClient(base_url=harness.url, timeout=10) as browser:
            signed_in = await browser.get("/portal/" + link.split("/portal/", 1)[1])
            assert signed_in.status_code == 303
            yield Portal(harness, browser, receiver)


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found
    return found.group(1)


def job_ids(page: str) -> list[str]:
    return re.findall(r'<a class="id" href="/portal/jobs/(job_\w+)"', page)


async def attempts(portal: Portal, endpoint_id: str, count: int) -> list[dict[str, Any]]:
    """Wait until the endpoint has ``count`` finished attempts; they, newest first."""
    deadline = time.monotonic() + 15
    while True:
        found = (await portal.harness.client.get(
            f"/v1/endpoints/{endpoint_id}/deliveries?limit=100")).json()["data"]
        done = [d for d in found if d["status"] != "pending"]
        if len(done) >= count:
            return done
        assert time.monotonic() < deadline, f"{len(done)} of {count} attempts after 15 s"
        await asyncio.sleep(0.1)


def closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: nothing listens there


# -- chart and health -----------------------------------------------------------------------
async def test_the_deliveries_and_endpoint_pages_chart_outcomes_and_show_health(
    portal: Portal,
) -> None:
    healthy = await portal.endpoint(description="healthy")
    failing = await portal.endpoint(url=f"http://127.0.0.1:{closed_port()}/hooks",
                                    description="failing")
    for endpoint, times in ((healthy, 2), (failing, 3)):
        for _ in range(times):
            sent = await portal.harness.client.post(f"/v1/endpoints/{endpoint['id']}/test")
            assert sent.status_code in (200, 202), sent.text
    await attempts(portal, healthy["id"], 2)
    failed = await attempts(portal, failing["id"], 3)
    assert {a["error"] for a in failed} == {"connection refused"}  # the API says it in words

    tenant = await portal.page("/portal/deliveries")
    label = re.search(r'<svg class="chart"[^>]*aria-label="([^"]+)"', tenant)
    assert label, "no chart on the deliveries page"
    assert html.unescape(label.group(1)) == (
        "Delivery attempts, last 24 hours: 2 succeeded, 3 failed, 3 pending")  # retries due
    # This hour's bucket (and the one before, should the hour have turned meanwhile).
    assert 1 <= len(re.findall(r'class="bar-failed"', tenant)) <= 2
    assert "connection refused" in tenant and "ClientConnector" not in tenant
    month = await portal.page("/portal/deliveries?range=30d")
    assert "Delivery attempts, last 30 days: 2 succeeded, 3 failed" in html.unescape(month)
    assert 'style="' not in tenant and "<script>" not in tenant  # the CSP allows neither
    bad = await portal.page("/portal/deliveries?range=1y", status=400)
    assert "range" in bad and "24h, 30d" in bad

    one = await portal.page(f"/portal/endpoints/{failing['id']}")
    assert "last 24 hours: 0 succeeded, 3 failed, 3 pending" in html.unescape(one)
    health = one[one.index('id="health-title"'):one.index('id="outcomes"')]
    assert ">failing<" in health and "0 %" in health and "(0 of 3 attempts)" in health
    assert re.search(r'class="failing-since"><time datetime="[^"]+Z"', health)
    assert 'class="last-success">—' in health

    listed = await portal.page("/portal/endpoints")
    rows = {m.group(1): m.group(0) for m in re.finditer(
        r'<tr>\s*<td data-label="Endpoint"><a class="id" href="/portal/endpoints/(ep_\w+)".*?</tr>',
        listed, re.S)}
    assert ">healthy<" in rows[healthy["id"]] and "100 %" in rows[healthy["id"]]
    assert re.search(r'class="last-success"><time datetime="[^"]+Z"', rows[healthy["id"]])
    assert 'class="failing-since"' not in rows[healthy["id"]]
    assert ">failing<" in rows[failing["id"]] and "0 %" in rows[failing["id"]]
    assert re.search(r'since</span> <span class="failing-since"><time datetime=',
                     rows[failing["id"]])


async def test_times_are_time_elements_in_utc_with_utc_on_hover(portal: Portal) -> None:
    job = await portal.harness.create(RUNNING)
    page = await portal.page(f"/portal/jobs/{job['id']}")
    created = job["created_at"]  # 2026-12-07T22:57:04Z
    shown = f"{created[:10]} {created[11:19]} UTC"
    assert f'<time datetime="{created}" title="{shown}">{shown}</time>' in page
    listed = await portal.page("/portal")
    short = f"{created[:10]} {created[11:16]} UTC"  # a table's: to the minute
    assert f'<time datetime="{created}" title="{shown}">{short}</time>' in listed


# -- search and paging ----------------------------------------------------------------------
async def test_search_finds_a_job_by_id_event_id_prompt_or_metadata_of_this_tenant_only(
    portal: Portal,
) -> None:
    fox = await portal.harness.create({**RUNNING, "prompt": "A red fox [sim:duration=60]"})
    order = await portal.harness.create({**RUNNING, "metadata": {"order": "PO-7731"}})
    key = await portal.harness.bridge.create_api_key("acme")
    async with httpx.AsyncClient(base_url=portal.harness.url,
                                 headers={"X-API-Key": key}) as acme:
        theirs = (await acme.post("/v1/jobs", json={
            **RUNNING, "prompt": "A red fox [sim:duration=60]"})).json()
    deadline = time.monotonic() + 15
    while not (events := (await portal.harness.client.get(
            f"/v1/events?job_id={order['id']}")).json()["data"]):
        assert time.monotonic() < deadline, "no event of the job in 15 s"
        await asyncio.sleep(0.1)
    for text, expected in (("RED FOX", [fox["id"]]), ("po-7731", [order["id"]]),
                           (fox["id"], [fox["id"]]), (events[0]["id"], [order["id"]]),
                           (theirs["id"], []), ("nothing like it", [])):
        page = await portal.page(f"/portal?{httpx.QueryParams(q=text)}")
        assert job_ids(page) == expected, text
        assert f'value="{html.escape(text)}"' in page  # the search stays in its box
    assert "No jobs match these filters" in await portal.page("/portal?q=zebra")
    filtered = await portal.page("/portal?q=fox&provider=apixo")
    assert job_ids(filtered) == []
    too_long = await portal.page(f"/portal?q={'x' * 201}", status=400)
    assert "q must be at most 200 characters" in too_long


async def test_paging_links_keep_the_search_and_filters(portal: Portal) -> None:
    made = [await portal.harness.create({**RUNNING, "prompt": f"batch {n} [sim:duration=60]"})
            for n in range(26)]
    await portal.harness.create(RUNNING)  # not found by the search
    first = await portal.page("/portal?q=batch&provider=infrai")
    assert job_ids(first) == [job["id"] for job in reversed(made)][:25]
    older = re.search(r'<a href="\?([^"]+)" rel="next">Older</a>', first)
    assert older
    params = httpx.QueryParams(html.unescape(older.group(1)))
    assert params["q"] == "batch" and params["provider"] == "infrai" and params["cursor"]
    second = await portal.page(f"/portal?{params}")
    assert job_ids(second) == [made[0]["id"]]
    newest = re.search(r'<a href="\?([^"]+)">Newest</a>', second)
    assert newest and dict(httpx.QueryParams(html.unescape(newest.group(1)))) == {
        "q": "batch", "provider": "infrai"}

    endpoint = await portal.endpoint(events=["endpoint.test"])  # none of the jobs' events
    bridge = portal.harness.bridge
    for _ in range(51):  # past the API's rate limit on test events: queued in the store
        await bridge.store.add_event(Event(
            id=new_id("evt"), tenant="default", type="endpoint.test", job_id=None,
            created_at=utcnow(), data={}), endpoint_id=endpoint["id"])
    bridge.deliverer.wake()
    await attempts(portal, endpoint["id"], 51)
    deliveries = await portal.page(
        f"/portal/deliveries?endpoint={endpoint['id']}&outcome=succeeded&range=30d")
    older = re.search(r'<a href="\?([^"]+)" rel="next">Older</a>', deliveries)
    assert older
    params = httpx.QueryParams(html.unescape(older.group(1)))
    assert (params["endpoint"], params["outcome"], params["range"]) == (
        endpoint["id"], "succeeded", "30d")
    rest = await portal.page(f"/portal/deliveries?{params}")
    assert rest.count('data-label="Outcome"') == 1


# -- the endpoint form ----------------------------------------------------------------------
async def test_max_concurrency_is_set_on_the_endpoint_form_and_checked(portal: Portal) -> None:
    form = await portal.page("/portal/endpoints/new")
    assert re.search(r'<input id="max_concurrency" name="max_concurrency" type="number"[^>]*'
                     r'min="1" max="32"[^>]*value="4"', form)
    fields = {"csrf": csrf(form), "url": f"{portal.receiver.url}/hooks", "description": "",
              "headers": ""}
    made = await portal.browser.post("/portal/endpoints", data={**fields, "max_concurrency": "7"})
    assert made.status_code == 201
    endpoint_id = re.search(r"Endpoint <span class=\"id\">(ep_\w+)", made.text)
    assert endpoint_id
    path = f"/v1/endpoints/{endpoint_id.group(1)}"
    assert (await portal.harness.client.get(path)).json()["max_concurrency"] == 7
    edit = await portal.page(f"/portal/endpoints/{endpoint_id.group(1)}/edit")
    assert re.search(r'id="max_concurrency"[^>]*value="7"', edit)
    for value in ("33", "0", "two", "1.5"):
        refused = await portal.browser.post(f"/portal/endpoints/{endpoint_id.group(1)}",
                                            data={**fields, "max_concurrency": value})
        assert refused.status_code == 422, value
        assert "<code>max_concurrency</code>" in refused.text
        assert re.search(r'id="max_concurrency"[^>]*aria-invalid="true"', refused.text)
    assert (await portal.harness.client.get(path)).json()["max_concurrency"] == 7
    saved = await portal.browser.post(f"/portal/endpoints/{endpoint_id.group(1)}",
                                      data={**fields, "max_concurrency": "32"})
    assert saved.status_code == 303
    assert (await portal.harness.client.get(path)).json()["max_concurrency"] == 32


async def test_an_events_attempts_are_paged(portal: Portal) -> None:
    endpoint = await portal.endpoint(events=["endpoint.test"])
    store = portal.harness.bridge.store
    event = Event(id=new_id("evt"), tenant="default", type="endpoint.test", job_id=None,
                  created_at=utcnow(), data={})
    await store.add_event(event, endpoint_id=endpoint["id"])
    for _ in range(50):  # 51 attempts of one event in all
        await store.replay_event(event, endpoint["id"], utcnow())
    first = await portal.page(f"/portal/events/{event.id}")
    assert first.count('data-label="Outcome"') == 50
    older = re.search(r'<a href="\?([^"]+)" rel="next">Older</a>', first)
    assert older
    rest = await portal.page(f"/portal/events/{event.id}?{html.unescape(older.group(1))}")
    assert rest.count('data-label="Outcome"') == 1 and ">Newest</a>" in rest
