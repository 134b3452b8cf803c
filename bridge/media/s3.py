"""The media store on any S3-compatible object store (``BRIDGE_MEDIA_STORE=s3://bucket[/prefix]``,
``BRIDGE_S3_ENDPOINT_URL`` for R2, MinIO and the like), by aiobotocore.

Credentials and region come from botocore's standard chain (``AWS_*`` variables, the shared
config and credentials files, SSO, container and instance roles); the bridge never sees or logs
them. A video of more than one part goes up as a multipart upload of fixed-size parts (R2
wants them equal), aborted if anything fails, so nothing partial is kept. A request for a
video answers ``302`` to a freshly presigned URL: the bytes never pass through the bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable
from typing import Any

from starlette.responses import RedirectResponse, Response

from bridge.errors import NotFound
from bridge.media.base import Stored, Tally, check_key, content_type_of

log = logging.getLogger("bridge.media")

# 5 MiB, S3's smallest part: one part is in memory at a time, and the client holds a few
# copies of it while sending (bench/media.py measures the whole). 10,000 parts: 48 GiB.
PART_SIZE = 5 * 1024 * 1024
PRESIGN_SECONDS = 15 * 60  # a presigned link is made afresh for every request
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
_session: Any = None  # one botocore session a process: it loads the S3 model once (~0.5 s)


def _aws() -> Any:
    global _session
    if _session is None:
        from aiobotocore.session import get_session

        _session = get_session()
    return _session


class S3Store:
    """Videos as objects ``<prefix>/<key>`` in ``bucket``.

    ``session``: the aiobotocore session whose credentials it uses (default: one per process,
    which resolves the standard chain once; refreshable ones refresh themselves).
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 part_size: int = PART_SIZE, presign_seconds: int = PRESIGN_SECONDS,
                 session: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.part_size = part_size
        self.presign_seconds = presign_seconds
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._session = session
        self._opening = asyncio.Lock()

    def name(self, key: str) -> str:
        """The object's name for ``key``."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _s3(self) -> Any:
        """The client, made on first use (inside the running loop)."""
        async with self._opening:
            if self._client is None:
                from aiobotocore.config import AioConfig

                # botocore's debug lines carry signed headers (a session token among them)
                # and presigned URLs: credentials, so never logged, whatever BRIDGE_LOG_LEVEL.
                for name in ("botocore", "aiobotocore"):
                    quiet = logging.getLogger(name)
                    if quiet.getEffectiveLevel() < logging.INFO:
                        quiet.setLevel(logging.INFO)

                # Signature version 4 (R2 and MinIO take no other); checksums only where S3
                # requires them: several S3-compatible services refuse the newer default
                # (CRC trailers on every upload).
                config = AioConfig(
                    signature_version="s3v4",
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    s3={"addressing_style": "path"} if self.endpoint_url else None,
                    retries={"mode": "standard"},
                )
                session = self._session or _aws()
                self._client = await self._stack.enter_async_context(session.create_client(
                    "s3", endpoint_url=self.endpoint_url, config=config))
        return self._client

    async def put(self, key: str, chunks: AsyncIterable[bytes], *,
                  content_type: str | None = None) -> Stored:
        s3 = await self._s3()
        name = self.name(key)
        kind = content_type_of(key, content_type)
        tally = Tally()
        pending = bytearray()
        upload: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                tally.add(chunk)
                pending += chunk
                while len(pending) >= self.part_size:
                    if upload is None:
                        started = await s3.create_multipart_upload(
                            Bucket=self.bucket, Key=name, ContentType=kind)
                        upload = started["UploadId"]
                    with memoryview(pending) as view:
                        body = bytes(view[:self.part_size])
                    del pending[:self.part_size]
                    parts.append(await self._part(s3, name, upload, len(parts) + 1, body))
            if upload is None:  # one part or less: a plain PUT is atomic by itself
                await s3.put_object(Bucket=self.bucket, Key=name, Body=bytes(pending),
                                    ContentType=kind)
            else:
                if pending:
                    parts.append(await self._part(s3, name, upload, len(parts) + 1,
                                                  bytes(pending)))
                await s3.complete_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=upload,
                    MultipartUpload={"Parts": parts})
        except BaseException:
            if upload is not None:
                await self._abort(s3, name, upload)
            raise
        return Stored(key, tally.size, tally.sha256, kind)

    async def _part(self, s3: Any, name: str, upload: str, number: int,
                    body: bytes) -> dict[str, Any]:
        answer = await s3.upload_part(Bucket=self.bucket, Key=name, UploadId=upload,
                                      PartNumber=number, Body=body)
        return {"ETag": answer["ETag"], "PartNumber": number}

    async def _abort(self, s3: Any, name: str, upload: str) -> None:
        """Abort an upload (its parts are deleted), even from a task being cancelled."""
        try:
            await asyncio.shield(s3.abort_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload))
        except Exception as exc:  # the write fails anyway; a lifecycle rule may clean up
            log.warning("could not abort a multipart upload of %s: %s", name,
                        type(exc).__name__)

    async def exists(self, key: str) -> bool:
        try:
            name = self.name(key)
        except ValueError:
            return False
        return await self._head(name) is not None

    async def _head(self, name: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        s3 = await self._s3()
        try:
            head: dict[str, Any] = await s3.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _MISSING:
                return None
            raise
        return head

    async def delete(self, key: str) -> None:
        s3 = await self._s3()
        await s3.delete_object(Bucket=self.bucket, Key=self.name(key))

    async def response(self, key: str) -> Response:
        try:
            name = self.name(key)
        except ValueError:
            raise NotFound("no such media") from None
        if await self._head(name) is None:
            raise NotFound("no such media")
        s3 = await self._s3()
        url: str = await s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": name},
            ExpiresIn=self.presign_seconds)
        # Not to be kept: the next request gets a link of its own.
        return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None
