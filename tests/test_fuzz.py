"""Property-based fuzzing of the routes that take bodies from outside: arbitrary JSON, text
with lone surrogates (escaped and raw), broken encodings and odd headers. Whatever comes
in, the bridge answers below 500, stores nothing half-made, and every list still answers.

One bridge (with the four simulators) runs for the module in a thread of its own, with its
own event loop; hypothesis drives it over real loopback sockets with a plain sync client.
Examples are derandomized (the same on every run) and never saved to a database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import string
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.serving import serve_in_background
from bridge.simulators import FACTORIES
from bridge.simulators.base import SimSettings
from tests.conftest import API_KEY, Harness, Sims, running_bridge

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class LiveBridge:
    """A bridge and the simulators, served from a thread with its own event loop until
    ``stop``. No background workers (nothing moves but what requests move), and callbacks
    taken as they come (not confirmed), so that their bodies are read."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.url = ""
        self.harness: Harness | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fuzzed-bridge", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the bridge did not start within 30 s")
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._loop.close()
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start() or stop(), not lost in the thread
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        apps = {name: make(SimSettings(api_key=f"sim-{name}-key", duration=(0.3, 0.6),
                                       queue_delay=0.05))
                for name, make in FACTORIES.items()}
        async with contextlib.AsyncExitStack() as stack:
            urls = {name: await stack.enter_async_context(serve_in_background(app))
                    for name, app in apps.items()}
            self.harness = await stack.enter_async_context(running_bridge(
                self.tmp_path, Sims(apps, urls), BRIDGE_BACKGROUND="off",
                BRIDGE_ALLOW_PRIVATE_TARGETS="1", BRIDGE_CONFIRM_CALLBACKS="0"))
            self.url = self.harness.url
            self._ready.set()
            await self._stop.wait()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveBridge]:
    bridge = LiveBridge(tmp_path_factory.mktemp("fuzz"))
    bridge.start()
    try:
        yield bridge
    finally:
        bridge.stop()


@pytest.fixture(scope="module")
def client(live: LiveBridge) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {API_KEY}"},
                      timeout=30) as made:
        yield made


# -- what is thrown ------------------------------------------------------------------------

# Text of every kind of character; now and then with lone surrogates and controls.
TEXT = (st.text(max_size=24) | st.text(st.characters(categories=["L", "N", "P", "S", "Z", "Cc",
                                                                  "Cs"]), max_size=24))
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)
IMAGES = st.lists(st.sampled_from([
    "https://example.com/a.jpg", "data:image/png;base64,iVBORw0KGgo=", "data:image/png;base64,@",
    "data:,x", "ftp://example.com/a.jpg", "data:image/png;base64," + "A" * 4096,
]) | TEXT, max_size=3)
# Jobs that are often valid, and jobs with anything in any field.
LIKELY_JOBS = st.builds(
    lambda target, prompt, rest: {**target, "prompt": prompt, **rest},
    st.sampled_from([{"provider": "infrai"}, {"provider": "airforce", "model": "wan-2.6"},
                     {"provider": "apixo", "model": "veo-3-1"}]),
    TEXT.filter(str.strip),
    st.fixed_dictionaries({}, optional={
        "duration_seconds": st.sampled_from([5, 8, 99]),
        "aspect_ratio": st.sampled_from(["16:9", "9:16"]),
        "images": IMAGES,
        "seed": st.integers(-(2**70), 2**70),
        "options": st.dictionaries(TEXT, JSON, max_size=3),
        "webhook_url": st.sampled_from(["http://127.0.0.1:9/job", "https://[::1]/x"]),
        "events": st.lists(st.sampled_from(["job.succeeded", "job.failed"]), max_size=2),
        "metadata": st.dictionaries(TEXT, JSON, max_size=3),
    }),
)
ANY_JOBS = st.fixed_dictionaries({}, optional={
    "provider": st.sampled_from(["airforce", "infrai", "apixo", "venice", "sora"]) | TEXT,
    "model": st.sampled_from(["wan-2.6", "veo-3-1", "kling-1"]) | TEXT | JSON,
    "prompt": TEXT | JSON,
    "mode": st.sampled_from(["text", "image", "reference", "first_last"]) | JSON,
    "duration_seconds": st.integers(-5, 700) | JSON,
    "aspect_ratio": st.sampled_from(["16:9", "9:16"]) | JSON,
    "resolution": st.sampled_from(["720p", "1080p"]) | JSON,
    "images": IMAGES | JSON,
    "seed": st.integers(-(2**70), 2**70) | JSON,
    "audio": st.booleans() | JSON,
    "options": st.dictionaries(TEXT, JSON, max_size=3) | JSON,
    "webhook_url": st.sampled_from(["http://127.0.0.1:9/job", "https://[::1]/x"]) | JSON,
    "events": st.lists(st.sampled_from(["job.succeeded", "job.nope"]) | JSON, max_size=3),
    "metadata": st.dictionaries(TEXT, JSON, max_size=3) | JSON,
})
LIKELY_ENDPOINTS = st.fixed_dictionaries({"url": st.just("http://127.0.0.1:9/hook")}, optional={
    "events": st.lists(st.sampled_from(["job.succeeded", "endpoint.test"]), min_size=1,
                       max_size=2),
    "description": TEXT,
    "headers": st.dictionaries(st.sampled_from(["X-Team", "Authorization", "X-Api"]), TEXT,
                               max_size=2),
})
ANY_ENDPOINTS = st.fixed_dictionaries({}, optional={
    "url": st.sampled_from(["http://127.0.0.1:9/hook", "https://[::1]/h", "ftp://x/y",
                            "http://127.0.0.1:9/" + "p" * 3000]) | JSON,
    "events": st.lists(st.sampled_from(["job.succeeded", "endpoint.test", "job.nope"]) | JSON,
                       max_size=3) | JSON,
    "description": TEXT | JSON,
    "headers": st.dictionaries(TEXT, TEXT | JSON, max_size=3) | JSON,
    "disabled": JSON,
})
# Raw JSON that the standard library would read but strict JSON is not.
FRAGMENTS = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b'"\\ud800"',
                             b'"x \xed\xa0\x80"', b'"\xff"', b"[" * 70 + b"]" * 70,
                             b"9" * 5000, b'{"a":1,"a":2}'])


