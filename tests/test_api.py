"""The HTTP API of SPEC sections 3, 4 and 5 (events), over a real socket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.models import Job, JobStatus, Tracking, new_id, utcnow
from bridge.store import Change
from tests.conftest import API_KEY, Harness

FOX = {"provider": "airforce", "model": "wan-2.6", "prompt": "A red fox darting across snowy hills",
       "duration_seconds": 8, "aspect_ratio": "16:9", "resolution": "720p"}
CITY = {"provider": "infrai", "prompt": "A timelapse of a city skyline at dusk",
        "duration_seconds": 5, "aspect_ratio": "16:9"}


# -- authentication and tenants --------------------------------------------------------------


async def test_requests_without_a_key_answer_401(harness: Harness) -> None:
    async with httpx.AsyncClient(base_url=harness.url) as anonymous:
        for method, path in [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/me"),
                             ("GET", "/v1/events"), ("GET", "/v1/models"), ("GET", "/v1/keys"),
                             ("DELETE", f"/v1/keys/{API_KEY[:12]}"),
                             ("POST", "/v1/me/rotate-signing-secret")]:
            answer = await anonymous.request(method, path)
            assert answer.status_code == 401
            assert answer.json()["error"]["code"] == "unauthorized"


async def test_a_wrong_key_answers_401(harness: Harness) -> None:
    answer = await harness.client.get("/v1/me", headers={"Authorization": "Bearer brk_nope"})
    assert answer.status_code == 401


async def test_bearer_and_x_api_key_both_authenticate(harness: Harness) -> None:
    async with httpx.AsyncClient(base_url=harness.url) as client:
        bearer = await client.get("/v1/me", headers={"Authorization": f"Bearer {API_KEY}"})
        header = await client.get("/v1/me", headers={"X-API-Key": API_KEY})
    assert bearer.status_code == header.status_code == 200
    assert bearer.json() == header.json()


async def test_me_names_the_tenant_and_its_signing_secret(harness: Harness) -> None:
    me = (await harness.client.get("/v1/me")).json()
    assert me["tenant"] == "default"
    assert me["signing_secret"].startswith("whsec_")
    assert len(me["signing_secret"]) > len("whsec_") + 32


async def test_another_tenants_ids_answer_404_on_every_route(harness: Harness) -> None:
    job = await harness.create(CITY)
    await harness.wait(job["id"], {"submitted", "running", "succeeded"})
    event_id = harness.events[0].id
    other_key = await harness.bridge.create_api_key("acme")
    async with httpx.AsyncClient(base_url=harness.url,
                                 headers={"X-API-Key": other_key}) as other:
        assert (await other.get("/v1/me")).json()["tenant"] == "acme"
        assert (await other.get(f"/v1/jobs/{job['id']}")).status_code == 404
        assert (await other.post(f"/v1/jobs/{job['id']}/cancel")).status_code == 404
        assert (await other.get(f"/v1/events/{event_id}")).status_code == 404
        assert (await other.get("/v1/jobs")).json()["data"] == []
        assert (await other.get("/v1/events")).json()["data"] == []
        assert (await other.get(f"/v1/events?job_id={job['id']}")).json()["data"] == []


async def test_api_keys_are_stored_hashed(harness: Harness) -> None:
    key = await harness.bridge.create_api_key("acme")
    database = Path(harness.env["BRIDGE_DATABASE"])
    raw = b"".join(path.read_bytes() for path in (database, database.with_name("bridge.db-wal"))
                   if path.exists())
    assert key.encode() not in raw
    assert API_KEY.encode() not in raw


# -- creating jobs ---------------------------------------------------------------------------


async def test_create_answers_202_with_the_job_object(harness: Harness) -> None:
    answer = await harness.client.post("/v1/jobs", json={**FOX, "metadata": {"order": 42}})
    assert answer.status_code == 202
    job = answer.json()
    assert job["id"].startswith("job_")
    assert job["object"] == "job"
    assert job["status"] == "queued"
    assert job["tracking"] == "stream"
    assert job["metadata"] == {"order": 42}
    assert job["request"]["prompt"] == FOX["prompt"]
    assert job["created_at"].endswith("Z")
    for key in ("provider_job_id", "progress", "result", "error", "cost", "completed_at"):
        assert key in job


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"duration_seconds": 99}, "duration_seconds"),
        ({"aspect_ratio": "21:9"}, "aspect_ratio"),
        ({"resolution": "4k"}, "resolution"),
        ({"mode": "first_last", "images": ["https://example.com/a.jpg"] * 2}, "mode"),
        ({"mode": "image"}, "images"),
        ({"model": "no-such-model"}, "model"),
        ({"mode": "sideways"}, "mode"),
        ({"seed": "1234"}, "seed"),
        ({"images": ["ftp://example.com/a.jpg"]}, "images[0]"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_a_request_the_model_cannot_take_answers_422_naming_the_field(
    harness: Harness, change: dict[str, Any], field: str
) -> None:
    answer = await harness.client.post("/v1/jobs", json={**FOX, **change})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["field"] == field
    assert (await harness.client.get("/v1/jobs")).json()["data"] == []
    assert harness.sims.apps["airforce"].state.submissions == 0


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"provider": "sora", "prompt": "x"}, 422, "provider"),
        ({"prompt": "x"}, 422, "provider"),
        ({"provider": "infrai"}, 422, "prompt"),
        ({"provider": "infrai", "prompt": "   "}, 422, "prompt"),
        ([1, 2, 3], 400, None),
    ],
)
async def test_bad_bodies_answer_4xx_with_a_json_error(
    harness: Harness, body: Any, status: int, field: str | None
) -> None:
    answer = await harness.client.post("/v1/jobs", json=body)
    assert answer.status_code == status
    assert answer.json()["error"].get("field") == field


async def test_a_body_that_is_not_json_answers_400(harness: Harness) -> None:
    answer = await harness.client.post("/v1/jobs", content=b"{not json",
                                       headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_request"


async def test_an_oversize_body_answers_413(harness: Harness) -> None:
    huge = json.dumps({**CITY, "prompt": "x" * (17 * 1024 * 1024)})
    answer = await harness.client.post("/v1/jobs", content=huge)
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"


async def test_unknown_routes_answer_json_404(harness: Harness) -> None:
    answer = await harness.client.get("/v1/nothing")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


# -- idempotency -----------------------------------------------------------------------------


async def test_the_same_idempotency_key_returns_the_first_job_and_submits_once(
    harness: Harness,
) -> None:
    first = await harness.client.post("/v1/jobs", json=CITY, headers={"Idempotency-Key": "k1"})
    again = await harness.client.post("/v1/jobs", json=CITY, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    await harness.wait(first.json()["id"])
    assert harness.sims.apps["infrai"].state.submissions == 1


async def test_concurrent_duplicates_make_one_job_and_one_submission(harness: Harness) -> None:
    answers = await asyncio.gather(*(
        harness.client.post("/v1/jobs", json=CITY, headers={"Idempotency-Key": "burst"})
        for _ in range(12)
    ))
    assert sorted(a.status_code for a in answers) == [200] * 11 + [202]
    assert len({a.json()["id"] for a in answers}) == 1
    await harness.wait(answers[0].json()["id"])
    assert harness.sims.apps["infrai"].state.submissions == 1
    assert len((await harness.client.get("/v1/jobs")).json()["data"]) == 1


async def test_the_same_idempotency_key_with_another_body_answers_409_and_submits_nothing(
    harness: Harness,
) -> None:
    first = await harness.create(CITY, **{"Idempotency-Key": "k1"})
    other = await harness.client.post("/v1/jobs", json={**CITY, "prompt": "Another city"},
                                      headers={"Idempotency-Key": "k1"})
    assert other.status_code == 409
    error = other.json()["error"]
    assert error["code"] == "idempotency_conflict"
    assert error["field"] == "Idempotency-Key"
    await harness.wait(first["id"])
    assert harness.sims.apps["infrai"].state.submissions == 1
    assert [job["id"] for job in (await harness.client.get("/v1/jobs")).json()["data"]] == [
        first["id"]]


async def test_the_same_body_in_another_key_order_and_spacing_is_the_same_request(
    harness: Harness,
) -> None:
    first = await harness.create(CITY, **{"Idempotency-Key": "k1"})
    reordered = "{\n  " + ",\n  ".join(
        f"{json.dumps(k)} : {json.dumps(v)}" for k, v in reversed(CITY.items())) + "\n}"
    again = await harness.client.post("/v1/jobs", content=reordered,
                                      headers={"Idempotency-Key": "k1"})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first["id"]


async def test_racing_bodies_under_one_key_make_one_job_and_the_others_conflict(
    harness: Harness,
) -> None:
    bodies = [CITY, {**CITY, "prompt": "Another city"}] * 6
    answers = await asyncio.gather(*(
        harness.client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "race"})
        for body in bodies
    ))
    created = [n for n, answer in enumerate(answers) if answer.status_code == 202]
    assert len(created) == 1
    winner = bodies[created[0]]
    for body, answer in zip(bodies, answers, strict=True):
        if answer.status_code != 202:
            assert answer.status_code == (200 if body == winner else 409), answer.text
    await harness.wait(answers[created[0]].json()["id"])
    assert harness.sims.apps["infrai"].state.submissions == 1
    assert len((await harness.client.get("/v1/jobs")).json()["data"]) == 1


async def test_idempotency_keys_are_per_tenant(harness: Harness) -> None:
    other_key = await harness.bridge.create_api_key("acme")
    mine = await harness.create(CITY, **{"Idempotency-Key": "shared"})
    theirs = await harness.client.post("/v1/jobs", json=CITY, headers={
        "Idempotency-Key": "shared", "Authorization": f"Bearer {other_key}"})
    assert theirs.status_code == 202
    assert theirs.json()["id"] != mine["id"]


# -- reading and listing ---------------------------------------------------------------------


async def test_list_is_newest_first_and_pages_with_a_cursor(harness: Harness) -> None:
    ids = [(await harness.create({**CITY, "prompt": f"city {n}"}))["id"] for n in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await harness.client.get("/v1/jobs", params=params)).json()
        seen += [job["id"] for job in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


async def test_list_filters_by_status_and_provider(harness: Harness) -> None:
    city = await harness.create(CITY)
    await harness.wait(city["id"])
    await harness.create({**CITY, "prompt": "[sim:duration=60] long"})
    done = (await harness.client.get("/v1/jobs", params={"status": "succeeded"})).json()
    assert [job["id"] for job in done["data"]] == [city["id"]]
    none = (await harness.client.get("/v1/jobs", params={"provider": "venice"})).json()
    assert none["data"] == []


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "status=done",
                                   "cursor=garbage!"])
async def test_bad_list_parameters_answer_400(harness: Harness, query: str) -> None:
    answer = await harness.client.get(f"/v1/jobs?{query}")
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] in ("limit", "status", "cursor")


# -- cancel ----------------------------------------------------------------------------------


async def test_cancel_stops_an_infrai_job_at_the_provider(harness: Harness) -> None:
    job = await harness.create({**CITY, "prompt": "[sim:duration=60] slow city"})
    job = await harness.wait(job["id"], {"submitted", "running"})
    answer = await harness.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert answer.status_code == 200
    assert answer.json()["status"] == "canceled"
    sim_job = harness.sims.apps["infrai"].state.jobs[job["provider_job_id"]]
    assert sim_job.state() == "canceled"
    assert [e.type for e in harness.events if e.job_id == job["id"]][-1] == "job.canceled"


async def test_cancel_of_a_provider_without_cancel_stops_following(harness: Harness) -> None:
    job = await harness.create({**FOX, "prompt": "[sim:duration=60] slow fox"})
    await harness.wait(job["id"], {"submitted", "running"}, hurry=False)
    answer = await harness.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert answer.json()["status"] == "canceled"
    await asyncio.sleep(0.5)
    assert (await harness.job(job["id"]))["status"] == "canceled"


async def test_cancel_of_a_finished_job_answers_409(harness: Harness) -> None:
    job = await harness.create(CITY)
    await harness.wait(job["id"])
    answer = await harness.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "conflict"


# -- models ----------------------------------------------------------------------------------


async def test_models_lists_every_enabled_provider_with_capabilities(harness: Harness) -> None:
    models = (await harness.client.get("/v1/models")).json()["data"]
    assert {m["provider"] for m in models} == {"airforce", "infrai", "apixo", "venice"}
    wan = next(m for m in models if m["id"] == "wan-2.6")
    assert wan["tracking"] == "stream"
    assert {"modes", "aspect_ratios", "resolutions", "min_duration_seconds",
            "max_duration_seconds"} <= set(wan)
    assert not any(m["id"] == "gpt-4.1-mini" for m in models)  # a text model


async def test_models_are_cached(harness: Harness) -> None:
    first = (await harness.client.get("/v1/models")).json()["data"]
    harness.sims.apps["airforce"].state.faults.add(r"^/v1/models", status=500, times=10)
    again = (await harness.client.get("/v1/models")).json()["data"]
    assert again == first


# -- events ----------------------------------------------------------------------------------


async def test_events_record_every_state_change_with_a_sequence(harness: Harness) -> None:
    job = await harness.create(CITY)
    await harness.wait(job["id"])
    page = (await harness.client.get("/v1/events", params={"job_id": job["id"]})).json()
    events = list(reversed(page["data"]))
    assert events[0]["type"] == "job.submitted"
    assert events[-1]["type"] == "job.succeeded"
    assert [e["data"]["sequence"] for e in events] == list(range(1, len(events) + 1))
    for event in events:
        assert event["id"].startswith("evt_")
        assert event["timestamp"].endswith("Z")
        assert event["data"]["id"] == job["id"]
    one = (await harness.client.get(f"/v1/events/{events[-1]['id']}")).json()
    assert one == events[-1]
    assert one["data"]["result"]["video_url"]


async def test_events_page_newest_first_and_filter_by_type(harness: Harness) -> None:
    for n in range(3):
        await harness.wait((await harness.create({**CITY, "prompt": f"c{n}"}))["id"])
    done = (await harness.client.get("/v1/events", params={"type": "job.succeeded"})).json()
    assert len(done["data"]) == 3
    assert all(e["type"] == "job.succeeded" for e in done["data"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await harness.client.get("/v1/events", params=params)).json()
        seen += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [e.id for e in reversed(harness.events)]


async def test_unknown_event_type_filter_answers_400(harness: Harness) -> None:
    answer = await harness.client.get("/v1/events", params={"type": "job.exploded"})
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "type"


async def test_a_row_stored_with_a_lone_surrogate_never_makes_a_route_answer_500(
    harness: Harness,
) -> None:
    # Stored before input was read strictly: the routes that show it answer U+FFFD.
    now = utcnow()
    job = Job(id=new_id("job"), tenant="default", provider="infrai", model=None,
              status=JobStatus.QUEUED, tracking=Tracking.POLL,
              request={"provider": "infrai", "prompt": "fox \ud800", "mode": "text"},
              created_at=now, updated_at=now, metadata={"note": "\udfff"})
    await harness.bridge.store.create_job(job, idempotency_window=0)
    await harness.bridge.store.update_job(job.id, lambda current: Change(
        current.evolve(status=JobStatus.SUBMITTED, updated_at=now), "job.submitted"))
    event_id = (await harness.bridge.store.job_events(job.id))[0].id
    for path in ("/v1/jobs", f"/v1/jobs/{job.id}", "/v1/events", f"/v1/events/{event_id}"):
        answer = await harness.client.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert "fox \ufffd" in answer.text
