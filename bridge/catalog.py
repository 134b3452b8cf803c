"""The video models of every enabled provider, read from their capability endpoints and
cached, for ``GET /v1/models`` and for checking job requests before anything is sent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from bridge.errors import ProviderError
from bridge.providers.base import ModelInfo, Provider

log = logging.getLogger("bridge.catalog")

TTL = 600.0  # seconds a provider's model list is trusted
RETRY = 30.0  # seconds before asking again after a failed read


class Catalog:
    def __init__(self, providers: Mapping[str, Provider], ttl: float = TTL) -> None:
        self._providers = providers
        self._ttl = ttl
        self._models: dict[str, list[ModelInfo]] = {}
        self._fresh_until: dict[str, float] = {}
        self._locks = {name: asyncio.Lock() for name in providers}

    async def models(self, provider: str) -> list[ModelInfo] | None:
        """The provider's models, or ``None`` if they could never be read.

        A failed refresh keeps serving the last list it had.
        """
        if time.monotonic() < self._fresh_until.get(provider, 0.0):
            return self._models[provider]
        async with self._locks[provider]:
            if time.monotonic() < self._fresh_until.get(provider, 0.0):
                return self._models[provider]
            try:
                models = await self._providers[provider].list_models()
            except ProviderError as exc:
                log.warning("could not read %s models: %s", provider, exc.message)
                self._fresh_until[provider] = time.monotonic() + RETRY
                return self._models.get(provider)
            self._models[provider] = models
            self._fresh_until[provider] = time.monotonic() + self._ttl
            return models

    async def model(self, provider: str, model_id: str | None) -> ModelInfo | None:
        models = await self.models(provider)
        if not models or model_id is None:
            return None
        return next((m for m in models if m.id == model_id), None)

    async def all(self) -> list[ModelInfo]:
        lists = await asyncio.gather(*(self.models(name) for name in self._providers))
        return [model for models in lists if models for model in models]
