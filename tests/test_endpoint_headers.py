"""An endpoint's own headers never include one of a single hop (``Connection``, ``Proxy-*``,
...), of the body's encoding or one bridge sets: refused with 422 naming ``headers.<Name>`` on
create and update, by the API and the portal form, and left out of every delivery of what was
kept before. On both stores."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from bridge.models import Endpoint
from tests.conftest import Harness, Receiver, Sims, running_bridge

REFUSED = ["Connection", "keep-alive", "Proxy-Authorization", "Proxy-Connection", "TE",
           "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Encoding",
           "Content-Length", "webhook-id"]


@pytest.fixture
async def harness(tmp_path: Path, sims: Sims, database: str) -> AsyncIterator[Harness]:
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database,
                              BRIDGE_RETRY_SCHEDULE="1h") as running:
        yield running


async def test_the_api_refuses_each_on_create_and_update_naming_it(
    harness: Harness, receiver: Receiver,
) -> None:
    made = await harness.client.post("/v1/endpoints", json={
        "url": f"{receiver.url}/hooks", "headers": {"X-Team": "video"}})
    assert made.status_code == 201, made.text
    endpoint_id = made.json()["id"]
    for name in REFUSED:
        headers = {"X-Team": "video", name: "x"}
        for method, path in (("POST", "/v1/endpoints"), ("PATCH", f"/v1/endpoints/{endpoint_id}")):
            answer = await harness.client.request(method, path, json={
                "url": f"{receiver.url}/other", "headers": headers})
            assert answer.status_code == 422, (method, name, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "invalid_request"
            assert error["field"] == f"headers.{name}"
            assert error["message"].startswith(f"{name} is ")
    kept = (await harness.client.get(f"/v1/endpoints/{endpoint_id}")).json()
    assert kept["headers"] == {"X-Team": "video"} and kept["url"] == f"{receiver.url}/hooks"
    assert len((await harness.client.get("/v1/endpoints")).json()["data"]) == 1


async def test_the_portal_form_refuses_them_naming_the_field(
    harness: Harness, receiver: Receiver,
) -> None:
    link = (await harness.client.post("/v1/portal-sessions")).json()["url"]
    async with httpx.AsyncClient(base_url=harness.url, timeout=10) as browser:
        assert (await browser.get("/portal/" + link.split("/portal/", 1)[1])).status_code == 303
        form = (await browser.get("/portal/endpoints/new")).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf
        for name in ("Connection", "Proxy-Authorization", "Content-Encoding"):
            answer = await browser.post("/portal/endpoints", data={
                "csrf": csrf.group(1), "url": f"{receiver.url}/hooks", "max_concurrency": "4",
                "headers": f"X-Team: video\n{name}: x"})
            assert answer.status_code == 422, (name, answer.text[:300])
            assert f"(field: <code>headers.{name}</code>)" in answer.text
    assert (await harness.client.get("/v1/endpoints")).json()["data"] == []


async def test_one_kept_from_before_is_left_out_of_every_delivery(
    harness: Harness, receiver: Receiver,
) -> None:
    made = (await harness.client.post("/v1/endpoints", json={
        "url": f"{receiver.url}/hooks", "events": ["endpoint.test"]})).json()
    tenant = (await harness.client.get("/v1/me")).json()["tenant"]

    def with_old_headers(endpoint: Endpoint) -> Endpoint:  # as registered before the check
        return dataclasses.replace(endpoint, headers={
            "Keep-Alive": "timeout=1", "Proxy-Authorization": "Basic eDp5",
            "Content-Encoding": "gzip", "Upgrade": "h2c", "X-Team": "video"})

    assert await harness.bridge.store.update_endpoint(made["id"], tenant, with_old_headers)
    sent = await harness.client.post(f"/v1/endpoints/{made['id']}/test")
    assert sent.status_code in (200, 202), sent.text
    got = (await receiver.wait_for(lambda received: len(received) >= 1))[0]
    assert got.headers["x-team"] == "video"
    for name in ("keep-alive", "proxy-authorization", "content-encoding", "upgrade"):
        assert name not in got.headers, name
    assert Webhook(made["secret"]).verify(got.body, got.headers)["type"] == "endpoint.test"
