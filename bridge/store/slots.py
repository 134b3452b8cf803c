"""A provider's slots: at most ``limit`` of its jobs at the provider or being submitted,
across every process on the database (``Store.begin_submit``).

Each grant takes the provider's advisory lock and counts its busy jobs; the requests made
in one turn of the loop (a claim's submissions) share one grant, one lock and one count.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge import slots
from bridge.store.codec import stamp_of
from bridge.store.works import Conn, padded_ids, scalar

PARK_AT_ONCE = 1000  # due jobs a refused submission sends to wait with it, at most
SLOTS_AT_ONCE = 64  # requests for a provider's slots granted in one transaction, at most


@dataclass(slots=True)
class SlotRequest:
    """A job asking for one of its provider's slots (``begin_submit``)."""

    job_id: str
    now: float
    wait_until: float | None
    future: asyncio.Future[bool]


def grant(conn: Conn, provider: str, limit: int, requests: list[SlotRequest]) -> set[str]:
    """Give the provider's free slots to ``requests``, first come first served; the rest
    wait for a slot (see ``Store.begin_submit``). The ids of the jobs granted one."""
    conn.lock(f"submit:{provider}")  # the provider's slots, across processes
    ids = [request.job_id for request in requests]
    padded = padded_ids(ids)  # two counts, each read from its own index
    others = f"id NOT IN ({', '.join('?' * len(padded))})"
    busy = scalar(
        conn,
        f"SELECT (SELECT COUNT(*) FROM jobs WHERE provider = ? AND {others}"
        "  AND status IN ('submitted', 'running'))"
        f" + (SELECT COUNT(*) FROM jobs WHERE provider = ? AND {others}"
        "  AND status = 'queued' AND submit_started_at IS NOT NULL)",
        (provider, *padded, provider, *padded),
    )
    chosen, refused = slots.grant(requests, limit, busy)  # who gets one: the domain's rule
    begun: set[str] = set()
    if chosen:
        # Only jobs still queued begin: one finished meanwhile (canceled, say) is not sent.
        # Its submission is marked as begun at the earliest request's time, a lower bound.
        padded = padded_ids([request.job_id for request in chosen])
        begun = {row[0] for row in conn.execute(
            "UPDATE jobs SET submit_started_at = ? WHERE status = 'queued' "
            f"AND id IN ({', '.join('?' * len(padded))}) RETURNING id",
            (min(request.now for request in chosen), *padded)).fetchall()}
    if refused:
        # Waiting from now on, in the same transaction: a slot freed after this count
        # wakes them (see wake_waiting). So do the provider's other jobs due to wait,
        # unclaimed: each would only be refused too.
        conn.executemany(
            "UPDATE jobs SET lease_until = NULL, next_check_at = COALESCE(?, next_check_at) "
            "WHERE id = ? AND status = 'queued'",
            [(request.wait_until, request.job_id) for request in refused])
        until = max((r.wait_until for r in refused if r.wait_until is not None), default=None)
        stamp = max(request.now for request in refused)
        if until is not None:
            conn.execute(
                "UPDATE jobs SET next_check_at = ? WHERE id IN ("
                "  SELECT id FROM jobs WHERE provider = ? AND status = 'queued'"
                "  AND submit_started_at IS NULL AND next_check_at <= ?"
                "  AND (lease_until IS NULL OR lease_until < ?)"
                f"  ORDER BY next_check_at LIMIT ?{conn.skip_locked})",
                (until, provider, stamp, stamp, PARK_AT_ONCE))
    return begun


class Slots:
    """The requests for providers' slots waiting for their turn of the loop to end."""

    def __init__(self, transaction: Callable[[Callable[[Conn], Any]], Awaitable[Any]]) -> None:
        self._transaction = transaction
        self._waiting: dict[tuple[str, int], list[SlotRequest]] = {}
        self._granting: set[asyncio.Task[None]] = set()

    async def request(self, job_id: str, provider: str, limit: int, now: datetime,
                      wait_until: datetime | None) -> bool:
        """Whether the job was granted a slot (see ``Store.begin_submit``)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.setdefault((provider, limit), [])
        waiting.append(SlotRequest(job_id, now.timestamp(), stamp_of(wait_until), future))
        if len(waiting) == 1:
            granting = asyncio.create_task(self._grant(provider, limit),
                                           name=f"store.slots:{provider}")
            self._granting.add(granting)
            granting.add_done_callback(self._granting.discard)
        return await future

    async def _grant(self, provider: str, limit: int) -> None:
        await asyncio.sleep(0)  # the requests made in this turn of the loop join these
        requests = [request for request in self._waiting.pop((provider, limit), [])
                    if not request.future.done()]  # a caller gone away: never begun
        for start in range(0, len(requests), SLOTS_AT_ONCE):
            batch = requests[start:start + SLOTS_AT_ONCE]
            try:
                granted = await self._transaction(
                    functools.partial(grant, provider=provider, limit=limit, requests=batch))
            except BaseException as exc:
                for request in requests[start:]:
                    if request.future.done():
                        continue
                    if isinstance(exc, asyncio.CancelledError):
                        request.future.cancel()
                    else:
                        request.future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            for request in batch:
                if not request.future.done():
                    request.future.set_result(request.job_id in granted)
