"""When to ask a provider about a job again: a pure scheduling policy.

The job tracker calls :func:`next_check_delay` after every status request, stream break or
callback wait, and :func:`submit_retry_delay` after a retryable submission failure. Nothing
here does I/O, reads a clock or draws random numbers: the caller passes the elapsed time and a
jitter fraction in [-1, 1], so every answer can be replayed (``bench/polling.py`` does).

What the provider documents say, and what each tracking mode does with it:

``POLL`` without hints (infrai, and any job whose provider gives none)
    Completion is "typically 30 s - 4 min" (api.airforce; infrai documents no timing, so it
    borrows these numbers). The first check lands at 30 s, the documented earliest
    completion: earlier checks almost never find a finished job, and a check at 30 s keeps a
    short job from waiting long. Inside the documented window the cadence is a steady 7 s,
    a little denser than the seed's own 8 s loop, which is what makes the mean notification
    delay better than the loop's while the skipped checks before 30 s keep the request
    count below it. After the window (4 min) the job is overdue and the interval grows
    linearly (``OVERDUE_SLOPE``), so a stuck job costs logarithmically few requests.
``POLL`` with Venice hints
    Retrieve answers ``average_execution_time`` (a P80 estimate for the model) and
    ``execution_duration``; their difference predicts the remaining time. The tracker sleeps
    until the job has run ``0.8 x P80`` and then checks ever more densely up to
    ``1.05 x P80`` (see :func:`_hinted` for the assumption and the rule), then every 6 s up
    to ``1.25 x P80``, then backs off as overdue. Checks are never closer than 5 s, Venice's
    "poll about every 5 s": 12 requests a minute per job, so ten jobs at once stay within
    its 120 retrieve requests a minute.
``POLL`` on apixo
    The seed's own advice: "submit task, wait 90 seconds, then poll every 5 seconds".
``CALLBACK`` (apixo): a safety net for a lost callback
    apixo's jobs take "~2 minutes" on average and pollers are told to start at 90 s. The
    callback should have come by the time the average job is done, so the first check is at
    120 s: about half the jobs are done by then, so a lost callback costs a typical job
    well under a minute, and a job still running costs one request. After that the
    checks are sparse: every quarter of the elapsed time, at least 30 s apart (apixo's own
    callback retries start about 30 s after a failed delivery).
``STREAM`` (api.airforce after its SSE stream broke)
    api.airforce's "poll every 5-15 s": the first check 5 s after the break (the break may
    have been the task ending), then every 12 s. The stream is the main path and a broken
    one the exception, so its fallback takes the sparse end of the documented range: a few
    seconds of extra delay on the rare broken job for about 0.7 status requests per
    api.airforce job when one stream in ten breaks and is never re-opened. Before 30 s the
    checks wait for the window as above, at most 15 s at a time. After
    ``STREAM_STEADY_SECONDS`` (15 min, ~4x the documented maximum) the job is overdue and
    backs off like a polled one.

On every path: consecutive failed checks back off exponentially (5 s doubling to 5 min) and
the tracker gives up after ``MAX_ERROR_STREAK`` of them; a Retry-After is always honoured
(bounded by 10 min); jitter moves a delay by at most ``JITTER_FRACTION``; the answer is
within [1 s, 15 min] and never later than the provider's tracking deadline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from bridge.models import Tracking
from bridge.providers.base import PollHints

__all__ = [
    "MAX_ERROR_STREAK",
    "MAX_TRACKING_SECONDS",
    "PollState",
    "next_check_delay",
    "submit_retry_delay",
]

MIN_DELAY: Final = 1.0
MAX_DELAY: Final = 15 * 60.0
MAX_RETRY_AFTER: Final = 10 * 60.0  # a longer Retry-After is cut to this
JITTER_FRACTION: Final = 0.05  # jitter=+/-1 moves a delay by 5 %

# Failed status requests (429, 5xx, transport): 5, 10, 20, 40, 80, 160, 300, 300, 300 s
# between them, so the tracker fails the job (provider_unavailable) after about 20 minutes
# of a provider answering nothing but errors.
ERROR_BACKOFF_BASE: Final = 5.0
ERROR_BACKOFF_CAP: Final = 5 * 60.0
MAX_ERROR_STREAK: Final = 10

# Submissions: 2, 4, 8, ... s up to 2 min. The user is waiting for the job to start, so
# these begin faster than the status back-off; Retry-After still wins.
SUBMIT_BACKOFF_BASE: Final = 2.0
SUBMIT_BACKOFF_CAP: Final = 2 * 60.0

OVERDUE_SLOPE: Final = 0.05  # past its window a job's interval grows 3 s per minute of age
STREAM_BOUNDS: Final = (5.0, 15.0)  # api.airforce: "poll every 5-15 s"
STREAM_CADENCE: Final = 12.0  # within that range; see the module docstring
STREAM_STEADY_SECONDS: Final = 15 * 60.0  # ~4x the documented 4-min maximum: overdue after
SAFETY_NET_RATIO: Final = 0.25  # callback safety net: next check after a quarter of the age
SAFETY_NET_MIN_GAP: Final = 30.0
HINT_WINDOW: Final = (0.8, 1.05)  # Venice: the assumed spread of a model's runs, x P80
HINT_DELAY_WEIGHT: Final = 1.0  # w: one status request is worth 1 s of notification delay
HINT_OVERDUE: Final = 1.25  # x P80: past it, a Venice job backs off as overdue


class _PerProvider(dict[str, float]):
    """A per-provider table whose unknown names read the ``"default"`` entry."""

    def __missing__(self, key: str) -> float:
        return self["default"]


# When the tracker stops following a job and ends it with code "timeout" (seconds since the
# provider accepted it). Index it: an unknown provider name reads the default.
MAX_TRACKING_SECONDS: Final[Mapping[str, float]] = _PerProvider(
    # api.airforce ends every task itself at expires_at = created + 86400 (it answers
    # "expired" and purges the result), and a task that completes late is still charged, so
    # follow it that long; the 5 extra minutes let the last check see the provider's own
    # "expired" instead of inventing a timeout.
    airforce=24 * 3600.0 + 300.0,
    # Venice: the queue call is where credits are taken (a content-policy failure reports
    # "credits_refunded"; inferred), and a private model's one-time download_url is valid
    # 24 h, after which the result cannot be fetched: follow it for those 24 h.
    venice=24 * 3600.0,
    # apixo and infrai document no expiry of unfinished tasks. 6 h is 90x the longest
    # documented typical completion (4 min) and 180x apixo's ~2-min average: a job silent for
    # that long is lost, and with the overdue back-off following it costs ~100 checks.
    apixo=6 * 3600.0,
    infrai=6 * 3600.0,
    default=6 * 3600.0,
)


@dataclass(frozen=True)
class _Profile:
    first_check: float  # without hints: the first status request this long after acceptance
    cadence: float  # the steady interval inside the documented completion window
    window_end: float  # the end of the documented completion window; later, back off
    min_interval: float  # never two status requests closer than this
    typical: float  # when a typical job is done: the callback safety net's first check


# api.airforce: "poll every 5-15 s; typical completion 30 s-4 min"; its seed loop sleeps 8 s.
_AIRFORCE = _Profile(
    first_check=30.0, cadence=7.0, window_end=240.0, min_interval=5.0, typical=120.0
)
_PROFILES: Final[Mapping[str, _Profile]] = {
    "airforce": _AIRFORCE,
    # infrai documents no timing at all: assume api.airforce's "30 s-4 min" and 8-s loop.
    "infrai": _AIRFORCE,
    # apixo: "average ~2 minutes; submit task, wait 90 seconds, then poll every 5 seconds".
    "apixo": _Profile(
        first_check=90.0, cadence=5.0, window_end=240.0, min_interval=5.0, typical=120.0
    ),
    # Venice: "poll about every 5 s", 120 retrieve requests/min per key; the first check
    # (before any hint) follows the unhinted schedule, then its hints take over.
    "venice": _Profile(
        first_check=30.0, cadence=6.0, window_end=240.0, min_interval=5.0, typical=120.0
    ),
}
# An unknown provider: the same shape, at a gentler 10 s.
_DEFAULT = _Profile(
    first_check=30.0, cadence=10.0, window_end=240.0, min_interval=10.0, typical=120.0
)


@dataclass(frozen=True)
class PollState:
    """What the tracker knows about a job when it asks for the next check time."""

    provider: str  # "airforce" | "infrai" | "apixo" | "venice"; unknown names: a safe default
    tracking: Tracking  # POLL; CALLBACK (safety net); STREAM (fallback after a stream break)
    elapsed: float  # seconds since the provider accepted the job
    checks: int  # status requests made so far for this job
    hints: PollHints | None = None  # the latest provider hints (Venice)
    error_streak: int = 0  # consecutive failed status requests (429, 5xx, transport)
    retry_after: float | None = None  # the provider's Retry-After on the last answer


def next_check_delay(
    state: PollState, jitter: float = 0.0, *,
    safety_net: tuple[float, float] = (SAFETY_NET_RATIO, SAFETY_NET_MIN_GAP),
) -> float:
    """Seconds until the next status request. jitter in [-1, 1] spreads checks by a few percent.
    ``safety_net``: a callback job's later checks, as (fraction of its age, least gap)."""
    profile = _PROFILES.get(state.provider, _DEFAULT)
    elapsed = max(state.elapsed, 0.0)
    jitter = _clamp(jitter, -1.0, 1.0)

    low, high = profile.min_interval, MAX_DELAY
    if state.tracking is Tracking.STREAM and elapsed <= STREAM_STEADY_SECONDS:
        low, high = STREAM_BOUNDS
    if state.tracking is Tracking.CALLBACK:
        delay = _safety_net(profile, elapsed, *safety_net)
    elif state.tracking is Tracking.STREAM and elapsed <= STREAM_STEADY_SECONDS:
        delay = _stream(profile, elapsed, state.checks)
    else:
        delay = _poll(profile, elapsed, state.hints)
    delay = _clamp(delay, low, high)

    if state.error_streak > 0:  # errors may push past the stream's 15 s, never below it
        delay = max(delay, _backoff(state.error_streak, ERROR_BACKOFF_BASE, ERROR_BACKOFF_CAP))
        high = MAX_DELAY
    delay = _clamp(delay * (1.0 + JITTER_FRACTION * jitter), low, high)

    # Land the last check on the deadline rather than after it.
    delay = min(delay, max(MAX_TRACKING_SECONDS[state.provider] - elapsed, low))
    return _honour_retry_after(delay, state.retry_after, jitter)


