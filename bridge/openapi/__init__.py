"""The OpenAPI 3.1 description of the API, served at ``GET /openapi.json``.

Every route written out with its parameters and answers (``paths``), both ways to present an
API key, and a ``webhooks`` section with a schema and an example for every event type
(``webhooks``); the request and response schemas they refer to are generated from the body
models of ``bridge.schemas`` (``schemas``), which the API validates with. The portal's HTML
pages are not in it: they are a browser's, not an API client's.
"""

from __future__ import annotations

from typing import Any

from bridge.openapi.paths import paths
from bridge.openapi.schemas import SCHEMAS
from bridge.openapi.webhooks import example_event, example_job, webhooks

__all__ = ["TAGS", "document", "example_event", "example_job"]

TAGS = [
    {"name": "Jobs", "description": "Video generation jobs: submit, follow, cancel."},
    {"name": "Events", "description": "Every state change of a job, to page through or "
                                      "send again."},
    {"name": "Endpoints", "description": "Webhook endpoints, their secrets and their "
                                         "delivery attempts."},
    {"name": "Hooks", "description": "REST Hooks (Zapier): one event type to one URL."},
    {"name": "Account", "description": "The key's tenant and its signing secret."},
    {"name": "Keys", "description": "The tenant's API keys."},
    {"name": "Portal sessions", "description": "Sign-in links to the web portal."},
    {"name": "Models", "description": "The providers' models and what each can take."},
    {"name": "Operations", "description": "Health, readiness, metrics, this document and the "
                                          "serverless tick."},
    {"name": "Callbacks", "description": "Called by providers at the URLs bridge gives them; "
                                         "not by API clients."},
    {"name": "Media", "description": "The videos bridge hosts, behind the signed links in "
                                     "jobs' results."},
]


def document(version: str, server_url: str | None = None) -> dict[str, Any]:
    """The document; ``server_url`` (BRIDGE_PUBLIC_URL where served) becomes ``servers``."""
    described: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "bridge", "version": version,
                 "description": "One job API over asynchronous AI video providers; every "
                                "state change delivered as a signed Standard Webhook."},
        "tags": TAGS,
        "paths": paths(),
        "webhooks": webhooks(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "Authorization: Bearer <API key>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "tickSecret": {"type": "http", "scheme": "bearer",
                               "description": "Authorization: Bearer <BRIDGE_TICK_SECRET>"},
                "metricsToken": {"type": "http", "scheme": "bearer",
                                 "description": "Authorization: Bearer <BRIDGE_METRICS_TOKEN>"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }
    if server_url is not None:
        described["servers"] = [{"url": server_url.rstrip("/"),
                                 "description": "BRIDGE_PUBLIC_URL"}]
    return described
