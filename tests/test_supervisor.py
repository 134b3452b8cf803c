"""The supervisor: a worker that raises is restarted with backoff, reported down until it
completes a round, counted, and logged in full once per kind of failure."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest
from prometheus_client import REGISTRY

from bridge.supervisor import Beat, Supervisor


def restarts(worker: str) -> float:
    value = REGISTRY.get_sample_value("bridge_worker_restarts_total", {"worker": worker})
    return value or 0.0


async def test_a_failing_worker_is_restarted_reported_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    supervisor = Supervisor(first_backoff=0.01, max_backoff=0.04)
    runs: list[float] = []
    healthy = asyncio.Event()
    seen_down: list[dict[str, str]] = []
    before = restarts("flaky")

    async def flaky(beat: Beat) -> None:
        runs.append(asyncio.get_running_loop().time())
        if len(runs) <= 4:
            raise OSError("disk is full")
        beat()
        healthy.set()
        await asyncio.Event().wait()  # runs until stopped

    task = supervisor.spawn("flaky", flaky)
    while len(runs) < 3:
        seen_down.append(supervisor.down())
        await asyncio.sleep(0.005)
    await asyncio.wait_for(healthy.wait(), 5)
    assert supervisor.down() == {}
    assert {"flaky": "OSError: disk is full"} in seen_down
    assert restarts("flaky") - before == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(runs)]
    assert gaps[0] < gaps[2]  # the wait grows
    assert all(gap < 1 for gap in gaps)
    full = [r for r in caplog.records if r.exc_info and r.name == "bridge.supervisor"]
    assert len(full) == 1 and "disk is full" in full[0].getMessage()
    assert sum("failed again" in r.getMessage() for r in caplog.records) == 3
    await supervisor.stop()
    assert task.done()


async def test_a_worker_that_returns_ends_and_a_cancel_stops_it() -> None:
    supervisor = Supervisor()
    done: list[str] = []

    async def once(beat: Beat) -> None:
        beat()
        done.append("ran")

    await asyncio.wait_for(supervisor.spawn("once", once), 5)
    assert done == ["ran"] and supervisor.down() == {}

    async def forever(beat: Beat) -> None:
        await asyncio.Event().wait()

    task = supervisor.spawn("forever", forever)
    await asyncio.sleep(0)
    await asyncio.wait_for(supervisor.stop(), 5)
    assert task.cancelled()
