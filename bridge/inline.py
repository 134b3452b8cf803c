"""``data:`` URLs in a job request: media a user sends inline, in ``images`` and ``options``.

Everything that shows a job (the API's job object, event rows, webhook bodies) shows each
``data:`` URL as a summary, ``{"media_type", "bytes", "sha256"}`` (of the decoded media);
the URLs themselves are kept apart and put back only for the provider's submission. A
body's size is counted the same way: at most ``MAX_JOB_JSON`` for the job as it is shown,
and at most ``MAX_INLINE_MEDIA`` for its ``data:`` URLs together.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from bridge.errors import InvalidRequest, PayloadTooLarge

__all__ = ["MAX_INLINE_MEDIA", "MAX_JOB_BODY", "MAX_JOB_JSON", "Media", "check_size", "join",
           "shows_media", "split", "summary"]

MAX_JOB_JSON = 64 * 1024  # bytes of the body as shown, each data: URL as its summary
MAX_INLINE_MEDIA = 20 * 1024 * 1024  # characters of a body's data: URLs together
# The most of a job body read at all: the above, and room for whitespace and escapes.
MAX_JOB_BODY = MAX_INLINE_MEDIA + 1024 * 1024
MEDIA_FIELDS = ("images", "options")  # where data: URLs are media; elsewhere they are text

Path = tuple[str | int, ...]
Media = list[tuple[Path, str]]  # where each data: URL was, and the URL

_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_WHITESPACE = b" \t\n\f\r"
_SUMMARY_KEYS = {"media_type", "bytes", "sha256"}


def is_data_url(value: object) -> bool:
    return isinstance(value, str) and value[:5].lower() == "data:"


def summary(url: str) -> dict[str, Any]:
    """What is shown of a ``data:`` URL; ``ValueError`` if its base64 does not decode."""
    media_type, data = _decode(url)
    return {"media_type": media_type, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def split(request: dict[str, Any]) -> tuple[dict[str, Any], Media]:
    """The request as shown (each ``data:`` URL of ``MEDIA_FIELDS`` as its summary) and the
    URLs taken out of it. A URL whose base64 does not decode is refused (422, naming it)."""
    media: Media = []

    def shown(value: Any, path: Path) -> Any:
        if is_data_url(value):
            try:
                made = summary(value)
            except ValueError as exc:
                raise InvalidRequest(f"not a valid data: URL ({exc})",
                                     field=_name(path)) from None
            media.append((path, value))
            return made
        if isinstance(value, dict):
            return {key: shown(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [shown(item, (*path, index)) for index, item in enumerate(value)]
        return value

    out = {key: shown(value, (key,)) if key in MEDIA_FIELDS else value
           for key, value in request.items()}
    return out, media


def shows_media(request: dict[str, Any]) -> bool:
    """Whether the request as shown may have had ``data:`` URLs taken out: a summary's
    shape somewhere in ``MEDIA_FIELDS``. Without one there are no media to read back."""
    def holds(value: Any) -> bool:
        if isinstance(value, dict):
            return value.keys() == _SUMMARY_KEYS or any(map(holds, value.values()))
        if isinstance(value, list):
            return any(map(holds, value))
        return False

    return any(holds(request[key]) for key in MEDIA_FIELDS if key in request)


def join(request: dict[str, Any], media: Sequence[tuple[Sequence[str | int], str]]
         ) -> dict[str, Any]:
    """The request with its ``data:`` URLs back where ``split`` took them from."""
    if not media:
        return request
    whole = copy.deepcopy(request)
    for path, url in media:
        parent: Any = whole
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = url
    return whole


def check_size(body: Any) -> None:
    """413 naming the field: ``data:`` URLs beyond ``MAX_INLINE_MEDIA`` together, or a body
    beyond ``MAX_JOB_JSON`` as it would be shown. Counted without decoding any media."""
    if not isinstance(body, dict):
        return
    total = 0

    def stand_in(value: Any, path: Path) -> Any:
        nonlocal total
        if is_data_url(value):
            total += len(value)
            if total > MAX_INLINE_MEDIA:
                raise PayloadTooLarge(
                    f"the data: URLs of a job total more than {MAX_INLINE_MEDIA >> 20} MiB",
                    field=_name(path))
            # As long as its summary, or longer: a byte count no larger than the URL.
            return {"media_type": _media_type(value), "bytes": len(value), "sha256": "0" * 64}
        if isinstance(value, dict):
            return {key: stand_in(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [stand_in(item, (*path, index)) for index, item in enumerate(value)]
        return value

    shown = {key: stand_in(value, (key,)) if key in MEDIA_FIELDS else value
             for key, value in body.items()}
    if _size(shown) > MAX_JOB_JSON:
        largest = max(shown, key=lambda key: _size(shown[key]))
        raise PayloadTooLarge(
            f"a job is at most {MAX_JOB_JSON >> 10} KiB of JSON besides its data: URLs "
            f"(each counted as its summary); {largest} is the largest field", field=largest)


def _size(value: Any) -> int:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass"))


def _media_type(url: str) -> str:
    declared = url[5:].partition(",")[0].split(";")[0].strip().lower()
    if not declared:
        return "text/plain"  # RFC 2397's default
    return declared if _MEDIA_TYPE.fullmatch(declared) else "application/octet-stream"


def _decode(url: str) -> tuple[str, bytes]:
    """The media type and bytes of a ``data:`` URL, as the WHATWG URL standard decodes it
    (percent-decoded; base64 forgiving of whitespace and missing padding)."""
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise ValueError("no comma before the data")
    data = unquote_to_bytes(payload)
    if header.rstrip(" ").lower().endswith(";base64"):
        compact = data.translate(None, _WHITESPACE)
        try:
            data = base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
        except binascii.Error:
            raise ValueError("its base64 does not decode") from None
    return _media_type(url), data


def _name(path: Path) -> str:
    """``images[0]``, ``options.a.b``."""
    name = ""
    for key in path:
        name += f"[{key}]" if isinstance(key, int) else (f".{key}" if name else key)
    return name