def _bodies(shapes: st.SearchStrategy[Any], field: str) -> st.SearchStrategy[bytes]:
    escaped = shapes.map(lambda value: json.dumps(value).encode())
    raw = shapes.map(lambda value: json.dumps(value, ensure_ascii=False)
                     .encode("utf-8", "surrogatepass"))  # lone surrogates as raw bytes
    spliced = st.tuples(shapes, FRAGMENTS).map(
        lambda pair: json.dumps({**pair[0], field: "@@"}).encode().replace(b'"@@"', pair[1]))
    repeated = st.tuples(shapes, TEXT).map(
        lambda pair: b'{"' + field.encode() + b'":' + json.dumps(pair[1]).encode() + b","
        + json.dumps({field: "x", **pair[0]}).encode()[1:])
    return st.one_of(escaped, escaped, escaped, raw, spliced, repeated, st.binary(max_size=64),
                     JSON.map(lambda value: json.dumps(value).encode()))


HEADER_VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF,
                                     exclude_characters="\x7f"), max_size=40)
HEADERS = st.fixed_dictionaries({}, optional={
    "Idempotency-Key": HEADER_VALUE | st.sampled_from(["k1", "k2", "x" * 300]),
    "Content-Type": HEADER_VALUE | st.sampled_from(["application/json", "text/plain",
                                                     "application/json; charset=latin-1"]),
    "X-Request-Id": HEADER_VALUE,
    "Accept": HEADER_VALUE,
}).map(lambda headers: {name: value.encode("latin-1") for name, value in headers.items()})


def _refused_or_done(answer: httpx.Response) -> None:
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        error = answer.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)


# -- the routes ------------------------------------------------------------------------------


def test_post_jobs_never_answers_5xx(live: LiveBridge, client: httpx.Client) -> None:
    @FUZZ
    @given(body=_bodies(LIKELY_JOBS | ANY_JOBS, "prompt"), headers=HEADERS)
    def post(body: bytes, headers: dict[str, bytes]) -> None:
        _refused_or_done(client.post("/v1/jobs", content=body, headers=headers))

    post()
    _assert_whole(live, client)


