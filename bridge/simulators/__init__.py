"""Faithful fakes of the four provider APIs, as Starlette apps (one module each), for
``bridge demo``, ``bridge simulators`` and the tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.applications import Starlette

from bridge.simulators import airforce, apixo, infrai, venice
from bridge.simulators.base import SimSettings

FACTORIES: dict[str, Callable[[SimSettings], Starlette]] = {
    "airforce": airforce.create_app,
    "infrai": infrai.create_app,
    "apixo": apixo.create_app,
    "venice": venice.create_app,
}


def api_key(name: str) -> str:
    """The key a simulator accepts, and so the one the bridge is given for it."""
    return f"sim-{name}-key"


def bridge_env(urls: Mapping[str, str]) -> dict[str, str]:
    """The ``BRIDGE_<P>_BASE_URL`` and ``_API_KEY`` variables that point a bridge at the
    simulators served at ``urls`` (Venice's documented paths sit under ``/api/v1``)."""
    env = {}
    for name, url in urls.items():
        env[f"BRIDGE_{name.upper()}_BASE_URL"] = url + ("/api/v1" if name == "venice" else "")
        env[f"BRIDGE_{name.upper()}_API_KEY"] = api_key(name)
    return env
