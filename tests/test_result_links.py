"""A provider's result link is kept only if it is https (http too with
BRIDGE_ALLOW_PRIVATE_TARGETS=1): any other (``javascript:``, ``data:``, ``file:``) fails the job
with ``invalid_result`` and is never stored or sent in a webhook, and the portal never puts a
link that is not http(s) into an href. Against the apixo simulator, on both stores."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from bridge.models import JobStatus, utcnow
from bridge.store import Change
from tests.conftest import Receiver, Sims, running_bridge
from tests.test_provider_json import FLYOVER, Portal, all_text, signed_in, status_answer


@pytest.fixture
async def portal(tmp_path: Path, sims: Sims, database: str) -> AsyncIterator[Portal]:
    async with signed_in(tmp_path, sims, database) as made:
        yield made


def success_with(url: str) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return status_answer(state="success", resultJson=json.dumps({"resultUrls": [url]}),
                         createTime=now - 1000, completeTime=now)


BAD_LINKS = ["javascript:alert(1)", "JavaScript:alert(document.cookie)",
             "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
             "file:///etc/passwd", "java\tscript:alert(1)", "//cdn.example.com/v.mp4",
             "https://"]


@pytest.mark.parametrize("link", BAD_LINKS)
async def test_a_result_link_that_is_not_https_fails_the_job_and_is_never_sent(
    portal: Portal, receiver: Receiver, link: str,
) -> None:
    harness = portal.harness
    made = await harness.client.post("/v1/endpoints", json={
        "url": f"{receiver.url}/hooks", "events": ["job.succeeded", "job.failed"]})
    assert made.status_code == 201, made.text
    harness.sims.apps["apixo"].state.faults.add(r"/statusTask/", status=200,
                                                body=success_with(link), times=20)
    job = await harness.create(FLYOVER)
    done = await harness.wait(job["id"])
    assert done["status"] == "failed"
    assert done["result"] is None
    assert done["error"]["code"] == "invalid_result"
    assert done["error"]["message"].startswith("apixo's link to the video ")
    assert "not kept or sent on" in done["error"]["message"]
    received = await receiver.wait_for(lambda got: len(got) >= 1)
    webhook = Webhook(made.json()["secret"])
    for got in received:
        payload = webhook.verify(got.body, got.headers)
        assert payload["type"] == "job.failed"
        assert link not in got.body.decode() and json.dumps(link) not in got.body.decode()
    assert json.dumps(link)[1:-1] not in await all_text(harness, job["id"])
    page = await portal.page(f"/portal/jobs/{job['id']}")
    assert "invalid_result" in page and "Open the video" not in page


async def test_a_plain_http_link_is_kept_only_where_private_targets_are_allowed(
    tmp_path: Path, sims: Sims,
) -> None:
    # The simulators' links are http://127.0.0.1/...: what the flag allows, and only it.
    async with running_bridge(tmp_path, sims, BRIDGE_ALLOW_PRIVATE_TARGETS="0") as harness:
        job = await harness.wait((await harness.create(FLYOVER))["id"])
    assert job["status"] == "failed" and job["result"] is None
    assert job["error"]["code"] == "invalid_result"
    assert "plain http, not https" in job["error"]["message"]
    (tmp_path / "on").mkdir()
    async with running_bridge(tmp_path / "on", sims) as harness:
        job = await harness.wait((await harness.create(FLYOVER))["id"])
    assert job["status"] == "succeeded"
    assert job["result"]["video_url"].startswith("http://127.0.0.1:")


async def test_an_https_link_is_kept(portal: Portal) -> None:
    link = "https://cdn.example.com/videos/task_1.mp4?sig=abc"
    portal.harness.sims.apps["apixo"].state.faults.add(r"/statusTask/", status=200,
                                                       body=success_with(link), times=20)
    job = await portal.harness.wait((await portal.harness.create(FLYOVER))["id"])
    assert job["status"] == "succeeded" and job["result"]["video_url"] == link
    page = await portal.page(f"/portal/jobs/{job['id']}")
    assert 'href="https://cdn.example.com/videos/task_1.mp4?sig=abc"' in page


async def test_the_portal_never_links_a_stored_link_that_is_not_http(portal: Portal) -> None:
    harness = portal.harness
    job = await harness.create({**FLYOVER, "prompt": "A slow one [sim:duration=60]"})

    def succeed(current: Any) -> Change:  # as a job kept before links were checked
        now = utcnow()
        return Change(current.evolve(status=JobStatus.SUCCEEDED, completed_at=now, updated_at=now,
                                     result={"video_url": "javascript:alert(1)"},
                                     next_check_at=None), "job.succeeded")

    assert await harness.bridge.store.update_job(job["id"], succeed) is not None
    page = await portal.page(f"/portal/jobs/{job['id']}")
    assert 'href="javascript:' not in page and 'src="javascript:' not in page
    assert "Open the video" not in page
