"""The pure rules of jobs: parsing the request, checking it against a model, and how
provider snapshots, submissions and the bridge's own decisions move a job."""

from __future__ import annotations

import os
import re
import time
import warnings
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bridge.errors import InvalidRequest
from bridge.jobs import apply_snapshot, apply_submission, check_capabilities, end_job
from bridge.models import Job, JobError, JobStatus, Tracking, new_id, rfc3339
from bridge.providers.base import JobRequest, ModelInfo, Snapshot, Submission
from bridge.schemas import JobRequest as JobBody
from bridge.schemas import parse

ENABLED = {"airforce", "infrai", "venice"}  # of the four; apixo is known, not enabled

SPEC_EXAMPLE: dict[str, Any] = {
    "provider": "airforce", "model": "wan-2.6", "prompt": "A red fox darting across snowy hills",
    "mode": "text", "duration_seconds": 8, "aspect_ratio": "16:9", "resolution": "720p",
    "images": ["https://example.com/first.jpg"], "negative_prompt": None, "seed": 1234,
    "audio": True, "options": {}, "webhook_url": None, "events": None,
    "metadata": {"order": 42},
}

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
MEDIA_EXPIRES = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)


def body(**changes: Any) -> dict[str, Any]:
    """The SPEC example with ``changes``; a value of ``...`` removes the field."""
    out = {**SPEC_EXAMPLE, **changes}
    return {key: value for key, value in out.items() if value is not ...}


def media_link(name: str) -> tuple[str, datetime]:
    return f"https://bridge.example/media/{name}-token", MEDIA_EXPIRES


