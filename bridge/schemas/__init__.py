"""Every body the API takes and answers, declared once as a pydantic model.

Requests are read through them (``parse``: their refusals are the API's 422s naming the
field); answers are declared by them; ``/openapi.json``'s component schemas are generated
from both (``components``), enums included, so the OpenAPI holds no limit of its own.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from bridge.schemas import responses
from bridge.schemas.base import Answer, Body, OpenApiSchema, parse
from bridge.schemas.requests import (
    EndpointCreate,
    EndpointUpdate,
    HookCreate,
    JobRequest,
    PortalSessionCreate,
    Recover,
    Replay,
)

__all__ = ["Answer", "Body", "EndpointCreate", "EndpointUpdate", "HookCreate", "JobRequest",
           "PortalSessionCreate", "Recover", "Replay", "components", "parse", "responses"]

REQUESTS: tuple[type[Body], ...] = (JobRequest, EndpointCreate, EndpointUpdate, HookCreate,
                                    Replay, Recover, PortalSessionCreate)
ANSWERS: tuple[type[Answer], ...] = tuple(
    getattr(responses, name) for name in responses.__all__)


@cache
def components() -> dict[str, Any]:
    """``components.schemas`` of the OpenAPI: every model, and the enums they use."""
    models: list[type[BaseModel]] = [*REQUESTS, *ANSWERS]
    _, top = models_json_schema([(model, "validation") for model in models],
                                ref_template="#/components/schemas/{model}",
                                schema_generator=OpenApiSchema)
    schemas: dict[str, Any] = top["$defs"]
    return schemas
