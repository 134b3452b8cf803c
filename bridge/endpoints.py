"""Webhook endpoints: the limits of a registration (``bridge.schemas.EndpointCreate``
declares it), the check of its URL and of each of its headers."""

from __future__ import annotations

import re
from typing import Any

from bridge.delivery import refused_header
from bridge.errors import InvalidRequest
from bridge.targets import Guard, TargetRefused

MAX_URL = 2048
MAX_DESCRIPTION = 500
MAX_HEADERS = 20
MAX_HEADER_VALUE = 1024
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")


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


def header_problem(name: str, value: object) -> str | None:
    """Why an endpoint may not send the header ``name: value``, or ``None``."""
    if not _TOKEN.fullmatch(name):
        return f"{name!r} is not a valid header name"
    refused = refused_header(name)
    if refused is not None:
        return refused
    if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE or any(
        (ord(ch) < 32 and ch != "\t") or ord(ch) == 127 for ch in value
    ):
        return f"{name} must be a single-line string of at most {MAX_HEADER_VALUE} characters"
    return None
