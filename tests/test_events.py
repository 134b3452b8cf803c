"""The event rules, table-driven: what an event carries, who is sent it, what it drops, and
the exact bytes of its webhook body. No database."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bridge import events
from bridge.models import Endpoint, Event, Job, JobStatus, Tracking

AT = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


def job(**fields: object) -> Job:
    base: dict[str, object] = dict(id="job_1", tenant="acme", provider="infrai", model=None,
                                   status=JobStatus.RUNNING, tracking=Tracking.POLL,
                                   request={"prompt": "a fox"}, created_at=AT, updated_at=AT,
                                   sequence=2)
    return Job(**{**base, **fields})  # type: ignore[arg-type]


def event(type_: str, data: object, job_id: str | None = "job_1") -> Event:
    return Event(id="evt_1", tenant="acme", type=type_, job_id=job_id, created_at=AT,
                 data=data)  # type: ignore[arg-type]


def test_a_job_event_numbers_the_job_and_carries_it_as_the_api_shows_it() -> None:
    numbered, made = events.job_event(job(), "job.running")
    assert numbered.sequence == 3
    assert made.data == {**numbered.to_json(), "sequence": 3}
    assert (made.type, made.job_id, made.tenant, made.created_at) == (
        "job.running", "job_1", "acme", AT)
    assert made.id.startswith("evt_")


EVERY = None
RECIPIENTS = [
    # (event type, the endpoints' event filters, job webhook events, expected endpoints, webhook)
    ("job.succeeded", {"a": EVERY, "b": ("job.failed",)}, EVERY, ["a"], True),
    ("job.progress", {"a": EVERY, "b": ("job.progress",)}, EVERY, ["b"], False),
    ("job.progress", {}, ("job.progress",), [], True),
    ("job.failed", {"a": ("job.failed", "job.succeeded")}, ("job.succeeded",), ["a"], False),
]


@pytest.mark.parametrize(("type_", "filters", "webhook_events", "endpoints", "webhook"),
                         RECIPIENTS)
def test_recipients_are_who_wants_the_type(
    type_: str, filters: dict[str, tuple[str, ...] | None],
    webhook_events: tuple[str, ...] | None, endpoints: list[str], webhook: bool,
) -> None:
    subscribers = [events.Subscriber(name, wanted) for name, wanted in filters.items()]
    owner = job(webhook_url="https://hooks.example.com/x", webhook_events=webhook_events)
    assert events.recipients(event(type_, {}), subscribers, owner) == (endpoints, webhook)


def test_a_job_without_a_webhook_url_or_an_event_of_no_job_has_no_webhook_recipient() -> None:
    subscribers = [events.Subscriber("a", None)]
    assert events.recipients(event("job.succeeded", {}), subscribers, job()) == (["a"], False)
    assert events.recipients(event("endpoint.test", {}, None), subscribers, None) == (
        ["a"], False)


def test_an_endpoint_is_never_sent_its_own_disabling() -> None:
    disabled = events.endpoint_disabled(
        Endpoint(id="ep_a", tenant="acme", url="https://a.example.com", events=None,
                 description=None, headers={}, secret="whsec_x", created_at=AT,
                 disabled=True, disabled_reason="the endpoint answered 410 Gone"), AT)
    assert disabled.type == "endpoint.disabled" and disabled.job_id is None
    assert disabled.data["id"] == "ep_a" and "secret" not in disabled.data
    subscribers = [events.Subscriber("ep_a", None), events.Subscriber("ep_b", None)]
    assert events.recipients(disabled, subscribers, None) == (["ep_b"], False)
    assert events.disabled_endpoint_of(disabled) == "ep_a"
    assert events.disabled_endpoint_of(event("job.failed", {"id": "ep_a"})) is None


SUPERSEDED = [
    # (the waiting delivery's type, its sequence, the target's latest sequence, dropped)
    ("job.progress", 3, 4, True),
    ("job.progress", 3, 3, False),
    ("job.progress", 3, None, False),
    ("job.running", 2, 5, False),
    ("job.succeeded", 4, 9, False),
]


@pytest.mark.parametrize(("type_", "sequence", "later", "dropped"), SUPERSEDED)
def test_only_a_progress_report_is_dropped_once_its_job_moved_on(
    type_: str, sequence: int, later: int | None, dropped: bool
) -> None:
    assert events.superseded(type_, sequence, later) is dropped


def test_the_webhook_body_is_the_event_object_with_its_stored_data_as_is() -> None:
    data = '{"id":"job_1","progress":40,"sequence":3}'
    body = events.webhook_body("evt_1", "job.progress", AT.timestamp(), data)
    assert body == (b'{"id":"evt_1","type":"job.progress","timestamp":"2026-11-22T10:00:00Z",'
                    b'"data":{"id":"job_1","progress":40,"sequence":3}}')
    assert json.loads(body)["data"] == json.loads(data)


@pytest.mark.parametrize(("data", "sequence"), [({"sequence": 7}, 7), ({}, 0),
                                                ({"sequence": "7"}, 0), ([], 0)])
def test_an_events_sequence_is_its_datas_whole_number(data: object, sequence: int) -> None:
    assert events.sequence_of(event("job.running", data)) == sequence
