"""The integration guides: the Python receiver example runs against a real bridge, and the
guides' requests name routes that exist."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import httpx

from bridge.api import routes
from tests.conftest import Sims, running_bridge
from tests.test_crash import free_port

DOCS = Path(__file__).resolve().parent.parent / "docs"
PATHS = [getattr(route, "path", "") for route in routes]


async def test_the_python_receiver_example_verifies_and_prints_the_video(
    tmp_path: Path, sims: Sims,
) -> None:
    port = free_port()
    async with running_bridge(tmp_path, sims, BRIDGE_ALLOW_PRIVATE_TARGETS="1") as harness:
        endpoint = (await harness.client.post("/v1/endpoints", json={
            "url": f"http://127.0.0.1:{port}/webhooks",
            "events": ["job.succeeded", "job.failed"]})).json()
        receiver = await asyncio.create_subprocess_exec(
            sys.executable, str(DOCS / "receivers" / "receiver.py"),
            env={**os.environ, "WEBHOOK_SECRET": endpoint["secret"], "PORT": str(port)},
            stdout=asyncio.subprocess.PIPE)
        try:
            assert receiver.stdout is not None
            ready = json.loads(await asyncio.wait_for(receiver.stdout.readline(), 20))
            assert ready == {"listening": port}
            async with httpx.AsyncClient() as client:
                forged = await client.post(f"http://127.0.0.1:{port}/webhooks", content=b"{}",
                                           headers={"webhook-id": "evt_x",
                                                    "webhook-timestamp": "1",
                                                    "webhook-signature": "v1,AAAA"})
            assert forged.status_code == 400
            job = await harness.create({"provider": "apixo", "model": "veo-3-1",
                                        "prompt": "a receiver test"})
            await harness.wait(job["id"])
            line = (await asyncio.wait_for(receiver.stdout.readline(), 20)).decode()
            assert line.startswith(f"{job['id']} succeeded: http")
        finally:
            receiver.terminate()
            await receiver.wait()


def test_every_route_a_guide_calls_exists() -> None:
    templates = [re.compile("^" + re.sub(r"\{[^}]+\}", r"[^/]+", path) + "$") for path in PATHS]
    called = set()
    for guide in DOCS.glob("*.md"):
        for match in re.finditer(r"https://bridge\.example\.com(/[A-Za-z0-9_./{}-]*)",
                                 guide.read_text()):
            path = re.sub(r"\{\{[^}]*\}\}|ep_\.\.\.", "x", match.group(1)).rstrip(".")
            called.add(path.split("?")[0])
    assert called, "the guides call no routes?"
    for path in called:
        assert any(t.match(path) for t in templates), f"{path} is not a bridge route"


def test_the_zapier_guide_keys_each_run_by_its_trigger_item_not_by_the_time() -> None:
    guide = (DOCS / "zapier.md").read_text()
    assert "`Idempotency-Key` set to" in guide and "`zap-{{1.id}}`" in guide
    assert "Idempotency-Key: {{zap_meta" not in guide  # minute resolution: runs would collide


def test_the_n8n_guide_says_how_a_local_n8n_receives_webhooks() -> None:
    guide = (DOCS / "n8n.md").read_text()
    assert "BRIDGE_ALLOW_PRIVATE_TARGETS=1" in guide and "WEBHOOK_URL" in guide
    assert "http://localhost:5678" in guide


def test_the_vercel_recipe_installs_the_postgres_extra() -> None:
    recipe = DOCS.parent / "deploy" / "vercel"
    lines = [line.strip() for line in (recipe / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines == [".[postgres]"]
    assert "requirements.txt" in (recipe / "README.md").read_text()


def test_the_readme_opens_with_the_demo_on_bridge_alone_then_the_tests() -> None:
    import tomllib

    readme = (DOCS.parent / "README.md").read_text()
    first = re.search(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert first is not None and readme.index(first.group(0)) < readme.index("\n## ")
    demo, tests = first.group(1).strip().splitlines()
    assert demo.endswith("pip install -e . && bridge demo")  # no test extra for the demo
    assert "'.[test]'" in tests and tests.endswith("python -m pytest -q")
    assert "python -m pytest -q" in (DOCS.parent / ".ci" / "run").read_text()
    project = tomllib.loads((DOCS.parent / "pyproject.toml").read_text())["project"]
    runtime = {re.split(r"[<>=\[; ]", d)[0].lower() for d in project["dependencies"]}
    assert not runtime & {"pytest", "playwright", "mypy", "schemathesis", "ruff", "hypothesis"}
