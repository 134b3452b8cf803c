"""Provider answers are read strictly: JSON the bridge does not accept (a lone surrogate, NaN,
a repeated key, nesting too deep) is a provider error (retried where a 5xx would be; a submit's
outcome unknown) and is never stored, and a portal page shows what was stored before with a
lone surrogate instead of answering 500. Over real sockets, against the simulators, on both
stores."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.core import provider_client
from bridge.errors import ProviderError, SubmitOutcomeUnknown
from bridge.models import Event, JobError, JobStatus, new_id, utcnow
from bridge.providers.http import json_or_none, send
from bridge.serving import serve_in_background
from bridge.store import Change
from tests.conftest import Harness, Sims, running_bridge

FLYOVER = {"provider": "apixo", "model": "veo-3-1", "prompt": "A flyover of a city at sunrise"}
LONE = "broken \ud800 text"


@dataclass
class Portal:
    harness: Harness
    browser: httpx.AsyncClient  # signed in

    async def page(self, path: str) -> str:
        answer = await self.browser.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
        return answer.text


@contextlib.asynccontextmanager
async def signed_in(tmp_path: Path, sims: Sims, database: str) -> AsyncIterator[Portal]:
    """A bridge on ``database`` and a browser signed in to its portal."""
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=database,
                              BRIDGE_RETRY_SCHEDULE="1h") as harness:
        link = (await harness.client.post("/v1/portal-sessions")).json()["url"]
        async with httpx.AsyncClient(base_url=harness.url, timeout=10) as browser:
            signed = await browser.get("/portal/" + link.split("/portal/", 1)[1])
            assert signed.status_code == 303
            yield Portal(harness, browser)


@pytest.fixture
async def portal(tmp_path: Path, sims: Sims, database: str) -> AsyncIterator[Portal]:
    async with signed_in(tmp_path, sims, database) as made:
        yield made


def status_answer(**data: Any) -> dict[str, Any]:
    """An apixo statusTask envelope with ``data``."""
    return {"code": 200, "message": "success", "data": {"taskId": "task_x", **data}}


async def all_text(harness: Harness, job_id: str) -> str:
    """Everything the API shows of the job: itself and its events."""
    job = (await harness.client.get(f"/v1/jobs/{job_id}")).json()
    events = (await harness.client.get("/v1/events", params={"job_id": job_id})).json()
    return json.dumps([job, events])


# --------------------------------------------------
async def test_a_lone_surrogate_in_a_status_answer_is_a_retried_error_and_never_stored(
    portal: Portal,
) -> None:
    harness = portal.harness
    # The first status answer fails the task with a message holding a lone surrogate.
    harness.sims.apps["apixo"].state.faults.add(
        r"/statusTask/", status=200,
        body=status_answer(state="failed", failCode="X", failMsg=LONE))
    job = await harness.create(FLYOVER)
    done = await harness.wait(job["id"])
    assert done["status"] == "succeeded", done["error"]  # the next, sound answer counted
    text = await all_text(harness, job["id"])
    assert "\\ud800" not in text and "\ufffd" not in text and "broken" not in text
    page = await portal.page(f"/portal/jobs/{job['id']}")
    assert "succeeded" in page
    for event_id in re.findall(r'href="/portal/events/(evt_\w+)"', page):
        await portal.page(f"/portal/events/{event_id}")


async def test_what_was_stored_with_a_lone_surrogate_is_shown_not_a_500(portal: Portal) -> None:
    harness = portal.harness
    store = harness.bridge.store
    job = await harness.create({**FLYOVER, "prompt": "A slow one [sim:duration=60]"})

    def fail(current: Any) -> Change:
        now = utcnow()
        failed = current.evolve(status=JobStatus.FAILED, error=JobError("generation_failed", LONE),
                                completed_at=now, updated_at=now, next_check_at=None)
        return Change(failed, "job.failed")

    assert await store.update_job(job["id"], fail) is not None
    tenant = (await harness.client.get("/v1/me")).json()["tenant"]
    event = Event(id=new_id("evt"), tenant=tenant, type="endpoint.test", job_id=job["id"],
                  created_at=utcnow(), data={"message": LONE, LONE: [LONE]})
    await store.add_event(event)

    page = await portal.page(f"/portal/jobs/{job['id']}")
    assert "broken \ufffd text" in page
    events = re.findall(r'href="/portal/events/(evt_\w+)"', page)
    assert event.id in events and len(events) >= 2
    for event_id in events:
        shown = await portal.page(f"/portal/events/{event_id}")
        assert event_id != event.id or "broken \ufffd text" in shown
    await portal.page("/portal")
    await portal.page("/portal/deliveries")


async def strict(request: Request) -> Response:
    bodies = {"surrogate": b'{"id": "x \\ud800"}', "nan": b'{"cost": NaN}',
              "twice": b'{"id": "a", "id": "b"}', "deep": b"[" * 65 + b"]" * 65}
    return Response(bodies[request.path_params["kind"]], media_type="application/json")


STRICT = Starlette(routes=[Route("/{kind}", strict, methods=["GET", "POST"])])


@pytest.mark.parametrize("kind", ["surrogate", "nan", "twice", "deep"])
async def test_a_refused_answer_is_retryable_and_a_refused_submit_answer_is_unknown(
    kind: str,
) -> None:
    async with provider_client() as client, serve_in_background(STRICT) as url:
        with pytest.raises(ProviderError) as status:
            await send(client, "GET", f"{url}/{kind}", provider="p", operation="/status")
        with pytest.raises(SubmitOutcomeUnknown) as submit:
            await send(client, "POST", f"{url}/{kind}", provider="p", operation="/submit",
                       submit=True)
    assert not isinstance(status.value, SubmitOutcomeUnknown)
    assert status.value.retryable and status.value.code == "provider_unavailable"
    assert status.value.message.startswith("p: the answer is JSON the bridge does not accept")
    assert "does not accept" in submit.value.message


async def test_an_error_answer_with_a_lone_surrogate_keeps_its_status_not_its_text() -> None:
    async def refusing(request: Request) -> Response:
        return Response(b'{"error": {"message": "no \\udfff"}}', status_code=400,
                        media_type="application/json")

    app = Starlette(routes=[Route("/", refusing)])
    async with provider_client() as client, serve_in_background(app) as url:
        response = await send(client, "GET", url + "/", provider="p", operation="/")
    assert response.status_code == 400
    assert json_or_none(response) is None
