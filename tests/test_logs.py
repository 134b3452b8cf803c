"""Logs: one JSON line per request and per delivery attempt, and no secret in any of them.
A real ``bridge serve`` process, its whole output captured."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import httpx

from bridge.signing import Signer
from tests.conftest import Receiver, Sims
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
    assert {"route": "/v1/me", "request_id": "trace-123", "status": 200}.items() <= \
        next(r for r in requests if r["route"] == "/v1/me").items()
    assert any(r["route"] == "/callbacks/{provider}/{token}" for r in requests)
    assert any(r["route"] == "/v1/tick" and r["status"] == 401 for r in requests)
    assert all(a["outcome"] == "succeeded" and a["endpoint_id"] == endpoint["id"]
               for a in attempts)
    for secret in (KEY, SECRET_KEY, TICK, token, endpoint["secret"], rotated["secret"],
                   signing_secret, hook_credential, "header-credential-0042",
                   "brk_a_wrong_key_here", "sim-apixo-key", "sim-airforce-key"):
        assert secret not in text, f"a secret reached the log: {secret[:6]}..."
