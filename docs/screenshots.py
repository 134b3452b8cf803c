"""Regenerate the portal screenshots in docs/ (``python docs/screenshots.py``).

Runs what tests/test_portal.py runs: the four provider simulators, two webhook receivers (one
answers 200, one 500) and a bridge, all on loopback in this process, with a fresh database in
a temporary directory; makes a few jobs and endpoints, signs in to the portal with a magic
link, and photographs its pages in headless Chromium (Debian's ``chromium``, through
Playwright).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Page, async_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.app import create_app
from bridge.core import Bridge
from bridge.models import Event, new_id, utcnow
from bridge.serving import bind, serve_in_background, url_of
from bridge.settings import Settings
from bridge.simulators import airforce, apixo, infrai, venice
from bridge.simulators.base import SimSettings

DOCS = Path(__file__).resolve().parent
KEY = "brk_screenshots_local_key"
SIMULATORS = {"airforce": airforce.create_app, "infrai": infrai.create_app,
              "apixo": apixo.create_app, "venice": venice.create_app}
JOBS: list[dict[str, Any]] = [
    {"provider": "airforce", "model": "wan-2.6", "prompt": "A red fox darting across snowy hills",
     "duration_seconds": 8, "aspect_ratio": "16:9", "resolution": "720p"},
    {"provider": "infrai", "prompt": "A timelapse of a city skyline at dusk",
     "duration_seconds": 5, "aspect_ratio": "16:9", "resolution": "1080p"},
    {"provider": "apixo", "model": "veo-3-1",
     "prompt": "A cinematic flyover of a futuristic city at sunrise", "aspect_ratio": "16:9",
     "metadata": {"order": 42}},
    {"provider": "venice", "model": "seedance-2-0-text-to-video",
     "prompt": "Commerce being conducted in the city of Venice, Italy", "duration_seconds": 5,
     "aspect_ratio": "16:9", "resolution": "720p"},
    {"provider": "apixo", "model": "veo-3-1", "prompt": "A storm over the sea [sim:fail]"},
]


def receiver(status: int) -> Starlette:
    async def receive(request: Request) -> Response:
        await request.body()
        return Response(b'{"ok": true}' if status < 400 else b"upstream database is down",
                        status_code=status, media_type="application/json")

    return Starlette(routes=[Route("/webhooks", receive, methods=["POST"])])


async def wait_for_jobs(client: httpx.AsyncClient, ids: list[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = [(await client.get(f"/v1/jobs/{job_id}")).json() for job_id in ids]
        if all(job["status"] in ("succeeded", "failed", "canceled", "expired") for job in jobs):
            return
        await asyncio.sleep(0.5)
    raise SystemExit("the jobs did not finish within 60 s")


async def history(bridge: Bridge, good: str, bad: str) -> None:
    """A day of earlier test events to both endpoints (their attempts are made now, counted
    in the hour each was queued), so that the charts have something to show."""
    now = utcnow()
    for hours in range(23, 0, -1):
        for target, count in ((good, 2 + hours % 4), (bad, 1 if hours % 5 else 3)):
            for minute in range(count):
                at = now - timedelta(hours=hours, minutes=minute * 7)
                await bridge.store.add_event(Event(
                    id=new_id("evt"), tenant="default", type="endpoint.test", job_id=None,
                    created_at=at, data={"message": "an earlier test event"}),
                    endpoint_id=target)
    bridge.deliverer.wake()


async def shoot(page: Page, url: str, name: str, *, width: int = 1280, height: int = 800,
                video: bool = False) -> None:
    await page.set_viewport_size({"width": width, "height": height})
    await page.goto(url)
    if video:
        deadline = time.monotonic() + 15  # polled from here: the CSP forbids eval
        while await page.evaluate("() => document.querySelector('video').readyState") < 2:
            assert time.monotonic() < deadline, "the video did not load in 15 s"
            await asyncio.sleep(0.1)
    path = DOCS / f"portal-{name}.png"
    await page.screenshot(path=str(path))
    print(f"wrote {path.relative_to(DOCS.parent)} ({path.stat().st_size // 1024} KiB)")


async def main() -> int:
    chromium = shutil.which("chromium")
    if chromium is None:
        print("needs Debian's chromium: apt-get install -y chromium", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bridge-shots-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            env = {"BRIDGE_DATABASE": f"{tmp}/bridge.db", "BRIDGE_MEDIA_DIR": f"{tmp}/media",
                   "BRIDGE_API_KEY": KEY, "BRIDGE_ALLOW_PRIVATE_TARGETS": "1",
                   "BRIDGE_RETRY_SCHEDULE": "1h"}
            for name, make in SIMULATORS.items():
                app = make(SimSettings(api_key=f"sim-{name}", duration=(0.5, 1.0),
                                       queue_delay=0.1))
                url = await stack.enter_async_context(serve_in_background(app))
                env[f"BRIDGE_{name.upper()}_API_KEY"] = f"sim-{name}"
                env[f"BRIDGE_{name.upper()}_BASE_URL"] = url + (
                    "/api/v1" if name == "venice" else "")
            good = await stack.enter_async_context(serve_in_background(receiver(200)))
            bad = await stack.enter_async_context(serve_in_background(receiver(500)))
            sock = bind()
            env["BRIDGE_PUBLIC_URL"] = url_of(sock)
            app = create_app(Settings.from_env(env))
            base = await stack.enter_async_context(serve_in_background(app, sock=sock))
            client = await stack.enter_async_context(httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=30))
            staging = (await client.post("/v1/endpoints", json={
                "url": f"{bad}/webhooks", "description": "Staging (its database is down)",
                "max_concurrency": 2})).json()
            endpoint = (await client.post("/v1/endpoints", json={
                "url": f"{good}/webhooks", "description": "Order pipeline",
                "events": ["job.succeeded", "job.failed"],
                "headers": {"X-Team": "video"}})).json()
            await history(app.state.bridge, endpoint["id"], staging["id"])
            ids = [(await client.post("/v1/jobs", json=body)).json()["id"] for body in JOBS]
            await wait_for_jobs(client, ids)
            await client.post(f"/v1/endpoints/{endpoint['id']}/test")
            await asyncio.sleep(2.0)  # the deliveries are made
            link = (await client.post("/v1/portal-sessions")).json()["url"]

            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=chromium)
                # Times are shown in the browser's zone: Berlin's, to show it is not UTC.
                context = await browser.new_context(timezone_id="Europe/Berlin")
                page = await context.new_page()
                await page.goto(link)
                await shoot(page, f"{base}/portal", "jobs")
                await shoot(page, f"{base}/portal/jobs/{ids[2]}", "job", height=1000,
                            video=True)
                await shoot(page, f"{base}/portal/endpoints", "endpoints", width=1440,
                            height=400)
                await shoot(page, f"{base}/portal/endpoints/{endpoint['id']}", "endpoint",
                            height=1200)
                await shoot(page, f"{base}/portal/deliveries", "deliveries", width=1440,
                            height=1100)
                await shoot(page, f"{base}/portal/endpoints/new", "endpoint-form",
                            height=900)
                await shoot(page, f"{base}/portal", "phone", width=390, height=844)
                await shoot(page, f"{base}/portal/deliveries", "phone-deliveries", width=390,
                            height=1400)
                await browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
