"""JSON for the bridge's busiest paths: what ``json.loads`` and ``json.dumps`` answer, at less
of the cost.

Every state change is encoded once for its job row and once for its event; every callback
body, stored row and token payload is decoded. With the standard library's accelerator those
calls still go through several frames of Python each (``json.loads`` → ``decode`` →
``raw_decode``, with a regex for whitespace on both sides). Measured on a callback's
documents: ``json.loads`` of a stored request took about 2.5 times as long as the scanner
call alone, and orjson encodes an event's data about 9 times faster than ``json``.

* ``loads`` calls the standard library's own C scanner directly. A document with anything
  around its value (whitespace, a BOM, trailing data), bytes that are not UTF-8, or a
  document the scanner refuses is handed as it came to ``json.loads`` itself, which parses
  it or raises its own error: the answer is always ``json.loads``'s.
* ``dumps`` is orjson's compact encoding, as ``json.dumps(separators=(",", ":"))`` would
  write it, except that text is written as UTF-8 rather than ``\\u`` escapes, and NaN and
  the infinities (which are not JSON) as ``null``. What orjson refuses (an integer beyond
  64 bits, a key that is not a string) goes to the standard library, as before.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["dumps", "loads"]

_ENCODER = json.JSONEncoder(separators=(",", ":"))
# The decoder's own scanner (C): ``scan(text, index)`` answers (value, end) or raises
# StopIteration where no value starts. typeshed types the argument as the scanner itself.
_scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    json.JSONDecoder())  # type: ignore[arg-type]


def loads(document: str | bytes) -> Any:
    """``json.loads(document)``."""
    if isinstance(document, bytes):
        try:
            text = document.decode()
        except UnicodeDecodeError:
            return json.loads(document)  # UTF-16 or UTF-32 it reads; anything else it refuses
    else:
        text = document
    try:
        value, end = _scan(text, 0)
    except (StopIteration, ValueError):
        # Not a bare value at 0 (whitespace, a BOM), not UTF-8 after all (UTF-16 without a
        # BOM decodes as UTF-8 with NULs), or not JSON: json.loads reads it or says why.
        return json.loads(document)
    if end != len(text):
        return json.loads(document)
    return value


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return _ENCODER.encode(value)
