"""Endpoint health at a glance: the success rate of the last 24 hours, the last success, and
since when its attempts have all failed (the bridge's own failure record: the first failure
after the last success, cleared by the next success)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.core import Bridge
from bridge.models import Endpoint, utcnow

WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Health:
    succeeded: int
    failed: int
    last_success: datetime | None
    failing_since: datetime | None

    @property
    def rate(self) -> str:
        """The success rate as shown: "97.5 %", or "—" with nothing finished."""
        done = self.succeeded + self.failed
        if not done:
            return "—"
        percent = 100 * self.succeeded / done
        return f"{percent:.0f} %" if percent in (0, 100) else f"{percent:.1f} %"

    @property
    def state(self) -> str:
        """"failing", "degraded" (some failed), "healthy" or "idle" (no attempt)."""
        if self.failing_since is not None:
            return "failing"
        if self.failed:
            return "degraded"
        return "healthy" if self.succeeded else "idle"


async def health(bridge: Bridge, tenant: str,
                 endpoints: Sequence[Endpoint]) -> dict[str, Health]:
    """Each endpoint's health, from one query."""
    found = await bridge.store.endpoint_health(tenant, [e.id for e in endpoints],
                                               utcnow() - WINDOW)
    made = {}
    for endpoint in endpoints:
        counts = found.get(endpoint.id)
        made[endpoint.id] = Health(
            succeeded=counts.succeeded if counts else 0, failed=counts.failed if counts else 0,
            last_success=counts.last_success if counts else None,
            failing_since=endpoint.failing_since)
    return made
