"""The component schemas: generated from the body models (``bridge.schemas``), enums
included; here only the helpers that paths and webhooks refer to them with."""

from __future__ import annotations

from typing import Any

from bridge.schemas import components

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


STR = {"type": "string"}
# Enums as components: a generated client gets one class for each, not one per use.
EVENT_TYPE, JOB_STATUS, PROVIDER = ref("EventType"), ref("JobStatus"), ref("Provider")
SCHEMAS: dict[str, Schema] = components()
