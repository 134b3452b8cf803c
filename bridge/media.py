"""Videos the bridge hosts itself (Venice returns bytes, not URLs), under ``BRIDGE_MEDIA_DIR``."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterable
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}\.mp4$")


class MediaStore:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        """The file for ``name``; refuses anything but a plain ``<id>.mp4`` name."""
        if not _NAME.match(name):
            raise ValueError("not a media file name")
        return self.directory / name

    async def save(self, name: str, chunks: AsyncIterable[bytes]) -> int:
        """Write the bytes to ``name`` (atomically: a reader never sees half a file).

        Returns the size written.
        """
        final = self.path(name)
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(final.name + ".part")
        size = 0
        with partial.open("wb") as out:
            async for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
        os.replace(partial, final)
        return size

    def exists(self, name: str) -> bool:
        try:
            return self.path(name).is_file()
        except ValueError:
            return False