def submit_retry_delay(
    attempt: int, retry_after: float | None = None, jitter: float = 0.0
) -> float:
    """Seconds before trying a submission again after a retryable failure (429, 5xx, transport).

    ``attempt`` counts the failed attempts so far (1 after the first failure).
    """
    jitter = _clamp(jitter, -1.0, 1.0)
    delay = _backoff(max(attempt, 1), SUBMIT_BACKOFF_BASE, SUBMIT_BACKOFF_CAP)
    return _honour_retry_after(delay * (1.0 + JITTER_FRACTION * jitter), retry_after, jitter)


def _poll(profile: _Profile, elapsed: float, hints: PollHints | None) -> float:
    hinted = _hinted(profile, hints)
    if hinted is not None:
        return hinted
    if _before(elapsed, profile.first_check):
        return profile.first_check - elapsed
    if elapsed <= profile.window_end:
        return profile.cadence
    return profile.cadence + OVERDUE_SLOPE * (elapsed - profile.window_end)


def _hinted(profile: _Profile, hints: PollHints | None) -> float | None:
    """Venice: sleep until the job has run 0.8 x its P80 estimate, then check ever denser.

    Assumed: one model's runs spread evenly over ``[a, b]`` with ``a = 0.8 x P80``; P80 being
    their 80th percentile puts ``b`` at ``1.05 x P80``. For jobs spread evenly over a window,
    the spacing that minimises "requests + w x delay" is ``sqrt(2 x (b - ran) / w)``: sparse
    while most of the window is ahead (most jobs are still running, so a check is likely
    wasted), dense near its end. w = 1: a request is worth a second of notification delay.
    Hints are taken as fresh: the tracker passes those of the answer it has just read.
    """
    if hints is None or hints.average_execution_s is None or hints.execution_s is None:
        return None
    p80, ran = hints.average_execution_s, max(hints.execution_s, 0.0)
    if not p80 > 0:
        return None
    start, end = HINT_WINDOW[0] * p80, HINT_WINDOW[1] * p80
    if _before(ran, start):
        return start - ran
    if ran < end:
        return math.sqrt(2.0 * (end - ran) / HINT_DELAY_WEIGHT)  # raised to the rate floor
    overdue = HINT_OVERDUE * p80
    if ran <= overdue:
        return profile.cadence
    return profile.cadence + OVERDUE_SLOPE * (ran - overdue)


