"""The portal in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright) against a bridge, the provider simulators and a webhook receiver, each on a
loopback socket, with a real SQLite file. Webhooks are verified with ``standardwebhooks``;
accessibility is checked with axe-core in the same browser. A test that fails saves a
screenshot of its page in its tmp_path."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, Response, async_playwright, expect
from standardwebhooks.webhooks import Webhook

from bridge.models import parse_rfc3339, utcnow
from bridge.portal.sessions import issue_link
from tests.conftest import Harness, Received, Receiver, Sims, running_bridge

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="the portal's browser tests need Debian's chromium "
                             "(apt-get install -y chromium; .ci/run installs it)")

WAIT = 10_000  # ms: every wait in the browser is bounded
expect.set_options(timeout=WAIT)
FLYOVER = {"provider": "apixo", "model": "veo-3-1", "aspect_ratio": "16:9",
           "prompt": "A cinematic flyover of a futuristic city at sunrise"}
CANAL = {"provider": "venice", "model": "seedance-2-0-text-to-video", "duration_seconds": 5,
         "aspect_ratio": "16:9", "resolution": "720p",
         "prompt": "Commerce being conducted in the city of Venice, Italy"}
XSS = "<script>alert(1)</script>"


@dataclass
class Portal:
    harness: Harness
    page: Page
    receiver: Receiver

    @property
    def url(self) -> str:
        return self.harness.url

    async def sign_in(self, page: Page | None = None) -> Response:
        answer = await self.harness.client.post("/v1/portal-sessions")
        assert answer.status_code == 201, answer.text
        response = await (page or self.page).goto(answer.json()["url"])
        assert response is not None
        return response

    async def endpoint(self, **fields: Any) -> dict[str, Any]:
        answer = await self.harness.client.post(
            "/v1/endpoints", json={"url": f"{self.receiver.url}/hooks", **fields})
        assert answer.status_code == 201, answer.text
        made: dict[str, Any] = answer.json()
        return made

    async def csrf(self) -> str:
        token = await self.page.locator("input[name=csrf]").first.get_attribute("value")
        assert token
        return token


def verify(secret: str, received: Received) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM is not None
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, timeout=30_000)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def portal(tmp_path: Path, sims: Sims, receiver: Receiver, browser: Browser,
                 request: pytest.FixtureRequest) -> AsyncIterator[Portal]:
    """A signed-out page on a fresh bridge whose deliveries are retried only after an hour
    (a failed attempt stays failed while the test looks at it)."""
    async with running_bridge(tmp_path, sims, BRIDGE_ALLOW_PRIVATE_TARGETS="1",
                              BRIDGE_RETRY_SCHEDULE="1h") as harness:
        context = await browser.new_context(base_url=harness.url,
                                            viewport={"width": 1440, "height": 900})
        context.set_default_timeout(WAIT)
        page = await context.new_page()
        try:
            yield Portal(harness, page, receiver)
        finally:
            report = getattr(request.node, "report_call", None)
            if report is not None and report.failed:
                shot = tmp_path / "failure.png"
                await page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot of the failing page: {shot}")
            await context.close()


async def video_ready(page: Page, seconds: float = WAIT / 1000) -> None:
    """Wait until the page's video can play (polled from here: the page's CSP forbids the
    eval that ``wait_for_function`` would use for its polling)."""
    deadline = time.monotonic() + seconds
    while (state := await page.evaluate("() => document.querySelector('video').readyState")) < 2:
        assert time.monotonic() < deadline, f"the video's readyState is {state} after {seconds} s"
        await asyncio.sleep(0.1)


async def wait_for_attempt(harness: Harness, endpoint_id: str, status: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        found = (await harness.client.get(f"/v1/endpoints/{endpoint_id}/deliveries")).json()
        if any(d["status"] == status for d in found["data"]):
            return
        assert time.monotonic() < deadline, f"no {status} attempt after 15 s: {found}"
        await asyncio.sleep(0.1)


# -- signing in ---------------------------------------------------------------------------
async def test_a_magic_link_opens_the_jobs_list_with_a_session_cookie(portal: Portal) -> None:
    job = await portal.harness.create(FLYOVER)
    await portal.harness.wait(job["id"])
    response = await portal.sign_in()
    page = portal.page
    assert page.url == f"{portal.url}/portal"
    assert response.status == 200
    await expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    await expect(page.get_by_role("link", name=job["id"])).to_be_visible()
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    [cookie] = await page.context.cookies()
    assert cookie["name"] == "bridge_portal"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["secure"] is False  # the public URL is http://
    assert cookie["path"] == "/portal"
    assert 0 < cookie["expires"] - time.time() <= 12 * 3600
    # The filters narrow the list.
    await page.get_by_label("Status").select_option("failed")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_text("No jobs match these filters")).to_be_visible()
    await page.get_by_label("Status").select_option("succeeded")
    await page.get_by_label("Provider").select_option("apixo")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("link", name=job["id"])).to_be_visible()
    assert "status=succeeded" in page.url and "provider=apixo" in page.url


async def test_an_expired_forged_or_used_link_gets_a_clear_page(portal: Portal) -> None:
    page = portal.page
    expired = await issue_link(portal.harness.bridge, "default",
                               now=utcnow() - timedelta(hours=1))
    assert expired is not None
    response = await page.goto(expired[0])
    assert response is not None and response.status == 410
    await expect(page.get_by_text("This sign-in link has expired.")).to_be_visible()
    await expect(page.get_by_text("bridge portal-link --tenant NAME")).to_be_visible()

    good = (await portal.harness.client.post("/v1/portal-sessions")).json()["url"]
    forged = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    response = await page.goto(forged)
    assert response is not None and response.status == 400
    await expect(page.get_by_text("This sign-in link is not valid")).to_be_visible()
    assert await page.context.cookies() == []

    assert (await page.goto(good) or pytest.fail("no answer")).status == 200
    await page.context.clear_cookies()
    response = await page.goto(good)
    assert response is not None and response.status == 410
    await expect(page.get_by_text("This sign-in link has been used already")).to_be_visible()
    assert "Traceback" not in await page.content()


async def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(
    portal: Portal, browser: Browser,
) -> None:
    await portal.sign_in()
    copied = await portal.page.context.cookies()
    await portal.page.get_by_role("button", name="Sign out").click()
    await expect(portal.page.get_by_text("You are signed out.")).to_be_visible()
    other = await browser.new_context(base_url=portal.url)
    try:
        await other.add_cookies(copied)  # a copy taken before signing out
        page = await other.new_page()
        response = await page.goto("/portal")
        assert response is not None and response.status == 401
        await expect(page.get_by_text("Your session has ended.")).to_be_visible()
    finally:
        await other.close()


# -- jobs ---------------------------------------------------------------------------------
async def test_a_simulator_jobs_page_plays_its_video(portal: Portal) -> None:
    harness = portal.harness
    flyover = await harness.wait((await harness.create(FLYOVER))["id"])
    canal = await harness.wait((await harness.create(CANAL))["id"])
    assert flyover["status"] == canal["status"] == "succeeded"
    await portal.sign_in()
    page = portal.page
    for job, hosted_here in ((flyover, False), (canal, True)):
        await page.goto("/portal")
        await page.get_by_role("link", name=job["id"]).click()
        await expect(page.get_by_role("heading", name=f"Job {job['id']}")).to_be_visible()
        video = page.locator("video")
        assert await video.get_attribute("src") == job["result"]["video_url"]
        assert job["result"]["video_url"].startswith(f"{portal.url}/media/") is hosted_here
        await video_ready(page)
        assert await video.evaluate("v => v.duration") > 0
        # The timeline: each event with its JSON.
        timeline = page.locator("ol.timeline")
        await expect(timeline.get_by_role("link", name="job.succeeded")).to_be_visible()
        await timeline.get_by_text("JSON of").last.click()
        await expect(timeline.locator("pre").last).to_contain_text(f'"id": "{job["id"]}"')
        await expect(page.get_by_text(job["provider_job_id"], exact=True)).to_be_visible()
        await expect(page.get_by_role("button", name="Cancel this job")).to_have_count(0)


async def test_a_running_job_shows_its_new_status_without_a_reload(portal: Portal) -> None:
    harness, page = portal.harness, portal.page
    await portal.sign_in()
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    jobs = []
    for where in ("job", "/portal"):
        job = await harness.create({**FLYOVER, "prompt": "A slow flyover [sim:duration=2]"})
        jobs.append(job)
        await harness.wait(job["id"], {"running", "submitted"})
        path = f"/portal/jobs/{job['id']}" if where == "job" else where
        await page.goto(path)
        navigations.clear()
        status = page.locator("#live .status").first if path != "/portal" else page.get_by_role(
            "row").filter(has=page.get_by_role("link", name=job["id"])).locator(".status")
        await expect(status).not_to_have_text("succeeded")
        await expect(page.locator("[data-refresh]")).to_have_count(1)
        assert (await harness.wait(job["id"]))["status"] == "succeeded"
        await expect(status).to_have_text("succeeded", timeout=WAIT)
        await expect(page.locator("[data-refresh]")).to_have_count(0)  # done: no more fetches
        assert navigations == [], "the page was reloaded"
    await page.goto(f"/portal/jobs/{jobs[0]['id']}")
    await expect(page.locator("video")).to_have_count(1)


async def test_times_show_in_the_browsers_time_zone_with_utc_on_hover(
    portal: Portal, browser: Browser,
) -> None:
    job = await portal.harness.create(FLYOVER)
    context = await browser.new_context(base_url=portal.url, timezone_id="Asia/Kolkata",
                                        locale="en-GB")
    try:
        page = await context.new_page()
        await portal.sign_in(page)
        created = parse_rfc3339(job["created_at"])
        local = created + timedelta(hours=5, minutes=30)
        cell = page.get_by_role("row").filter(
            has=page.get_by_role("link", name=job["id"])).locator("time")
        await expect(cell).to_contain_text("GMT+5:30")
        text = await cell.text_content() or ""
        assert text == f"{local:%Y-%m-%d %H:%M} GMT+5:30", text
        assert await cell.get_attribute("title") == f"{created:%Y-%m-%d %H:%M:%S} UTC"
        assert await cell.get_attribute("datetime") == job["created_at"]
        await page.goto(f"/portal/jobs/{job['id']}")
        created_dd = page.locator("dl.details time").first
        await expect(created_dd).to_have_text(f"{local:%Y-%m-%d %H:%M:%S} GMT+5:30")
    finally:
        await context.close()


async def test_a_running_job_is_canceled_from_its_page(portal: Portal) -> None:
    job = await portal.harness.create({
        "provider": "infrai", "duration_seconds": 5, "aspect_ratio": "16:9",
        "prompt": "A long timelapse [sim:duration=60]"})
    await portal.harness.wait(job["id"], {"running"})
    await portal.sign_in()
    await portal.page.goto(f"/portal/jobs/{job['id']}")
    await portal.page.get_by_role("button", name="Cancel this job").click()
    await expect(portal.page.get_by_text("The job is canceled.")).to_be_visible()
    await expect(portal.page.locator(".status").first).to_have_text("canceled")
    assert (await portal.harness.job(job["id"]))["status"] == "canceled"


# -- endpoints ----------------------------------------------------------------------------
async def test_an_endpoint_made_in_the_portal_gets_its_test_event(portal: Portal) -> None:
    page = portal.page
    await portal.sign_in()
    await page.get_by_role("link", name="Endpoints").click()
    await page.get_by_role("link", name="New endpoint").click()
    await page.get_by_label("URL").fill(f"{portal.receiver.url}/hooks")
    await page.get_by_label("Description").fill("Order pipeline")
    await page.get_by_role("button", name="Create endpoint").click()
    secret = (await page.locator("#secret").text_content() or "").strip()
    assert secret.startswith("whsec_")
    await expect(page.get_by_role("button", name="Copy")).to_be_visible()
    endpoint_id = (await page.get_by_role("heading", level=1).text_content() or "").split()[-1]
    await page.get_by_role("button", name="Send test event").click()
    await expect(page.get_by_text("A test event (endpoint.test) is on its way.")).to_be_visible()
    [received] = await portal.receiver.wait_for(lambda got: len(got) >= 1)
    payload = verify(secret, received)
    assert payload["type"] == "endpoint.test"
    assert payload["data"]["endpoint_id"] == endpoint_id
    # The secret is shown once: the endpoint's own page no longer has it.
    await page.goto(f"/portal/endpoints/{endpoint_id}")
    await expect(page.locator("#secret")).to_have_count(0)
    assert secret not in await page.content()


async def test_an_endpoint_is_edited_then_deleted_after_a_confirmation(portal: Portal) -> None:
    endpoint = await portal.endpoint(description="before")
    page = portal.page
    await portal.sign_in()
    await page.goto(f"/portal/endpoints/{endpoint['id']}")
    await page.get_by_role("link", name="Edit").click()
    await page.get_by_label("URL").fill(f"{portal.receiver.url}/elsewhere")
    await page.get_by_label("Description").fill("after")
    await page.get_by_label("job.succeeded").check()
    await page.get_by_label("job.failed").check()
    await page.get_by_label("Headers").fill("X-Team: video\nX-Env: staging")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_text("Endpoint saved.")).to_be_visible()
    stored = (await portal.harness.client.get(f"/v1/endpoints/{endpoint['id']}")).json()
    assert stored["url"] == f"{portal.receiver.url}/elsewhere"
    assert stored["description"] == "after"
    assert stored["events"] == ["job.succeeded", "job.failed"]
    assert stored["headers"] == {"X-Team": "video", "X-Env": "staging"}
    # A bad value is refused on the form, naming the field; nothing is stored.
    await page.get_by_role("link", name="Edit").click()
    await page.get_by_label("Headers").fill("webhook-id: mine")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("alert")).to_contain_text("headers.webhook-id")
    assert (await portal.harness.client.get(
        f"/v1/endpoints/{endpoint['id']}")).json()["headers"] == stored["headers"]
    # Delete asks first.
    await page.goto(f"/portal/endpoints/{endpoint['id']}")
    await page.get_by_role("link", name="Delete…").click()
    await expect(page.get_by_role("heading", name=re.compile("Delete endpoint"))).to_be_visible()
    assert (await portal.harness.client.get(f"/v1/endpoints/{endpoint['id']}")).status_code == 200
    await page.get_by_role("button", name="Delete the endpoint").click()
    await expect(page.get_by_text("Endpoint deleted.")).to_be_visible()
    assert (await portal.harness.client.get(f"/v1/endpoints/{endpoint['id']}")).status_code == 404


async def test_event_type_checkboxes_sit_beside_their_labels(portal: Portal) -> None:
    page = portal.page
    await portal.sign_in()
    for width in (1440, 390):
        await page.set_viewport_size({"width": width, "height": 844})
        await page.goto("/portal/endpoints/new")
        labels = page.locator("fieldset label.check")
        assert await labels.count() >= 8
        for index in range(await labels.count()):
            box = await labels.nth(index).locator("input").bounding_box()
            text = await labels.nth(index).locator("code").bounding_box()
            assert box is not None and text is not None
            assert box["width"] < 30, f"checkbox {index} is {box['width']}px wide"
            assert box["x"] + box["width"] <= text["x"] < box["x"] + box["width"] + 20
            middle = box["y"] + box["height"] / 2
            assert text["y"] <= middle <= text["y"] + text["height"], f"checkbox {index}"
    await page.get_by_text("job.failed", exact=True).click()  # the label checks its box
    await expect(page.get_by_label("job.failed")).to_be_checked()


async def test_rotating_a_secret_signs_with_both_secrets(portal: Portal) -> None:
    endpoint = await portal.endpoint()
    page = portal.page
    await portal.sign_in()
    await page.goto(f"/portal/endpoints/{endpoint['id']}")
    await page.get_by_role("button", name="Rotate secret").click()
    new_secret = (await page.locator("#secret").text_content() or "").strip()
    assert new_secret.startswith("whsec_") and new_secret != endpoint["secret"]
    await expect(page.get_by_text("The previous secret keeps signing beside it")).to_be_visible()
    await page.get_by_role("button", name="Send test event").click()
    [received] = await portal.receiver.wait_for(lambda got: len(got) >= 1)
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    assert verify(endpoint["secret"], received)["type"] == "endpoint.test"
    assert verify(new_secret, received)["type"] == "endpoint.test"


# -- deliveries ---------------------------------------------------------------------------
async def test_a_failed_attempt_shows_its_response_code_and_its_replay_arrives(
    portal: Portal,
) -> None:
    portal.receiver.answer(500)
    portal.receiver.body = b"upstream is down"
    endpoint = await portal.endpoint()
    await portal.harness.client.post(f"/v1/endpoints/{endpoint['id']}/test")
    await wait_for_attempt(portal.harness, endpoint["id"], "failed")
    page = portal.page
    await portal.sign_in()
    await page.get_by_role("link", name="Deliveries").click()
    await page.get_by_label("Endpoint", exact=True).select_option(endpoint["id"])
    await page.get_by_label("Outcome").select_option("failed")
    await page.get_by_role("button", name="Filter").click()
    row = page.locator("table.deliveries tbody tr")
    await expect(row).to_have_count(1)
    await expect(row.locator(".code")).to_have_text("500")
    await expect(row).to_contain_text("upstream is down")
    await expect(row.locator(".duration")).to_contain_text(" ms")
    await expect(row.locator("time")).to_have_count(2)  # when, and the next retry
    bar = page.locator("svg.chart rect.bar-failed")  # this hour's failed attempt, drawn
    await expect(bar).to_have_count(1)
    box = await bar.bounding_box()
    assert box is not None and box["height"] > 10
    await row.get_by_role("button", name=re.compile("^Replay")).click()
    await expect(page.get_by_text("The event is queued to be sent again.")).to_be_visible()
    first, again = await portal.receiver.wait_for(lambda got: len(got) >= 2)
    assert again.headers["webhook-id"] == first.headers["webhook-id"]
    assert verify(endpoint["secret"], again)["type"] == "endpoint.test"


async def test_recover_since_a_time_sends_what_a_disabled_endpoint_missed(
    portal: Portal,
) -> None:
    portal.receiver.answer(503)
    endpoint = await portal.endpoint(events=["job.succeeded"])
    job = await portal.harness.wait((await portal.harness.create(FLYOVER))["id"])
    await wait_for_attempt(portal.harness, endpoint["id"], "failed")
    page = portal.page
    await portal.sign_in()
    await page.goto(f"/portal/endpoints/{endpoint['id']}")
    await page.get_by_role("button", name="Disable").click()
    await expect(page.locator(".notice")).to_contain_text("Endpoint disabled")
    assert (await portal.harness.client.get(
        f"/v1/endpoints/{endpoint['id']}")).json()["disabled"] is True
    await page.get_by_role("button", name="Enable").click()
    await expect(page.locator(".notice")).to_contain_text("Endpoint enabled")
    await page.get_by_role("button", name="Recover").click()  # since an hour ago
    await expect(page.get_by_text("The missed events are queued")).to_be_visible()
    received = await portal.receiver.wait_for(lambda got: len(got) >= 2)
    payload = verify(endpoint["secret"], received[-1])
    assert payload["type"] == "job.succeeded" and payload["data"]["id"] == job["id"]


# -- security -----------------------------------------------------------------------------
async def test_a_form_post_without_the_right_csrf_token_is_refused(portal: Portal) -> None:
    endpoint = await portal.endpoint()
    page = portal.page
    await portal.sign_in()
    await page.goto(f"/portal/endpoints/{endpoint['id']}/delete")
    await page.locator("input[name=csrf]").last.evaluate("input => input.value = 'forged'")
    await page.get_by_role("button", name="Delete the endpoint").click()
    await expect(page.get_by_role("heading", name="Refused")).to_be_visible()
    missing = await page.request.post(f"/portal/endpoints/{endpoint['id']}/delete",
                                       form={"other": "1"})
    assert missing.status == 403
    for action in ("disable", "rotate-secret", "test"):
        answer = await page.request.post(f"/portal/endpoints/{endpoint['id']}/{action}",
                                         form={"csrf": "wrong"})
        assert answer.status == 403, action
    stored = await portal.harness.client.get(f"/v1/endpoints/{endpoint['id']}")
    assert stored.status_code == 200 and stored.json()["disabled"] is False
    assert portal.receiver.received == []
    deliveries = await portal.harness.client.get(f"/v1/endpoints/{endpoint['id']}/deliveries")
    assert deliveries.json()["data"] == []


async def test_another_tenants_ids_answer_404(portal: Portal) -> None:
    harness = portal.harness
    key = await harness.bridge.create_api_key("acme")
    async with httpx.AsyncClient(base_url=harness.url, headers={"X-API-Key": key}) as acme:
        endpoint = (await acme.post("/v1/endpoints", json={
            "url": f"{portal.receiver.url}/acme"})).json()
        job = (await acme.post("/v1/jobs", json=FLYOVER)).json()
        deadline = time.monotonic() + 15
        while not (events := (await acme.get("/v1/events")).json()["data"]):
            assert time.monotonic() < deadline, "acme's job made no event in 15 s"
            await asyncio.sleep(0.1)
        event_id = events[0]["id"]
    page = portal.page
    await portal.sign_in()
    csrf = await portal.csrf()
    for path in (f"/portal/jobs/{job['id']}", f"/portal/endpoints/{endpoint['id']}",
                 f"/portal/endpoints/{endpoint['id']}/edit", f"/portal/events/{event_id}",
                 f"/portal/deliveries?endpoint={endpoint['id']}"):
        response = await page.goto(path)
        assert response is not None and response.status == 404, path
        await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    for path in (f"/portal/jobs/{job['id']}/cancel", f"/portal/endpoints/{endpoint['id']}/test",
                 f"/portal/endpoints/{endpoint['id']}/delete", f"/portal/events/{event_id}/replay"):
        answer = await page.request.post(path, form={"csrf": csrf})
        assert answer.status == 404, path
    await page.goto("/portal")
    await expect(page.get_by_role("link", name=job["id"])).to_have_count(0)
    received_by_acme = [r for r in portal.receiver.received if r.path == "/acme"]
    assert all(r.json["type"] != "endpoint.test" for r in received_by_acme)


async def test_what_a_user_typed_is_shown_as_text(portal: Portal) -> None:
    page = portal.page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    job = await portal.harness.create({**FLYOVER, "prompt": '<img src=x onerror="alert(2)">'})
    await portal.sign_in()
    await page.goto("/portal/endpoints/new")
    await page.get_by_label("URL").fill(f"{portal.receiver.url}/hooks")
    await page.get_by_label("Description").fill(XSS)
    await page.get_by_role("button", name="Create endpoint").click()
    await expect(page.get_by_text(XSS, exact=True)).to_be_visible()
    await page.goto("/portal/endpoints")
    await expect(page.get_by_role("cell", name=XSS, exact=True)).to_be_visible()
    await page.goto(f"/portal/jobs/{job['id']}")
    await expect(page.locator("pre").first).to_contain_text('<img src=x onerror=\\"alert(2)\\">')
    assert await page.locator("main script, main img").count() == 0
    assert dialogs == []


# -- accessible and usable ------------------------------------------------------------------
async def test_every_page_passes_axe_and_fits_a_phone_and_a_desktop(portal: Portal) -> None:
    harness = portal.harness
    portal.receiver.answer(500)
    endpoint = await portal.endpoint(description="Order pipeline")
    job = await harness.wait((await harness.create(FLYOVER))["id"])
    failed = await harness.wait((await harness.create({**FLYOVER, "prompt": "[sim:fail]"}))["id"])
    assert failed["error"] is not None
    await wait_for_attempt(harness, endpoint["id"], "failed")
    event_id = (await harness.client.get("/v1/events")).json()["data"][0]["id"]
    page = portal.page
    expired = await issue_link(harness.bridge, "default", now=utcnow() - timedelta(hours=1))
    assert expired is not None
    axe = Axe()
    signed_out = [expired[0], "/portal"]
    await portal.sign_in()
    pages = [
        "/portal", f"/portal/jobs/{job['id']}", f"/portal/jobs/{failed['id']}",
        "/portal/endpoints", "/portal/endpoints/new",
        f"/portal/endpoints/{endpoint['id']}", f"/portal/endpoints/{endpoint['id']}/edit",
        f"/portal/endpoints/{endpoint['id']}/delete", "/portal/deliveries",
        "/portal/deliveries?range=30d", f"/portal/deliveries?endpoint={endpoint['id']}",
        f"/portal/events/{event_id}", "/portal/event-types", "/portal?q=flyover",
    ]
    for path in [*pages, "signed out", *signed_out]:
        if path == "signed out":
            await page.context.clear_cookies()
            continue
        for width in (390, 1440):
            await page.set_viewport_size({"width": width, "height": 844})
            await page.goto(path)
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow}px too wide at {width}px"
            # No table scrolls sideways in its own box either: on a phone they are cards.
            sideways = await page.evaluate(
                "[...document.querySelectorAll('.table-wrap, .chart-box')]"
                ".filter(e => e.scrollWidth > e.clientWidth + 1).length")
            assert sideways == 0, f"{path}: {sideways} tables scroll sideways at {width}px"
            if width == 390:
                assert await page.evaluate("document.documentElement.scrollWidth") <= 390
            results = await axe.run(page)
            assert results.response["passes"], "axe checked nothing?"
            serious = [(v["id"], v["impact"], v["help"]) for v in results.response["violations"]
                       if v["impact"] in ("serious", "critical")]
            assert serious == [], f"{path} at {width}px: {serious}"
