"""Webhook endpoints: what a registration may say, checked field by field."""

from __future__ import annotations

import re
from typing import Any

from bridge.delivery import refused_header
from bridge.errors import InvalidRequest
from bridge.models import EVENT_TYPES, MAX_CONCURRENCY
from bridge.targets import Guard, TargetRefused

MAX_URL = 2048
MAX_DESCRIPTION = 500
MAX_HEADERS = 20
MAX_HEADER_VALUE = 1024
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")
_FIELDS = {"url", "events", "description", "headers", "disabled", "max_concurrency"}


async def check_url(guard: Guard, url: Any, field: str = "url") -> str:
    """A webhook URL the guard allows (422 naming ``field`` otherwise)."""
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{field} must be a URL string", field=field)
    if len(url) > MAX_URL:
        raise InvalidRequest(f"{field} is longer than {MAX_URL} characters", field=field)
    try:
        await guard.check(url)
    except TargetRefused as exc:
        raise InvalidRequest(f"{field} {exc}", field=field) from None
    return url


def check_events(value: Any, field: str = "events") -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"{field} must be a non-empty array of event types, or null",
                             field=field)
    for index, event_type in enumerate(value):
        if event_type not in EVENT_TYPES:
            raise InvalidRequest(
                f"unknown event type {event_type!r}; one of {', '.join(EVENT_TYPES)}",
                field=f"{field}[{index}]",
            )
    return tuple(dict.fromkeys(value))


def check_headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest("headers must be an object of header names to values",
                             field="headers")
    if len(value) > MAX_HEADERS:
        raise InvalidRequest(f"headers may have at most {MAX_HEADERS} entries",
                             field="headers")
    for name, text in value.items():
        field = f"headers.{name}"
        if not _TOKEN.fullmatch(name):
            raise InvalidRequest(f"{name!r} is not a valid header name", field=field)
        refused = refused_header(name)
        if refused is not None:
            raise InvalidRequest(refused, field=field)
        if not isinstance(text, str) or len(text) > MAX_HEADER_VALUE or any(
            (ord(ch) < 32 and ch != "\t") or ord(ch) == 127 for ch in text
        ):
            raise InvalidRequest(
                f"{name} must be a single-line string of at most {MAX_HEADER_VALUE} characters",
                field=field,
            )
    return dict(value)


def check_description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise InvalidRequest(f"description must be a string of at most {MAX_DESCRIPTION} "
                             "characters", field="description")
    return value


def check_max_concurrency(value: Any) -> int:
    """Attempts in flight to the endpoint at once: an integer from 1 to MAX_CONCURRENCY."""
    if isinstance(value, bool) or not isinstance(value, int) or not (
        1 <= value <= MAX_CONCURRENCY
    ):
        raise InvalidRequest(f"max_concurrency must be an integer from 1 to {MAX_CONCURRENCY}",
                             field="max_concurrency")
    return value


def check_fields(body: Any, *, required_url: bool) -> dict[str, Any]:
    """The body of a create or update, as an object with only known fields."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", status_code=400)
    for name in body:
        if name not in _FIELDS or (required_url and name == "disabled"):
            raise InvalidRequest(f"unknown field {name!r}", field=name)
    if required_url and "url" not in body:
        raise InvalidRequest("url is required", field="url")
    if "disabled" in body and not isinstance(body["disabled"], bool):
        raise InvalidRequest("disabled must be true or false", field="disabled")
    return body
