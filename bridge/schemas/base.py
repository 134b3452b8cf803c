"""What the body models share: their base class, the enums they take, reading a body
through a model, and the refusal a model's validation errors become.

A refusal is today's ``{"error": {"code": "invalid_request", "message", "field"}}``: 400 for
a body that is no JSON object, else 422 naming the first offending field (an unknown field
first, then the fields in the order the model declares them) by its dotted path
(``images[0]``, ``headers.X-Tenant``), with a message worded from the model's own
declaration (its type, its bounds) or from the validator that refused it.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import ErrorDetails, PydanticCustomError

from bridge.errors import InvalidRequest

__all__ = ["Answer", "Body", "choice", "parse", "refuse"]

B = TypeVar("B", bound="Body")


class Body(BaseModel):
    """A request body: only the declared fields, each checked strictly (the field types are
    pydantic's Strict* ones); an enum field holds its plain string value."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)


class Answer(BaseModel):
    """A response body as the API answers it (``to_json`` of a domain object makes it; the
    tests check that the two agree)."""

    model_config = ConfigDict(use_enum_values=True)


def choice(name: str, values: tuple[str, ...], description: str) -> type[StrEnum]:
    """An enum of ``values`` (the domain's own tuple), named ``name`` in the OpenAPI."""
    made = StrEnum(name, [(value, value) for value in values])  # type: ignore[misc]
    made.__doc__ = description
    return made


def refuse(message: str, field: str | None = None) -> PydanticCustomError:
    """What a validator raises: ``message`` as the refusal's, about ``field`` when that is
    not where the validator sits (a header inside ``headers``)."""
    return PydanticCustomError("refused", "{message}", {"message": message, "field": field})


def parse(kind: type[B], body: Any, **context: Any) -> B:
    """``body`` (strict JSON already: ``bridge.jsoninput``) as a ``kind``, or the refusal."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", status_code=400)
    try:
        return kind.model_validate(body, context=context or None)
    except ValidationError as exc:
        raise _refusal(kind, exc.errors(include_url=False)) from None


def _refusal(kind: type[Body], errors: list[ErrorDetails]) -> InvalidRequest:
    order = {name: index for index, name in enumerate(kind.model_fields)}
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return InvalidRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
    first = min(errors, key=lambda e: order.get(str(e["loc"][0]), len(order)) if e["loc"]
                else -1)
    field = _dotted(first["loc"])
    return InvalidRequest(_message(kind, first, field), field=_custom_field(first) or field)


def _custom_field(error: ErrorDetails) -> str | None:
    field = (error.get("ctx") or {}).get("field")
    return field if isinstance(field, str) else None


def _dotted(loc: tuple[int | str, ...]) -> str:
    """``images[0]``, ``headers.X-Tenant``, from pydantic's location of an error."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
    return name


_KINDS = {"string_type": "a string", "int_type": "an integer", "int_from_float": "an integer",
          "bool_type": "true or false", "list_type": "an array", "dict_type": "an object",
          "float_type": "a number", "model_type": "an object"}
_SCHEMA_KINDS = {"integer": "an integer", "number": "a number"}


def _message(kind: type[Body], error: ErrorDetails, field: str) -> str:
    kind_of_error, ctx = error["type"], error.get("ctx") or {}
    if kind_of_error == "refused":
        return str(ctx["message"])
    top = str(error["loc"][0]) if error["loc"] else ""
    required = top in kind.model_fields and kind.model_fields[top].is_required()
    if kind_of_error == "missing" or (required and error["input"] is None
                                      and len(error["loc"]) == 1):
        return f"{field} is required"
    bounds = _bounds(kind).get(top) if len(error["loc"]) == 1 else None
    if bounds is not None:  # one message for a wrong type and a value out of range
        schema_kind, low, high = bounds
        return (f"{field} must be {_SCHEMA_KINDS[schema_kind]} from {_number(low)} to "
                f"{_number(high)}")
    if kind_of_error in ("enum", "literal_error"):
        return f"{field} must be one of {ctx['expected']}"
    if kind_of_error == "string_too_long":
        return f"{field} is longer than {ctx['max_length']} characters"
    if kind_of_error in ("string_too_short", "too_short"):
        return f"{field} must not be empty"
    if kind_of_error == "too_long":
        return f"{field} may have at most {ctx['max_length']} entries"
    if kind_of_error in _KINDS:
        return f"{field} must be {_KINDS[kind_of_error]}"
    return f"{field} is not valid"


def _number(value: Any) -> Any:
    """60, not 60.0."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


@cache
def _bounds(kind: type[Body]) -> dict[str, tuple[str, Any, Any]]:
    """The fields with a minimum and a maximum, read from the model's own JSON Schema."""
    found = {}
    for name, schema in kind.model_json_schema()["properties"].items():
        for variant in schema.get("anyOf", [schema]):
            if "minimum" in variant and "maximum" in variant:
                found[name] = (variant["type"], variant["minimum"], variant["maximum"])
    return found


class OpenApiSchema(GenerateJsonSchema):
    """Pydantic's JSON Schema without a title on every property (a generator would make a
    class of each titled one): a property has a title only where it is given one."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False
