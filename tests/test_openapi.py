"""``GET /openapi.json``: a valid OpenAPI 3.1 document that covers every API route (not the
portal's pages), fit for client generators, and whose webhook examples are the files in
docs/events/."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starlette.routing import Mount, Route

from bridge.api import routes
from bridge.models import EVENT_TYPES
from bridge.openapi import document
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


# Client generators name their functions after these: a rename breaks every client.
OPERATION_IDS = {
    ("post", "/v1/jobs"): "createJob", ("get", "/v1/jobs"): "listJobs",
    ("get", "/v1/jobs/{job_id}"): "getJob", ("post", "/v1/jobs/{job_id}/cancel"): "cancelJob",
    ("get", "/v1/events"): "listEvents", ("get", "/v1/events/{event_id}"): "getEvent",
    ("post", "/v1/events/{event_id}/replay"): "replayEvent",
    ("post", "/v1/endpoints"): "createEndpoint", ("get", "/v1/endpoints"): "listEndpoints",
    ("get", "/v1/endpoints/{endpoint_id}"): "getEndpoint",
    ("patch", "/v1/endpoints/{endpoint_id}"): "updateEndpoint",
    ("delete", "/v1/endpoints/{endpoint_id}"): "deleteEndpoint",
    ("post", "/v1/endpoints/{endpoint_id}/rotate-secret"): "rotateEndpointSecret",
    ("post", "/v1/endpoints/{endpoint_id}/test"): "sendTestEvent",
    ("get", "/v1/endpoints/{endpoint_id}/deliveries"): "listEndpointDeliveries",
    ("post", "/v1/endpoints/{endpoint_id}/recover"): "recoverEndpoint",
    ("post", "/v1/hooks"): "createHook", ("delete", "/v1/hooks/{hook_id}"): "deleteHook",
    ("get", "/v1/me"): "getMe", ("post", "/v1/me/rotate-signing-secret"): "rotateSigningSecret",
    ("get", "/v1/keys"): "listKeys", ("delete", "/v1/keys/{prefix}"): "revokeKey",
    ("post", "/v1/portal-sessions"): "createPortalSession", ("get", "/v1/models"): "listModels",
    ("post", "/v1/tick"): "tick", ("get", "/v1/tick"): "tickByGet",
    ("post", "/callbacks/{provider}/{token}"): "receiveCallback",
    ("get", "/media/{token}"): "getMedia", ("get", "/healthz"): "getHealth",
    ("get", "/readyz"): "getReadiness", ("get", "/metrics"): "getMetrics",
    ("get", "/openapi.json"): "getOpenApi",
}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method, path, operation


async def test_every_operation_has_its_stable_id_a_described_tag_and_a_summary(
    harness: Harness,
) -> None:
    document = (await harness.client.get("/openapi.json")).json()
    found = {(method, path): op["operationId"] for method, path, op in _operations(document)}
    assert found == OPERATION_IDS
    tags = {tag["name"]: tag.get("description") for tag in document["tags"]}
    assert all(tags.values()), tags
    used = set()
    for method, path, operation in _operations(document):
        assert operation["summary"], (method, path)
        assert len(operation["tags"]) == 1 and operation["tags"][0] in tags, (method, path)
        used.update(operation["tags"])
    assert used == set(tags)  # no tag without operations
    assert {op["tags"][0] for _, p, op in _operations(document) if p.startswith("/v1/jobs")} \
        == {"Jobs"}


async def test_every_parameter_has_a_description(harness: Harness) -> None:
    document = (await harness.client.get("/openapi.json")).json()
    hooks = [("post", name, item["post"]) for name, item in document["webhooks"].items()]
    for method, path, operation in [*_operations(document), *hooks]:
        for parameter in operation.get("parameters", []):
            assert parameter.get("description"), (method, path, parameter["name"])
    create = document["paths"]["/v1/jobs"]["post"]["parameters"]
    assert [(p["name"], p["in"]) for p in create] == [("Idempotency-Key", "header")]


async def test_servers_is_the_public_url_the_bridge_is_reached_at(harness: Harness) -> None:
    document = (await harness.client.get("/openapi.json")).json()
    assert [server["url"] for server in document["servers"]] == [harness.url.rstrip("/")]
    assert harness.env["BRIDGE_PUBLIC_URL"] == harness.url


def test_servers_drops_a_trailing_slash_so_paths_join_with_one() -> None:
    described = document("1", "https://bridge.example.com/base/")
    assert described["servers"][0]["url"] == "https://bridge.example.com/base"
    assert "servers" not in document("1")  # the portal's catalog reads it without one


async def test_the_portal_pages_are_left_out_and_every_other_route_is_in(
    harness: Harness,
) -> None:
    """The portal is HTML for a browser; callbacks, media and the operational routes are
    HTTP any program may call (providers, video players, monitors), so they stay, tagged."""
    document = (await harness.client.get("/openapi.json")).json()
    assert not [path for path in document["paths"] if path.startswith("/portal")]
    assert "text/html" not in json.dumps(document)
    assert "portalSession" not in document["components"]["securitySchemes"]
    portal = {route.path for route in portal_routes if isinstance(route, Route | Mount)}
    served = {route.path for route in harness.app.routes if isinstance(route, Route)}
    assert served - portal == set(document["paths"])
    tags = {path: next(iter(item.values()))["tags"] for path, item in document["paths"].items()}
    assert tags["/callbacks/{provider}/{token}"] == ["Callbacks"]
    assert tags["/media/{token}"] == ["Media"]
    assert {tags[p][0] for p in ("/healthz", "/readyz", "/metrics", "/openapi.json")} \
        == {"Operations"}


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


async def test_every_ref_resolves(harness: Harness) -> None:
    document = (await harness.client.get("/openapi.json")).json()
    refs = set(_refs(document))
    assert "#/components/schemas/Job" in refs
    for ref in refs:
        assert _resolve(document, ref) is not None, ref
    # Every component schema is used, none left behind by a change (InlineMedia is what a
    # job's request shows of each data: URL, named in its description).
    names = {ref.rsplit("/", 1)[1] for ref in refs}
    assert set(document["components"]["schemas"]) - names == {"InlineMedia"}


def _pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name))


def _inline_names(parent: str, schema: dict[str, Any]) -> Iterator[str]:
    """The class names generators give the inline objects and enums inside ``schema``:
    the parent's name and the property's (or its title), as openapi-python-client and
    openapi-generator both do."""
    for key, value in schema.get("properties", {}).items():
        for variant in value.get("anyOf", [value]):
            if "$ref" in variant:
                continue
            if variant.get("type") == "object" or "enum" in variant or "title" in variant:
                name = parent + _pascal(variant.get("title", key))
                yield name
                yield from _inline_names(name, variant)
    for part in schema.get("allOf", []):
        yield from _inline_names(parent, part)


async def test_no_two_schemas_share_a_name(harness: Harness) -> None:
    document = (await harness.client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    names = [_pascal(name) for name in schemas]
    for name, schema in schemas.items():
        names.extend(_inline_names(_pascal(name), schema))
    assert "JobAcceptedRequest" in names  # Job.request, titled apart from JobRequest
    repeated = {name for name in names if names.count(name) > 1}
    assert not repeated, repeated


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