def test_post_endpoints_never_answers_5xx(live: LiveBridge, client: httpx.Client) -> None:
    @FUZZ
    @given(body=_bodies(LIKELY_ENDPOINTS | ANY_ENDPOINTS, "description"), headers=HEADERS)
    def post(body: bytes, headers: dict[str, bytes]) -> None:
        _refused_or_done(client.post("/v1/endpoints", content=body, headers=headers))

    post()
    _assert_whole(live, client)


APIXO_STATES = ["pending", "processing", "success", "failed", "queuing"]


def test_callbacks_never_answer_5xx(live: LiveBridge, client: httpx.Client) -> None:
    harness = live.harness
    assert harness is not None
    jobs = [client.post("/v1/jobs", json=body).json() for body in (
        {"provider": "apixo", "model": "veo-3-1", "prompt": "A flyover of a city"},
        {"provider": "infrai", "prompt": "A city at dusk"},
    )]
    tokens = [harness.bridge.signer.callback_token(job["provider"], job["id"]) for job in jobs]
    likely = st.fixed_dictionaries({"code": st.just(200), "msg": st.just("success"),
                                    "data": st.fixed_dictionaries({
        "taskId": TEXT.filter(bool), "state": st.sampled_from(APIXO_STATES)}, optional={
        "resultJson": st.sampled_from(['{"resultUrls":["https://cdn.example.com/v.mp4"]}',
                                       '{"resultUrls":[]}', "not json"]) | JSON,
        "failCode": st.sampled_from(["422", "500", None]), "failMsg": TEXT,
        "completeTime": st.integers(0, 2**41) | JSON})})
    anything = st.fixed_dictionaries({"code": st.sampled_from([200, 500]) | JSON}, optional={
        "msg": TEXT,
        "data": st.fixed_dictionaries({}, optional={
            "taskId": TEXT | JSON, "state": st.sampled_from(APIXO_STATES) | JSON,
            "resultJson": JSON.map(json.dumps) | JSON, "failCode": JSON, "failMsg": JSON,
            "completeTime": JSON, "progress": JSON}) | JSON,
    })
    envelopes = likely | anything
    segment = st.text(string.ascii_letters + string.digits + "-_.~%", min_size=1, max_size=40)

    # A real job's own route half the time; otherwise any provider, any token.
    routes = st.sampled_from([(job["provider"], token) for job, token in zip(
        jobs, tokens, strict=True)]) | st.tuples(
        st.sampled_from(["apixo", "infrai", "venice", "airforce"]) | segment,
        st.sampled_from(tokens) | segment)

    @FUZZ
    @given(route=routes, body=_bodies(envelopes, "msg"), headers=HEADERS)
    def call_back(route: tuple[str, str], body: bytes, headers: dict[str, bytes]) -> None:
        provider, token = route
        _refused_or_done(client.post(f"/callbacks/{provider}/{token}", content=body,
                                     headers=headers))

    call_back()
    _assert_whole(live, client)


# -- what must hold afterwards ---------------------------------------------------------------


def _all(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    """Every item of a list route, page by page; each page must answer 200."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        answer = client.get(path, params={"limit": 100, **({"cursor": cursor} if cursor
                                                            else {})})
        assert answer.status_code == 200, (path, answer.text)
        page = answer.json()
        items += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def _assert_whole(live: LiveBridge, client: httpx.Client) -> None:
    jobs = _all(client, "/v1/jobs")
    for job in jobs:
        answer = client.get(f"/v1/jobs/{job['id']}")
        assert answer.status_code == 200, answer.text
    job_ids = {job["id"] for job in jobs}
    for event in _all(client, "/v1/events"):
        if event["type"] != "endpoint.test":
            assert event["data"]["id"] in job_ids
    for endpoint in _all(client, "/v1/endpoints"):
        assert client.get(f"/v1/endpoints/{endpoint['id']}").status_code == 200
        assert client.get(f"/v1/endpoints/{endpoint['id']}/deliveries").status_code == 200
    assert live.harness is not None
    database = live.harness.env["BRIDGE_DATABASE"]
    with contextlib.closing(sqlite3.connect(database)) as db:
        (rows,) = db.execute("SELECT COUNT(*) FROM jobs").fetchone()
        (orphans,) = db.execute("SELECT COUNT(*) FROM events WHERE job_id IS NOT NULL "
                                "AND job_id NOT IN (SELECT id FROM jobs)").fetchone()
    assert rows == len(jobs)
    assert orphans == 0
