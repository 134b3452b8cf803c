"""How long the background workers hold, wait and look again.

The defaults are the service's own. They are not configuration (no environment variable sets
them): ``create_app(settings, timings=...)`` and ``Bridge.open(...)`` take another set, so that
tests see a lease lapse or a safety-net poll in seconds instead of minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge import polling


@dataclass(frozen=True)
class Timings:
    """Seconds, all of them."""

    # The tracker (bridge.tracking)
    job_lease: float = 120.0  # a claimed job is held by its worker (longer than any provider call)
    stream_hold: float = 60.0  # while a stream is open, the job is next due this far ahead
    # A job waiting for a provider slot is made due when one frees (the store wakes the one
    # waiting longest); this look is only the safety net, for a slot freed some other way.
    capacity_wait: float = 600.0
    tracker_idle: float = 0.5  # between looks for due jobs when nothing wakes the loop
    wake_coalesce: float = 0.02  # a woken loop waits, so a burst of wakes makes one claim
    failed_retry: float = 1.0  # before a job whose work failed unexpectedly is due again
    # Every next check the polling policy answers is put within these bounds.
    poll_bounds: tuple[float, float] = (polling.MIN_DELAY, polling.MAX_DELAY)
    # A callback-mode job's safety-net checks: a fraction of its age, at least this far apart.
    safety_net_ratio: float = polling.SAFETY_NET_RATIO
    safety_net_min_gap: float = polling.SAFETY_NET_MIN_GAP
    # A job's callback token is refused this long after the job reached its final state.
    callback_token_ttl: float = 86400.0

    # The deliverer (bridge.delivery)
    delivery_lease: float = 30.0  # a claimed delivery is ours; more than delivery_timeout
    delivery_timeout: float = 15.0  # one attempt, connect to last byte
    record_margin: float = 10.0  # what the lease leaves after an attempt, to record it
    delivery_idle: float = 1.0  # between looks for due retries when nothing wakes the worker

    # The supervisor (bridge.supervisor): a worker that raised is restarted after this long,
    # doubling from the first to the second.
    restart_backoff: tuple[float, float] = (0.5, 5.0)

    def __post_init__(self) -> None:
        if self.start_within <= 0:
            raise ValueError("delivery_lease must exceed delivery_timeout + record_margin")

    @property
    def start_within(self) -> float:
        """An attempt not begun this long after its claim is left for the lease to lapse,
        so that the attempt (at most ``delivery_timeout``) and its record end inside it."""
        return self.delivery_lease - self.delivery_timeout - self.record_margin
