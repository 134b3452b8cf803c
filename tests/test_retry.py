"""The delivery policy, table-driven: when a failed attempt is tried again, and what an
attempt does to its endpoint's record. No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.retry import DISABLE_AFTER, Standing, next_attempt, standing_after

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
SCHEDULE = (5.0, 300.0, 1800.0)
DAY = 86400.0


def exact(low: float, high: float) -> float:  # the jitter's midpoint: no randomness
    return (low + high) / 2


@pytest.mark.parametrize(("attempt", "retry_after", "delay"), [
    (1, None, 5.0), (2, None, 300.0), (3, None, 1800.0), (4, None, None),
    (1, 60.0, 60.0),  # Retry-After wins over the schedule
    (2, 7200.0, 3600.0),  # ... up to an hour
    (4, 10.0, None),  # a spent schedule stays spent
])
def test_next_attempt_follows_the_schedule_and_retry_after(
    attempt: int, retry_after: float | None, delay: float | None
) -> None:
    due = next_attempt(attempt, SCHEDULE, retry_after, NOW, jitter=exact)
    assert due == (None if delay is None else NOW + timedelta(seconds=delay))


def test_the_jitter_keeps_each_delay_within_20_percent() -> None:
    low = next_attempt(2, SCHEDULE, None, NOW, jitter=lambda a, b: a)
    high = next_attempt(2, SCHEDULE, None, NOW, jitter=lambda a, b: b)
    assert low == NOW + timedelta(seconds=240) and high == NOW + timedelta(seconds=360)


START = 1_000_000.0
STANDINGS = [
    # (failing since, attempt at, ok, gone, standing after)
    (None, START, True, False, Standing(None)),
    (START, START + DAY, True, False, Standing(None)),  # a success clears the record
    (None, START, False, False, Standing(START)),  # the first failure starts it
    (START, START + DAY, False, False, Standing(START)),  # ... which the next ones keep
    (START, START + DISABLE_AFTER - 1, False, False, Standing(START)),
    (START, START + DISABLE_AFTER, False, False,
     Standing(START, "every delivery failed for 5 days")),
    (None, START, False, True, Standing(START, "the endpoint answered 410 Gone")),
    (START, START + 60, False, True, Standing(START, "the endpoint answered 410 Gone")),
]


@pytest.mark.parametrize(("since", "at", "ok", "gone", "after"), STANDINGS)
def test_an_attempt_keeps_its_endpoints_record(
    since: float | None, at: float, ok: bool, gone: bool, after: Standing
) -> None:
    assert standing_after(since, at, ok=ok, gone=gone) == after


def test_the_disabling_period_is_a_parameter() -> None:
    assert standing_after(START, START + 10, ok=False, gone=False, disable_after=10) == \
        Standing(START, "every delivery failed for 0.000115741 days")
