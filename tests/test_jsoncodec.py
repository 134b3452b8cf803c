"""bridge.jsoncodec answers what the standard library's json answers."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from bridge import jsoncodec

DOCUMENTS: list[str | bytes] = [
    '{"a":1,"b":[true,false,null],"c":{"d":"e"}}',
    '"text"', "0", "-0", "1.5e300", "123456789012345678901234567890",
    '{"a":1,"a":2}',  # the last of a repeated key
    '"caf\\u00e9 \\ud83d\\ude00"', '"café 😀"',
    "[NaN, Infinity, -Infinity]",  # not JSON, but json.loads reads them
    '  {"a": 1}  ', '\n[1, 2]\t',  # whitespace around the value
    b'{"a":"\xc3\xa9"}',
    # Encodings json.loads detects: with a BOM, and without one (valid UTF-8 with NULs).
    '{"a":"é"}'.encode("utf-16"), '{"a":"é"}'.encode("utf-32-le"),
    '{"a":"é"}'.encode("utf-16-le"), '{"a":"é"}'.encode("utf-16-be"),
    b"\xef\xbb\xbf{}",  # bytes with a UTF-8 BOM (a str with one is refused)
]
REFUSED: list[str | bytes] = [
    "", " ", "{", '{"a":}', "[1,]", '{"a":1} x', "[1] [2]", "nul", '"\\x"',
    "\ufeff{}",  # a BOM
    b'{"a":"\xff"}', b"\x80",
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_loads_reads_what_json_loads_reads(document: str | bytes) -> None:
    got, expected = jsoncodec.loads(document), json.loads(document)
    assert _same(got, expected)


@pytest.mark.parametrize("document", REFUSED)
def test_loads_refuses_what_json_loads_refuses_with_its_error(document: str | bytes) -> None:
    with pytest.raises(ValueError) as expected:
        json.loads(document)
    with pytest.raises(type(expected.value)) as got:
        jsoncodec.loads(document)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("value", [
    {"a": 1, "b": [True, False, None], "c": {"d": "e"}, "f": 0.1, "g": -3},
    ["café", "😀", "\u2028", "quote \" and \\ backslash", "\x00\x1f"],
    {"nested": [[[{"deep": [1, 2, 3]}]]]}, (1, 2), [], {}, 1e16, "",
])
def test_dumps_writes_compact_json_that_reads_back_the_same(value: Any) -> None:
    text = jsoncodec.dumps(value)
    assert json.loads(text) == json.loads(json.dumps(value))
    assert ", " not in text.replace('", "', "") and ": " not in text.replace('": "', "")


def test_dumps_writes_text_as_utf8_not_escapes() -> None:
    assert jsoncodec.dumps({"name": "café"}) == '{"name":"café"}'


def test_dumps_hands_what_orjson_refuses_to_the_standard_library() -> None:
    assert jsoncodec.dumps({"n": 2**70}) == '{"n":1180591620717411303424}'
    assert jsoncodec.dumps({1: "one"}) == '{"1":"one"}'
    with pytest.raises(TypeError):
        jsoncodec.dumps({"x": object()})


def test_dumps_writes_nan_and_infinities_as_null_never_as_invalid_json() -> None:
    text = jsoncodec.dumps([math.nan, math.inf, -math.inf, 1.0])
    assert text == "[null,null,null,1.0]"


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included, and of the same types all the way down."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
