"""The media store's one small interface, and what its backends share.

A media store keeps videos under keys (``<id>.<ext>``). ``put`` streams an async iterator of
bytes in and answers what it stored; ``response`` answers a request for a key (the bytes with
Range support, or a redirect to where they are); ``exists`` and ``delete`` do what they say.
A write is atomic: a reader never sees part of a video, and a write that fails (its iterator
raised, the connection broke, the task was cancelled) leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Protocol

from starlette.responses import Response

_KEY = re.compile(r"^[A-Za-z0-9_-]{1,100}\.[a-z0-9]{1,8}$")
# What a key's extension says its content is, when nothing else does.
CONTENT_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime",
                 "mkv": "video/x-matroska"}
EXTENSIONS = {value: key for key, value in CONTENT_TYPES.items()}


@dataclass(frozen=True)
class Stored:
    """What ``put`` wrote: the key, its size in bytes, the hex SHA-256 of the bytes and the
    content type it is served with."""

    key: str
    size: int
    sha256: str
    content_type: str


class MediaStore(Protocol):
    """Where the bridge keeps the videos it hosts (``BRIDGE_MEDIA_STORE``)."""

    async def put(self, key: str, chunks: AsyncIterable[bytes], *,
                  content_type: str | None = None) -> Stored:
        """Store the bytes of ``chunks`` under ``key``, streamed (never whole in memory),
        replacing what was there. Whatever ``chunks`` raises is raised again, with nothing
        of the write kept. ``content_type``: by default, what the key's extension says."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether ``key`` holds a video."""
        ...

    async def delete(self, key: str) -> None:
        """Delete ``key``; a key that holds nothing is no error."""
        ...

    async def response(self, key: str) -> Response:
        """The answer to ``GET`` or ``HEAD`` of the video at ``key``, Range requests
        included; ``bridge.errors.NotFound`` when there is none."""
        ...

    async def close(self) -> None:
        """Release the store's connections."""
        ...


def check_key(key: str) -> str:
    """``key`` itself, or ``ValueError`` for anything but a plain ``<id>.<ext>``."""
    if not _KEY.match(key):
        raise ValueError("not a media key")
    return key


def content_type_of(key: str, given: str | None) -> str:
    if given:
        return given
    return CONTENT_TYPES.get(key.rsplit(".", 1)[-1], "application/octet-stream")


class Tally:
    """The size and SHA-256 of bytes as they pass."""

    def __init__(self) -> None:
        self.size = 0
        self._digest = hashlib.sha256()

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._digest.update(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()
