"""``/metrics``: Prometheus text, parsed with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY, SQLITE_ONLY, Harness, Receiver, Sims, running_bridge

FLYOVER = {"provider": "apixo", "model": "veo-3-1", "prompt": "A flyover"}


async def scrape(harness: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = await harness.client.get("/metrics", headers={"Authorization": ""})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_jobs_provider_requests_and_deliveries(
    harness: Harness, receiver: Receiver,
) -> None:
    before = await scrape(harness)
    harness.bridge.guard.allow_private = True
    await harness.client.post("/v1/endpoints", json={"url": receiver.url + "/m"})
    job = await harness.create(FLYOVER)
    await harness.wait(job["id"])
    await receiver.wait_for(lambda got: any(r.json["type"] == "job.succeeded" for r in got))
    await asyncio.sleep(0.2)
    after = await scrape(harness)
    assert value(after, "bridge_jobs", provider="apixo", status="succeeded") == 1
    assert value(after, "bridge_provider_requests_total", provider="apixo", outcome="ok") > \
        value(before, "bridge_provider_requests_total", provider="apixo", outcome="ok")
    assert value(after, "bridge_deliveries_total", outcome="succeeded") >= \
        value(before, "bridge_deliveries_total", outcome="succeeded") + 2
    assert value(after, "bridge_delivery_duration_seconds_count") > \
        value(before, "bridge_delivery_duration_seconds_count")
    assert value(after, "bridge_outbox_depth") == 0
    assert value(after, "bridge_outbox_oldest_pending_seconds") == 0


async def test_outbox_depth_and_age_show_a_backlog(
    harness: Harness, receiver: Receiver,
) -> None:
    harness.bridge.guard.allow_private = True
    harness.bridge.deliverer.schedule = (60.0,)
    receiver.default = (500, {}, 0.0)
    endpoint = (await harness.client.post("/v1/endpoints", json={
        "url": receiver.url + "/down", "events": ["endpoint.test"]})).json()
    await harness.client.post(f"/v1/endpoints/{endpoint['id']}/test")
    await receiver.wait_for(lambda got: len(got) == 1)
    await asyncio.sleep(1.2)
    samples = await scrape(harness)
    assert value(samples, "bridge_outbox_depth") == 1
    assert value(samples, "bridge_outbox_oldest_pending_seconds") >= 1
    assert value(samples, "bridge_deliveries_total", outcome="failed") >= 1


@SQLITE_ONLY
async def test_readyz_answers_503_when_the_schema_is_not_current(harness: Harness) -> None:
    import sqlite3

    assert (await harness.client.get("/readyz")).json() == {"status": "ready"}
    with sqlite3.connect(harness.env["BRIDGE_DATABASE"]) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        db.execute(f"PRAGMA user_version = {version + 1}")  # a newer bridge migrated it
    answer = await harness.client.get("/readyz")
    assert answer.status_code == 503 and answer.json()["status"] == "unavailable"
    assert list(answer.json()["down"]) == ["database"]
    assert (await harness.client.get("/healthz")).status_code == 200  # still alive


async def test_streamed_provider_requests_are_counted_too(harness: Harness) -> None:
    # The only 503 api.airforce gives is to the task stream: its count shows the stream's.
    harness.sims.apps["airforce"].state.faults.add(r"/stream$", method="GET", status=503)
    before = await scrape(harness)
    job = await harness.create({"provider": "airforce", "model": "wan-2.6",
                                "prompt": "a streamed fox"})
    await harness.wait(job["id"])
    after = await scrape(harness)
    labels = {"provider": "airforce", "outcome": "server_error"}
    assert value(after, "bridge_provider_requests_total", **labels) == \
        value(before, "bridge_provider_requests_total", **labels) + 1


async def test_with_a_token_set_metrics_require_it(tmp_path: Path, sims: Sims) -> None:
    token = "metrics-token-0123456789"
    async with running_bridge(tmp_path, sims, BRIDGE_METRICS_TOKEN=token) as harness, \
            httpx.AsyncClient(base_url=harness.url, timeout=10) as client:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                        {"Authorization": f"Bearer {API_KEY}"}, {"Authorization": token}):
            refused = await client.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "unauthorized"
            assert token not in refused.text
        allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert allowed.status_code == 200
        assert "bridge_outbox_depth" in allowed.text


async def test_requests_are_counted_by_route_template_and_status(harness: Harness) -> None:
    before = await scrape(harness)  # the counters are the process's: earlier tests' too
    job = await harness.create(FLYOVER)
    await harness.wait(job["id"])
    await harness.client.get("/v1/jobs/job_doesnotexist")
    await harness.client.request("BREW", "/v1/jobs")  # a method the client made up
    await harness.client.get("/no/such/path")
    after = await scrape(harness)

    def counted(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = "/v1/jobs/{job_id}"
    requests = "bridge_http_requests_total"
    assert counted(requests, method="GET", route=route, status="200") >= 1
    assert counted(requests, method="GET", route=route, status="404") == 1
    assert counted(requests, method="POST", route="/v1/jobs", status="202") == 1
    assert counted(requests, method="OTHER", route="/v1/jobs", status="405") == 1
    assert counted(requests, method="GET", route="(no route)", status="404") == 1
    assert counted("bridge_http_request_duration_seconds_count", method="GET",
                   route=route) >= 2
    labels = [dict(labels) for name, labels in after if name == requests]
    assert all(label["route"] == "(no route)" or label["route"].startswith("/")
               for label in labels)
    assert not any(job["id"] in label["route"] or "doesnotexist" in label["route"]
                   or "/no/such" in label["route"] for label in labels)
    assert {label["method"] for label in labels} <= {"GET", "POST", "PATCH", "DELETE", "OTHER"}


async def test_job_and_provider_durations_are_histograms(harness: Harness) -> None:
    before = await scrape(harness)
    job = await harness.create(FLYOVER)
    done = await harness.wait(job["id"])
    after = await scrape(harness)
    finished = {"provider": "apixo", "status": "succeeded"}
    assert value(after, "bridge_job_duration_seconds_count", **finished) == \
        value(before, "bridge_job_duration_seconds_count", **finished) + 1
    took = value(after, "bridge_job_duration_seconds_sum", **finished) - \
        value(before, "bridge_job_duration_seconds_sum", **finished)
    assert 0 < took < 30
    assert done["status"] == "succeeded"
    ok = {"provider": "apixo", "outcome": "ok"}
    calls = value(after, "bridge_provider_requests_total", **ok) - \
        value(before, "bridge_provider_requests_total", **ok)
    assert calls >= 2  # the submission and a status call at least
    assert value(after, "bridge_provider_request_duration_seconds_count", **ok) - \
        value(before, "bridge_provider_request_duration_seconds_count", **ok) == calls


async def test_no_created_series_are_exported(harness: Harness) -> None:
    await harness.wait((await harness.create(FLYOVER))["id"])
    text = (await harness.client.get("/metrics")).text
    assert "bridge_http_requests_total" in text and "bridge_job_duration_seconds" in text
    assert "_created" not in text
