"""The video models of every enabled provider, read from their capability endpoints and
cached, for ``GET /v1/models`` and for checking job requests before anything is sent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.errors import ProviderError, ProviderUnavailable
from bridge.providers.base import ModelInfo, Provider

log = logging.getLogger("bridge.catalog")

TTL = 600.0  # seconds a provider's model list is trusted
RETRY = 30.0  # seconds before asking again after a failed read


@dataclass
class _Entry:
    models: list[ModelInfo] | None = None  # the last list read, kept through failed refreshes
    error: str | None = None  # why the last read failed; None after a success
    fresh_until: float = 0.0


class Catalog:
    def __init__(self, providers: Mapping[str, Provider], ttl: float = TTL,
                 retry: float = RETRY) -> None:
        self._providers = providers
        self._ttl = ttl
        self._retry = retry
        self._entries = {name: _Entry() for name in providers}
        self._locks = {name: asyncio.Lock() for name in providers}

    async def models(self, provider: str) -> list[ModelInfo]:
        """The provider's models; a failed refresh keeps serving the last list it had.

        Raises ``ProviderUnavailable`` (503, naming the provider and the reason) while the
        list has never been read; the read is tried again after ``retry`` seconds.
        """
        entry = self._entries[provider]
        if time.monotonic() >= entry.fresh_until:
            async with self._locks[provider]:
                if time.monotonic() >= entry.fresh_until:
                    await self._refresh(provider, entry)
        if entry.models is None:
            raise ProviderUnavailable(provider, entry.error or "its models could not be read",
                                      retry_after=max(1.0, entry.fresh_until - time.monotonic()))
        return entry.models

    async def _refresh(self, provider: str, entry: _Entry) -> None:
        try:
            entry.models = await self._providers[provider].list_models()
        except ProviderError as exc:
            if exc.message != entry.error:  # once per change of reason, not per request
                log.warning("could not read %s models: %s", provider, exc.message)
            entry.error = exc.message
            entry.fresh_until = time.monotonic() + self._retry
            return
        entry.error = None
        entry.fresh_until = time.monotonic() + self._ttl

    async def all(self) -> tuple[list[ModelInfo], dict[str, str]]:
        """Every model that can be read, and the providers whose models cannot, with why."""
        found: list[ModelInfo] = []
        unavailable: dict[str, str] = {}
        results = await asyncio.gather(*(self.models(name) for name in self._providers),
                                       return_exceptions=True)
        for name, result in zip(self._providers, results, strict=True):
            if isinstance(result, ProviderUnavailable):
                unavailable[name] = result.reason
            elif isinstance(result, BaseException):
                raise result
            else:
                found.extend(result)
        return found, unavailable
