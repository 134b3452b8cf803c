"""Strict JSON input: the decoder itself, and every route that reads a JSON body refusing
(400, nothing stored or submitted) what it refuses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge import jsoninput
from tests.conftest import Harness, Sims, running_bridge

# -- the decoder ---------------------------------------------------------------------------


@pytest.mark.parametrize(("document", "expected"), [
    (b'{"a":1,"b":[true,false,null],"c":{"d":"e"},"f":-0.5e3}',
     {"a": 1, "b": [True, False, None], "c": {"d": "e"}, "f": -500.0}),
    (b'"caf\\u00e9 \\ud83d\\ude00"', "café 😀"),  # a surrogate pair is one character
    ('"café 😀"'.encode(), "café 😀"),
    (b' \n{"a": 1}\t', {"a": 1}),
    (b"[" * 64 + b"]" * 64, json.loads("[" * 64 + "]" * 64)),
    (b'{"a":{"x":1},"b":{"x":1}}', {"a": {"x": 1}, "b": {"x": 1}}),  # same key, two objects
    (b"12345678901234567890123", 12345678901234567890123),
])
def test_loads_reads_plain_json(document: bytes, expected: Any) -> None:
    assert jsoninput.loads(document) == expected


@pytest.mark.parametrize(("document", "words", "field"), [
    (b'{"prompt":"fox \\ud800"}', "lone surrogate", "prompt"),
    (b'{"a":[1,{"b":"\\udfff x"}]}', "lone surrogate", "a[1].b"),
    (b'{"\\ud800":1}', "lone surrogate", None),
    (b'"\\udc00"', "lone surrogate", None),
    (b'{"prompt":"fox \xed\xa0\x80"}', "not UTF-8", None),  # a surrogate as raw bytes
    (b'{"prompt":"fox \xff"}', "not UTF-8", None),
    (b'{"seed":NaN}', "NaN is not a JSON number", None),
    (b"[Infinity]", "Infinity is not a JSON number", None),
    (b'{"x":-Infinity}', "-Infinity is not a JSON number", None),
    (b"[1e400]", "too large", None),
    (b'{"options":' + b"[" * 65 + b"]" * 65 + b"}", "nested more than 64 deep", "options"),
    (b"[" * 100_000, "nested more than 64 deep", None),  # never a RecursionError
    (b'{"prompt":"a","prompt":"b"}', 'the key "prompt" appears twice', "prompt"),
    (b'{"options":{"x":[{"k":1,"k":1}]}}', 'the key "k" appears twice', "options.x[0].k"),
    (b'{"a":', "not valid JSON", None),
    (b"", "not valid JSON", None),
    (b'\xef\xbb\xbf{"a":1}', "not valid JSON", None),
])
def test_loads_refuses_naming_the_problem_and_where(document: bytes, words: str,
                                                    field: str | None) -> None:
    with pytest.raises(jsoninput.Refused) as refused:
        jsoninput.loads(document)
    assert words in refused.value.message
    assert refused.value.field == field


# -- every route that reads JSON -------------------------------------------------------------

BAD_VALUES = {
    "escaped lone surrogate": (b'"x \\ud800"', "lone surrogate"),
    "raw surrogate bytes": (b'"x \xed\xa0\x80"', "not UTF-8"),
    "invalid UTF-8": (b'"x \xff"', "not UTF-8"),
    "NaN": (b"NaN", "NaN"),
    "Infinity": (b"Infinity", "Infinity"),
    "-Infinity": (b"-Infinity", "-Infinity"),
    "nesting deeper than 64": (b"[" * 65 + b"]" * 65, "nested more than 64 deep"),
}


@pytest.fixture
async def quiet(tmp_path: Path, sims: Sims) -> AsyncIterator[Harness]:
    """A bridge without workers (nothing moves unless a request moves it), and one of every
    object a JSON route can act on."""
    async with running_bridge(tmp_path, sims, BRIDGE_BACKGROUND="off",
                              BRIDGE_ALLOW_PRIVATE_TARGETS="1") as running:
        yield running


async def _routes(harness: Harness) -> list[tuple[str, str, dict[str, Any], str]]:
    """(method, path, a valid body, the field the bad value goes in) for each JSON route."""
    job = await harness.create({"provider": "apixo", "model": "veo-3-1",
                                "prompt": "A flyover of a city at sunrise"})
    endpoint = (await harness.client.post("/v1/endpoints", json={
        "url": "http://127.0.0.1:9/hook"})).json()
    test = (await harness.client.post(f"/v1/endpoints/{endpoint['id']}/test")).json()
    token = harness.bridge.signer.callback_token("apixo", job["id"])
    return [
        ("POST", "/v1/jobs", {"provider": "infrai", "prompt": "A city at dusk",
                              "metadata": {"order": 1}}, "prompt"),
        ("POST", "/v1/endpoints", {"url": "http://127.0.0.1:9/other",
                                   "description": "d"}, "description"),
        ("PATCH", f"/v1/endpoints/{endpoint['id']}", {"description": "d"}, "description"),
        ("POST", f"/v1/endpoints/{endpoint['id']}/recover",
         {"since": "2026-01-01T00:00:00Z"}, "since"),
        ("POST", "/v1/hooks", {"target_url": "http://127.0.0.1:9/zap",
                               "event": "job.succeeded"}, "event"),
        ("POST", f"/v1/events/{test['event_id']}/replay", {"endpoint_id": endpoint["id"]},
         "endpoint_id"),
        ("POST", f"/callbacks/apixo/{token}", {"code": 200, "msg": "success", "data": {
            "taskId": "task_1", "state": "generating"}}, "msg"),
    ]


async def _everything(harness: Harness, job_ids: list[str]) -> list[Any]:
    """What the lists and objects answer; every answer must be a 200."""
    seen = []
    for path in ("/v1/jobs", "/v1/events", "/v1/endpoints"):
        answer = await harness.client.get(path, params={"limit": 100})
        assert answer.status_code == 200, (path, answer.text)
        seen.append(answer.json())
    for job_id in job_ids:
        answer = await harness.client.get(f"/v1/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        seen.append(answer.json())
    for endpoint in seen[2]["data"]:
        answer = await harness.client.get(f"/v1/endpoints/{endpoint['id']}/deliveries")
        assert answer.status_code == 200, answer.text
        seen.append(answer.json())
    return seen


def _with(body: dict[str, Any], field: str, value: bytes) -> bytes:
    return json.dumps({**body, field: "@@"}).encode().replace(b'"@@"', value)


@pytest.mark.parametrize("kind", list(BAD_VALUES))
async def test_every_json_route_refuses_with_400_and_stores_nothing(
    quiet: Harness, kind: str,
) -> None:
    routes = await _routes(quiet)
    job_ids = [job["id"] for job in (await quiet.client.get("/v1/jobs")).json()["data"]]
    before = await _everything(quiet, job_ids)
    value, words = BAD_VALUES[kind]
    for method, path, body, field in routes:
        answer = await quiet.client.request(method, path, content=_with(body, field, value),
                                            headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, (path, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "invalid_request"
        assert words in error["message"], (path, error)
    assert await _everything(quiet, job_ids) == before
    assert all(app.state.submissions == 0 for app in quiet.sims.apps.values())


async def test_every_json_route_refuses_a_repeated_key_naming_it(quiet: Harness) -> None:
    routes = await _routes(quiet)
    job_ids = [job["id"] for job in (await quiet.client.get("/v1/jobs")).json()["data"]]
    before = await _everything(quiet, job_ids)
    for method, path, body, field in routes:
        # The same key twice with different values: which one counts is up to the parser.
        repeated = b'{"' + field.encode() + b'": "other",' + json.dumps(body).encode()[1:]
        answer = await quiet.client.request(method, path, content=repeated)
        assert answer.status_code == 400, (path, answer.text)
        error = answer.json()["error"]
        assert error["message"] == f'the key "{field}" appears twice in one object'
        assert error["field"] == field
    assert await _everything(quiet, job_ids) == before
    assert all(app.state.submissions == 0 for app in quiet.sims.apps.values())


async def test_a_job_with_a_lone_surrogate_is_not_made_and_lists_keep_answering(
    harness: Harness,
) -> None:
    answer = await harness.client.post(
        "/v1/jobs", content=b'{"provider":"infrai","prompt":"fox \\ud800"}')
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "prompt"
    for path in ("/v1/jobs", "/v1/events", "/v1/endpoints"):
        listed = await harness.client.get(path)
        assert listed.status_code == 200
        assert listed.json()["data"] == []
    assert harness.sims.apps["infrai"].state.submissions == 0
