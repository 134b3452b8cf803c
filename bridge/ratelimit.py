"""Token buckets, one per key, kept in this process: a burst at once, then a steady rate.

``POST /v1/endpoints/{id}/test`` takes one per endpoint. Each process counts on its own,
which is enough to keep one caller from flooding an endpoint with test events.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_KEYS = 10_000  # past this many buckets, the ones that have filled up again are dropped


class TokenBuckets:
    def __init__(self, burst: int, per_second: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.per_second = per_second
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, as of when)

    def __len__(self) -> int:
        """How many keys have a bucket kept."""
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take a token from ``key``'s bucket: 0.0 if there was one, otherwise the seconds
        until there is (nothing is taken then)."""
        now = self.clock()
        tokens, then = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.per_second)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.per_second
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > MAX_KEYS:
            self._forget_full(now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that are full again: a new one is the same."""
        self._buckets = {
            key: (tokens, then) for key, (tokens, then) in self._buckets.items()
            if tokens + (now - then) * self.per_second < self.burst
        }
