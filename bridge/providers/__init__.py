"""Provider adapters: one module per provider API, all behind ``base.Provider``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from bridge.media.base import MediaStore
from bridge.providers.base import Provider
from bridge.settings import Settings

if TYPE_CHECKING:
    import httpx

__all__ = ["Adapters", "build_providers"]


def build_providers(
    settings: Settings, client: httpx.AsyncClient, media: MediaStore
) -> dict[str, Provider]:
    """An adapter for every provider that has an API key configured."""
    from bridge.providers.airforce import AirforceProvider
    from bridge.providers.apixo import ApixoProvider
    from bridge.providers.infrai import InfraiProvider
    from bridge.providers.venice import VeniceProvider

    providers: dict[str, Provider] = {}
    for config in settings.enabled_providers:
        assert config.api_key is not None
        key, base = config.api_key.reveal(), config.base_url
        if config.name == "airforce":
            providers["airforce"] = AirforceProvider(client, base_url=base, api_key=key)
        elif config.name == "infrai":
            providers["infrai"] = InfraiProvider(client, base_url=base, api_key=key)
        elif config.name == "apixo":
            providers["apixo"] = ApixoProvider(client, base_url=base, api_key=key)
        elif config.name == "venice":
            providers["venice"] = VeniceProvider(client, base_url=base, api_key=key, media=media)
    return providers


class Adapters(Mapping[str, Provider]):
    """``build_providers``' adapters by name, made with their shared client the first time
    one is asked for: the names come from the settings, so a process that talks to no
    provider (a health check, a cold start) never loads httpx nor the adapters."""

    def __init__(self, settings: Settings, client: Callable[[], httpx.AsyncClient],
                 media: MediaStore) -> None:
        self._settings = settings
        self._make_client = client
        self._media = media
        self._names = tuple(config.name for config in settings.enabled_providers)
        self._client: httpx.AsyncClient | None = None
        self._adapters: dict[str, Provider] | None = None

    def client(self) -> httpx.AsyncClient:
        """The client the adapters share (made now if it was not yet)."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    @property
    def client_made(self) -> bool:
        return self._client is not None

    def _made(self) -> dict[str, Provider]:
        if self._adapters is None:
            self._adapters = build_providers(self._settings, self.client(), self._media)
        return self._adapters

    def __getitem__(self, name: str) -> Provider:
        if name not in self._names:
            raise KeyError(name)
        return self._made()[name]

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