def _stream(profile: _Profile, elapsed: float, checks: int) -> float:
    if _before(elapsed, profile.first_check):
        return profile.first_check - elapsed
    if checks == 0:  # the break may have been the job ending: look soon
        return STREAM_BOUNDS[0]
    return STREAM_CADENCE


def _safety_net(profile: _Profile, elapsed: float, ratio: float, min_gap: float) -> float:
    if _before(elapsed, profile.typical):
        return profile.typical - elapsed
    return max(min_gap, ratio * elapsed)


def _before(now: float, target: float) -> bool:
    """Whether ``target`` is still ahead; a check jitter brought a little early counts as made."""
    return now < target * (1.0 - JITTER_FRACTION)


def _backoff(count: int, base: float, cap: float) -> float:
    return min(base * 2.0 ** min(count - 1, 30), cap)


def _honour_retry_after(delay: float, retry_after: float | None, jitter: float) -> float:
    """Never sooner than the provider's Retry-After (at most 10 min); spread only later."""
    if retry_after is not None and retry_after > 0:
        waited = min(retry_after, MAX_RETRY_AFTER) * (1.0 + JITTER_FRACTION * abs(jitter))
        delay = max(delay, waited)
    return _clamp(delay, MIN_DELAY, MAX_DELAY)


def _clamp(value: float, low: float, high: float) -> float:
    if value != value:  # NaN: the low end, never a crash or a busy loop
        return low
    return min(max(value, low), high)
