"""Logs: one JSON line per request, per job status change, per provider request and per
delivery attempt, and no secret, prompt or token in any of them. A real ``bridge serve``
process with its whole output captured, and a bridge in this process with its records
formatted as ``bridge serve`` formats them."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.errors import ProviderError
from bridge.logs import JsonFormatter, RepeatFilter
from bridge.providers.http import send
from bridge.signing import Signer
from tests.conftest import API_KEY, Harness, Receiver, Sims
from tests.test_crash import bridge_serve, free_port

KEY = "brk_log_test_key_do_not_print_me"
SECRET_KEY = "bridge-secret-key-never-in-logs-0123456789"
TICK = "tick-secret-never-in-logs"


async def test_requests_and_deliveries_are_json_lines_without_secrets(
    tmp_path: Path, sims: Sims, receiver: Receiver,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env = {**keep, **sims.env(), "BRIDGE_DATABASE": str(tmp_path / "b.db"),
           "BRIDGE_MEDIA_DIR": str(tmp_path / "media"), "BRIDGE_PUBLIC_URL": base,
           "BRIDGE_API_KEY": KEY, "BRIDGE_SECRET_KEY": SECRET_KEY, "BRIDGE_TICK_SECRET": TICK,
           "BRIDGE_ALLOW_PRIVATE_TARGETS": "1", "BRIDGE_LOG_LEVEL": "info"}
    log_path = tmp_path / "bridge.log"
    hook_credential = "hookcredential-in-the-url-0042"
    with log_path.open("w") as log_file:
        async with bridge_serve(env, port, output=log_file) as process, httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=10,
        ) as api:
            me = (await api.get("/v1/me", headers={"X-Request-Id": "trace-123"}))
            assert me.headers["x-request-id"] == "trace-123"
            signing_secret = me.json()["signing_secret"]
            endpoint = (await api.post("/v1/endpoints", json={
                "url": f"{receiver.url}/in?token={hook_credential}",
                "headers": {"X-Auth": "header-credential-0042"}})).json()
            rotated = (await api.post(f"/v1/endpoints/{endpoint['id']}/rotate-secret")).json()
            job = (await api.post("/v1/jobs", json={
                "provider": "apixo", "model": "veo-3-1", "prompt": "a logged flyover"})).json()
            await api.post("/v1/tick", headers={"Authorization": "Bearer wrong"})
            token = Signer(SECRET_KEY).callback_token("apixo", job["id"])
            await api.post(f"/callbacks/apixo/{token}", content=b"{}")
            await api.get("/v1/jobs", headers={"Authorization": "Bearer brk_a_wrong_key_here"})
            await receiver.wait_for(lambda got: any(
                r.json["type"] == "job.succeeded" for r in got), seconds=30)
            await asyncio.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            await process.wait()
    text = log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    requests = [line for line in lines if line["logger"] == "bridge.access"]
    attempts = [line for line in lines if line["message"] == "delivery attempt"]
    assert requests and attempts
    for line in requests:
        assert line["request_id"] and line["route"].startswith("/")
        assert isinstance(line["status"], int) and line["duration_ms"] >= 0
    assert {"route": "/v1/me", "request_id": "trace-123", "status": 200,
            "tenant": "default"}.items() <= \
        next(r for r in requests if r["route"] == "/v1/me").items()
    assert any(r["route"] == "/callbacks/{provider}/{token}" for r in requests)
    assert any(r["route"] == "/v1/tick" and r["status"] == 401 for r in requests)
    assert all(a["outcome"] == "succeeded" and a["endpoint_id"] == endpoint["id"]
               for a in attempts)
    for secret in (KEY, SECRET_KEY, TICK, token, endpoint["secret"], rotated["secret"],
                   signing_secret, hook_credential, "header-credential-0042",
                   "brk_a_wrong_key_here", "sim-apixo-key", "sim-airforce-key"):
        assert secret not in text, f"a secret reached the log: {secret[:6]}..."


PROMPT = "a prompt that must never reach a log line 7f3a"
METADATA = {"order": "metadata-that-must-never-reach-a-log-line-91c2"}


def json_lines(caplog: pytest.LogCaptureFixture) -> tuple[list[dict[str, Any]], str]:
    """The captured records as ``bridge serve`` writes them: parsed, and as text."""
    formatter = JsonFormatter()
    text = "\n".join(formatter.format(record) for record in caplog.records)
    return [json.loads(line) for line in text.splitlines()], text


async def test_each_status_change_is_one_line_after_it_is_stored(
    harness: Harness, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    made = await harness.create({"provider": "apixo", "model": "veo-3-1", "prompt": PROMPT,
                                 "metadata": METADATA})
    callback_url = harness.bridge.tracker.callback_url(
        await harness.bridge.store.get_job(made["id"]))  # type: ignore[arg-type]
    done = await harness.wait(made["id"])
    assert done["status"] == "succeeded"
    harness.sims.apps["infrai"].state.faults.add(r"/generate$", method="POST", status=400)
    refused = await harness.wait((await harness.create(
        {"provider": "infrai", "prompt": PROMPT, "duration_seconds": 5}))["id"])
    assert refused["status"] == "failed"

    lines, text = json_lines(caplog)
    changes = [line for line in lines if line["message"] == "job status"]
    steps = [(c["from"], c["to"]) for c in changes if c["job_id"] == made["id"]]
    assert steps[0] == ("queued", "submitted") and steps[-1][1] == "succeeded"
    assert all(a[1] == b[0] for a, b in itertools.pairwise(steps))  # a chain, no repeat
    assert len({to for _, to in steps}) == len(steps)
    first = next(c for c in changes if c["job_id"] == made["id"])
    assert first["provider"] == "apixo" and first["tenant"] == "default"
    assert "error_code" not in first
    failed = [c for c in changes if c["job_id"] == refused["id"]]
    assert [(c["from"], c["to"]) for c in failed] == [("queued", "failed")]
    assert failed[0]["error_code"] == refused["error"]["code"]
    for secret in (PROMPT, METADATA["order"], callback_url, callback_url.rsplit("/", 1)[1],
                   done["result"]["video_url"], API_KEY, "sim-apixo-key", "sim-infrai-key"):
        assert secret not in text, f"reached the log: {secret[:30]}"


async def test_provider_requests_are_lines_with_their_operation_not_their_url(
    harness: Harness, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    apixo = await harness.wait((await harness.create(
        {"provider": "apixo", "model": "veo-3-1", "prompt": PROMPT}))["id"])
    harness.sims.apps["airforce"].state.faults.add(r"/stream$", method="GET", status=503)
    fox = await harness.wait((await harness.create(
        {"provider": "airforce", "model": "wan-2.6", "prompt": PROMPT}))["id"])
    lines, text = json_lines(caplog)
    calls = [line for line in lines if line["message"] == "provider request"]
    assert all(c["logger"] == "bridge.providers" and c["duration_ms"] >= 0 for c in calls)
    seen = {(c["provider"], c["method"], c["operation"], c["status"]) for c in calls}
    assert ("apixo", "POST", "/generateTask/{model}", 200) in seen
    assert ("apixo", "GET", "/statusTask/{model}", 200) in seen
    assert ("airforce", "POST", "/v1/video/generations", 200) in seen
    assert ("airforce", "GET", "/v1/video/tasks/{id}/stream", 503) in seen
    for secret in (PROMPT, apixo["provider_job_id"], fox["provider_job_id"], "taskId",
                   "sim-apixo-key", "sim-airforce-key", "127.0.0.1"):
        assert secret not in text, f"reached the log: {secret}"


async def test_a_provider_request_without_an_answer_is_a_line_with_the_error_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.providers")
    url = f"http://127.0.0.1:{free_port()}/status/task-42?key=query-credential-5511"
    async with httpx.AsyncClient() as client:
        with pytest.raises(ProviderError):
            await send(client, "GET", url, provider="infrai", operation="/status/{job_id}")
    lines, text = json_lines(caplog)
    assert [(c["provider"], c["operation"], c["status"], c["error"]) for c in lines] == [
        ("infrai", "/status/{job_id}", None, "ConnectError")]
    assert "query-credential-5511" not in text and "task-42" not in text


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_repeated_message_is_let_through_once_an_interval_saying_how_many_were_left_out(
) -> None:
    logger = logging.getLogger("tests.repeats")
    kept = _Kept()
    repeats = RepeatFilter(interval=0.2)
    logger.addHandler(kept)
    logger.addFilter(repeats)
    logger.propagate = False
    try:
        for index in range(1000):  # as asyncio words a failed accept: a second line varies
            logger.error("socket.accept() out of system resource\nsocket: %d", index)
        logger.error("another message")
        time.sleep(0.25)
        logger.error("socket.accept() out of system resource\nsocket: 1000")
    finally:
        logger.removeHandler(kept)
        logger.removeFilter(repeats)
        logger.propagate = True
    assert [(r.getMessage().partition("\n")[0], getattr(r, "suppressed", None))
            for r in kept.records] == [
        ("socket.accept() out of system resource", None),
        ("another message", None),
        ("socket.accept() out of system resource", 999),
    ]
