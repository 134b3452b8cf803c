"""Provider adapters: one module per provider API, all behind ``base.Provider``."""

from __future__ import annotations

import httpx

from bridge.media import MediaStore
from bridge.providers.airforce import AirforceProvider
from bridge.providers.apixo import ApixoProvider
from bridge.providers.base import Provider
from bridge.providers.infrai import InfraiProvider
from bridge.providers.venice import VeniceProvider
from bridge.settings import Settings

__all__ = ["build_providers"]


def build_providers(
    settings: Settings, client: httpx.AsyncClient, media: MediaStore
) -> dict[str, Provider]:
    """An adapter for every provider that has an API key configured."""
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
