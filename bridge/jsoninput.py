"""JSON from outside the bridge (request and callback bodies), read strictly.

Refused, so that nothing stored can later fail to be encoded, compared or shown:

- text that is not UTF-8, lone surrogates (as raw bytes or as ``\\ud800`` escapes), and the
  NUL character (``\\u0000``), which PostgreSQL cannot keep in text;
- ``NaN``, ``Infinity``, ``-Infinity``, and numbers too large for a float;
- arrays and objects nested more than ``MAX_DEPTH`` deep;
- a key repeated in one object (parsers differ on which of its values counts).

Only the standard library's public ``json.loads`` and its hooks.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeAlias

__all__ = ["MAX_DEPTH", "Refused", "loads"]

MAX_DEPTH = 64

# (parent, key): where a value sits, built only on the way down to containers.
_Path: TypeAlias = tuple["_Path", str | int] | None


class Refused(ValueError):
    """Why a document was refused; ``field`` names where (``images[0]``), when known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def loads(document: bytes | str) -> Any:
    """The value of a JSON document, or ``Refused`` saying what is wrong with it."""
    if isinstance(document, bytes):
        try:
            text = document.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Refused(f"the body is not UTF-8 text (at byte {exc.start})") from None
    else:
        text = document
    repeated: dict[int, str] = {}  # id of an object -> a key it had twice

    def pairs_to_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        made = dict(pairs)
        if len(made) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    repeated[id(made)] = key
                    break
                seen.add(key)
        return made

    try:
        value = json.loads(text, object_pairs_hook=pairs_to_object,
                           parse_constant=_constant, parse_float=_float)
    except Refused:
        raise
    except RecursionError:
        raise Refused(_TOO_DEEP) from None
    except json.JSONDecodeError as exc:
        raise Refused(f"the body is not valid JSON ({exc.msg} at line {exc.lineno} "
                      f"column {exc.colno})") from None
    except ValueError:  # an integer of more digits than Python converts
        raise Refused("the body is not valid JSON (a number is too long)") from None
    _check(value, repeated)
    return value


_TOO_DEEP = f"arrays and objects are nested more than {MAX_DEPTH} deep"
_SURROGATE = "the text is not valid Unicode (a lone surrogate such as \\ud800)"
_NUL = "the text holds a NUL character (\\u0000), which is not kept"


def _constant(name: str) -> Any:
    raise Refused(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise Refused(f"the number {text[:40]} is too large")
    return value


def _check(value: Any, repeated: dict[int, str]) -> None:
    """Depth, repeated keys and lone surrogates, walked without recursion."""
    if isinstance(value, str):
        if not _unicode(value):
            raise Refused(_unicode_problem(value))
        return
    if not isinstance(value, dict | list):
        return
    stack: list[tuple[dict[str, Any] | list[Any], int, _Path]] = [(value, 1, None)]
    while stack:
        item, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise Refused(_TOO_DEEP, _top(path))
        if isinstance(item, dict):
            if repeated and id(item) in repeated:
                key = repeated[id(item)]
                if not _unicode(key):
                    raise Refused(_unicode_problem(key), _name(path))
                raise Refused(f"the key {json.dumps(key[:64])} appears twice in one object",
                              _name((path, key)))
            children: Any = item.items()
        else:
            children = enumerate(item)
        for key, child in children:
            if isinstance(key, str) and not _unicode(key):
                raise Refused(_unicode_problem(key), _name(path))
            if isinstance(child, str):
                if not _unicode(child):
                    raise Refused(_unicode_problem(child), _name((path, key)))
            elif isinstance(child, dict | list):
                stack.append((child, depth + 1, (path, key)))


def _unicode(text: str) -> bool:
    """Text every store keeps: valid Unicode, without NUL."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unicode_problem(text: str) -> str:
    return _NUL if "\x00" in text else _SURROGATE


def _top(path: _Path) -> str | None:
    """The top-level field a path starts at."""
    key: str | int | None = None
    while path is not None:
        path, key = path
    return key if isinstance(key, str) else None


def _name(path: _Path) -> str | None:
    """``options.a[0]`` for the path of a value; ``None`` for the document itself."""
    parts: list[str] = []
    while path is not None:
        path, key = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    if not parts:
        return None
    return "".join(reversed(parts)).lstrip(".")
