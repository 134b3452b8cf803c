"""The model catalog when a provider's models cannot be read: a refused key, a provider
down at first use. Jobs for it answer 503 naming the provider and why, never 500."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from bridge.catalog import Catalog
from bridge.errors import ProviderUnavailable
from bridge.providers.infrai import InfraiProvider
from bridge.simulators.base import SimSettings
from bridge.simulators.infrai import create_app
from tests.conftest import Sims, running_bridge

CITY = {"provider": "infrai", "prompt": "A timelapse of a city skyline at dusk",
        "duration_seconds": 5, "aspect_ratio": "16:9"}
FOX = {"provider": "airforce", "model": "wan-2.6", "prompt": "A red fox darting across snowy hills",
       "duration_seconds": 8, "aspect_ratio": "16:9", "resolution": "720p"}
WRONG_KEY = "ifr_wrong_key_never_shown"


async def test_a_refused_provider_key_answers_503_naming_the_provider_every_time(
    tmp_path: Path, sims: Sims, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_bridge(tmp_path, sims, BRIDGE_INFRAI_API_KEY=WRONG_KEY) as harness:
        for _ in range(5):  # the first and every later request within the retry period
            answer = await harness.client.post("/v1/jobs", json=CITY)
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error["code"] == "provider_unavailable"
            assert error["field"] == "provider"
            assert "infrai" in error["message"] and "refused the API key" in error["message"]
            assert WRONG_KEY not in answer.text
            assert int(answer.headers["retry-after"]) >= 1
        # The other providers are not held up by it.
        assert (await harness.client.post("/v1/jobs", json=FOX)).status_code == 202
        models = (await harness.client.get("/v1/models")).json()
    assert {m["provider"] for m in models["data"]} == {"airforce", "apixo", "venice"}
    [unavailable] = models["unavailable"]
    assert unavailable["provider"] == "infrai"
    assert "refused the API key" in unavailable["reason"]
    assert WRONG_KEY not in caplog.text
    assert "Traceback" not in caplog.text
    assert len([r for r in caplog.records if "could not read infrai" in r.getMessage()]) == 1


async def test_every_provider_readable_lists_none_unavailable(tmp_path: Path, sims: Sims) -> None:
    async with running_bridge(tmp_path, sims) as harness:
        models = (await harness.client.get("/v1/models")).json()
    assert models["unavailable"] == []
    assert {m["provider"] for m in models["data"]} == {"airforce", "infrai", "apixo", "venice"}


@pytest.fixture
async def infrai() -> AsyncIterator[tuple[InfraiProvider, Starlette]]:
    app = create_app(SimSettings(api_key="sim-key"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        yield InfraiProvider(client, base_url="https://api.infrai.cc", api_key="sim-key"), app


async def test_a_provider_down_at_first_use_is_read_again_after_the_retry_period(
    infrai: tuple[InfraiProvider, Starlette], caplog: pytest.LogCaptureFixture
) -> None:
    provider, app = infrai
    app.state.faults.add(r"/capabilities$", status=500, times=3)
    catalog = Catalog({"infrai": provider}, retry=0.2)
    with caplog.at_level(logging.WARNING, "bridge.catalog"):
        for _ in range(2):
            with pytest.raises(ProviderUnavailable) as refused:
                await catalog.models("infrai")
            assert "HTTP 500" in refused.value.reason
        found, unavailable = await catalog.all()
        assert (found, list(unavailable)) == ([], ["infrai"])
        await asyncio.sleep(0.25)
        with pytest.raises(ProviderUnavailable):  # the second scripted 500
            await catalog.models("infrai")
        await asyncio.sleep(0.25)
        with pytest.raises(ProviderUnavailable):  # the third
            await catalog.models("infrai")
        await asyncio.sleep(0.25)
        models = await catalog.models("infrai")
    assert models and all(m.provider == "infrai" for m in models)
    assert await catalog.all() == (models, {})
    # One warning for the reason, not one per request.
    assert len([r for r in caplog.records if r.name == "bridge.catalog"]) == 1


async def test_a_failed_refresh_keeps_the_last_list(
    infrai: tuple[InfraiProvider, Starlette]
) -> None:
    provider, app = infrai
    catalog = Catalog({"infrai": provider}, ttl=0.0, retry=0.0)
    first = await catalog.models("infrai")
    app.state.faults.add(r"/capabilities$", status=503, times=5)
    assert await catalog.models("infrai") == first
    assert await catalog.all() == (first, {})
