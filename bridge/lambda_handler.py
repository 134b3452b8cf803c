"""AWS Lambda entry point (``pip install 'bridge[lambda]'``): ``bridge.lambda_handler.handler``.

HTTP events (API Gateway, a function URL) go to the ASGI app through Mangum. An EventBridge
schedule event runs one tick instead: on Lambda nothing runs between invocations, so set
``BRIDGE_BACKGROUND=off`` and schedule the function every minute (deploy/lambda/template.yaml).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.app import create_app
from bridge.settings import Settings

_settings: Settings | None = None
_http: Any = None
_loop: asyncio.AbstractEventLoop | None = None


def _event_loop() -> asyncio.AbstractEventLoop:
    """The one loop of this process: Mangum runs HTTP events on the thread's current loop,
    and ticks run on it too (``asyncio.run`` would leave the thread without one)."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_loop)
    return _loop


def _is_schedule(event: Any) -> bool:
    return isinstance(event, dict) and (
        event.get("source") == "aws.events" or event.get("detail-type") == "Scheduled Event"
    )


async def _tick(settings: Settings) -> dict[str, object]:
    from bridge.core import Bridge

    bridge = await Bridge.open(settings)
    try:
        return await bridge.tick()
    finally:
        await bridge.close()


def handler(event: Any, context: Any) -> Any:
    global _http, _settings
    if _settings is None:  # read once per container, like the app Mangum serves
        _settings = Settings.from_env()
    settings = _settings
    loop = _event_loop()
    if _is_schedule(event):
        return loop.run_until_complete(_tick(settings))
    if _http is None:
        from mangum import Mangum

        _http = Mangum(create_app(settings), lifespan="auto")
    return _http(event, context)
