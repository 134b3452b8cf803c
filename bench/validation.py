"""Validating a typical ``POST /v1/jobs`` body: pydantic v2 (bridge.schemas.JobRequest, what
the API uses) and msgspec (the same fields, limits and checks as a Struct), against the hand
validation bridge had before the models (copied below as the baseline).

    python bench/validation.py [--number 20000] [--repeat 7]

msgspec is not a dependency: ``pip install msgspec`` to measure it too (it is left out
otherwise). Each figure is the best of ``--repeat`` runs of ``--number`` validations in this
process, in microseconds per body, and as a ratio to the hand validation measured in the same
run; the ``bytes`` rows include the strict JSON reader (bridge.jsoninput) that every body
passes first. Nothing but this process's CPU is used.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge import jsoninput
from bridge.errors import InvalidRequest
from bridge.jobs import (
    MAX_DURATION,
    MAX_IMAGES,
    MAX_METADATA_BYTES,
    MAX_PROMPT,
    is_http_url,
    is_image_ref,
)
from bridge.models import EVENT_TYPES
from bridge.providers.base import MODES
from bridge.schemas import JobRequest, parse
from bridge.settings import PROVIDERS

BODY: dict[str, Any] = {
    "provider": "airforce", "model": "wan-2.6", "prompt": "A red fox darting across snowy hills",
    "mode": "text", "duration_seconds": 8, "aspect_ratio": "16:9", "resolution": "720p",
    "images": ["https://example.com/first.jpg"], "negative_prompt": None, "seed": 1234,
    "audio": True, "options": {}, "webhook_url": "https://hooks.example.com/in",
    "events": ["job.succeeded", "job.failed"], "metadata": {"order": 42},
}
RAW = json.dumps(BODY).encode()
ENABLED = set(PROVIDERS)

# -- the baseline: the hand validation of bridge/jobs.py before the models ---------------

_FIELDS = set(BODY)
_KIND_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "an array",
               dict: "an object"}


def _optional(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidRequest(f"{name} must be {_KIND_NAMES[kind]}", field=name)
    return value


def hand(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", status_code=400)
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
    provider = body.get("provider")
    if not isinstance(provider, str) or provider not in PROVIDERS or provider not in ENABLED:
        raise InvalidRequest("provider", field="provider")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT:
        raise InvalidRequest("prompt", field="prompt")
    out: dict[str, Any] = {"provider": provider, "prompt": prompt}
    out["model"] = _optional(body, "model", str)
    mode = _optional(body, "mode", str) or "text"
    if mode not in MODES:
        raise InvalidRequest("mode", field="mode")
    out["mode"] = mode
    duration = _optional(body, "duration_seconds", int)
    if duration is not None and not 1 <= duration <= MAX_DURATION:
        raise InvalidRequest("duration_seconds", field="duration_seconds")
    out["duration_seconds"] = duration
    out["aspect_ratio"] = _optional(body, "aspect_ratio", str)
    out["resolution"] = _optional(body, "resolution", str)
    images = _optional(body, "images", list) or []
    if len(images) > MAX_IMAGES:
        raise InvalidRequest("images", field="images")
    for index, image in enumerate(images):
        if not isinstance(image, str) or not is_image_ref(image):
            raise InvalidRequest("image", field=f"images[{index}]")
    out["images"] = images
    out["negative_prompt"] = _optional(body, "negative_prompt", str)
    out["seed"] = _optional(body, "seed", int)
    out["audio"] = _optional(body, "audio", bool)
    out["options"] = _optional(body, "options", dict) or {}
    webhook_url = _optional(body, "webhook_url", str)
    if webhook_url is not None and not is_http_url(webhook_url):
        raise InvalidRequest("webhook_url", field="webhook_url")
    out["webhook_url"] = webhook_url
    events = _optional(body, "events", list)
    for index, event_type in enumerate(events or ()):
        if event_type not in EVENT_TYPES:
            raise InvalidRequest("event", field=f"events[{index}]")
    out["events"] = events
    metadata = _optional(body, "metadata", dict)
    if metadata is not None and len(repr(metadata)) > MAX_METADATA_BYTES:
        raise InvalidRequest("metadata", field="metadata")
    out["metadata"] = metadata
    return out


def pydantic_model(body: Any) -> JobRequest:
    return parse(JobRequest, body, enabled=ENABLED)


try:
    import msgspec
except ImportError:  # not a dependency: its rows are left out
    msgspec = None

Provider = StrEnum("Provider", [(p, p) for p in PROVIDERS])  # type: ignore[misc]
Mode = StrEnum("Mode", [(m, m) for m in MODES])  # type: ignore[misc]
EventType = StrEnum("EventType", [(e, e) for e in EVENT_TYPES])  # type: ignore[misc]

if msgspec is not None:
    class Job(msgspec.Struct, forbid_unknown_fields=True):
        """The job body as a msgspec Struct: the fields, limits and checks of the model."""

        provider: Provider
        prompt: Annotated[str, msgspec.Meta(max_length=MAX_PROMPT)]
        model: str | None = None
        mode: Mode | None = None
        duration_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_DURATION)] | None = None
        aspect_ratio: str | None = None
        resolution: str | None = None
        images: Annotated[list[str], msgspec.Meta(max_length=MAX_IMAGES)] | None = None
        negative_prompt: str | None = None
        seed: int | None = None
        audio: bool | None = None
        options: dict[str, Any] | None = None
        webhook_url: str | None = None
        events: list[EventType] | None = None
        metadata: dict[str, Any] | None = None

        def __post_init__(self) -> None:
            if not self.prompt.strip() or self.provider not in ENABLED:
                raise ValueError("prompt")
            for image in self.images or ():
                if not is_image_ref(image):
                    raise ValueError("image")
            if self.webhook_url is not None and not is_http_url(self.webhook_url):
                raise ValueError("webhook_url")
            if self.metadata is not None and len(repr(self.metadata)) > MAX_METADATA_BYTES:
                raise ValueError("metadata")


def msgspec_model(body: Any) -> Any:
    return msgspec.convert(body, Job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    validators: dict[str, Callable[[Any], Any]] = {"hand (before)": hand,
                                                   "pydantic v2": pydantic_model}
    if msgspec is not None:
        validators["msgspec"] = msgspec_model
    else:
        print("msgspec is not installed: its rows are left out")

    def best(run: Callable[[], Any]) -> float:
        return min(timeit.repeat(run, number=args.number, repeat=args.repeat)) / args.number

    print(f"a job body of {len(RAW)} bytes, {len(BODY)} fields; best of {args.repeat} x "
          f"{args.number}\n")
    print(f"{'input':<7} {'validator':<14} {'us/body':>8} {'x hand':>7}")
    for validate in validators.values():
        validate(BODY)  # every validator accepts the body
    for label, source in (("dict", lambda: BODY), ("bytes", lambda: jsoninput.loads(RAW))):
        baseline = 0.0
        for name, validate in validators.items():
            seconds = best(lambda validate=validate, source=source: validate(source()))
            baseline = baseline or seconds
            print(f"{label:<7} {name:<14} {seconds * 1e6:8.2f} {seconds / baseline:6.2f}x")


if __name__ == "__main__":
    main()
