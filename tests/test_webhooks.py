"""Webhook fan-out end to end: a bridge, the simulators and a receiver, each on a loopback
socket, a real SQLite file. Every signature is checked with third-party code: the
``standardwebhooks`` package and ``svix``'s ``Webhook``, never bridge's own signing."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError as SvixVerificationError

from bridge.models import utcnow
from bridge.timings import Timings
from tests.conftest import (
    API_KEY,
    FAST,
    SQLITE_ONLY,
    Harness,
    Received,
    Receiver,
    Sims,
    register,
    running_bridge,
)

FLYOVER = {"provider": "apixo", "model": "veo-3-1", "aspect_ratio": "16:9",
           "prompt": "A cinematic flyover of a futuristic city at sunrise"}
CITY = {"provider": "infrai", "prompt": "A timelapse of a city skyline at dusk",
        "duration_seconds": 5, "aspect_ratio": "16:9"}
FOX = {"provider": "airforce", "model": "wan-2.6", "prompt": "A red fox darting across snowy hills",
       "duration_seconds": 8, "aspect_ratio": "16:9", "resolution": "720p"}
TERMINAL_TYPES = {"job.succeeded", "job.failed", "job.canceled", "job.expired"}




def verified(secret: str, received: Received) -> dict[str, Any]:
    """The payload, if both third-party libraries accept the signature."""
    SvixWebhook(secret).verify(received.body, received.headers)
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload


def job_terminal(job_id: str) -> Any:
    return lambda got: any(r.json["type"] in TERMINAL_TYPES and r.json["data"]["id"] == job_id
                           for r in got)


async def deliveries(harness: Harness, endpoint_id: str) -> list[dict[str, Any]]:
    answer = await harness.client.get(f"/v1/endpoints/{endpoint_id}/deliveries",
                                      params={"limit": 100})
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


# -- endpoints API ---------------------------------------------------------------------------


async def test_create_answers_a_whsec_secret_of_at_least_24_random_bytes(
    hooks: Harness, receiver: Receiver,
) -> None:
    first = await register(hooks, receiver.url + "/a", description="zap")
    second = await register(hooks, receiver.url + "/b")
    assert first["id"].startswith("ep_")
    for endpoint in (first, second):
        assert endpoint["secret"].startswith("whsec_")
        assert len(base64.b64decode(endpoint["secret"].removeprefix("whsec_"))) >= 24
    assert first["secret"] != second["secret"]
    assert first["events"] is None and first["disabled"] is False
    assert first["description"] == "zap"
    listed = (await hooks.client.get("/v1/endpoints")).json()
    assert [e["id"] for e in listed["data"]] == [second["id"], first["id"]]
    assert all("secret" not in e for e in listed["data"])
    got = (await hooks.client.get(f"/v1/endpoints/{first['id']}")).json()
    assert got == {k: v for k, v in first.items() if k != "secret"}


@pytest.mark.parametrize(("body", "field"), [
    ({}, "url"),
    ({"url": 5}, "url"),
    ({"url": "ftp://example.com/x"}, "url"),
    ({"url": "not a url"}, "url"),
    ({"url": "http://127.0.0.1:1/x", "events": []}, "events"),
    ({"url": "http://127.0.0.1:1/x", "events": ["job.exploded"]}, "events[0]"),
    ({"url": "http://127.0.0.1:1/x", "headers": ["x"]}, "headers"),
    ({"url": "http://127.0.0.1:1/x", "headers": {"webhook-signature": "v1,forged"}},
     "headers.webhook-signature"),
    ({"url": "http://127.0.0.1:1/x", "headers": {"Content-Type": "text/plain"}},
     "headers.Content-Type"),
    ({"url": "http://127.0.0.1:1/x", "headers": {"X-Bad": "a\r\nb"}}, "headers.X-Bad"),
    ({"url": "http://127.0.0.1:1/x", "headers": {"X-Bad": "a\x0bb"}}, "headers.X-Bad"),
    ({"url": "http://127.0.0.1:1/x", "headers": {"bad name": "v"}}, "headers.bad name"),
    ({"url": "http://127.0.0.1:1/x", "description": 7}, "description"),
    ({"url": "http://127.0.0.1:1/x", "colour": "red"}, "colour"),
])
async def test_a_bad_endpoint_field_answers_422_naming_it(
    hooks: Harness, body: dict[str, Any], field: str,
) -> None:
    answer = await hooks.client.post("/v1/endpoints", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field


async def test_private_targets_are_refused_without_the_flag(
    tmp_path: Path, sims: Sims,
) -> None:
    async with running_bridge(tmp_path, sims, BRIDGE_ALLOW_PRIVATE_TARGETS="0") as harness:
        for url in ("http://127.0.0.1:9/x", "https://127.0.0.1:9/x", "https://[::1]/x",
                    "https://169.254.169.254/latest/meta-data/", "https://10.1.2.3/x"):
            answer = await harness.client.post("/v1/endpoints", json={"url": url})
            assert answer.status_code == 422, url
            assert answer.json()["error"]["field"] == "url"
        hook = await harness.client.post(
            "/v1/hooks", json={"target_url": "https://192.168.0.1/x", "event": "job.succeeded"})
        assert hook.status_code == 422 and hook.json()["error"]["field"] == "target_url"
        job = await harness.client.post(
            "/v1/jobs", json={**CITY, "webhook_url": "https://127.0.0.1/hook"})
        assert job.status_code == 422 and job.json()["error"]["field"] == "webhook_url"
        # A self-hosted n8n on localhost: the error names the flag that allows it.
        local = await harness.client.post(
            "/v1/jobs", json={**CITY, "webhook_url": "http://localhost:5678/webhook-waiting/1"})
        assert local.status_code == 422
        assert local.json()["error"]["message"].startswith("webhook_url must be an https URL")
        assert "BRIDGE_ALLOW_PRIVATE_TARGETS=1" in local.json()["error"]["message"]


async def test_patch_delete_and_another_tenants_ids_answer_404(
    hooks: Harness, receiver: Receiver,
) -> None:
    endpoint = await register(hooks, receiver.url + "/x")
    path = f"/v1/endpoints/{endpoint['id']}"
    patched = await hooks.client.patch(path, json={
        "events": ["job.succeeded"], "description": "only successes",
        "headers": {"X-N8N-Auth": "s3cret"}, "url": receiver.url + "/y"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["events"] == ["job.succeeded"]
    assert patched.json()["url"] == receiver.url + "/y"
    assert (await hooks.client.patch(path, json={"disabled": "yes"})).status_code == 422

    other_key = await hooks.bridge.create_api_key("other")
    async with httpx.AsyncClient(base_url=hooks.url,
                                 headers={"X-API-Key": other_key}) as other:
        for method, suffix, body in [
            ("GET", "", None), ("PATCH", "", {"description": "mine"}), ("DELETE", "", None),
            ("POST", "/rotate-secret", None), ("POST", "/test", None),
            ("GET", "/deliveries", None), ("POST", "/recover", {"since": "2026-01-01T00:00:00Z"}),
        ]:
            answer = await other.request(method, path + suffix, json=body)
            assert answer.status_code == 404, (method, suffix, answer.text)
        assert (await other.get("/v1/endpoints")).json()["data"] == []
        assert (await other.delete(f"/v1/hooks/{endpoint['id']}")).status_code == 404

    assert (await hooks.client.delete(path)).status_code == 204
    assert (await hooks.client.get(path)).status_code == 404
    assert (await hooks.client.delete(path)).status_code == 404


# -- delivery --------------------------------------------------------------------------------


async def test_a_jobs_events_arrive_signed_in_order_with_the_event_as_body(
    hooks: Harness, receiver: Receiver,
) -> None:
    endpoint = await register(hooks, receiver.url + "/hook", headers={"X-N8N-Auth": "token-1"})
    job = await hooks.create(FLYOVER)
    await receiver.wait_for(job_terminal(job["id"]))
    payloads = [verified(endpoint["secret"], r) for r in receiver.received]
    assert payloads[0]["type"] == "job.submitted" and payloads[-1]["type"] == "job.succeeded"
    assert [p["data"]["sequence"] for p in payloads] == list(range(1, len(payloads) + 1))
    stored = (await hooks.client.get("/v1/events", params={"job_id": job["id"]})).json()
    assert [e["id"] for e in reversed(stored["data"])] == [p["id"] for p in payloads]
    for event, got in zip(reversed(stored["data"]), receiver.received, strict=True):
        assert got.json == event  # the body is the event object
        assert got.headers["webhook-id"] == event["id"]
        assert got.headers["content-type"] == "application/json"
        assert got.headers["x-n8n-auth"] == "token-1"
        assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
        assert got.path == "/hook"
    # The last attempt is recorded just after its answer arrives: wait for that record.
    deadline = time.monotonic() + 10
    for _ in range(200):
        attempts = await deliveries(hooks, endpoint["id"])
        if {a["status"] for a in attempts} == {"succeeded"} or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert {a["status"] for a in attempts} == {"succeeded"}
    assert all(a["response_status"] == 200 and a["response_excerpt"] == "ok" for a in attempts)


async def test_a_tampered_body_or_wrong_secret_fails_third_party_verification(
    hooks: Harness, receiver: Receiver,
) -> None:
    endpoint = await register(hooks, receiver.url + "/hook")
    job = await hooks.create(FLYOVER)
    got = (await receiver.wait_for(job_terminal(job["id"])))[-1]
    verified(endpoint["secret"], got)
    tampered = Received(got.path, got.headers, got.body.replace(b"succeeded", b"failed"),
                        got.at)
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint["secret"]).verify(tampered.body, tampered.headers)
    with pytest.raises(SvixVerificationError):
        SvixWebhook(endpoint["secret"]).verify(tampered.body, tampered.headers)
    other = (await hooks.client.post("/v1/endpoints", json={"url": receiver.url})).json()
    with pytest.raises(WebhookVerificationError):
        Webhook(other["secret"]).verify(got.body, got.headers)


async def test_event_filters_and_progress_is_opt_in(
    hooks: Harness, receiver: Receiver,
) -> None:
    everything = await register(hooks, receiver.url + "/default")
    only_end = await register(hooks, receiver.url + "/end", events=["job.succeeded"])
    job = await hooks.create({**CITY, "prompt": "[sim:duration=1] city"})
    await hooks.wait(job["id"])
    await receiver.wait_for(lambda got: sum(
        r.json["type"] == "job.succeeded" for r in got) == 2)
    await asyncio.sleep(0.3)
    by_path: dict[str, list[str]] = {}
    for got in receiver.received:
        by_path.setdefault(got.path, []).append(got.json["type"])
    assert by_path["/end"] == ["job.succeeded"]
    assert "job.progress" not in by_path["/default"]
    assert by_path["/default"][-1] == "job.succeeded"
    stored = (await hooks.client.get("/v1/events", params={"job_id": job["id"]})).json()
    assert len(stored["data"]) >= len(by_path["/default"])
    for endpoint in (everything, only_end):
        assert all(verified(endpoint["secret"], r) for r in receiver.received
                   if r.path == ("/default" if endpoint is everything else "/end"))


async def test_a_per_job_webhook_url_is_signed_with_the_tenant_secret(
    hooks: Harness, receiver: Receiver,
) -> None:
    me = (await hooks.client.get("/v1/me")).json()
    job = await hooks.create({**FLYOVER, "webhook_url": receiver.url + "/job-hook",
                              "events": ["job.succeeded", "job.failed"]})
    got = await receiver.wait_for(job_terminal(job["id"]))
    assert [r.json["type"] for r in got] == ["job.succeeded"]
    assert verified(me["signing_secret"], got[0])["data"]["id"] == job["id"]


async def test_integers_beyond_64_bits_come_back_whole_from_the_api_and_in_webhooks(
    hooks: Harness, receiver: Receiver,
) -> None:
    # None of them a float exactly: read back as one, they would differ.
    metadata = {"order": 2**70 + 1, "below": -(2**64) - 1, "list": [2**64 + 1, 1]}
    endpoint = await register(hooks, receiver.url + "/hook")
    job = await hooks.create({**FLYOVER, "metadata": metadata})
    assert job["metadata"] == metadata
    got = await receiver.wait_for(job_terminal(job["id"]))
    assert [verified(endpoint["secret"], r)["data"]["metadata"] for r in got] == (
        [metadata] * len(got))
    shown = (await hooks.client.get(f"/v1/jobs/{job['id']}")).json()
    assert shown["status"] == "succeeded" and shown["metadata"] == metadata
    events = (await hooks.client.get("/v1/events", params={"job_id": job["id"]})).json()
    assert [e["data"]["metadata"] for e in events["data"]] == [metadata] * len(events["data"])


async def test_rest_hooks_subscribe_and_unsubscribe(
    hooks: Harness, receiver: Receiver,
) -> None:
    me = (await hooks.client.get("/v1/me")).json()
    answer = await hooks.client.post("/v1/hooks", json={"target_url": receiver.url + "/zap",
                                                        "event": "job.succeeded"})
    assert answer.status_code == 201, answer.text
    hook_id = answer.json()["id"]
    assert hook_id.startswith("ep_")
    bad = await hooks.client.post("/v1/hooks", json={"target_url": receiver.url,
                                                     "event": "job.done"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "event"
    job = await hooks.create(FLYOVER)
    got = await receiver.wait_for(job_terminal(job["id"]))
    assert [r.json["type"] for r in got] == ["job.succeeded"]
    verified(me["signing_secret"], got[0])
    assert (await hooks.client.delete(f"/v1/hooks/{hook_id}")).status_code == 204
    assert (await hooks.client.delete(f"/v1/hooks/{hook_id}")).status_code == 404
    second = await hooks.create(FLYOVER)
    await hooks.wait(second["id"])
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 1


async def test_rotation_signs_with_both_secrets_for_a_day(
    hooks: Harness, receiver: Receiver,
) -> None:
    endpoint = await register(hooks, receiver.url + "/r", events=["endpoint.test"])
    rotated = await hooks.client.post(f"/v1/endpoints/{endpoint['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != endpoint["secret"]
    assert (await hooks.client.post(f"/v1/endpoints/{endpoint['id']}/test")).status_code == 202
    got = (await receiver.wait_for(lambda g: len(g) == 1))[0]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert verified(endpoint["secret"], got)["type"] == "endpoint.test"
    assert verified(new_secret, got)["data"]["endpoint_id"] == endpoint["id"]

    # A day later only the new secret signs.
    hooks.bridge.deliverer.clock = lambda: utcnow() + timedelta(hours=24, minutes=1)
    await hooks.bridge.store.update_endpoint(
        endpoint["id"], "default",
        lambda e: e.__class__(**{**e.__dict__,
                                 "previous_secret_until": utcnow() - timedelta(seconds=1)}))
    assert (await hooks.client.post(f"/v1/endpoints/{endpoint['id']}/test")).status_code == 202
    later = (await receiver.wait_for(lambda g: len(g) == 2))[1]
    assert len(later.headers["webhook-signature"].split(" ")) == 1
    verified(new_secret, later)
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint["secret"]).verify(later.body, later.headers)


async def test_a_rotated_tenant_secret_signs_beside_the_new_one_for_a_day(
    hooks: Harness, receiver: Receiver,
) -> None:
    old_secret = (await hooks.client.get("/v1/me")).json()["signing_secret"]
    rotated = await hooks.client.post("/v1/me/rotate-signing-secret")
    assert rotated.status_code == 200, rotated.text
    assert set(rotated.json()) == {"tenant", "signing_secret"}
    new_secret = rotated.json()["signing_secret"]
    assert new_secret.startswith("whsec_") and new_secret != old_secret
    assert (await hooks.client.get("/v1/me")).json()["signing_secret"] == new_secret
    hook = await hooks.client.post("/v1/hooks", json={"target_url": receiver.url + "/zap",
                                                      "event": "job.succeeded"})
    assert hook.status_code == 201, hook.text
    job = await hooks.create({**FLYOVER, "webhook_url": receiver.url + "/job-hook",
                              "events": ["job.succeeded"]})
    got = await receiver.wait_for(lambda g: {r.path for r in g} == {"/zap", "/job-hook"})
    for received in got:  # the job's own webhook and the REST hook
        assert len(received.headers["webhook-signature"].split(" ")) == 2
        assert verified(old_secret, received)["data"]["id"] == job["id"]
        assert verified(new_secret, received)["data"]["id"] == job["id"]


async def test_failures_are_retried_with_the_same_webhook_id_and_every_attempt_recorded(
    hooks: Harness, receiver: Receiver,
) -> None:
    receiver.body = b"x" * 5000
    receiver.answer(500, times=2)
    endpoint = await register(hooks, receiver.url + "/flaky", events=["endpoint.test"])
    answer = await hooks.client.post(f"/v1/endpoints/{endpoint['id']}/test")
    assert answer.json()["status"] == "pending" and answer.json()["attempt"] == 1
    got = await receiver.wait_for(lambda g: len(g) == 3)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert got[0].body == got[2].body
    await asyncio.sleep(0.2)
    attempts = sorted(await deliveries(hooks, endpoint["id"]), key=lambda a: a["attempt"])
    assert [(a["attempt"], a["status"], a["response_status"]) for a in attempts] == [
        (1, "failed", 500), (2, "failed", 500), (3, "succeeded", 200)]
    assert attempts[0]["error"] == "HTTP 500"
    assert attempts[0]["next_attempt_at"] is not None
    assert attempts[2]["next_attempt_at"] is None
    assert all(len(a["response_excerpt"].encode()) == 1024 for a in attempts)
    assert all(a["id"].startswith("del_") and a["event_id"] == got[0].headers["webhook-id"]
               and a["duration_ms"] >= 0 for a in attempts)


async def test_the_schedule_ends_and_the_delivery_is_given_up(
    hooks: Harness, receiver: Receiver,
) -> None:
    receiver.default = (503, {}, 0.0)
    endpoint = await register(hooks, receiver.url + "/down", events=["endpoint.test"])
    await hooks.client.post(f"/v1/endpoints/{endpoint['id']}/test")
    await receiver.wait_for(lambda g: len(g) == 4)  # the first attempt and 3 retries
    await asyncio.sleep(0.8)
    assert len(receiver.received) == 4
    attempts = await deliveries(hooks, endpoint["id"])
    assert [a["status"] for a in attempts] == ["failed"] * 4
    assert attempts[0]["next_attempt_at"] is None  # newest first: the last one


async def test_retry_after_on_429_is_honoured(hooks: Harness, receiver: Receiver) -> None:
    hooks.bridge.deliverer.schedule = (30.0,)  # without Retry-After: half a minute
    receiver.answer(429, headers={"Retry-After": "1"})
    endpoint = await register(hooks, receiver.url + "/busy", events=["endpoint.test"])
    await hooks.client.post(f"/v1/endpoints/{endpoint['id']}/test")
    got = await receiver.wait_for(lambda g: len(g) == 2, seconds=10)
    assert 0.9 <= got[1].at - got[0].at < 5


async def test_redirects_are_not_followed(hooks: Harness, receiver: Receiver) -> None:
    receiver.answer(302, headers={"Location": receiver.url + "/elsewhere"})
    endpoint = await register(hooks, receiver.url + "/moved", events=["endpoint.test"])
    await hooks.client.post(f"/v1/endpoints/{endpoint['id']}/test")
    await receiver.wait_for(lambda g: len(g) == 2)
    assert [r.path for r in receiver.received] == ["/moved", "/moved"]
    attempts = await deliveries(hooks, endpoint["id"])
    assert attempts[-1]["response_status"] == 302
    assert "not followed" in attempts[-1]["error"]


async def test_a_silent_receiver_times_out(
    tmp_path: Path, sims: Sims, database: str, receiver: Receiver,
) -> None:
    receiver.answer(200, delay=3.0)
    async with running_bridge(tmp_path, sims, Timings(delivery_timeout=0.5),
                              BRIDGE_DATABASE=database, **FAST) as hooks:
        endpoint = await register(hooks, receiver.url + "/slow", events=["endpoint.test"])
        await hooks.client.post(f"/v1/endpoints/{endpoint['id']}/test")
        await receiver.wait_for(lambda g: len(g) == 2)
        attempts = sorted(await deliveries(hooks, endpoint["id"]), key=lambda a: a["attempt"])
    assert attempts[0]["status"] == "failed" and attempts[0]["response_status"] is None
    assert attempts[0]["error"] == "timed out after 0.5 s"
    assert 400 <= attempts[0]["duration_ms"] < 2500


async def test_410_disables_at_once_and_recover_sends_what_was_missed(
    hooks: Harness, receiver: Receiver,
) -> None:
    receiver.answer(410)
    endpoint = await register(hooks, receiver.url + "/gone")
    path = f"/v1/endpoints/{endpoint['id']}"
    started = utcnow()
    first = await hooks.create(FLYOVER)
    await receiver.wait_for(lambda g: len(g) == 1)
    await hooks.wait(first["id"])
    await asyncio.sleep(0.3)
    state = (await hooks.client.get(path)).json()
    assert state["disabled"] is True and "410" in state["disabled_reason"]
    assert len(receiver.received) == 1  # nothing more once disabled
    second = await hooks.create(FLYOVER)
    await hooks.wait(second["id"])
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 1
    assert (await hooks.client.post(path + "/test")).status_code == 409
    refused = await hooks.client.post(path + "/recover", json={"since": started.isoformat()})
    assert refused.status_code == 409

    enabled = await hooks.client.patch(path, json={"disabled": False})
    assert enabled.json()["disabled"] is False and enabled.json()["disabled_reason"] is None
    bad = await hooks.client.post(path + "/recover", json={"since": "yesterday"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "since"
    answer = await hooks.client.post(path + "/recover", json={"since": started.isoformat()})
    assert answer.status_code == 202 and answer.json()["recovering"] == 6
    got = await receiver.wait_for(lambda g: len(g) == 7)
    for job in (first, second):
        types = [r.json["type"] for r in got[1:] if r.json["data"]["id"] == job["id"]]
        assert types == ["job.submitted", "job.running", "job.succeeded"]
    again = await hooks.client.post(path + "/recover", json={"since": started.isoformat()})
    assert again.json()["recovering"] == 0  # everything was delivered


async def test_an_endpoint_failing_for_five_days_is_disabled(
    hooks: Harness, receiver: Receiver,
) -> None:
    receiver.default = (500, {}, 0.0)
    hooks.bridge.deliverer.schedule = (0.2,) * 10
    endpoint = await register(hooks, receiver.url + "/broken", events=["endpoint.test"])
    path = f"/v1/endpoints/{endpoint['id']}"
    await hooks.client.post(path + "/test")
    await receiver.wait_for(lambda g: len(g) == 2)
    assert (await hooks.client.get(path)).json()["disabled"] is False
    hooks.bridge.deliverer.clock = lambda: utcnow() + timedelta(days=5, minutes=1)
    await receiver.wait_for(lambda g: len(g) == 3)
    await asyncio.sleep(0.3)
    state = (await hooks.client.get(path)).json()
    assert state["disabled"] is True and "5 days" in state["disabled_reason"]
    count = len(receiver.received)
    await asyncio.sleep(0.6)
    assert len(receiver.received) == count


async def test_a_success_resets_the_failure_record(
    hooks: Harness, receiver: Receiver,
) -> None:
    receiver.answer(500)
    endpoint = await register(hooks, receiver.url + "/mostly", events=["endpoint.test"])
    path = f"/v1/endpoints/{endpoint['id']}"
    await hooks.client.post(path + "/test")
    await receiver.wait_for(lambda g: len(g) == 2)  # failed, then succeeded
    receiver.answer(500)
    hooks.bridge.deliverer.clock = lambda: utcnow() + timedelta(days=6)
    await hooks.client.post(path + "/test")
    await receiver.wait_for(lambda g: len(g) == 4)
    await asyncio.sleep(0.2)
    assert (await hooks.client.get(path)).json()["disabled"] is False


async def test_a_later_event_waits_for_the_earlier_one_of_the_same_job(
    hooks: Harness, receiver: Receiver,
) -> None:
    receiver.answer(500, times=2)  # job.submitted fails twice, then goes through
    endpoint = await register(hooks, receiver.url + "/ordered")
    job = await hooks.create(FLYOVER)
    await receiver.wait_for(job_terminal(job["id"]))
    stored = (await hooks.client.get("/v1/events", params={"job_id": job["id"]})).json()
    in_order = [e["type"] for e in reversed(stored["data"])]
    assert len(in_order) >= 2
    types = [r.json["type"] for r in receiver.received]
    assert types == ["job.submitted"] * 2 + in_order
    for got in receiver.received:
        verified(endpoint["secret"], got)


async def test_waiting_progress_is_dropped_when_a_later_event_exists(
    hooks: Harness, receiver: Receiver,
) -> None:
    # The receiver is down while the job runs: its progress events pile up behind the first
    # event; when the job ends they are superseded, and only the others arrive.
    receiver.default = (503, {}, 0.0)
    hooks.bridge.deliverer.schedule = (0.3,) * 200
    endpoint = await register(hooks, receiver.url + "/all",
                              events=["job.submitted", "job.running", "job.progress",
                                      "job.succeeded"])
    job = await hooks.create({**FOX, "prompt": "[sim:duration=4] slow fox"})
    done = await hooks.wait(job["id"], seconds=30)
    assert done["status"] == "succeeded"
    stored = (await hooks.client.get("/v1/events", params={"job_id": job["id"],
                                                          "limit": 100})).json()["data"]
    progress_events = [e for e in stored if e["type"] == "job.progress"]
    assert progress_events, "the job should have reported progress"
    receiver.default = (200, {}, 0.0)
    await receiver.wait_for(job_terminal(job["id"]), seconds=20)
    attempts = await deliveries(hooks, endpoint["id"])
    skipped = [a for a in attempts if a["status"] == "skipped"]
    assert skipped and all(
        a["event_id"] in {e["id"] for e in progress_events} for a in skipped)
    succeeded_progress = [a for a in attempts if a["status"] == "succeeded"
                          and a["event_id"] in {e["id"] for e in progress_events}]
    assert not succeeded_progress


async def test_replay_resends_one_event_to_one_endpoint_or_all(
    hooks: Harness, receiver: Receiver,
) -> None:
    a = await register(hooks, receiver.url + "/a", events=["job.succeeded"])
    await register(hooks, receiver.url + "/b", events=["job.succeeded"])
    job = await hooks.create(FLYOVER)
    await receiver.wait_for(lambda g: len(g) == 2)
    event_id = receiver.received[0].headers["webhook-id"]
    one = await hooks.client.post(f"/v1/events/{event_id}/replay", json={"endpoint_id": a["id"]})
    assert one.status_code == 202 and len(one.json()["data"]) == 1
    assert one.json()["data"][0]["attempt"] == 2
    await receiver.wait_for(lambda g: len(g) == 3)
    assert receiver.received[2].path == "/a"
    every = await hooks.client.post(f"/v1/events/{event_id}/replay")
    assert every.status_code == 202 and len(every.json()["data"]) == 2
    await receiver.wait_for(lambda g: len(g) == 5)
    assert {r.headers["webhook-id"] for r in receiver.received} == {event_id}
    assert (await hooks.client.post("/v1/events/evt_nope/replay")).status_code == 404
    missing = await hooks.client.post(f"/v1/events/{event_id}/replay",
                                      json={"endpoint_id": "ep_nope"})
    assert missing.status_code == 404
    assert job["id"]


async def test_the_guard_is_applied_again_at_every_attempt(
    hooks: Harness, receiver: Receiver,
) -> None:
    endpoint = await register(hooks, receiver.url + "/later-private", events=["endpoint.test"])
    hooks.bridge.guard.allow_private = False  # as if the name now resolved to loopback
    await hooks.client.post(f"/v1/endpoints/{endpoint['id']}/test")
    deadline = time.monotonic() + 5
    while True:
        attempts = await deliveries(hooks, endpoint["id"])
        if attempts and attempts[-1]["status"] == "failed":
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert attempts[-1]["error"].startswith("refused:")
    assert receiver.received == []


async def test_every_delivery_goes_to_an_unrelated_tenant_never(
    hooks: Harness, receiver: Receiver,
) -> None:
    other_key = await hooks.bridge.create_api_key("other")
    async with httpx.AsyncClient(base_url=hooks.url, headers={"X-API-Key": other_key}) as other:
        answer = await other.post("/v1/endpoints", json={"url": receiver.url + "/other"})
        assert answer.status_code == 201
    job = await hooks.create(FLYOVER)
    await hooks.wait(job["id"])
    await asyncio.sleep(0.5)
    assert receiver.received == []
    assert API_KEY


@SQLITE_ONLY
async def test_a_job_event_and_its_deliveries_are_one_transaction(
    hooks: Harness, receiver: Receiver,
) -> None:
    import sqlite3

    receiver.default = (500, {}, 0.0)
    endpoint = await register(hooks, receiver.url + "/x")
    job = await hooks.create(FLYOVER)
    await hooks.wait(job["id"])
    with sqlite3.connect(hooks.env["BRIDGE_DATABASE"]) as db:
        events = db.execute("SELECT id FROM events WHERE job_id = ?", (job["id"],)).fetchall()
        for (event_id,) in events:
            rows = db.execute("SELECT COUNT(*) FROM deliveries WHERE event_id = ? AND "
                              "endpoint_id = ?", (event_id, endpoint["id"])).fetchone()
            assert rows[0] >= 1
    assert json.dumps(endpoint)


async def test_a_literal_address_is_checked_again_at_every_attempt(
    hooks: Harness, receiver: Receiver,
) -> None:
    # aiohttp skips the resolver for a literal address; the guard must not be skipped too.
    port = receiver.url.rsplit(":", 1)[1]
    endpoint = await register(hooks, f"https://127.0.0.1:{port}/x", events=["endpoint.test"])
    hooks.bridge.guard.allow_private = False
    await hooks.client.post(f"/v1/endpoints/{endpoint['id']}/test")
    deadline = time.monotonic() + 5
    while True:
        attempts = await deliveries(hooks, endpoint["id"])
        if attempts and attempts[-1]["status"] == "failed":
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert attempts[-1]["error"].startswith("refused:")
    assert "loopback" in attempts[-1]["error"]


async def test_an_error_never_carries_the_url_and_its_credentials(hooks: Harness) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        endpoint = await register(hooks, f"http://127.0.0.1:{port}/in?token=TOPSECRET42",
                                  events=["endpoint.test"])
        await hooks.client.post(f"/v1/endpoints/{endpoint['id']}/test")
        deadline = time.monotonic() + 5
        while not (attempts := await deliveries(hooks, endpoint["id"])) or \
                attempts[-1]["status"] == "pending":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        server.close()
        await server.wait_closed()
    assert attempts[-1]["status"] == "failed" and attempts[-1]["error"]
    assert "TOPSECRET42" not in json.dumps(attempts)
