"""``GET /openapi.json``: a valid OpenAPI 3.1 document that covers every route, and whose
webhook examples are the files in docs/events/."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.routing import Mount, Route

from bridge.api import routes
from bridge.models import EVENT_TYPES
from bridge.portal.routes import routes as portal_routes
from tests.conftest import Harness

DOCS = Path(__file__).resolve().parent.parent / "docs" / "events"


async def test_the_document_covers_every_route_and_method(harness: Harness) -> None:
    answer = await harness.client.get("/openapi.json", headers={"Authorization": ""})
    assert answer.status_code == 200
    document = answer.json()
    assert document["openapi"].startswith("3.1")
    for route in routes:
        assert isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}:
            operation = document["paths"][route.path][method.lower()]
            assert operation["responses"], (route.path, method)
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}


async def test_every_event_type_has_a_webhook_with_the_docs_example(harness: Harness) -> None:
    document = (await harness.client.get("/openapi.json")).json()
    assert set(document["webhooks"]) == set(EVENT_TYPES)
    for event_type in EVENT_TYPES:
        content = document["webhooks"][event_type]["post"]["requestBody"]["content"]
        example = content["application/json"]["example"]
        assert example["type"] == event_type
        assert json.loads((DOCS / f"{event_type}.json").read_text()) == example


async def test_max_concurrency_and_the_test_routes_429_are_described(harness: Harness) -> None:
    document = (await harness.client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for name in ("Endpoint", "EndpointCreate", "EndpointUpdate"):
        field = schemas[name]["properties"]["max_concurrency"]
        assert (field["type"], field["minimum"], field["maximum"]) == ("integer", 1, 32)
    assert "max_concurrency" in schemas["Endpoint"]["required"]
    limited = document["paths"]["/v1/endpoints/{endpoint_id}/test"]["post"]["responses"]["429"]
    assert "Retry-After" in limited["headers"]


async def test_the_document_covers_every_portal_route(harness: Harness) -> None:
    document = (await harness.client.get("/openapi.json")).json()
    for route in portal_routes:
        if isinstance(route, Mount):  # the static files
            assert document["paths"][f"{route.path}/{{path}}"]["get"]["responses"]["200"]
            continue
        assert isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}:
            operation = document["paths"][route.path][method.lower()]
            assert "text/html" in str(operation["responses"]), (route.path, method)
    assert document["components"]["securitySchemes"]["portalSession"]["in"] == "cookie"


def test_the_portal_catalog_describes_every_event_type() -> None:
    from bridge.portal.catalog import event_types

    found = {event_type.name: event_type for event_type in event_types()}
    assert set(found) == set(EVENT_TYPES)
    assert all(event_type.description for event_type in found.values())
    disabled = found["endpoint.disabled"]
    data = disabled.schema["allOf"][1]["properties"]["data"]["allOf"][0]
    assert {"id", "url", "disabled", "disabled_reason"} <= set(data["properties"])
    assert "secret" not in data["properties"]
    assert disabled.example["data"]["disabled"] is True
