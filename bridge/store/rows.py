"""How the bridge's objects are kept as rows, the same in both backends: times as Unix
seconds, JSON as text, enums as their values; each object to its row and back by the types
of its fields, and the cursors of newest-first pages."""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import re
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from bridge.errors import InvalidRequest
from bridge.models import ApiKey, Delivery, Endpoint, Event, Job, JobError, Page

T = TypeVar("T")
CURSOR = re.compile(r"s([0-9]{1,18})")
FIRST_PAGE = 1 << 62  # a ``seq`` past every row's: the first page's cursor


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``, as every row and event keeps it. What orjson refuses
    (an integer beyond 64 bits, a key that is not a string) the standard library writes."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"))


def loads(value: str | None) -> Any:
    """A kept document's value (the standard library's: orjson reads an integer beyond 64
    bits as a float)."""
    return None if value is None else json.loads(value)


def stamp_of(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def time_of(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def column(value: Any) -> Any:
    """A field's value as its column keeps it."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, JobError):
        return dumps(value.to_json())
    if isinstance(value, tuple):
        return dumps(list(value))
    return dumps(value)


def _reader(hint: Any) -> Callable[[Any], Any] | None:
    """How a column is read back into a field of type ``hint`` (``None``: as it is)."""
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] \
        if isinstance(hint, types.UnionType) else [hint]
    kind = typing.get_origin(kinds[0]) or kinds[0]
    if kind is datetime:
        return time_of
    if kind is bool:
        return bool
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind
    if kind is JobError:
        return lambda text: None if text is None else JobError.from_json(json.loads(text))
    if kind is tuple:
        return lambda text: None if text is None else tuple(json.loads(text))
    if kind in (dict, list, Any):
        return loads
    return None


class Codec(typing.Generic[T]):
    """One kind of object's row: its fields by name, each written and read by its type."""

    def __init__(self, kind: type[T]) -> None:
        hints = typing.get_type_hints(kind)
        self.kind = kind
        self.fields = tuple(f.name for f in dataclasses.fields(kind))  # type: ignore[arg-type]
        self._readers = [(name, _reader(hints[name])) for name in self.fields]

    def params(self, obj: T) -> dict[str, Any]:
        return {name: column(getattr(obj, name)) for name in self.fields}

    def of(self, row: dict[str, Any]) -> T:
        return self.kind(**{name: row[name] if read is None else read(row[name])
                            for name, read in self._readers})


JOBS = Codec(Job)
EVENTS = Codec(Event)
ENDPOINTS = Codec(Endpoint)
DELIVERIES = Codec(Delivery)
KEYS = Codec(ApiKey)


JOB_WEBHOOK = "job"  # the ``target`` of a delivery to its job's own webhook_url


def target_of(delivery: Delivery) -> str:
    """Whom a delivery goes to: its endpoint's id, or ``JOB_WEBHOOK``."""
    return delivery.endpoint_id or JOB_WEBHOOK


def delivery_params(delivery: Delivery) -> dict[str, Any]:
    return {**DELIVERIES.params(delivery), "target": target_of(delivery)}


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The ``seq`` a page starts below (``None``: the first page)."""
    if cursor is None:
        return FIRST_PAGE
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        text = ""
    match = CURSOR.fullmatch(text)
    if match is None:
        raise InvalidRequest("cursor is not one this API returned", field="cursor",
                             status_code=400)
    return int(match.group(1))


def page_of(rows: list[dict[str, Any]], limit: int, convert: Callable[[Any], T]) -> Page[T]:
    """A page of ``limit`` rows, read as one more to tell whether another follows."""
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["seq"]) if more and rows else None
    return Page([convert(row) for row in rows], next_cursor)
