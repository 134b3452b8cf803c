"""data: URLs in job requests: summarized wherever a job is shown, kept whole for the
provider, and bounded (SPEC 4, the hardening of payload sizes)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from bridge import inline
from bridge.errors import InvalidRequest, PayloadTooLarge
from tests.conftest import Receiver, Sims, running_bridge

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def expected_summary(data: bytes, media_type: str = "image/png") -> dict[str, Any]:
    return {"media_type": media_type, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


# -- summaries ---------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "media_type", "data"), [
    (data_url(PNG), "image/png", PNG),
    ("data:IMAGE/JPEG;base64," + base64.b64encode(b"jpeg!").decode().rstrip("="), "image/jpeg",
     b"jpeg!"),  # missing padding
    ("data:image/png;base64,iVBO Rw0K\nGgo=", "image/png", base64.b64decode("iVBORw0KGgo=")),
    ("data:,Hello%2C%20World", "text/plain", b"Hello, World"),
    ("data:text/plain;charset=utf-8,caf%C3%A9", "text/plain", "café".encode()),
    ("data:not a type;base64,AAAA", "application/octet-stream", b"\0\0\0"),
])
def test_a_summary_names_the_media_type_size_and_sha256_of_the_decoded_bytes(
    url: str, media_type: str, data: bytes,
) -> None:
    assert inline.summary(url) == expected_summary(data, media_type)


@pytest.mark.parametrize("url", ["data:image/png;base64,***", "data:image/png;base64",
                                 "data:image/png;base64,AAAAA"])
def test_a_data_url_that_does_not_decode_has_no_summary(url: str) -> None:
    with pytest.raises(ValueError, match=r"base64|comma"):
        inline.summary(url)


def test_split_takes_data_urls_out_of_images_and_options_and_join_puts_them_back() -> None:
    image, mask = data_url(PNG), data_url(b"mask", "image/webp")
    request = {"provider": "airforce", "prompt": "data:,a prompt is text, not media",
               "images": ["https://example.com/a.jpg", image],
               "options": {"mask": {"layers": [mask]}, "prefer": "fast"}}
    shown, media = inline.split(request)
    assert shown == {**request, "images": ["https://example.com/a.jpg", expected_summary(PNG)],
                     "options": {"mask": {"layers": [expected_summary(b"mask", "image/webp")]},
                                 "prefer": "fast"}}
    assert media == [(("images", 1), image), (("options", "mask", "layers", 0), mask)]
    assert inline.join(shown, media) == request
    assert shown["images"][1] == expected_summary(PNG)  # join copied, it did not change it


@pytest.mark.parametrize("request_", [
    {"images": [data_url(PNG)]},
    {"images": ["https://example.com/a.jpg"], "options": {"a": [{"b": data_url(b"x")}]}},
])
def test_a_request_whose_media_were_taken_out_shows_it(request_: dict[str, Any]) -> None:
    shown, media = inline.split(request_)
    assert media and inline.shows_media(shown)


def test_a_request_without_data_urls_has_no_media_to_read_back() -> None:
    request = {"prompt": "data:,text", "images": ["https://example.com/a.jpg"],
               "options": {"mask": {"media_type": "image/png"}}, "bytes": 1, "sha256": "x"}
    shown, media = inline.split(request)
    assert not media and not inline.shows_media(shown)


def test_split_refuses_an_image_whose_base64_does_not_decode_naming_it() -> None:
    with pytest.raises(InvalidRequest) as refused:
        inline.split({"images": ["https://example.com/a.jpg", "data:image/png;base64,@@"]})
    assert refused.value.field == "images[1]"


@pytest.mark.parametrize(("body", "field"), [
    ({"prompt": "x", "options": {"notes": "n" * (65 * 1024)}}, "options"),
    ({"prompt": "p" * (65 * 1024)}, "prompt"),
    # 700 tiny data: URLs would show as 700 summaries: far more than 64 KiB of job.
    ({"prompt": "x", "options": {"frames": ["data:,"] * 700}}, "options"),
    ({"prompt": "x", "images": ["data:image/png;base64," + "A" * (11 << 20)] * 2},
     "images[1]"),
])
def test_check_size_refuses_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(PayloadTooLarge) as refused:
        inline.check_size(body)
    assert refused.value.field == field


def test_check_size_does_not_count_data_urls_as_json() -> None:
    inline.check_size({"prompt": "x", "metadata": {"k": "v" * 8000},
                       "images": ["data:image/png;base64," + "A" * (19 << 20)]})


# -- end to end --------------------------------------------------------------------------

FOX_IMAGE = {"provider": "airforce", "model": "wan-2.6", "mode": "image",
             "prompt": "The fox in this picture darts across snowy hills",
             "duration_seconds": 5, "aspect_ratio": "16:9", "resolution": "720p"}
FAST = {"BRIDGE_ALLOW_PRIVATE_TARGETS": "1", "BRIDGE_RETRY_SCHEDULE": "200ms,200ms,200ms"}


async def test_a_data_image_is_stored_once_and_events_and_webhooks_carry_its_summary(
    tmp_path: Path, sims: Sims, receiver: Receiver,
) -> None:
    database = tmp_path / "bridge.db"
    async with running_bridge(tmp_path, sims, **FAST):
        pass  # an empty database, migrated, closed: its log folded in
    empty = database.stat().st_size
    image = os.urandom(int(2.5 * 1024 * 1024))
    url = data_url(image, "image/jpeg")
    summary = expected_summary(image, "image/jpeg")

    async with running_bridge(tmp_path, sims, **FAST) as harness:
        endpoint = (await harness.client.post("/v1/endpoints", json={
            "url": receiver.url + "/hook",
            "events": ["job.submitted", "job.running", "job.progress", "job.succeeded"]})).json()
        job = await harness.create({**FOX_IMAGE, "images": [url]})
        assert job["request"]["images"] == [summary]
        done = await harness.wait(job["id"])
        assert done["status"] == "succeeded"
        assert done["request"]["images"] == [summary]
        events = (await harness.client.get("/v1/events", params={
            "job_id": job["id"], "limit": 100})).json()["data"]
        assert len(events) >= 3
        for event in events:
            assert len(json.dumps(event)) < 64 * 1024
            assert event["data"]["request"]["images"] == [summary]
        received = await receiver.wait_for(lambda got: len(got) >= len(events))
        for delivery in received:
            assert len(delivery.body) < 64 * 1024
            payload = Webhook(endpoint["secret"]).verify(delivery.body, delivery.headers)
            assert payload["data"]["request"]["images"] == [summary]
        # The provider got the image itself.
        (task,) = harness.sims.apps["airforce"].state.jobs.values()
        assert task.sim.body["input_images"] == [{"b64_json": url.partition(",")[2]}]

    with sqlite3.connect(database) as db:
        sizes = [size for (size,) in db.execute("SELECT length(data) FROM events")]
    assert sizes and max(sizes) < 64 * 1024
    assert database.stat().st_size - empty < 2 * len(url)


async def test_a_job_body_over_its_limits_answers_413_naming_the_field_and_stores_nothing(
    tmp_path: Path, sims: Sims,
) -> None:
    image = "data:image/png;base64," + "A" * (int(10.2 * 1024 * 1024) // 4 * 4)
    async with running_bridge(tmp_path, sims) as harness:
        for body, field in [
            ({**FOX_IMAGE, "images": [data_url(PNG)],
              "options": {"notes": "n" * (70 * 1024)}}, "options"),
            ({**FOX_IMAGE, "mode": "reference", "images": [image, image]}, "images[1]"),
        ]:
            answer = await harness.client.post("/v1/jobs", json=body)
            assert answer.status_code == 413, answer.text[:200]
            error = answer.json()["error"]
            assert error["code"] == "payload_too_large"
            assert error["field"] == field
        assert (await harness.client.get("/v1/jobs")).json()["data"] == []
        assert harness.sims.apps["airforce"].state.submissions == 0


async def test_a_data_image_within_the_limits_is_accepted(tmp_path: Path, sims: Sims) -> None:
    image = data_url(os.urandom(12 * 1024 * 1024))  # 16 MiB of base64: more than before
    async with running_bridge(tmp_path, sims) as harness:
        answer = await harness.client.post("/v1/jobs", json={**FOX_IMAGE, "images": [image]})
        assert answer.status_code == 202, answer.text[:200]


async def test_a_data_image_that_does_not_decode_answers_422_naming_it(
    tmp_path: Path, sims: Sims,
) -> None:
    async with running_bridge(tmp_path, sims) as harness:
        answer = await harness.client.post("/v1/jobs", json={
            **FOX_IMAGE, "images": ["data:image/png;base64,not*base64"]})
        assert answer.status_code == 422
        assert answer.json()["error"]["field"] == "images[0]"
        assert (await harness.client.get("/v1/jobs")).json()["data"] == []
