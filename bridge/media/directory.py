"""The embedded media store: a directory on this machine's disk (``BRIDGE_MEDIA_STORE`` a
path, by default ``BRIDGE_MEDIA_DIR``'s ``./media``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterable
from pathlib import Path

from starlette.responses import FileResponse, Response

from bridge.errors import NotFound
from bridge.media.base import Stored, Tally, check_key, content_type_of


class DirectoryStore:
    """Videos as files ``<directory>/<key>``, each written to a temporary file beside it
    and renamed into place."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        """The file for ``key``; ``ValueError`` for anything but a plain ``<id>.<ext>``."""
        return self.directory / check_key(key)

    async def put(self, key: str, chunks: AsyncIterable[bytes], *,
                  content_type: str | None = None) -> Stored:
        final = self.path(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        # A name of its own per write: two writers of one key never share a partial file.
        fd, partial = tempfile.mkstemp(dir=self.directory, prefix=f".{key}.", suffix=".part")
        tally = Tally()
        loop = asyncio.get_running_loop()
        writing: asyncio.Future[None] | None = None
        try:
            with os.fdopen(fd, "wb") as out:
                def write(chunk: bytes) -> None:
                    out.write(chunk)
                    tally.add(chunk)  # hashlib lets go of the GIL for large chunks

                # Hashed and written in a thread while the next chunk arrives: one at a time,
                # in order, and at most one chunk more in memory.
                try:
                    async for chunk in chunks:
                        if writing is not None:
                            await writing
                        writing = loop.run_in_executor(None, write, chunk)
                finally:
                    if writing is not None:  # the file closes only after its last write
                        await asyncio.wait([writing])
                if writing is not None:
                    writing.result()
            os.replace(partial, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
        return Stored(key, tally.size, tally.sha256, content_type_of(key, content_type))

    async def exists(self, key: str) -> bool:
        try:
            return self.path(key).is_file()
        except ValueError:
            return False

    async def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    async def response(self, key: str) -> Response:
        try:
            path = self.path(key)
            stat = os.stat(path)
        except (ValueError, FileNotFoundError):
            raise NotFound("no such media") from None
        # FileResponse answers Range requests (206, multipart, 416) itself.
        return FileResponse(path, media_type=content_type_of(key, None), filename=key,
                            content_disposition_type="inline", stat_result=stat)

    async def close(self) -> None:
        pass
