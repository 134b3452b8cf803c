"""A Python client generated from the live ``/openapi.json`` (openapi-python-client) works
against a real bridge: it registers an endpoint, reads a refusal naming the field, creates a
job, finds it in the list and reads it finished, and the endpoint's secret verifies the
webhook that arrives."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import API_KEY, Receiver, Sims, running_bridge

PACKAGE = "bridge_client"
# No post hooks (ruff format would only restyle the code); video/mp4, which the generator has
# no reader for, is read as bytes (the generator's own option for such types).
CONFIG = "post_hooks: []\ncontent_type_overrides:\n  video/mp4: application/octet-stream\n"


async def generate(document: Path, out: Path) -> str:
    """Run the generator on ``document``; fail on any warning. Answers what it printed."""
    config = document.with_name("generator.yaml")
    config.write_text(CONFIG)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "openapi_python_client", "generate", "--path", str(document),
        "--meta", "none", "--config", str(config), "--output-path", str(out),
        "--fail-on-warning", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        printed, _ = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = printed.decode()
    assert process.returncode == 0, text
    assert "warning" not in text.lower(), text
    return text


@pytest.fixture
def importable(tmp_path: Path) -> Iterator[Path]:
    """A directory on sys.path for the generated package, taken off again after the test."""
    folder = tmp_path / "generated"
    folder.mkdir()
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
        del sys.modules[name]


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


async def test_a_generated_client_registers_an_endpoint_creates_and_lists_a_job(
    tmp_path: Path, sims: Sims, receiver: Receiver, importable: Path
) -> None:
    async with running_bridge(tmp_path, sims, BRIDGE_ALLOW_PRIVATE_TARGETS="1") as harness:
        answer = await harness.client.get("/openapi.json", headers={"Authorization": ""})
        document = tmp_path / "openapi.json"
        document.write_bytes(answer.content)
        await generate(document, importable / PACKAGE)

        client_module, models = _module("client"), _module("models")
        create_endpoint = _module("api.endpoints.create_endpoint")
        create_job, list_jobs, get_job = (
            _module(f"api.jobs.{name}") for name in ("create_job", "list_jobs", "get_job"))
        # The base URL is the document's own servers entry: BRIDGE_PUBLIC_URL.
        base_url = answer.json()["servers"][0]["url"]
        client = client_module.AuthenticatedClient(base_url=base_url, token=API_KEY,
                                                   timeout=10.0)
        async with client:
            registered = await create_endpoint.asyncio_detailed(
                client=client, body=models.EndpointCreate(
                    url=f"{receiver.url}/hooks",
                    events=[models.EventType("job.succeeded")], description="generated"))
            assert registered.status_code == 201, registered.content
            endpoint = registered.parsed
            assert isinstance(endpoint, models.EndpointWithSecret)
            assert endpoint.id.startswith("ep_") and endpoint.secret.startswith("whsec_")

            refused = await create_job.asyncio_detailed(
                client=client, body=models.JobRequest(provider=models.Provider("infrai"),
                                                      prompt="   "))
            assert refused.status_code == 422, refused.content
            assert isinstance(refused.parsed, models.Error)
            assert isinstance(refused.parsed.error, models.ErrorDetail)
            assert refused.parsed.error.field == "prompt"

            created = await create_job.asyncio_detailed(
                client=client, idempotency_key="generated-client-1",
                body=models.JobRequest(provider=models.Provider("infrai"),
                                       prompt="A timelapse of a city skyline at dusk",
                                       duration_seconds=5, aspect_ratio="16:9"))
            assert created.status_code == 202, created.content
            job = created.parsed
            assert isinstance(job, models.Job) and job.id.startswith("job_")

            page = await list_jobs.asyncio(client=client, provider=models.Provider("infrai"))
            assert isinstance(page, models.JobPage)
            assert [listed.id for listed in page.data] == [job.id]

            await harness.wait(job.id, {"succeeded"})
            finished = await get_job.asyncio(job_id=job.id, client=client)
            assert isinstance(finished, models.Job)
            assert finished.status == models.JobStatus("succeeded")
            assert finished.result.video_url

        delivered = await receiver.wait_for(lambda got: bool(got), seconds=10)
        event = Webhook(endpoint.secret).verify(delivered[0].body, delivered[0].headers)
        assert (event["type"], event["data"]["id"]) == ("job.succeeded", job.id)
