"""Events: what each state change tells, who is sent it, and the exact bytes a webhook
carries. Pure functions; the store keeps what they decide (``bridge.store``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from bridge.models import (
    DEFAULT_ENDPOINT_EVENTS,
    ENDPOINT_DISABLED,
    Endpoint,
    Event,
    Job,
    new_id,
    rfc3339_stamp,
)

# Event types a later event of the same job makes pointless to send: a progress report
# still waiting when the job has moved on is dropped, every other event matters alone.
SUPERSEDED = ("job.progress",)


def job_event(job: Job, event_type: str) -> tuple[Job, Event]:
    """The job numbered for its next event, and that event: its data is the job as the API
    shows it at that moment, with its ``sequence``."""
    job = job.evolve(sequence=job.sequence + 1)
    data = job.to_json()
    data["sequence"] = job.sequence
    return job, Event(id=new_id("evt"), tenant=job.tenant, type=event_type, job_id=job.id,
                      created_at=job.updated_at, data=data)


def endpoint_disabled(endpoint: Endpoint, at: datetime) -> Event:
    """``endpoint.disabled``: its data is the endpoint as the API shows it (no secret)."""
    return Event(id=new_id("evt"), tenant=endpoint.tenant, type=ENDPOINT_DISABLED,
                 job_id=None, created_at=at, data=endpoint.to_json())


def disabled_endpoint_of(event: Event) -> str | None:
    """The endpoint an ``endpoint.disabled`` event tells of (else ``None``): the one
    endpoint never sent it."""
    if event.type != ENDPOINT_DISABLED or not isinstance(event.data, dict):
        return None
    about = event.data.get("id")
    return about if isinstance(about, str) else None


def sequence_of(event: Event) -> int:
    """The event's place among its job's events (0: not a job's event)."""
    value = event.data.get("sequence") if isinstance(event.data, dict) else None
    return value if isinstance(value, int) else 0


@dataclass(frozen=True)
class Subscriber:
    """An enabled endpoint as the fan-out sees it: its id and the types it wants."""

    id: str
    events: tuple[str, ...] | None  # None: every type but job.progress


def recipients(event: Event, subscribers: Iterable[Subscriber], job: Job | None
               ) -> tuple[list[str], bool]:
    """Who is sent ``event``: the ids of the endpoints that want its type (never the
    endpoint it is about), and whether the job's own ``webhook_url`` wants it."""
    about = disabled_endpoint_of(event)
    endpoints = [s.id for s in subscribers if s.id != about and event.type in (
        s.events if s.events is not None else DEFAULT_ENDPOINT_EVENTS)]
    webhook = job is not None and job.webhook_url is not None and event.type in (
        job.webhook_events if job.webhook_events is not None else DEFAULT_ENDPOINT_EVENTS)
    return endpoints, webhook


def superseded(event_type: str, sequence: int, later_sequence: int | None) -> bool:
    """Whether a delivery of ``event_type`` (its job's event ``sequence``) is dropped rather
    than sent or tried again, once its target has an event ``later_sequence`` of the same
    job (``None``: none)."""
    return (event_type in SUPERSEDED and later_sequence is not None
            and later_sequence > sequence)


def webhook_body(event_id: str, event_type: str, created_at: float, data: str) -> bytes:
    """The event object as a webhook's body: ``data`` is the stored JSON text of the event's
    data, sent as it is, so that the body is the same bytes on every attempt."""
    return ('{"id":' + json.dumps(event_id) + ',"type":' + json.dumps(event_type)
            + ',"timestamp":"' + rfc3339_stamp(created_at) + '","data":' + data + "}").encode()
