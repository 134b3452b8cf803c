"""The token buckets, and the rate limit of ``POST /v1/endpoints/{id}/test`` they keep: a
burst of 5 per endpoint, then 1 a second; past it 429 ``rate_limited`` with Retry-After."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import bridge.ratelimit
from bridge.ratelimit import TokenBuckets
from tests.conftest import Harness, Receiver, Sims, running_bridge


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("steps", "waits"), [
    # (seconds to move the clock on, takes) -> the answer of each take
    ([(0.0, 6)], [0, 0, 0, 0, 0, 1.0]),
    ([(0.0, 5), (0.5, 1)], [0, 0, 0, 0, 0, 0.5]),
    ([(0.0, 5), (1.0, 2)], [0, 0, 0, 0, 0, 0, 1.0]),
    ([(0.0, 5), (2.5, 3)], [0, 0, 0, 0, 0, 0, 0, 0.5]),
    ([(0.0, 5), (100.0, 6)], [0] * 10 + [1.0]),  # it fills up to the burst, no more
    ([(0.0, 6), (0.25, 1)], [0, 0, 0, 0, 0, 1.0, 0.75]),  # a refused take costs nothing
])
def test_a_bucket_gives_a_burst_then_its_rate(
    steps: list[tuple[float, int]], waits: list[float],
) -> None:
    clock = Clock()
    buckets = TokenBuckets(5, 1.0, clock=clock)
    got: list[float] = []
    for seconds, takes in steps:
        clock.now += seconds
        got.extend(buckets.take("ep_1") for _ in range(takes))
    assert got == pytest.approx(waits)


def test_each_key_has_its_own_bucket() -> None:
    buckets = TokenBuckets(2, 1.0, clock=Clock())
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 1.0]
    assert [buckets.take("b") for _ in range(2)] == [0, 0]


def test_full_buckets_are_forgotten_past_the_key_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bridge.ratelimit, "MAX_KEYS", 3)
    clock = Clock()
    buckets = TokenBuckets(2, 1.0, clock=clock)
    for key in "abc":
        buckets.take(key)
    clock.now += 10  # a, b and c are full again
    buckets.take("d")
    buckets.take("d")
    buckets.take("e")  # five keys: the full ones go, d (empty) and e stay
    assert buckets.take("d") == pytest.approx(1.0)
    assert len(buckets) == 2


@pytest.fixture
async def hooks(tmp_path: Path, sims: Sims) -> AsyncIterator[Harness]:
    async with running_bridge(tmp_path, sims, BRIDGE_ALLOW_PRIVATE_TARGETS="1") as running:
        yield running


async def test_the_test_route_answers_429_with_retry_after_past_its_burst(
    hooks: Harness, receiver: Receiver,
) -> None:
    made = []
    for name in ("one", "two"):
        answer = await hooks.client.post("/v1/endpoints", json={
            "url": f"{receiver.url}/{name}", "events": ["endpoint.test"]})
        assert answer.status_code == 201, answer.text
        made.append(answer.json()["id"])
    one, two = made
    for _ in range(5):
        assert (await hooks.client.post(f"/v1/endpoints/{one}/test")).status_code == 202
    refused = await hooks.client.post(f"/v1/endpoints/{one}/test")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and "test events" in error["message"]
    assert (await hooks.client.post(f"/v1/endpoints/{two}/test")).status_code == 202
    await receiver.wait_for(lambda got: len(got) == 6)
    page = (await hooks.client.get(f"/v1/endpoints/{one}/deliveries")).json()
    assert len(page["data"]) == 5  # the refused one stored nothing
    await asyncio.sleep(1.1)  # as Retry-After said
    assert (await hooks.client.post(f"/v1/endpoints/{one}/test")).status_code == 202
