"""What a tenant does to its endpoints, events and jobs: one function per action, called by
the API handlers and the portal alike. Each one checks its input, finds the tenant's own
object (404 for anyone else's) and changes it through the store."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bridge.core import TEST_BURST, TEST_PER_SECOND, Bridge, new_signing_secret
from bridge.endpoints import check_url
from bridge.errors import Conflict, InvalidRequest, NotFound, RateLimited
from bridge.models import (
    Delivery,
    Endpoint,
    Event,
    Job,
    Tenant,
    new_id,
    utcnow,
)

if TYPE_CHECKING:  # pydantic's models, loaded at the first body read
    from bridge.schemas import EndpointCreate, EndpointUpdate

ROTATION_OVERLAP = timedelta(hours=24)  # the old secret keeps signing beside the new one


def require_enabled(endpoint: Endpoint) -> None:
    """409 for a disabled endpoint: nothing is sent to it until it is enabled again."""
    if endpoint.disabled:
        raise Conflict("the endpoint is disabled; enable it first (PATCH disabled=false)")


async def endpoint(bridge: Bridge, tenant: Tenant, endpoint_id: str) -> Endpoint:
    """The tenant's endpoint, or 404."""
    found = await bridge.store.get_endpoint(endpoint_id, tenant.id)
    if found is None:
        raise NotFound("no such endpoint")
    return found


def _events(events: list[str] | None) -> tuple[str, ...] | None:
    return None if events is None else tuple(dict.fromkeys(events))


async def create_endpoint(bridge: Bridge, tenant: Tenant, body: EndpointCreate) -> Endpoint:
    """A new endpoint from a create body, with a new secret; its URL must be one the
    guard allows."""
    made = Endpoint(
        id=new_id("ep"),
        tenant=tenant.id,
        url=await check_url(bridge.guard, body.url),
        events=_events(body.events),
        description=body.description,
        headers=dict(body.headers or {}),
        secret=new_signing_secret(),
        created_at=utcnow(),
        max_concurrency=body.max_concurrency,
    )
    return await bridge.store.create_endpoint(made)


async def update_endpoint(bridge: Bridge, tenant: Tenant, endpoint_id: str,
                          body: EndpointUpdate) -> Endpoint:
    """Change the fields the update body gives; ``disabled`` disables or enables."""
    current = await endpoint(bridge, tenant, endpoint_id)
    given = body.model_fields_set
    url = await check_url(bridge.guard, body.url) if "url" in given else current.url
    events = _events(body.events) if "events" in given else current.events
    if current.kind == "hook" and (events is None or len(events) != 1):
        raise InvalidRequest("a REST hook has exactly one event type", field="events")
    description = body.description if "description" in given else current.description
    headers = dict(body.headers or {}) if "headers" in given else current.headers
    max_concurrency = (body.max_concurrency if "max_concurrency" in given
                       else current.max_concurrency)
    disabled = body.disabled if "disabled" in given else None

    def change(stored: Endpoint) -> Endpoint:
        updated = replace(stored, url=url, events=events, description=description,
                          headers=headers, max_concurrency=max_concurrency)
        if disabled is True and not stored.disabled:
            updated = replace(updated, disabled=True, disabled_reason="disabled by the user")
        elif disabled is False:
            updated = replace(updated, disabled=False)
        return updated

    updated = await bridge.store.update_endpoint(current.id, tenant.id, change)
    if updated is None:
        raise NotFound("no such endpoint")
    return updated


async def delete_endpoint(bridge: Bridge, tenant: Tenant, endpoint_id: str) -> None:
    if not await bridge.store.delete_endpoint(endpoint_id, tenant.id):
        raise NotFound("no such endpoint")


async def rotate_secret(bridge: Bridge, tenant: Tenant, endpoint_id: str) -> tuple[Endpoint, str]:
    """A new secret for the endpoint (answered once); the old one keeps signing beside it
    for ``ROTATION_OVERLAP``."""
    current = await endpoint(bridge, tenant, endpoint_id)
    if current.secret is None:
        raise Conflict("a REST hook is signed with the tenant's signing secret (GET /v1/me); "
                       "it has no secret of its own to rotate")
    secret = new_signing_secret()
    now = utcnow()

    def rotate(stored: Endpoint) -> Endpoint:
        return replace(stored, secret=secret, previous_secret=stored.secret,
                       previous_secret_until=now + ROTATION_OVERLAP)

    updated = await bridge.store.update_endpoint(current.id, tenant.id, rotate)
    if updated is None:
        raise NotFound("no such endpoint")
    return updated, secret


async def send_test(bridge: Bridge, tenant: Tenant, endpoint_id: str) -> Delivery:
    """Queue an ``endpoint.test`` event to the endpoint (409 when it is disabled)."""
    current = await endpoint(bridge, tenant, endpoint_id)
    require_enabled(current)
    wait = bridge.test_sends.take(current.id)
    if wait:
        raise RateLimited(f"at most {TEST_BURST} test events at once to one endpoint, then "
                          f"{TEST_PER_SECOND:g} a second; try again later", retry_after=wait)
    event = Event(
        id=new_id("evt"), tenant=tenant.id, type="endpoint.test", job_id=None,
        created_at=utcnow(),
        data={"endpoint_id": current.id, "message": "a test event from bridge"},
    )
    delivery = await bridge.store.add_event(event, endpoint_id=current.id)
    bridge.deliverer.wake()
    assert delivery is not None
    return delivery


async def recover(bridge: Bridge, tenant: Tenant, endpoint_id: str,
                  since: datetime) -> tuple[int, bool]:
    """Queue again what the endpoint missed since a time: how many, and whether more
    remain (the same call again queues the next ones)."""
    current = await endpoint(bridge, tenant, endpoint_id)
    now = utcnow()
    if since > now:
        raise InvalidRequest("since is in the future", field="since")
    require_enabled(current)
    count, more = await bridge.store.recover_endpoint(current, since, now)
    bridge.deliverer.wake()
    return count, more


async def replay(bridge: Bridge, tenant: Tenant, event_id: str,
                 endpoint_id: str | None) -> list[Delivery]:
    """Send one event again: to ``endpoint_id``, or (``None``) to every enabled endpoint
    that wants its type and its job's own webhook."""
    event = await bridge.store.get_event(event_id, tenant.id)
    if event is None:
        raise NotFound("no such event")
    if endpoint_id is not None:
        target = await bridge.store.get_endpoint(endpoint_id, tenant.id)
        if target is None:
            raise NotFound("no such endpoint", field="endpoint_id")
        require_enabled(target)
    deliveries = await bridge.store.replay_event(event, endpoint_id, utcnow())
    bridge.deliverer.wake()
    return deliveries


async def job(bridge: Bridge, tenant: Tenant, job_id: str) -> Job:
    """The tenant's job, or 404."""
    found = await bridge.store.get_job(job_id, tenant.id)
    if found is None:
        raise NotFound("no such job")
    return found


async def cancel_job(bridge: Bridge, tenant: Tenant, job_id: str) -> Job:
    """Cancel at the provider where it can, elsewhere stop following (409 if finished)."""
    return await bridge.tracker.cancel(await job(bridge, tenant, job_id))
