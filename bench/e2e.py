"""From an apixo callback to a verified webhook at the receiver: latency at a steady rate.

    python bench/e2e.py [--rate 100] [--duration 30] [--confirm 1] [--no-fail]

Everything on 127.0.0.1, in three processes: the apixo simulator and the bridge (uvicorn,
``BRIDGE_CONFIRM_CALLBACKS=1`` by default, as shipped) each in their own, started by
bench/ingest.py's helpers; this process plays apixo calling back and also runs the user's
receiver (uvicorn), which verifies every webhook with the ``standardwebhooks`` library.

Before the clock starts: ``rate x duration`` apixo tasks are created at the simulator (done at
once) and a running apixo job for each is stored in the bridge's fresh database; the receiver
is registered as an endpoint for ``job.succeeded``. Then, open loop, one callback is sent
every ``1/rate`` seconds (each to a different job, on its own schedule whatever the answers
do). A job's latency runs from the moment its callback is sent to the moment the receiver
has verified its ``job.succeeded`` webhook: the callback's confirmation with the provider,
the job's update and event, the outbox, the signed delivery. A webhook that has not arrived
10 s after the last callback is lost. Exits 1 when p99 > 25 ms, anything was lost or any
callback failed, unless ``--no-fail``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

SCRIPT_DIR = Path(os.path.abspath(__file__)).parent
sys.path.insert(0, str(SCRIPT_DIR))
sys.path.insert(0, str(SCRIPT_DIR.parent))

import ingest  # noqa: E402  (bench/ingest.py: child processes and job preparation)

TARGET_P99_MS = 25.0
GRACE = 10.0  # seconds to wait for stragglers after the last callback


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run(args: argparse.Namespace) -> int:
    import aiohttp
    import httpx
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from bridge.serving import serve_in_background
    from bridge.signing import Signer

    count = int(args.rate * args.duration)
    arrived: dict[str, float] = {}
    rejected = 0
    secret = {"value": ""}
    all_arrived = asyncio.Event()

    async def receive(request: Request) -> Response:
        nonlocal rejected
        body = await request.body()
        try:
            event = Webhook(secret["value"]).verify(body, dict(request.headers))
        except WebhookVerificationError:
            rejected += 1
            return Response(status_code=400)
        arrived.setdefault(event["data"]["id"], time.perf_counter())
        if len(arrived) >= count:
            all_arrived.set()
        return Response(status_code=204)

    receiver_app = Starlette(routes=[Route("/hook", receive, methods=["POST"])])
    sim = await ingest.spawn("apixo simulator", ["--serve-sim"], args.child_lifetime)
    try:
        with tempfile.TemporaryDirectory(prefix="bridge-bench-e2e-") as workdir:
            pairs = await ingest.prepare_jobs(workdir, sim.url, count)
            mode = "on" if args.confirm else "off"
            server = await ingest.spawn(f"bridge ({mode})", [
                "--serve", mode, "--workdir", workdir, "--sim-url", sim.url],
                args.child_lifetime)
            try:
                async with serve_in_background(receiver_app) as receiver_url, \
                        httpx.AsyncClient(base_url=server.url, timeout=10, headers={
                            "Authorization": f"Bearer {ingest.BRIDGE_API_KEY}"}) as api:
                    made = await api.post("/v1/endpoints", json={
                        "url": f"{receiver_url}/hook", "events": ["job.succeeded"]})
                    made.raise_for_status()
                    secret["value"] = made.json()["secret"]
                    signer = Signer(ingest.BRIDGE_SECRET)
                    plan = [(job_id, f"{server.url}/callbacks/apixo/"
                             f"{signer.callback_token('apixo', job_id)}",
                             ingest.callback_body(task_id)) for job_id, task_id in pairs]
                    sent: dict[str, float] = {}
                    failures: list[str] = []
                    cpu = {"server": ingest.cpu_seconds(server.proc.pid),
                           "bench": time.process_time()}
                    async with aiohttp.ClientSession() as session:

                        async def call_back(job_id: str, url: str, body: bytes) -> None:
                            sent[job_id] = time.perf_counter()
                            try:
                                async with session.post(url, data=body) as answer:
                                    await answer.read()
                                    if answer.status != 200:
                                        failures.append(f"HTTP {answer.status}")
                            except aiohttp.ClientError as exc:
                                failures.append(type(exc).__name__)

                        start = time.perf_counter()
                        tasks = []
                        for index, (job_id, url, body) in enumerate(plan):
                            delay = start + index / args.rate - time.perf_counter()
                            if delay > 0:
                                await asyncio.sleep(delay)
                            tasks.append(asyncio.create_task(call_back(job_id, url, body)))
                        await asyncio.gather(*tasks)
                        elapsed = time.perf_counter() - start
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(all_arrived.wait(), GRACE)
                    cpu = {"server": (ingest.cpu_seconds(server.proc.pid) - cpu["server"])
                           / elapsed,
                           "bench": (time.process_time() - cpu["bench"]) / elapsed}
            finally:
                await server.stop()
    finally:
        await sim.stop()

    latencies = [(arrived[j] - sent[j]) * 1000 for j in sent if j in arrived]
    lost = count - len(latencies)
    p50, p90, p99 = (pct(latencies, q) for q in (0.5, 0.9, 0.99))
    worst = max(latencies) if latencies else float("nan")
    print(f"{count} callbacks at {args.rate:g}/s for {args.duration:g} s (sent in "
          f"{elapsed:.1f} s), confirm {'on' if args.confirm else 'off'}; bridge, simulator "
          f"and this process (callbacks + receiver) on 127.0.0.1; {os.cpu_count()} CPUs\n")
    print(f"callback -> verified webhook: p50 {p50:.1f} ms  p90 {p90:.1f} ms  "
          f"p99 {p99:.1f} ms  max {worst:.1f} ms")
    print(f"delivered {len(latencies)}, lost {lost}, callback failures {len(failures)}, "
          f"signatures rejected {rejected}; CPU (cores): bridge {cpu['server']:.2f}, "
          f"bench {cpu['bench']:.2f}")
    ok = p99 <= TARGET_P99_MS and lost == 0 and not failures and not rejected
    print(f"\n{'PASS' if ok else 'FAIL'}  p99 {p99:.1f} ms (target <= {TARGET_P99_MS:g} ms), "
          f"p50 {p50:.1f} ms, lost {lost} (target 0)")
    return 0 if ok or args.no_fail else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="callbacks per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--confirm", type=int, choices=(0, 1), default=1,
                        help="BRIDGE_CONFIRM_CALLBACKS for the bridge (default 1, as shipped)")
    parser.add_argument("--no-fail", action="store_true")
    parser.add_argument("--child-lifetime", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
