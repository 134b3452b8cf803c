"""The delivery policy, as pure functions: when a failed attempt is tried again, and what
an attempt's outcome does to its endpoint's record (disabled on 410 Gone, or after five
days of nothing but failures)."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_RETRY_AFTER = 3600.0  # a Retry-After is honoured up to this many seconds
JITTER = 0.2  # each scheduled delay is drawn within +-20 % of itself
DISABLE_AFTER = 5 * 86400.0  # seconds of nothing but failed deliveries


def next_attempt(
    attempt: int, schedule: tuple[float, ...], retry_after: float | None, now: datetime,
    jitter: Callable[[float, float], float] = random.uniform,
) -> datetime | None:
    """When attempt ``attempt + 1`` is due after attempt ``attempt`` failed, or ``None``
    once the schedule is spent."""
    if attempt > len(schedule):
        return None
    if retry_after is not None:
        delay = min(retry_after, MAX_RETRY_AFTER)
    else:
        delay = schedule[attempt - 1] * jitter(1 - JITTER, 1 + JITTER)
    return now + timedelta(seconds=delay)


@dataclass(frozen=True)
class Standing:
    """An endpoint's failure record after an attempt: failing since when (``None``: it is
    not), and why it is disabled now (``None``: it is not)."""

    failing_since: float | None
    disabled_reason: str | None = None


def standing_after(failing_since: float | None, at: float, *, ok: bool, gone: bool,
                   disable_after: float = DISABLE_AFTER) -> Standing:
    """What an attempt made ``at`` does to an enabled endpoint failing since
    ``failing_since``: a success clears the record; a 410 disables it at once; a failure
    starts the record, or disables the endpoint once it has failed for ``disable_after``."""
    if ok:
        return Standing(None)
    since = failing_since if failing_since is not None else at
    if gone:
        return Standing(since, "the endpoint answered 410 Gone")
    if at - since >= disable_after:
        return Standing(since, f"every delivery failed for {disable_after / 86400:g} days")
    return Standing(since)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait (delta-seconds or an HTTP date), if any."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
