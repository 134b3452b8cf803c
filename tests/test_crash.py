"""Crash safety: ``bridge serve`` killed with SIGKILL in the middle of delivering webhooks,
then started again on the same database, loses nothing and pays for nothing twice.

It runs with short leases (``tests.serve``), so the killed process's attempts come back in
seconds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from tests import serve
from tests.conftest import Receiver, Sims

KEY = "brk_crash_test_key"
JOBS = 20
TERMINAL_TYPES = {"job.succeeded", "job.failed", "job.canceled", "job.expired"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def bridge_serve(
    env: dict[str, str], port: int, output: Any = None, command: list[str] | None = None,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``bridge serve`` on ``port``, ready; its output to ``output`` (a file), or dropped.
    ``command`` replaces ``bridge serve`` (``tests.serve.COMMAND``: short leases)."""
    sink = output if output is not None else asyncio.subprocess.DEVNULL
    process = await asyncio.create_subprocess_exec(
        *(command or [sys.executable, "-m", "bridge.cli", "serve"]), "--port", str(port),
        env=env, stdout=sink, stderr=sink, cwd=serve.ROOT,
    )
    try:
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient() as probe:
            while True:
                try:
                    if (await probe.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "bridge serve did not start"
                assert process.returncode is None, "bridge serve exited"
                await asyncio.sleep(0.1)
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def wait_until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_sigkill_mid_delivery_loses_nothing_and_submits_nothing_twice(
    tmp_path: Path, sims: Sims, receiver: Receiver, database: str,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env = {
        **keep, **sims.env(),
        "BRIDGE_DATABASE": database,
        "BRIDGE_MEDIA_DIR": str(tmp_path / "media"),
        "BRIDGE_PUBLIC_URL": base,
        "BRIDGE_API_KEY": KEY,
        "BRIDGE_ALLOW_PRIVATE_TARGETS": "1",
        "BRIDGE_RETRY_SCHEDULE": ",".join(["300ms"] * 200),
        "BRIDGE_LOG_LEVEL": "warning",
    }
    # Failing, slowly: at any moment some attempts are in flight.
    receiver.default = (500, {}, 0.3)
    headers = {"Authorization": f"Bearer {KEY}"}

    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as api:
        async with bridge_serve(env, port, command=serve.COMMAND) as first:
            endpoint = (await api.post("/v1/endpoints", json={"url": receiver.url + "/in"}))
            assert endpoint.status_code == 201, endpoint.text
            secret = endpoint.json()["secret"]
            jobs = []
            for index in range(JOBS):
                # apixo calls back, api.airforce is streamed (4 at a time per key: queueing)
                body = ({"provider": "apixo", "model": "veo-3-1", "prompt": f"crash {index}"}
                        if index % 2 else
                        {"provider": "airforce", "model": "wan-2.6", "prompt": f"crash {index}"})
                answer = await api.post("/v1/jobs", json=body)
                assert answer.status_code == 202, answer.text
                jobs.append(answer.json()["id"])

            async def all_finished() -> bool:
                listed = (await api.get("/v1/jobs", params={"limit": 100})).json()["data"]
                return sum(job["status"] in ("succeeded", "failed") for job in listed) == JOBS

            await wait_until(all_finished, 60, "the jobs to finish")
            before = len(receiver.received)
            await wait_until(lambda: _true_after(lambda: len(receiver.received) > before + 3),
                             10, "deliveries in flight")
            first.send_signal(signal.SIGKILL)  # mid-delivery: the receiver is answering
            await first.wait()

        receiver.default = (200, {}, 0.0)
        async with bridge_serve(env, port, command=serve.COMMAND):
            def every_terminal_arrived() -> bool:
                ok = {r.json["data"]["id"] for r in receiver.received
                      if r.json["type"] in TERMINAL_TYPES}
                return ok >= set(jobs)

            # In-flight attempts of the killed process come back when their lease lapses.
            await wait_until(lambda: _true_after(every_terminal_arrived), 60,
                             "every terminal event")

    by_event: dict[str, set[str]] = defaultdict(set)
    for got in receiver.received:
        payload = Webhook(secret).verify(got.body, got.headers)
        assert got.headers["webhook-id"] == payload["id"]
        by_event[payload["id"]].add(got.headers["webhook-id"])
    assert all(len(ids) == 1 for ids in by_event.values())
    assert len(receiver.received) > len(by_event)  # there were repeats, with the same id
    submissions = sims.apps["apixo"].state.submissions + sims.apps["airforce"].state.submissions
    assert submissions == JOBS


async def _true_after(check: Any) -> bool:
    return bool(check())
