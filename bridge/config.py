"""``BRIDGE_CONFIG``: webhook endpoints kept in a TOML file, for deployments configured as code.

```toml
[[endpoints]]
tenant = "default"                      # made if it does not exist
url = "https://hooks.example.com/video"
secret = "whsec_..."                    # the receiver's verification secret (>= 24 bytes)
events = ["job.succeeded", "job.failed"]  # optional; default: every type but job.progress
description = "production receiver"     # optional
```

The file is read at start-up and the database is brought in step with it: an entry is known by
its tenant and URL; a new one is created, a changed one updated (a new secret keeps the old one
signing beside it for 24 hours, as a rotation does), and an endpoint that came from the file
but is no longer in it is disabled (and enabled again if it comes back). A file that cannot be
read or an entry that is not valid stops start-up with one line naming the problem. The
addresses a URL resolves to are checked at every delivery attempt, like any endpoint's.
Without ``BRIDGE_CONFIG`` nothing is synced: endpoints from an earlier file stay as they are
(an empty file disables them all).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.models import EVENT_TYPES
from bridge.targets import TargetRefused, check_form

_TENANT = re.compile(r"[A-Za-z0-9_-]{1,100}")
_FIELDS = {"tenant", "url", "secret", "events", "description"}


class ConfigError(ValueError):
    """What is wrong with the file, naming the entry and field."""


@dataclass(frozen=True)
class ConfiguredEndpoint:
    tenant: str
    url: str
    secret: str
    events: tuple[str, ...] | None
    description: str | None


def load(path: str, *, allow_private: bool) -> list[ConfiguredEndpoint]:
    import tomllib  # only when BRIDGE_CONFIG names a file

    try:
        with Path(path).open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"endpoints"}
    if unknown:
        raise ConfigError(f"unknown table or key {sorted(unknown)[0]!r} (expected [[endpoints]])")
    entries = data.get("endpoints", [])
    if not isinstance(entries, list):
        raise ConfigError("endpoints must be an array of tables: [[endpoints]]")
    seen: set[tuple[str, str]] = set()
    endpoints = []
    for index, entry in enumerate(entries):
        endpoint = _entry(entry, f"endpoints[{index}]", allow_private)
        key = (endpoint.tenant, endpoint.url)
        if key in seen:
            raise ConfigError(f"endpoints[{index}]: the same tenant and url appear twice")
        seen.add(key)
        endpoints.append(endpoint)
    return endpoints


def _entry(entry: Any, where: str, allow_private: bool) -> ConfiguredEndpoint:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    for name in entry:
        if name not in _FIELDS:
            raise ConfigError(
                f"{where}.{name}: unknown field (one of {', '.join(sorted(_FIELDS))})")
    tenant = entry.get("tenant")
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise ConfigError(f"{where}.tenant: required; letters, digits, '-' or '_'")
    url = entry.get("url")
    if not isinstance(url, str):
        raise ConfigError(f"{where}.url: required, a URL string")
    try:
        check_form(url, allow_private)
    except TargetRefused as exc:
        raise ConfigError(f"{where}.url: {exc}") from None
    secret = entry.get("secret")
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise ConfigError(f"{where}.secret: required, a whsec_ secret")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}.secret: not base64 after whsec_") from None
    if len(key) < 24:
        raise ConfigError(f"{where}.secret: at least 24 random bytes (base64 after whsec_)")
    events = entry.get("events")
    if events is not None:
        if not isinstance(events, list) or not events:
            raise ConfigError(f"{where}.events: a non-empty array of event types")
        for number, event_type in enumerate(events):
            if event_type not in EVENT_TYPES:
                raise ConfigError(f"{where}.events[{number}]: unknown event type {event_type!r}")
        events = tuple(dict.fromkeys(events))
    description = entry.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > 500):
        raise ConfigError(f"{where}.description: a string of at most 500 characters")
    return ConfiguredEndpoint(tenant, url, secret, events, description)
