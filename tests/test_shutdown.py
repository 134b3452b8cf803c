"""Graceful shutdown: on SIGTERM ``bridge serve`` stops claiming, lets the attempts in flight
finish within ``BRIDGE_SHUTDOWN_GRACE`` and records them, and gives back what it had claimed
and not begun, so that the next process sends it at once instead of after the lease."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import httpx
from standardwebhooks.webhooks import Webhook

from bridge.timings import Timings
from tests.conftest import Receiver, Sims
from tests.test_crash import bridge_serve, free_port, wait_until

KEY = "brk_shutdown_test_key"
JOBS = 12  # one event of each job may be in flight at a time: more than an endpoint's cap
SLOW = 6.0  # seconds the receiver takes while the bridge is stopped


async def test_sigterm_lets_attempts_in_flight_finish_and_gives_back_the_rest(
    tmp_path: Path, sims: Sims, receiver: Receiver,
) -> None:
    lease = Timings().delivery_lease  # bridge serve's own

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env = {
        **keep, **sims.env(),
        "BRIDGE_DATABASE": str(tmp_path / "bridge.db"),
        "BRIDGE_MEDIA_DIR": str(tmp_path / "media"),
        "BRIDGE_PUBLIC_URL": base,
        "BRIDGE_API_KEY": KEY,
        "BRIDGE_ALLOW_PRIVATE_TARGETS": "1",
        "BRIDGE_SHUTDOWN_GRACE": "10s",
        "BRIDGE_LOG_LEVEL": "warning",
    }
    receiver.default = (200, {}, SLOW)
    headers = {"Authorization": f"Bearer {KEY}"}

    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as api:
        async with bridge_serve(env, port) as first:
            endpoint = await api.post("/v1/endpoints", json={"url": receiver.url + "/in"})
            assert endpoint.status_code == 201, endpoint.text
            secret = endpoint.json()["secret"]
            for index in range(JOBS):
                answer = await api.post("/v1/jobs", json={
                    "provider": "infrai", "prompt": f"shutdown {index}", "duration_seconds": 5})
                assert answer.status_code == 202, answer.text
            cap = endpoint.json()["max_concurrency"]
            await wait_until(lambda: _true(len(receiver.received) >= cap), 20,
                             "a full round of attempts in flight")
            await asyncio.sleep(0.5)  # the next round is claimed, waiting for a slot
            in_flight = len(receiver.received)
            stopping = time.monotonic()
            first.send_signal(signal.SIGTERM)
            # uvicorn ends by raising the signal again once it has shut down
            assert await asyncio.wait_for(first.wait(), 20) in (0, -signal.SIGTERM)
            stopped_after = time.monotonic() - stopping

        # Every attempt that had begun was answered and recorded before the exit.
        assert SLOW - 1 <= stopped_after <= 10 + 5
        with sqlite3.connect(env["BRIDGE_DATABASE"]) as db:
            done = db.execute("SELECT count(*) FROM deliveries WHERE status = 'succeeded' "
                              "AND response_status = 200").fetchone()[0]
            leased = db.execute("SELECT count(*) FROM deliveries WHERE status = 'pending' "
                                "AND lease_until IS NOT NULL").fetchone()[0]
            pending = db.execute("SELECT count(*) FROM deliveries "
                                 "WHERE status = 'pending'").fetchone()[0]
        assert done == in_flight == len(receiver.received)
        assert leased == 0 and pending > 0  # given back, not left for the lease to lapse

        receiver.default = (200, {}, 0.0)
        restarted = time.monotonic()
        async with bridge_serve(env, port):
            await wait_until(lambda: _true(len(receiver.received) > in_flight), 10,
                             "the given-back deliveries")
            assert time.monotonic() - restarted < lease / 2  # not after the lease lapsed
            await asyncio.sleep(1)

    ids: Counter[str] = Counter()
    for got in receiver.received:
        payload = Webhook(secret).verify(got.body, got.headers)
        ids[payload["id"]] += 1
    assert max(ids.values()) == 1  # nothing was sent twice


async def _true(value: bool) -> bool:
    return value
