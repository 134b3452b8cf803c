"""Webhook deliveries per second from the outbox, beside raw senders posting the same bodies.

    python bench/delivery.py [--duration 5] [--rounds 5] [--warmup 0.5] [--concurrency 32]
                             [--endpoints 4] [--no-fail]

Everything on 127.0.0.1. A receiver process answers every POST ``200 ok`` from a minimal
asyncio HTTP/1.1 server (it reads the body, keeps the connection alive), fast enough that the
sender, not the receiver, sets the pace. Then, in this process, ``--duration`` seconds per
row, measured in ``--rounds`` slices that take turns (aiohttp, bridge, aiohttp, bridge, ...),
so that a change in the machine's speed weighs on both alike; each slice starts with an
unmeasured ``--warmup``:

* ``aiohttp``: 32 tasks post the body over one ``aiohttp.ClientSession`` (its defaults), the
  client library the bridge sends with;
* ``bridge``: ``bridge.delivery.Deliverer`` empties a real outbox: a fresh SQLite file whose
  ``--endpoints`` endpoints (8 attempts in flight each: 32 in all, the share of its one
  tenant of a deliverer with 64 slots) have enough pending
  deliveries stored beforehand; every delivery is claimed with a lease, read with its event,
  signed (Standard Webhooks), posted over aiohttp to the address the SSRF guard answers, and
  its attempt is recorded (status, duration, excerpt) in the store, as in the service. The
  deliverer is started for each slice and stopped after it;
* ``httpx``: the same as aiohttp over one ``httpx.AsyncClient`` (default pool), one slice
  after the others (it is far slower; it is shown for the choice of client only).

The same body (the event JSON the bridge stores, under 1 KB) goes out in every row. A row's rate
counts what completed inside the measured windows (bridge: attempts recorded as succeeded).
The ratio compares the bridge with raw aiohttp from the same run. Exits 1 when the target
(>= 0.6x) is missed or any request failed, unless ``--no-fail``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.delivery import Deliverer
    from bridge.store import Store

TARGET = 0.6  # bridge rate / raw aiohttp rate
READY = "READY "
SCRIPT = os.path.abspath(__file__)
sys.path.insert(0, str(Path(SCRIPT).parent.parent))


# -- the receiver ------------------------------------------------------------------------
class _Answer(asyncio.Protocol):
    """Minimal HTTP/1.1: read head and Content-Length body, answer 200, keep alive."""

    REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(self.REPLY)


async def serve_receiver(lifetime: float) -> None:
    from bridge.serving import bind, url_of

    sock = bind()
    sock.listen(1024)
    server = await asyncio.get_running_loop().create_server(_Answer, sock=sock)
    print(READY + url_of(sock), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.read(), timeout=lifetime)  # EOF: the parent is gone
    server.close()


# -- rows ----------------------------------------------------------------------------------
@dataclass
class Row:
    label: str
    done: int
    errors: int
    seconds: float
    cpu: float  # cores used by this process over the measured window

    @property
    def rate(self) -> float:
        return self.done / self.seconds


async def raw_row(label: str, post: Callable[[], Awaitable[int]], concurrency: int,
                  warmup: float, duration: float) -> Row:
    counts = {"done": 0, "errors": 0}
    measuring = False
    stop = time.monotonic() + warmup + duration

    async def worker() -> None:
        while time.monotonic() < stop:
            try:
                status = await post()
            except Exception:
                status = 0
            if measuring:
                counts["done" if 200 <= status < 300 else "errors"] += 1

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    measuring, started, cpu = True, time.monotonic(), time.process_time()
    await asyncio.sleep(duration)
    measuring = False
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    await asyncio.gather(*tasks)
    return Row(label, counts["done"], counts["errors"], seconds, cpu / seconds)


async def prepare_outbox(workdir: str, receiver: str, endpoints: int, count: int,
                         data: dict[str, object], per_endpoint: int) -> Store:
    from bridge.core import new_signing_secret
    from bridge.models import Endpoint, Event, new_id, utcnow
    from bridge.store import open_store

    store = await open_store(str(Path(workdir) / "bridge.db"))
    await store.ensure_tenant("default", new_signing_secret)
    ids = []
    for index in range(endpoints):
        endpoint = Endpoint(id=new_id("ep"), tenant="default", url=f"{receiver}/hook/{index}",
                            events=None, description=None, headers={},
                            secret=new_signing_secret(), created_at=utcnow(),
                            max_concurrency=per_endpoint)
        await store.create_endpoint(endpoint)
        ids.append(endpoint.id)
    for start in range(0, count, 500):
        batch = []
        for index in range(start, min(count, start + 500)):
            event = Event(id=new_id("evt"), tenant="default", type="job.succeeded",
                          job_id=f"job_bench{index:09d}", created_at=utcnow(),
                          data={**data, "id": f"job_bench{index:09d}", "sequence": 1})
            batch.append(store.add_event(event, endpoint_id=ids[index % endpoints]))
        await asyncio.gather(*batch)  # one group commit per batch
    return store


async def bridge_slice(deliverer: Deliverer, counts: dict[str, int], warmup: float,
                       duration: float) -> Row:
    """Run the deliverer for one slice; count the attempts recorded in its window."""
    await deliverer.start()
    try:
        await asyncio.sleep(warmup)
        before = dict(counts)
        counts["measuring"] = 1
        started, cpu = time.monotonic(), time.process_time()
        await asyncio.sleep(duration)
        counts["measuring"] = 0
        seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    finally:
        await deliverer.stop()
    return Row("bridge", counts["done"] - before["done"], counts["errors"] - before["errors"],
               seconds, cpu / seconds)


def merge(rows: list[Row]) -> Row:
    """One row of several slices: counts and times added, CPU weighted by time."""
    seconds = sum(row.seconds for row in rows)
    return Row(rows[0].label, sum(row.done for row in rows), sum(row.errors for row in rows),
               seconds, sum(row.cpu * row.seconds for row in rows) / seconds)


def job_data() -> dict[str, object]:
    """A job object as the bridge stores it in an event (the usual size of a body)."""
    return {
        "object": "job", "provider": "apixo", "model": "veo-3-1",
        "provider_job_id": "task_480548589169", "status": "succeeded", "progress": 100,
        "tracking": "callback",
        "request": {"provider": "apixo", "model": "veo-3-1", "mode": "text",
                    "prompt": "A cinematic flyover of a futuristic city at sunrise, golden "
                              "light on glass towers, drones weaving between them",
                    "aspect_ratio": "16:9", "duration_seconds": 8},
        "result": {"video_url": "https://cdn.example.com/videos/task_480548589169.mp4",
                   "expires_at": "2026-11-29T10:00:00Z", "thumbnail_url": None},
        "error": None, "cost": {"amount": 0.4, "currency": "USD"},
        "metadata": {"customer": "acme", "order": "A-1042"},
        "created_at": "2026-11-22T10:00:00Z", "updated_at": "2026-11-22T10:01:30Z",
        "completed_at": "2026-11-22T10:01:30Z",
    }


async def main_async(args: argparse.Namespace) -> int:
    import aiohttp
    import httpx

    from bridge.delivery import Deliverer
    from bridge.models import AttemptResult, Outgoing
    from bridge.targets import Guard

    proc = await asyncio.create_subprocess_exec(
        sys.executable, SCRIPT, "--serve-receiver", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    slice_ = args.duration / args.rounds
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert line.startswith(READY), line
        receiver = line[len(READY):]
        data = job_data()
        headers = {"content-type": "application/json", "webhook-id": "evt_x",
                   "webhook-timestamp": str(int(time.time())),
                   "webhook-signature": "v1," + "A" * 44}
        # Enough for every bridge slice at ten times the raw aiohttp rate seen here.
        count = int(args.rounds * (args.warmup + slice_) * 12000)
        with tempfile.TemporaryDirectory(prefix="bridge-bench-delivery-") as workdir:
            # Each endpoint may take its part of the concurrency (endpoints default to 4).
            per_endpoint = max(1, min(32, args.concurrency // args.endpoints))
            store = await prepare_outbox(workdir, receiver, args.endpoints, count, data,
                                         per_endpoint)
            counts = {"done": 0, "errors": 0, "measuring": 0}
            sample: list[bytes] = []
            sampled = asyncio.Event()

            def record(outgoing: Outgoing, result: AttemptResult) -> None:
                if not sample:
                    sample.append(outgoing.body)
                    sampled.set()
                if counts["measuring"]:
                    counts["done" if result.ok else "errors"] += 1

            # A lone tenant's share is half the deliverer's slots (room is kept for one
            # more tenant): twice the raw rows' tasks gives it as many attempts at once.
            deliverer = Deliverer(store, Guard(allow_private=True), (5.0, 300.0),
                                  concurrency=2 * args.concurrency,
                                  per_target=per_endpoint,
                                  listeners=[record])
            # The body the deliverer sends, for the raw rows: one attempt before timing.
            await deliverer.start()
            await asyncio.wait_for(sampled.wait(), timeout=30)
            await deliverer.stop()
            body = sample[0]
            raws: list[Row] = []
            bridges: list[Row] = []
            try:
                connector = aiohttp.TCPConnector(limit=args.concurrency)
                async with aiohttp.ClientSession(connector=connector) as session:
                    async def post_aiohttp() -> int:
                        async with session.post(f"{receiver}/hook/raw", data=body,
                                                headers=headers) as answer:
                            await answer.read()
                            return answer.status

                    for _ in range(args.rounds):
                        raws.append(await raw_row("aiohttp", post_aiohttp, args.concurrency,
                                                  args.warmup, slice_))
                        bridges.append(await bridge_slice(deliverer, counts, args.warmup,
                                                          slice_))
            finally:
                await store.close()
            if count - counts["done"] <= 0:
                raise RuntimeError("the outbox ran dry during the row; store more deliveries")
        raw, bridge = merge(raws), merge(bridges)
        async with httpx.AsyncClient() as client:
            async def post_httpx() -> int:
                return (await client.post(f"{receiver}/hook/raw", content=body,
                                          headers=headers)).status_code

            hx = await raw_row("httpx", post_httpx, args.concurrency, args.warmup, slice_)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)
        if proc.returncode is None:
            proc.kill()

    rows = [raw, hx, bridge]
    print(f"concurrency {args.concurrency}, body {len(body)} bytes, measured {args.duration:g} s "
          f"per row in {args.rounds} interleaved slices (warm-up {args.warmup:g} s each; httpx: "
          f"one slice); receiver in its own process; {os.cpu_count()} CPUs\n")
    print(f"{'sender':<10}{'per s':>9}{'sent':>9}{'errors':>8}{'x aiohttp':>11}{'CPU':>7}"
          f"{'CPU us/req':>12}")
    for row in rows:
        print(f"{row.label:<10}{row.rate:>9.0f}{row.done:>9}{row.errors:>8}"
              f"{row.rate / raw.rate:>10.2f}x{row.cpu:>7.2f}{row.cpu / row.rate * 1e6:>12.0f}")
    print("\nbridge row: each delivery claimed with a lease from SQLite, signed, posted to the "
          "address the guard answers, its attempt recorded; other rows: the same body, no bridge.")
    ratio = bridge.rate / raw.rate
    errors = sum(row.errors for row in rows)
    ok = ratio >= TARGET and errors == 0
    print(f"\n{'PASS' if ok else 'FAIL'}  bridge {bridge.rate:.0f}/s = {ratio:.2f}x raw aiohttp "
          f"{raw.rate:.0f}/s (target >= {TARGET}x); httpx {hx.rate:.0f}/s = "
          f"{hx.rate / raw.rate:.2f}x; errors {errors}")
    print(json.dumps({"bridge": round(bridge.rate), "aiohttp": round(raw.rate),
                      "httpx": round(hx.rate), "ratio": round(ratio, 3)}))
    return 0 if ok or args.no_fail else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--endpoints", type=int, default=4)
    parser.add_argument("--no-fail", action="store_true")
    parser.add_argument("--serve-receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver:
        asyncio.run(serve_receiver(lifetime=600))
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())

