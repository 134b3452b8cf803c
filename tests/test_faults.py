"""Real database faults: a write lock held by another connection, and a full disk. No
worker dies for good, requests answer 503 with Retry-After and leave nothing behind, and
work resumes once the fault ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.store.sqlite import BUSY_TIMEOUT
from tests.conftest import Harness, Sims, running_bridge

# A full disk and a held lock, and how soon the workers come back: timings that tests
# running beside these on the same cores would stretch.
pytestmark = pytest.mark.alone

CITY = {"provider": "infrai", "prompt": "A timelapse of a city skyline at dusk",
        "duration_seconds": 5}


async def wait_until(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"still waiting after {seconds}s for {what}"
        await asyncio.sleep(0.1)


async def down_workers(harness: Harness) -> dict[str, str]:
    answer = await harness.client.get("/readyz")
    if answer.status_code == 200:
        return {}
    assert answer.status_code == 503
    down: dict[str, str] = answer.json()["down"]
    return down


async def restarts(harness: Harness, worker: str) -> float:
    for line in (await harness.client.get("/metrics")).text.splitlines():
        if line.startswith(f'bridge_worker_restarts_total{{worker="{worker}"}}'):
            return float(line.split()[-1])
    return 0.0


async def recovers_within_10s(harness: Harness, fault_ended: float) -> None:
    """A job created now finishes within 10 s of the fault's end; /readyz is 200 again."""
    job = await harness.create(CITY)
    done = await harness.wait(job["id"], seconds=10 - (time.monotonic() - fault_ended))
    assert done["status"] == "succeeded"
    await wait_until(lambda: _ready(harness), 10, "/readyz to answer 200")


async def _ready(harness: Harness) -> bool:
    return (await harness.client.get("/readyz")).status_code == 200


def tracebacks(caplog: pytest.LogCaptureFixture, worker: str) -> int:
    return sum(1 for record in caplog.records
               if record.name == "bridge.supervisor" and record.exc_info
               and record.getMessage().startswith(f"worker {worker} failed"))


async def test_a_write_lock_held_elsewhere_stops_no_worker_for_good(
    tmp_path: Path, sims: Sims, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_bridge(tmp_path, sims, BRIDGE_ALLOW_PRIVATE_TARGETS="1") as harness:
        before = await harness.create(CITY)
        await harness.wait(before["id"])
        jobs_before = (await harness.client.get("/v1/jobs")).json()["data"]
        restarts_before = await restarts(harness, "tracker")  # the counter is the process's

        other = sqlite3.connect(harness.env["BRIDGE_DATABASE"], isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the write lock, as another process would hold it
        try:
            down = await wait_until(lambda: down_workers(harness), 15, "/readyz to say 503")
            assert "tracker" in down or "deliverer" in down
            await wait_until(lambda: _has(down_workers(harness), "tracker"), 15,
                             "the tracker to be named down")

            started = time.monotonic()
            refused = await harness.client.post("/v1/jobs", json=CITY)
            waited = time.monotonic() - started
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "unavailable"
            assert int(refused.headers["retry-after"]) >= 1
            assert waited < BUSY_TIMEOUT + 3  # a few seconds, never the old 10 s and a 500

            endpoint = await harness.client.post(
                "/v1/endpoints", json={"url": "http://127.0.0.1:9/hook"})
            assert endpoint.status_code == 503
            await asyncio.sleep(4)  # long enough for restarts to fail again
        finally:
            other.execute("ROLLBACK")
            other.close()
        fault_ended = time.monotonic()
        await recovers_within_10s(harness, fault_ended)

        # Nothing half-written by the refused requests.
        jobs = (await harness.client.get("/v1/jobs")).json()["data"]
        assert len(jobs) == len(jobs_before) + 1
        assert (await harness.client.get("/v1/endpoints")).json()["data"] == []
        assert await restarts(harness, "tracker") - restarts_before >= 2
        assert tracebacks(caplog, "tracker") == 1  # logged in full once, then one line each


async def _has(down: Any, worker: str) -> bool:
    return worker in await down


# -- a full disk ----------------------------------------------------------------------------
@contextlib.contextmanager
def small_disk(path: Path, size: str = "16m") -> Iterator[Path]:
    """A real filesystem of ``size`` (tmpfs) at ``path``, unmounted afterwards."""
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk is made with a tmpfs mount, which needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file; deleting it ends the fault."""
    filler = disk / "filler"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 20, 1 << 12, 1):
            while True:
                try:
                    out.write(chunk[:size])
                except OSError:
                    break
    return filler


@contextlib.asynccontextmanager
async def bridge_on(disk: Path, tmp_path: Path, sims: Sims) -> AsyncIterator[Harness]:
    async with running_bridge(tmp_path, sims, BRIDGE_DATABASE=str(disk / "bridge.db")) as h:
        yield h


async def test_a_full_disk_stops_no_worker_for_good(
    tmp_path: Path, sims: Sims, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with small_disk(tmp_path / "disk") as disk:
        async with bridge_on(disk, tmp_path, sims) as harness:
            polled = [await harness.create(CITY) for _ in range(3)]  # followed by polling
            restarts_before = await restarts(harness, "tracker")  # the counter is the process's
            filler = fill(disk)
            try:
                # The disk is full; the write-ahead log fills up as work goes on.
                statuses = []
                for number in range(400):
                    answer = await harness.client.post(
                        "/v1/jobs", json=CITY | {"prompt": f"filler {number} " + "x" * 4000})
                    statuses.append(answer.status_code)
                    if answer.status_code == 503:
                        assert answer.json()["error"]["code"] == "unavailable"
                        assert int(answer.headers["retry-after"]) >= 1
                        break
                assert 503 in statuses and 500 not in statuses, statuses
                await wait_until(lambda: _has(down_workers(harness), "tracker"), 20,
                                 "the tracker to be named down")
                await asyncio.sleep(3)
            finally:
                filler.unlink()
            fault_ended = time.monotonic()
            await recovers_within_10s(harness, fault_ended)
            for job in polled:
                assert (await harness.wait(job["id"]))["status"] == "succeeded"
            listed = await harness.client.get("/v1/jobs", params={"limit": 100})
            assert listed.status_code == 200
            assert await restarts(harness, "tracker") - restarts_before >= 1
            assert tracebacks(caplog, "tracker") == 1
