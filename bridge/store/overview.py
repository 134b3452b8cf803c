"""The store's read-outs for the portal: delivery outcomes counted per time bucket, each
endpoint's health, and a search of a tenant's jobs. One query each."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from bridge.models import EndpointHealth, Job, OutcomeCounts, Page
from bridge.store.jobs import Jobs
from bridge.store.rows import JOBS, time_of

COUNTED = ("succeeded", "failed", "pending")  # outcomes a chart shows


def like(text: str) -> str:
    """A LIKE pattern that finds ``text`` anywhere, its own ``%``, ``_`` and ``\\`` as
    themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


class Overview(Jobs):
    async def delivery_outcomes(self, tenant: str, *, endpoint_id: str | None, start: datetime,
                                width: float, buckets: int) -> list[OutcomeCounts]:
        """The tenant's delivery attempts (or one endpoint's) counted by outcome in
        ``buckets`` buckets of ``width`` seconds from ``start``, oldest first."""
        begin = start.timestamp()
        rows = await self.db.fetch_all(self.q.delivery_outcomes, {
            "start": begin, "width": width, "tenant": tenant, "end": begin + width * buckets,
            "every": int(endpoint_id is None), "endpoints": [endpoint_id or ""]})
        counts = [dict.fromkeys(COUNTED, 0) for _ in range(buckets)]
        for row in rows:
            index = int(row["bucket"])
            if 0 <= index < buckets:
                counts[index][row["status"]] += int(row["n"])
        return [OutcomeCounts(start=datetime.fromtimestamp(begin + width * index, UTC), **found)
                for index, found in enumerate(counts)]

    async def endpoint_health(self, tenant: str, endpoint_ids: Sequence[str],
                              since: datetime) -> dict[str, EndpointHealth]:
        """For each endpoint: its attempts that succeeded and failed since ``since``, and when
        one last succeeded (``None``: never). An endpoint with no attempt is absent."""
        if not endpoint_ids:
            return {}
        rows = await self.db.fetch_all(self.q.endpoint_health, {
            "since": since.timestamp(), "tenant": tenant, "endpoints": list(endpoint_ids)})
        return {row["endpoint_id"]: EndpointHealth(
            succeeded=int(row["ok"] or 0), failed=int(row["bad"] or 0),
            last_success=time_of(row["last_ok"])) for row in rows}

    async def search_jobs(self, tenant: str, text: str, *, status: str | None,
                          provider: str | None, limit: int, cursor: str | None) -> Page[Job]:
        """The tenant's jobs, newest first, that ``text`` names: a job id or an event id (of
        its job) exactly, or a part of the prompt or of the metadata's JSON (case ignored)."""
        return await self._page("jobs", JOBS, tenant, cursor, limit,
                                {"status": status, "provider": provider}, condition="job_named",
                                text=text, words=like(text))
