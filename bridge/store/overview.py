"""The store's read-outs for the portal: delivery outcomes counted per time bucket, each
endpoint's health, and a search of a tenant's jobs. One query each; SQL that differs
between SQLite and PostgreSQL is named by the backend (``floor``, ``prompt``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.models import Job
from bridge.store.base import EndpointHealth, OutcomeCounts, Page
from bridge.store.codec import JOB_READ, job_of, page_of, time_or_none
from bridge.store.works import Backend

COUNTED = ("succeeded", "failed", "pending")  # outcomes a chart shows


def like(text: str) -> str:
    """A LIKE pattern that finds ``text`` anywhere, its own ``%``, ``_`` and ``\\`` as
    themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


class Overview(Backend):
    """Aggregates and search over the tenant's rows (a part of ``SQLStore``)."""

    # SQLite's CAST truncates (and a bucket's offset is never negative); PostgreSQL's rounds.
    floor = "CAST({} AS INTEGER)"
    prompt = "json_extract(request, '$.prompt')"  # the job's prompt, as text

    async def delivery_outcomes(
        self, tenant: str, *, endpoint_id: str | None, start: datetime, width: float,
        buckets: int,
    ) -> list[OutcomeCounts]:
        """The tenant's delivery attempts (or one endpoint's) counted by outcome in
        ``buckets`` consecutive buckets of ``width`` seconds from ``start``, oldest first;
        an attempt counts in the bucket of when it was made (or, pending, queued)."""
        begin = start.timestamp()
        end = begin + width * buckets
        where = "tenant = ? AND created_at >= ? AND created_at < ?"
        params: list[Any] = [begin, width, tenant, begin, end]
        if endpoint_id is not None:
            where += " AND endpoint_id = ?"
            params.append(endpoint_id)
        bucket = self.floor.format("(created_at - ?) / ?")
        rows = await self._fetchall(
            f"SELECT {bucket} AS bucket, status, COUNT(*) AS n FROM deliveries "
            f"WHERE {where} AND status IN ('succeeded', 'failed', 'pending') "
            "GROUP BY 1, status", tuple(params))
        counts = [dict.fromkeys(COUNTED, 0) for _ in range(buckets)]
        for row in rows:
            index = int(row["bucket"])
            if 0 <= index < buckets:
                counts[index][row["status"]] += int(row["n"])
        return [OutcomeCounts(start=time_or_none(begin + width * index) or start, **found)
                for index, found in enumerate(counts)]

    async def endpoint_health(
        self, tenant: str, endpoint_ids: Sequence[str], since: datetime,
    ) -> dict[str, EndpointHealth]:
        """For each endpoint: its attempts that succeeded and failed since ``since``, and
        when one last succeeded (``None``: never). An endpoint with no attempt is absent."""
        if not endpoint_ids:
            return {}
        stamp = since.timestamp()
        marks = ", ".join("?" * len(endpoint_ids))
        rows = await self._fetchall(
            "SELECT endpoint_id,"
            " SUM(CASE WHEN status = 'succeeded' AND created_at >= ? THEN 1 ELSE 0 END) AS ok,"
            " SUM(CASE WHEN status = 'failed' AND created_at >= ? THEN 1 ELSE 0 END) AS bad,"
            " MAX(CASE WHEN status = 'succeeded' THEN created_at END) AS last_ok "
            f"FROM deliveries WHERE tenant = ? AND endpoint_id IN ({marks}) "
            "GROUP BY endpoint_id",
            (stamp, stamp, tenant, *endpoint_ids))
        return {row["endpoint_id"]: EndpointHealth(
            succeeded=int(row["ok"] or 0), failed=int(row["bad"] or 0),
            last_success=time_or_none(row["last_ok"])) for row in rows}

    async def search_jobs(
        self, tenant: str, text: str, *, status: str | None, provider: str | None,
        limit: int, cursor: str | None,
    ) -> Page[Job]:
        """The tenant's jobs, newest first, that ``text`` names: a job id or an event id
        (of its job) exactly, or a part of the prompt or of the metadata's JSON (case
        ignored)."""
        pattern = like(text)
        named = ("(id = ? OR id IN (SELECT job_id FROM events WHERE id = ? AND tenant = ?)"
                 f" OR LOWER({self.prompt}) LIKE ? ESCAPE '\\'"
                 " OR LOWER(metadata) LIKE ? ESCAPE '\\')")
        rows = await self._newest_first(
            "jobs", tenant, {"status": status, "provider": provider}, limit, cursor,
            columns=f"{JOB_READ}, seq",
            where_also=(named, (text, text, tenant, pattern, pattern)))
        return page_of(rows, limit, job_of)