def make_job(status: JobStatus = JobStatus.SUBMITTED, **fields: Any) -> Job:
    return Job(
        id="job_1",
        tenant="acme",
        provider="airforce",
        model="wan-2.6",
        status=status,
        tracking=Tracking.STREAM,
        request={"provider": "airforce", "prompt": "a fox", "mode": "text"},
        created_at=T0,
        updated_at=T0,
        **fields,
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def parse_request(body: Any) -> dict[str, Any]:
    """A ``POST /v1/jobs`` body read as the API reads it, every field present."""
    return parse(JobBody, body, enabled=ENABLED).model_dump()


# -- parse_request ---------------------------------------------------------------------------


def test_parse_request_accepts_the_spec_example() -> None:
    assert parse_request(SPEC_EXAMPLE) == SPEC_EXAMPLE


def test_parse_request_fills_every_field_of_a_minimal_body() -> None:
    parsed = parse(JobBody, {"provider": "venice", "prompt": "a fox"})
    assert parsed.model_dump() == {
        "provider": "venice", "prompt": "a fox", "model": None, "mode": "text",
        "duration_seconds": None, "aspect_ratio": None, "resolution": None, "images": None,
        "negative_prompt": None, "seed": None, "audio": None, "options": None,
        "webhook_url": None, "events": None, "metadata": None,
    }
    # The job keeps what was given, the mode always; the provider gets every field.
    assert parsed.accepted() == {"provider": "venice", "prompt": "a fox", "mode": "text"}
    assert parsed.for_provider() == JobRequest(provider="venice", prompt="a fox")


def test_a_null_mode_is_text_and_what_the_job_keeps_leaves_out_empty_fields() -> None:
    parsed = parse(JobBody, body(mode=None, images=[], options={}, seed=0, audio=False,
                                 webhook_url="https://hooks.example.com/in",
                                 events=["job.failed"]))
    assert parsed.mode == "text"
    assert parsed.accepted() == {
        "provider": "airforce", "prompt": SPEC_EXAMPLE["prompt"], "model": "wan-2.6",
        "mode": "text", "duration_seconds": 8, "aspect_ratio": "16:9", "resolution": "720p",
        "seed": 0, "audio": False}
    assert (parsed.webhook_url, parsed.events) == ("https://hooks.example.com/in",
                                                   ["job.failed"])


@pytest.mark.parametrize("accepted", [
    body(images=["data:image/png;base64,iVBORw0KGgo="]),
    body(images=["http://example.com/a.jpg", "https://example.com/b.jpg"]),
    body(webhook_url="https://hooks.example.com/in"),
    body(events=["job.succeeded", "job.failed"]),
    body(mode="first_last"),
    body(seed=0, audio=False),
])
def test_parse_request_accepts_valid_variations(accepted: dict[str, Any]) -> None:
    parsed = parse_request(accepted)
    assert {key: parsed[key] for key in accepted} == accepted


@pytest.mark.parametrize("not_an_object", [[], ["provider"], "airforce", 5, None, True])
def test_parse_request_refuses_a_body_that_is_not_an_object_with_400(
    not_an_object: Any,
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(not_an_object)
    assert caught.value.status_code == 400


REFUSALS = [
    ("unknown top-level field", body(colour="red"), "colour"),
    ("missing provider", body(provider=...), "provider"),
    ("null provider", body(provider=None), "provider"),
    ("unknown provider", body(provider="sora"), "provider"),
    ("provider not a string", body(provider=["airforce"]), "provider"),
    ("disabled provider", body(provider="apixo"), "provider"),
    ("missing prompt", body(prompt=...), "prompt"),
    ("blank prompt", body(prompt="   "), "prompt"),
    ("empty prompt", body(prompt=""), "prompt"),
    ("prompt not a string", body(prompt=42), "prompt"),
    ("prompt too long", body(prompt="x" * 20_001), "prompt"),
    ("model not a string", body(model=26), "model"),
    ("duration as a string", body(duration_seconds="8"), "duration_seconds"),
    ("duration as a bool", body(duration_seconds=True), "duration_seconds"),
    ("duration as a float", body(duration_seconds=8.5), "duration_seconds"),
    ("duration out of range", body(duration_seconds=0), "duration_seconds"),
    ("seed true", body(seed=True), "seed"),
    ("seed as a string", body(seed="1234"), "seed"),
    ("audio yes", body(audio="yes"), "audio"),
    ("audio as 1", body(audio=1), "audio"),
    ("images not a list", body(images="https://example.com/a.jpg"), "images"),
    ("too many images", body(images=["https://example.com/a.jpg"] * 17), "images"),
    ("options not an object", body(options=["fast"]), "options"),
    ("metadata not an object", body(metadata="order 42"), "metadata"),
    ("metadata too large", body(metadata={"blob": "x" * 20_000}), "metadata"),
    ("bad mode", body(mode="video"), "mode"),
    ("mode not a string", body(mode=1), "mode"),
    ("aspect ratio not a string", body(aspect_ratio=1.77), "aspect_ratio"),
    ("resolution not a string", body(resolution=720), "resolution"),
    ("negative prompt not a string", body(negative_prompt=["blur"]), "negative_prompt"),
    ("ftp image", body(images=["ftp://example.com/a.jpg"]), "images[0]"),
    ("bare file name image", body(images=["https://example.com/a.jpg", "a.jpg"]), "images[1]"),
    ("image without a host", body(images=["https://"]), "images[0]"),
    ("data image without a comma", body(images=["data:image/png;base64"]), "images[0]"),
    ("image not a string", body(images=[{"url": "https://example.com/a.jpg"}]), "images[0]"),
    ("webhook_url not http", body(webhook_url="ftp://hooks.example.com"), "webhook_url"),
    ("webhook_url not a URL", body(webhook_url="hooks.example.com/in"), "webhook_url"),
    ("webhook_url not a string", body(webhook_url=1), "webhook_url"),
    ("events not a list", body(events="job.succeeded"), "events"),
    ("unknown event type", body(events=["job.succeeded", "job.done"]), "events[1]"),
    ("event type not a string", body(events=[7]), "events[0]"),
]


@pytest.mark.parametrize(("request_body", "field"), [case[1:] for case in REFUSALS],
                         ids=[case[0] for case in REFUSALS])
def test_parse_request_refuses_naming_the_field(request_body: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(request_body)
    assert caught.value.field == field
    assert caught.value.status_code == 422


@pytest.mark.parametrize("webhook_url", ["https://", "https:hooks", "http:///in"])
def test_parse_request_refuses_a_webhook_url_without_a_host(webhook_url: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(body(webhook_url=webhook_url))
    assert caught.value.field == "webhook_url"


def test_parse_request_refuses_an_empty_mode() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(body(mode=""))
    assert caught.value.field == "mode"


# -- check_capabilities -----------------------------------------------------------------------

RANGED = ModelInfo(
    provider="airforce", id="wan-2.6", tracking=Tracking.STREAM,
    modes=("text", "image", "first_last"), aspect_ratios=("16:9", "9:16"),
    resolutions=("480p", "720p"), min_duration_seconds=4, max_duration_seconds=10, max_images=2,
)
DISCRETE = ModelInfo(
    provider="infrai", id="kling", tracking=Tracking.POLL, modes=("text", "image"),
    durations=(5, 10),
)
UNDOCUMENTED = ModelInfo(provider="apixo", id="veo", tracking=Tracking.CALLBACK, modes=())


def request(**fields: Any) -> JobRequest:
    return JobRequest(provider="airforce", prompt="a fox", **fields)


CAPABILITY_REFUSALS = [
    ("mode not offered", RANGED, request(mode="reference", images=("https://x/a.jpg",)), "mode"),
    ("duration below the range", RANGED, request(duration_seconds=3), "duration_seconds"),
    ("duration above the range", RANGED, request(duration_seconds=11), "duration_seconds"),
    ("duration not in the list", DISCRETE, request(duration_seconds=8), "duration_seconds"),
    ("aspect ratio not offered", RANGED, request(aspect_ratio="1:1"), "aspect_ratio"),
    ("resolution not offered", RANGED, request(resolution="1080p"), "resolution"),
    ("image mode without images", RANGED, request(mode="image"), "images"),
    ("first_last mode without images", RANGED, request(mode="first_last"), "images"),
    ("reference mode without images", UNDOCUMENTED, request(mode="reference"), "images"),
    ("too many images", RANGED,
     request(mode="image", images=("https://x/a.jpg",) * 3), "images"),
]


@pytest.mark.parametrize(("model", "job_request", "field"),
                         [case[1:] for case in CAPABILITY_REFUSALS],
                         ids=[case[0] for case in CAPABILITY_REFUSALS])
def test_check_capabilities_refuses_naming_the_field(
    model: ModelInfo, job_request: JobRequest, field: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_capabilities(job_request, model)
    assert caught.value.field == field


CAPABILITY_ACCEPTS = [
    ("plain text", RANGED, request()),
    ("lowest duration", RANGED, request(duration_seconds=4)),
    ("highest duration", RANGED, request(duration_seconds=10)),
    ("listed duration", DISCRETE, request(duration_seconds=10)),
    ("offered aspect ratio and resolution", RANGED,
     request(aspect_ratio="9:16", resolution="480p")),
    ("image mode with the most images", RANGED,
     request(mode="image", images=("https://x/a.jpg", "https://x/b.jpg"))),
    ("undocumented capabilities are not checked", UNDOCUMENTED,
     request(duration_seconds=60, aspect_ratio="21:9", resolution="4k")),
]


@pytest.mark.parametrize(("model", "job_request"), [case[1:] for case in CAPABILITY_ACCEPTS],
                         ids=[case[0] for case in CAPABILITY_ACCEPTS])
def test_check_capabilities_accepts_what_the_model_allows(
    model: ModelInfo, job_request: JobRequest
) -> None:
    check_capabilities(job_request, model)


# -- apply_snapshot: states and events ----------------------------------------------------------


@pytest.mark.parametrize(("current", "reported"), [
    (JobStatus.RUNNING, JobStatus.SUBMITTED),
    (JobStatus.RUNNING, JobStatus.QUEUED),
    (JobStatus.SUBMITTED, JobStatus.QUEUED),
])
def test_apply_snapshot_never_moves_a_job_backwards(
    current: JobStatus, reported: JobStatus
) -> None:
    change = apply_snapshot(make_job(current), Snapshot(reported), at(1), media_link)
    assert change.job.status == current
    assert change.event_type is None


@pytest.mark.parametrize(("current", "reported", "event_type"), [
    (JobStatus.QUEUED, JobStatus.SUBMITTED, "job.submitted"),
    (JobStatus.SUBMITTED, JobStatus.RUNNING, "job.running"),
    (JobStatus.SUBMITTED, JobStatus.SUCCEEDED, "job.succeeded"),
    (JobStatus.RUNNING, JobStatus.SUCCEEDED, "job.succeeded"),
    (JobStatus.RUNNING, JobStatus.FAILED, "job.failed"),
    (JobStatus.RUNNING, JobStatus.CANCELED, "job.canceled"),
    (JobStatus.SUBMITTED, JobStatus.EXPIRED, "job.expired"),
])
def test_apply_snapshot_makes_one_event_per_state_change(
    current: JobStatus, reported: JobStatus, event_type: str
) -> None:
    change = apply_snapshot(make_job(current), Snapshot(reported), at(1), media_link)
    assert change.job.status == reported
    assert change.event_type == event_type


def test_apply_snapshot_of_the_same_state_makes_no_event() -> None:
    job = make_job(JobStatus.RUNNING, progress=40)
    change = apply_snapshot(job, Snapshot(JobStatus.RUNNING, progress=40), at(1), media_link)
    assert change.event_type is None
    assert change.job.updated_at == job.updated_at  # nothing new: the job is left as it was


def test_apply_snapshot_leaves_the_given_job_unchanged() -> None:
    job = make_job(JobStatus.RUNNING, progress=10)
    before = replace(job)
    apply_snapshot(job, Snapshot(JobStatus.SUCCEEDED, video_url="https://cdn.example/v.mp4"),
                   at(1), media_link)
    assert job == before


def succeed(job: Job | None = None, **snapshot: Any) -> Job:
    snapshot.setdefault("video_url", "https://cdn.example/v.mp4")
    snapshot.setdefault("expires_at", datetime(2026, 11, 23, 10, 0, 0, 500, tzinfo=UTC))
    running = job or make_job(JobStatus.RUNNING, progress=60, next_check_at=at(30))
    return apply_snapshot(running, Snapshot(JobStatus.SUCCEEDED, **snapshot), at(5),
                          media_link).job


def test_success_sets_progress_to_100() -> None:
    assert succeed().progress == 100


def test_success_records_the_video_url_and_its_rfc3339_expiry() -> None:
    assert succeed().result == {"video_url": "https://cdn.example/v.mp4",
                                "expires_at": "2026-11-23T10:00:00Z"}


def test_success_sets_completed_at() -> None:
    assert succeed().completed_at == at(5)


def test_success_clears_the_next_check() -> None:
    assert succeed().next_check_at is None


def test_success_with_a_media_file_links_to_the_bridge() -> None:
    job = succeed(video_url=None, expires_at=None, media_file="job_1.mp4")
    assert job.result == {"video_url": "https://bridge.example/media/job_1.mp4-token",
                          "expires_at": "2026-11-29T10:00:00Z"}


def test_failure_keeps_the_providers_error() -> None:
    error = JobError("content_violation", "the prompt was refused", provider_code="E_NSFW")
    change = apply_snapshot(make_job(JobStatus.RUNNING), Snapshot(JobStatus.FAILED, error=error),
                            at(5), media_link)
    assert change.job.error == error
    assert change.job.completed_at == at(5)
    assert change.job.result is None


def test_failure_without_an_error_still_gets_one() -> None:
    change = apply_snapshot(make_job(JobStatus.RUNNING), Snapshot(JobStatus.FAILED), at(5),
                            media_link)
    assert change.job.error is not None and change.job.error.code


def test_expiry_without_an_error_gets_code_expired() -> None:
    change = apply_snapshot(make_job(JobStatus.RUNNING), Snapshot(JobStatus.EXPIRED), at(5),
                            media_link)
    assert change.job.error is not None and change.job.error.code == "expired"


def test_expiry_with_an_error_keeps_it() -> None:
    error = JobError("timeout", "the provider gave up")
    change = apply_snapshot(make_job(JobStatus.RUNNING), Snapshot(JobStatus.EXPIRED, error=error),
                            at(5), media_link)
    assert change.job.error == error


# -- apply_snapshot: progress -------------------------------------------------------------------


def progress_events(steps: list[tuple[float, int]]) -> list[tuple[int | None, str | None]]:
    """Feed running snapshots (second, progress) to one job; the stored progress and event
    type after each."""
    job = make_job(JobStatus.RUNNING, progress=0)
    seen = []
    for second, progress in steps:
        change = apply_snapshot(job, Snapshot(JobStatus.RUNNING, progress=progress), at(second),
                                media_link)
        job = change.job
        seen.append((job.progress, change.event_type))
    return seen


@pytest.mark.parametrize(("steps", "expected"), [
    ([(0, 10), (1, 20), (6, 30)],
     [(10, "job.progress"), (20, None), (30, "job.progress")]),
    ([(0, 10), (4.9, 20), (5, 30)],
     [(10, "job.progress"), (20, None), (30, "job.progress")]),
    ([(0, 10), (1, 20), (2, 30), (3, 40)],
     [(10, "job.progress"), (20, None), (30, None), (40, None)]),
    ([(0, 10), (6, 10)],
     [(10, "job.progress"), (10, None)]),
], ids=["burst then later", "exactly five seconds", "fast burst", "no change no event"])
def test_job_progress_events_come_at_most_once_per_five_seconds(
    steps: list[tuple[float, int]], expected: list[tuple[int | None, str | None]]
) -> None:
    assert progress_events(steps) == expected


@pytest.mark.parametrize(("current", "reported", "stored"), [
    (30, 5, 30),
    (30, None, 30),
    (30, 31, 31),
    (None, 25, 25),
    (90, 150, 100),
    (None, -5, 0),
])
def test_progress_never_decreases_and_stays_within_0_to_100(
    current: int | None, reported: int | None, stored: int
) -> None:
    job = make_job(JobStatus.RUNNING, progress=current)
    change = apply_snapshot(job, Snapshot(JobStatus.RUNNING, progress=reported), at(10),
                            media_link)
    assert change.job.progress == stored


def test_a_lower_progress_makes_no_event() -> None:
    job = make_job(JobStatus.RUNNING, progress=30)
    change = apply_snapshot(job, Snapshot(JobStatus.RUNNING, progress=5), at(60), media_link)
    assert change.event_type is None


def test_a_progress_event_remembers_when_it_was_made() -> None:
    job = make_job(JobStatus.RUNNING, progress=0)
    change = apply_snapshot(job, Snapshot(JobStatus.RUNNING, progress=10), at(3), media_link)
    assert change.job.progress_event_at == at(3)


def test_the_cost_the_provider_reports_is_recorded_beside_the_estimate() -> None:
    job = make_job(JobStatus.RUNNING, cost={"estimated_usd": 3.2})
    change = apply_snapshot(job, Snapshot(JobStatus.SUCCEEDED, video_url="https://cdn/v.mp4",
                                          cost_usd=2.987654), at(5), media_link)
    assert change.job.cost == {"estimated_usd": 3.2, "usd": 2.9877}


def test_no_reported_cost_keeps_the_cost_as_it_was() -> None:
    job = make_job(JobStatus.RUNNING, cost={"estimated_usd": 3.2})
    change = apply_snapshot(job, Snapshot(JobStatus.RUNNING, progress=50), at(5), media_link)
    assert change.job.cost == {"estimated_usd": 3.2}


# -- apply_submission ---------------------------------------------------------------------------

SUBMISSION = Submission(
    provider_job_id="f47ac10b",
    snapshot=Snapshot(JobStatus.SUBMITTED),
    provider_data={"download_url": "https://venice/dl"},
    estimated_cost_usd=3.20004,
)


def submit(**fields: Any) -> Any:
    job = make_job(JobStatus.QUEUED, submit_started_at=at(0), provider_data={"kept": 1},
                   error_streak=2, **fields)
    return apply_submission(job, SUBMISSION, at(2))


def test_submission_makes_the_job_submitted_with_a_job_submitted_event() -> None:
    change = submit()
    assert (change.job.status, change.event_type) == (JobStatus.SUBMITTED, "job.submitted")


def test_submission_records_the_provider_job_id() -> None:
    assert submit().job.provider_job_id == "f47ac10b"


def test_submission_adds_the_provider_data_to_what_was_kept() -> None:
    assert submit().job.provider_data == {"kept": 1, "download_url": "https://venice/dl"}


def test_submission_records_the_estimated_cost() -> None:
    assert submit().job.cost == {"estimated_usd": 3.2}


def test_submission_without_an_estimate_keeps_no_cost() -> None:
    job = make_job(JobStatus.QUEUED)
    change = apply_submission(job, replace(SUBMISSION, estimated_cost_usd=None), at(2))
    assert change.job.cost is None


def test_submission_records_when_it_was_accepted() -> None:
    job = submit().job
    assert (job.submitted_at, job.updated_at) == (at(2), at(2))


def test_submission_clears_submit_started_at() -> None:
    assert submit().job.submit_started_at is None


def test_submission_resets_the_error_streak() -> None:
    assert submit().job.error_streak == 0


# -- end_job ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "error"), [
    (JobStatus.CANCELED, None),
    (JobStatus.FAILED, JobError("submit_outcome_unknown", "the submission may have been lost")),
    (JobStatus.EXPIRED, JobError("timeout", "the job took too long")),
])
def test_end_job_sets_the_terminal_status_error_and_completion(
    status: JobStatus, error: JobError | None
) -> None:
    job = make_job(JobStatus.RUNNING, next_check_at=at(30), submit_started_at=at(0))
    change = end_job(job, status, error, at(9))
    assert (change.job.status, change.job.error, change.job.completed_at) == (status, error,
                                                                             at(9))
    assert change.event_type == f"job.{status}"


def test_end_job_takes_the_job_off_the_timer() -> None:
    job = make_job(JobStatus.RUNNING, next_check_at=at(30), submit_started_at=at(0))
    ended = end_job(job, JobStatus.CANCELED, None, at(9)).job
    assert (ended.next_check_at, ended.submit_started_at) == (None, None)


def test_ids_are_url_safe_unique_and_sort_by_creation_time() -> None:
    first = [new_id("evt") for _ in range(500)]
    time.sleep(0.002)
    later = new_id("evt")
    assert all(re.fullmatch(r"evt_[0-9A-Za-z]{22}", value) for value in [*first, later])
    assert len(set(first)) == len(first)
    assert later > max(first)


def test_ids_made_after_a_fork_do_not_repeat_the_parents() -> None:
    new_id("evt")  # the parent has random digits drawn and waiting
    reader, writer = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns when a threaded process forks
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: write the ids it makes, then leave at once
        try:
            os.write(writer, " ".join(new_id("evt") for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = [new_id("evt") for _ in range(50)]
    assert len(child) == 50
    assert not {value[-13:] for value in child} & {value[-13:] for value in parent}


@pytest.mark.parametrize(("value", "text"), [
    (datetime(2026, 12, 1, 18, 22, 15, 999999, tzinfo=UTC), "2026-12-01T18:22:15Z"),
    (datetime(2026, 12, 1, 20, 0, 0, tzinfo=timezone(timedelta(hours=2))),
     "2026-12-01T18:00:00Z"),
    (datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC), "1969-12-31T23:59:59Z"),
])
def test_times_are_written_in_utc_whole_seconds(value: datetime, text: str) -> None:
    assert rfc3339(value) == text
    assert rfc3339(value) == text  # the second time from the cache
    assert rfc3339(None) is None
