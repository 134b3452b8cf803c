"""``bridge demo``: the whole flow on one machine.

Starts the four provider simulators, the bridge and a webhook receiver on loopback sockets
in this process, with a fresh SQLite file in a temporary directory. Registers the receiver
as an endpoint, submits one job per provider through the public API, and shows every event
as the bridge records it, every webhook as it arrives (verified with the ``standardwebhooks``
library, as a user's receiver would) and the jobs' progress; then checks that each finished
video can be fetched. Exits 0 only when all four jobs succeeded and each one's
``job.succeeded`` webhook arrived and verified.

With ``stay`` (the default at a terminal), the bridge then keeps serving for that long and
the demo prints a sign-in link to its portal: the database is a temporary file that goes
when the demo ends, and so does everything the link shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.app import create_app
from bridge.core import Bridge
from bridge.models import Event
from bridge.portal.sessions import MAX_LINK_TTL, MIN_LINK_TTL, issue_link
from bridge.serving import bind, serve_in_background, until_interrupted, url_of
from bridge.settings import Settings
from bridge.simulators import FACTORIES, api_key, bridge_env
from bridge.simulators.base import SimSettings

DEMO_KEY = "brk_demo_local_only_key"

JOBS: list[dict[str, Any]] = [
    {"provider": "airforce", "model": "wan-2.6", "prompt": "A red fox darting across snowy hills",
     "duration_seconds": 8, "aspect_ratio": "16:9", "resolution": "720p", "audio": True},
    {"provider": "infrai", "prompt": "A timelapse of a city skyline at dusk",
     "duration_seconds": 5, "aspect_ratio": "16:9", "resolution": "1080p"},
    {"provider": "apixo", "model": "veo-3-1",
     "prompt": "A cinematic flyover of a futuristic city at sunrise", "aspect_ratio": "16:9"},
    {"provider": "venice", "model": "seedance-2-0-text-to-video",
     "prompt": "Commerce being conducted in the city of Venice, Italy", "duration_seconds": 5,
     "aspect_ratio": "16:9", "resolution": "720p"},
]


class Console:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def event(self, event: Event) -> None:
        data = event.data
        progress = data.get("progress")
        extra = f" {progress}%" if event.type == "job.progress" and progress is not None else ""
        if event.type == "job.succeeded":
            extra = f" -> {(data.get('result') or {}).get('video_url')}"
        elif event.type == "job.failed":
            extra = f" ({(data.get('error') or {}).get('code')})"
        self.line(f"event {event.type:<14} {data.get('provider', ''):<8} {data.get('id')} "
                  f"seq={data.get('sequence')}{extra}")


class Receiver:
    """What a user's webhook endpoint does: verify the signature, then take the event."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.secret = ""
        self.verified: list[dict[str, Any]] = []
        self.rejected = 0
        self.app = Starlette(routes=[Route("/webhooks", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> JSONResponse:
        body = await request.body()
        try:
            event = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            self.rejected += 1
            self.console.line(f"webhook  REJECTED: {exc}")
            return JSONResponse({"error": "bad signature"}, status_code=400)
        self.verified.append(event)
        data = event.get("data") or {}
        self.console.line(f"webhook  {event['type']:<14} {data.get('provider', ''):<8} "
                          f"{data.get('id')} verified (webhook-id {request.headers['webhook-id']})")
        return JSONResponse({"received": True})

    def succeeded(self, job_id: str) -> bool:
        return any(e["type"] == "job.succeeded" and e["data"]["id"] == job_id
                   for e in self.verified)


async def run_demo(wait_seconds: float = 180.0, stay_seconds: float = 0.0) -> int:
    for name in ("bridge", "uvicorn", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bridge-demo-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            env = {
                "BRIDGE_DATABASE": str(Path(tmp) / "bridge.db"),
                "BRIDGE_MEDIA_DIR": str(Path(tmp) / "media"),
                "BRIDGE_API_KEY": DEMO_KEY,
                # The demo's receiver listens on loopback, which webhooks may not reach
                # otherwise; retries come quickly so a hiccup costs seconds, not minutes.
                "BRIDGE_ALLOW_PRIVATE_TARGETS": "1",
                "BRIDGE_RETRY_SCHEDULE": "1s,2s,5s,10s",
            }
            for name, make in FACTORIES.items():
                app = make(SimSettings(api_key=api_key(name), duration=(6.0, 12.0),
                                       queue_delay=1.0))
                url = await stack.enter_async_context(serve_in_background(app))
                env.update(bridge_env({name: url}))
                console.line(f"simulator {name:<8} on {url}")
            receiver = Receiver(console)
            receiver_url = await stack.enter_async_context(serve_in_background(receiver.app))
            console.line(f"receiver           on {receiver_url}/webhooks")
            sock = bind()
            env["BRIDGE_PUBLIC_URL"] = url_of(sock)
            settings = Settings.from_env(env)
            app = create_app(settings)
            base = await stack.enter_async_context(serve_in_background(app, sock=sock))
            bridge: Bridge = app.state.bridge
            bridge.tracker.listeners.append(console.event)
            console.line(f"bridge on {base} (database {env['BRIDGE_DATABASE']})")
            client = await stack.enter_async_context(httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {DEMO_KEY}"}, timeout=30))
            endpoint = await client.post("/v1/endpoints", json={
                "url": f"{receiver_url}/webhooks", "description": "bridge demo receiver"})
            if endpoint.status_code != 201:
                console.line(f"FAILED to register the receiver: {endpoint.status_code} "
                             f"{endpoint.text}")
                return 1
            receiver.secret = endpoint.json()["secret"]
            console.line(f"endpoint {endpoint.json()['id']} registered for every event type "
                         "but job.progress")
            code = await _run_jobs(client, console, receiver, wait_seconds)
            await _stay(bridge, base, env["BRIDGE_DATABASE"], console, stay_seconds)
            return code


async def _stay(bridge: Bridge, base: str, database: str, console: Console,
                stay_seconds: float) -> None:
    """Keep serving for ``stay_seconds`` (Ctrl-C ends it sooner), saying how to reach the
    bridge meanwhile: its URL and API key, and a portal link; without a stay, say how."""
    if stay_seconds <= 0:
        console.line("stay     run `bridge demo --stay 10m` to keep this bridge serving after "
                     "the jobs and open its portal (its database goes when the demo ends)")
        return
    ttl = min(max(timedelta(seconds=stay_seconds), MIN_LINK_TTL), MAX_LINK_TTL)
    link = await issue_link(bridge, "default", ttl)
    assert link is not None  # the demo's API key made the tenant
    console.line(f"bridge   serves on {base} with the API key {DEMO_KEY}; to try the README's "
                 "walkthrough against it, run this in another terminal first:")
    print(f"\n    export B={base} BRIDGE_API_KEY={DEMO_KEY} BRIDGE_DATABASE={database}\n",
          flush=True)
    console.line("portal   open this link in a browser to see this demo's jobs, videos, "
                 "endpoints and deliveries (it signs in once):")
    print(f"\n    {link[0]}\n", flush=True)
    console.line(f"stay     serving for {stay_seconds / 60:g} more minutes (Ctrl-C stops it "
                 "sooner); the demo's database goes when it stops")
    await until_interrupted(stay_seconds)
    console.line("stay     stopping; the demo's database goes with it")


async def _run_jobs(client: httpx.AsyncClient, console: Console, receiver: Receiver,
                    wait_seconds: float) -> int:
    ids: dict[str, str] = {}
    for body in JOBS:
        answer = await client.post("/v1/jobs", json=body)
        if answer.status_code != 202:
            console.line(f"FAILED to create the {body['provider']} job: "
                         f"{answer.status_code} {answer.text}")
            return 1
        job = answer.json()
        ids[body["provider"]] = job["id"]
        console.line(f"created {job['id']} on {job['provider']} (tracking: {job['tracking']})")

    deadline = time.monotonic() + wait_seconds
    jobs: dict[str, dict[str, Any]] = {}
    shown = ""
    while time.monotonic() < deadline:
        for provider, job_id in ids.items():
            jobs[provider] = (await client.get(f"/v1/jobs/{job_id}")).json()
        status = "  ".join(
            f"{p}: {j['status']}" + (f" {j['progress']}%" if j.get("progress") is not None
                                     and j["status"] == "running" else "")
            for p, j in jobs.items())
        status += f"  | webhooks verified: {len(receiver.verified)}"
        if status != shown:
            console.line(f"progress  {status}")
            shown = status
        finished = all(j["status"] in ("succeeded", "failed", "canceled", "expired")
                       for j in jobs.values())
        failed = any(j["status"] != "succeeded" for j in jobs.values())
        if finished and (failed or all(receiver.succeeded(i) for i in ids.values())):
            break
        await asyncio.sleep(1.0)

    ok = True
    for provider, job in jobs.items():
        if job["status"] != "succeeded":
            console.line(f"FAILED   {provider}: {job['status']} {job.get('error')}")
            ok = False
            continue
        url = job["result"]["video_url"]
        video = await client.get(url)
        is_mp4 = video.status_code == 200 and video.content[4:8] == b"ftyp"
        ok = ok and is_mp4
        console.line(f"{'ok' if is_mp4 else 'FAILED':<8} {provider}: video {len(video.content)} "
                     f"bytes from {url}")
        if not receiver.succeeded(job["id"]):
            console.line(f"FAILED   {provider}: no verified job.succeeded webhook arrived")
            ok = False
    if receiver.rejected:
        console.line(f"FAILED   {receiver.rejected} webhooks did not verify")
        ok = False
    if ok:
        console.line(f"all four jobs succeeded; {len(receiver.verified)} webhooks arrived and "
                     "verified, each job's job.succeeded among them")
        return 0
    if time.monotonic() >= deadline:
        console.line(f"timed out after {wait_seconds:.0f}s")
    print("bridge demo: not every job succeeded", file=sys.stderr)
    return 1
