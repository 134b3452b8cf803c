"""The store's operations on webhook endpoints, on their deliveries, and on the events an
endpoint asks to be sent again (recover)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from bridge.config import ConfiguredEndpoint
from bridge.events import disabled_endpoint_of
from bridge.models import EVENT_TYPES, Delivery, Endpoint, Page, new_id
from bridge.store.connector import StoreBase, Transaction
from bridge.store.outbox import Fanout
from bridge.store.queries import DELIVERY
from bridge.store.rows import DELIVERIES, ENDPOINTS, EVENTS, decode_cursor, page_of

RECOVER_LIMIT = 10_000  # events one recover call queues again, oldest first
REMOVED = "removed from BRIDGE_CONFIG"  # the reason a configured endpoint was disabled


class Endpoints(StoreBase):
    async def create_endpoint(self, endpoint: Endpoint) -> Endpoint:
        await self._write(lambda tx: tx.execute(tx.q.insert_endpoint, ENDPOINTS.params(endpoint)))
        return endpoint

    async def get_endpoint(self, endpoint_id: str, tenant: str) -> Endpoint | None:
        row = await self.db.fetch_one(self.q.endpoint_of_tenant,
                                      {"id": endpoint_id, "tenant": tenant})
        return ENDPOINTS.of(row) if row else None

    async def list_endpoints(self, tenant: str, *, limit: int,
                             cursor: str | None) -> Page[Endpoint]:
        return await self._page("endpoints", ENDPOINTS, tenant, cursor, limit, {})

    async def update_endpoint(self, endpoint_id: str, tenant: str,
                              change: Callable[[Endpoint], Endpoint]) -> Endpoint | None:
        """Apply ``change`` atomically. An endpoint that becomes disabled has its pending
        deliveries failed (``recover`` sends them later); one enabled again starts with a
        clean failure record."""
        async def work(tx: Transaction) -> Endpoint | None:
            row = await tx.fetch_one(tx.q.endpoint_to_change, {"id": endpoint_id,
                                                               "tenant": tenant})
            if row is None:
                return None
            current = ENDPOINTS.of(row)
            updated = change(current)
            if current.disabled and not updated.disabled:
                updated = replace(updated, disabled_reason=None, failing_since=None)
            await _write_endpoint(tx, updated, was_disabled=current.disabled)
            return updated

        result: Endpoint | None = await self._write(work)
        return result

    async def delete_endpoint(self, endpoint_id: str, tenant: str) -> bool:
        """Delete the endpoint and its deliveries; ``False`` if there was none."""
        async def work(tx: Transaction) -> bool:
            if not await tx.execute(tx.q.delete_endpoint, {"id": endpoint_id, "tenant": tenant}):
                return False
            await tx.execute(tx.q.delete_endpoint_deliveries, {"id": endpoint_id})
            return True

        result: bool = await self._write(work)
        return result

    async def endpoint_deliveries(self, endpoint_id: str, *, limit: int,
                                  cursor: str | None) -> Page[Delivery]:
        rows = await self.db.fetch_all(self.q.endpoint_deliveries, {
            "id": endpoint_id, "before": decode_cursor(cursor), "limit": limit + 1})
        return page_of(rows, limit, DELIVERIES.of)

    async def list_deliveries(self, tenant: str, *, endpoint_id: str | None,
                              event_id: str | None, status: str | None, limit: int,
                              cursor: str | None) -> Page[Delivery]:
        """Every delivery attempt of the tenant, newest first; each filter (``None``: none)
        narrows to one endpoint, one event or one status."""
        return await self._page("deliveries", DELIVERIES, tenant, cursor, limit, {
            "endpoint_id": endpoint_id, "event_id": event_id, "status": status}, DELIVERY)

    async def recover_endpoint(self, endpoint: Endpoint, since: datetime,
                               now: datetime) -> tuple[int, bool]:
        """Queue again, oldest first, the events since ``since`` (and since the endpoint was
        made) that it wants and that were neither delivered to it, nor superseded, nor are
        pending; answer how many, and whether more remain (call again)."""
        stamp = now.timestamp()
        wanted = [t for t in EVENT_TYPES if t != "endpoint.test" and endpoint.wants(t)]

        async def work(tx: Transaction) -> tuple[int, bool]:
            rows = await tx.fetch_all(tx.q.events_to_recover, {
                "tenant": endpoint.tenant, "since": max(since, endpoint.created_at).timestamp(),
                "types": wanted, "endpoint": endpoint.id, "limit": RECOVER_LIMIT + 1})
            fanout = Fanout(tx)
            for event in map(EVENTS.of, rows[:RECOVER_LIMIT]):
                if disabled_endpoint_of(event) != endpoint.id:  # its own: told to others only
                    await fanout.delivery(event, endpoint.id, None, stamp, again=True)
            queued = len(fanout.deliveries)
            await fanout.write()
            return queued, len(rows) > RECOVER_LIMIT

        result: tuple[int, bool] = await self._write(work)
        return result

    async def sync_configured_endpoints(
        self, endpoints: Sequence[ConfiguredEndpoint], now: datetime,
        make_secret: Callable[[], str],
    ) -> dict[str, int]:
        """Bring the endpoints that came from ``BRIDGE_CONFIG`` in step with the file (see
        ``bridge.config``), in one transaction; answer what was created, updated, disabled."""
        async def work(tx: Transaction) -> dict[str, int]:
            await tx.lock("configured endpoints")  # processes starting together sync once
            counts = {"created": 0, "updated": 0, "disabled": 0}
            current = {(e.tenant, e.url): e for e in map(
                ENDPOINTS.of, await tx.fetch_all(tx.q.configured_endpoints))}
            for wanted in endpoints:
                await tx.execute(tx.q.insert_tenant, {"id": wanted.tenant, "now": now.timestamp(),
                                                      "secret": make_secret()})
                have = current.pop((wanted.tenant, wanted.url), None)
                if have is None:
                    await tx.execute(tx.q.insert_endpoint, ENDPOINTS.params(Endpoint(
                        id=new_id("ep"), tenant=wanted.tenant, url=wanted.url,
                        events=wanted.events, description=wanted.description, headers={},
                        secret=wanted.secret, created_at=now, source="config")))
                    counts["created"] += 1
                    continue
                updated = replace(have, events=wanted.events, description=wanted.description)
                if have.secret != wanted.secret:  # as a rotation: the old one signs for a day
                    updated = replace(updated, secret=wanted.secret, previous_secret=have.secret,
                                      previous_secret_until=now + timedelta(hours=24))
                if have.disabled and have.disabled_reason == REMOVED:
                    updated = replace(updated, disabled=False, disabled_reason=None,
                                      failing_since=None)
                if updated != have:
                    await _write_endpoint(tx, updated, was_disabled=have.disabled)
                    counts["updated"] += 1
            for gone in current.values():
                if not gone.disabled:
                    await _write_endpoint(tx, replace(gone, disabled=True,
                                                      disabled_reason=REMOVED), was_disabled=False)
                    counts["disabled"] += 1
            return counts

        result: dict[str, int] = await self._write(work)
        return result


async def _write_endpoint(tx: Transaction, endpoint: Endpoint, *, was_disabled: bool) -> None:
    await tx.execute(tx.q.update_endpoint, ENDPOINTS.params(endpoint))
    if endpoint.disabled and not was_disabled:
        await tx.execute(tx.q.fail_pending_of_endpoint, {"id": endpoint.id,
                                                         "error": "endpoint disabled"})

