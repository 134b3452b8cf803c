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

_http: Any = None


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
    global _http
    settings = Settings.from_env()
    if _is_schedule(event):
        return asyncio.run(_tick(settings))
    if _http is None:
        from mangum import Mangum

        _http = Mangum(create_app(settings), lifespan="auto")
    return _http(event, context)
