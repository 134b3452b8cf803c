"""The portal's form posts: read (CSRF first), and turned into the bodies the actions take."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request

from bridge.api.common import read_body
from bridge.errors import InvalidRequest
from bridge.models import EVENT_TYPES
from bridge.portal.sessions import Session, check_csrf

MAX_FORM = 64 * 1024  # bytes: an endpoint form with every header at its longest fits


class Form:
    """A posted form's fields; a field sent several times (checkboxes) keeps every value."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields

    def get(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    def text(self, name: str) -> str:
        return (self.get(name) or "").strip()

    def all(self, name: str) -> list[str]:
        return self.fields.get(name, [])


async def read_form(request: Request, session: Session) -> Form:
    """The form of a post by ``session``: 403 (``CsrfRefused``) unless it carries the
    session's CSRF token, before anything else is looked at."""
    body = await read_body(request, MAX_FORM)
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        fields = {}
    form = Form(fields)
    check_csrf(session, form.get("csrf"))
    for name, values in fields.items():
        if any("\x00" in value for value in values):  # no store keeps it: refused here
            raise InvalidRequest("the text holds a NUL character, which is not kept",
                                 field=name)
    return form


def endpoint_body(form: Form) -> dict[str, Any]:
    """An endpoint form as the create/update body of the API: url, the event types checked
    (none: the default set), description (empty: none), headers (one ``Name: value`` a
    line) and max_concurrency (empty: as it was, or the default)."""
    events = form.all("events")
    for event_type in events:
        if event_type not in EVENT_TYPES:
            raise InvalidRequest(f"unknown event type {event_type!r}", field="events")
    body: dict[str, Any] = {
        "url": form.text("url"),
        "events": events or None,
        "description": form.text("description") or None,
        "headers": parse_headers(form.get("headers") or ""),
    }
    concurrency = form.text("max_concurrency")
    if concurrency:  # the API checks the range; a number that is not whole is refused there
        body["max_concurrency"] = int(concurrency) if concurrency.isdigit() else concurrency
    return body


def parse_headers(text: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise InvalidRequest(f"line {number} of headers is not 'Name: value'",
                                 field="headers")
        headers[name.strip()] = value.strip()
    return headers


def headers_text(headers: dict[str, str]) -> str:
    return "\n".join(f"{name}: {value}" for name, value in headers.items())
