"""The media store: a directory and an S3-compatible object store (moto's server on loopback),
behind one interface; Range from the directory, 302 to a presigned URL from S3."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiobotocore.session import get_session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.errors import NotFound
from bridge.media import DirectoryStore, MediaStore, S3Store, open_media_store
from bridge.settings import Settings
from bridge.simulators.base import fake_mp4
from tests.conftest import Sims, running_bridge
from tests.s3server import moto_server, new_bucket, s3_client

MiB = 1024 * 1024
CANAL = {"provider": "venice", "model": "seedance-2-0-text-to-video", "duration_seconds": 5,
         "prompt": "Commerce being conducted in the city of Venice, Italy"}


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("aws")) as endpoint:
        yield endpoint


@pytest.fixture(params=["directory", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MediaStore]:
    media: MediaStore
    if request.param == "directory":
        media = DirectoryStore(tmp_path / "media")
    else:
        endpoint = request.getfixturevalue("moto")
        media = S3Store(await new_bucket(endpoint), "videos", endpoint_url=endpoint)
    yield media
    await media.close()


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def failing_after(data: bytes) -> AsyncIterator[bytes]:
    async for chunk in chunks_of(data):
        yield chunk
    raise ConnectionResetError("the source broke off")


def pattern(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


async def leftovers(store: MediaStore) -> list[Any]:
    """What a failed write could have left: files beside the videos, or multipart uploads."""
    if isinstance(store, DirectoryStore):
        return sorted(store.directory.iterdir()) if store.directory.exists() else []
    assert isinstance(store, S3Store)
    async with s3_client(store.endpoint_url or "") as s3:
        uploads = await s3.list_multipart_uploads(Bucket=store.bucket)
        objects = await s3.list_objects_v2(Bucket=store.bucket)
    return uploads.get("Uploads", []) + objects.get("Contents", [])


def served(store: MediaStore) -> httpx.AsyncClient:
    """A client of a one-route app answering ``GET /{key}`` as ``/media/{token}`` does."""
    async def media(request: Request) -> Response:
        try:
            return await store.response(request.path_params["key"])
        except NotFound:
            return Response(status_code=404)

    app = Starlette(routes=[Route("/{key}", media, methods=["GET", "HEAD"])])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge")


# -- both stores --------------------------------------------------------------------------


async def test_a_put_answers_the_size_sha256_and_type_of_what_it_kept(
    store: MediaStore,
) -> None:
    video = fake_mp4("job_1")
    stored = await store.put("job_1.mp4", chunks_of(video))
    assert (stored.key, stored.size, stored.sha256, stored.content_type) == (
        "job_1.mp4", len(video), hashlib.sha256(video).hexdigest(), "video/mp4")
    assert await store.exists("job_1.mp4")
    assert not await store.exists("job_2.mp4")


async def test_a_video_of_several_parts_is_kept_whole(store: MediaStore) -> None:
    video = pattern(11 * MiB + 123)  # three parts on S3
    stored = await store.put("job_big.webm", chunks_of(video))
    assert stored.size == len(video)
    assert stored.content_type == "video/webm"
    assert await body_of(store, "job_big.webm") == video


async def test_a_write_whose_stream_fails_keeps_nothing(store: MediaStore) -> None:
    with pytest.raises(ConnectionResetError):
        await store.put("job_1.mp4", failing_after(pattern(7 * MiB)))  # a part went up
    assert not await store.exists("job_1.mp4")
    assert await leftovers(store) == []


async def test_a_write_that_fails_leaves_the_video_before_it_in_place(
    store: MediaStore,
) -> None:
    first = fake_mp4("first")
    await store.put("job_1.mp4", chunks_of(first))
    with pytest.raises(ConnectionResetError):
        await store.put("job_1.mp4", failing_after(pattern(6 * MiB)))
    assert await body_of(store, "job_1.mp4") == first


async def test_delete_removes_a_video_and_deleting_a_missing_one_is_no_error(
    store: MediaStore,
) -> None:
    await store.put("job_1.mp4", chunks_of(b"video"))
    await store.delete("job_1.mp4")
    await store.delete("job_1.mp4")
    assert not await store.exists("job_1.mp4")
    async with served(store) as client:
        assert (await client.get("/job_1.mp4")).status_code == 404


@pytest.mark.parametrize("key", ["../escape.mp4", "a/b.mp4", "no-extension", ".mp4",
                                 "job.MP4", "x" * 101 + ".mp4"])
async def test_a_key_that_is_not_a_plain_name_is_refused(store: MediaStore, key: str) -> None:
    with pytest.raises(ValueError, match="not a media key"):
        await store.put(key, chunks_of(b"video"))
    assert not await store.exists(key)
    with pytest.raises(NotFound):
        await store.response(key)


async def body_of(store: MediaStore, key: str) -> bytes:
    async with served(store) as client, httpx.AsyncClient() as anyone:
        answer = await client.get(f"/{key}")
        if answer.status_code == 302:
            answer = await anyone.get(answer.headers["location"])
    assert answer.status_code == 200
    return answer.content


# -- the directory: the bytes, with Range ----------------------------------------------------


async def test_the_directory_serves_the_bytes_with_range(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "media")
    video = fake_mp4("job_1")
    await store.put("job_1.mp4", chunks_of(video))
    async with served(store) as client:
        whole = await client.get("/job_1.mp4")
        part = await client.get("/job_1.mp4", headers={"Range": "bytes=100-199"})
        beyond = await client.get("/job_1.mp4", headers={"Range": f"bytes={len(video)}-"})
    assert (whole.status_code, whole.content) == (200, video)
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    assert (part.status_code, part.content) == (206, video[100:200])
    assert part.headers["content-range"] == f"bytes 100-199/{len(video)}"
    assert beyond.status_code == 416


# -- S3: 302 to a presigned URL --------------------------------------------------------------


async def test_s3_answers_302_to_a_presigned_url_that_serves_the_bytes_and_ranges(
    moto: str,
) -> None:
    store = S3Store(await new_bucket(moto), "videos", endpoint_url=moto, presign_seconds=60)
    video = fake_mp4("job_1")
    await store.put("job_1.mp4", chunks_of(video))
    async with served(store) as client, httpx.AsyncClient() as anyone:
        answer = await client.get("/job_1.mp4")
        location = answer.headers["location"]
        whole = await anyone.get(location)
        part = await anyone.get(location, headers={"Range": "bytes=0-99"})
        unsigned = await anyone.get(location.split("?", 1)[0])
    await store.close()
    assert answer.status_code == 302
    assert answer.headers["cache-control"] == "no-store"
    assert location.startswith(f"{moto}/{store.bucket}/videos/job_1.mp4?")
    assert "X-Amz-Expires=60" in location  # signature version 4
    assert (whole.status_code, whole.content) == (200, video)
    assert whole.headers["content-type"] == "video/mp4"
    assert (part.status_code, part.content) == (206, video[:100])
    assert unsigned.status_code == 403  # the bucket is private: only the signature opens it


async def test_an_s3_store_keeps_its_objects_under_the_prefix(moto: str) -> None:
    bucket = await new_bucket(moto)
    store = S3Store(bucket, "/tenant-a/videos/", endpoint_url=moto)
    await store.put("job_1.mp4", chunks_of(b"video"))
    await store.close()
    async with s3_client(moto) as s3:
        listed = await s3.list_objects_v2(Bucket=bucket)
    assert [item["Key"] for item in listed["Contents"]] == ["tenant-a/videos/job_1.mp4"]


async def test_no_credential_reaches_the_logs_even_at_debug_level(
    moto: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-of-this-test")
    bucket = await new_bucket(moto)
    caplog.set_level(logging.DEBUG)
    store = S3Store(bucket, endpoint_url=moto, session=get_session())  # reads the token
    await store.put("job_1.mp4", chunks_of(pattern(6 * MiB)))  # multipart
    answer = await store.response("job_1.mp4")
    await store.close()
    signature = answer.headers["location"].rsplit("X-Amz-Signature=", 1)[1]
    assert "X-Amz-Security-Token=session-token-of-this-test" in answer.headers["location"]
    for secret in ("session-token-of-this-test", "moto-test-secret", signature):
        assert secret not in caplog.text


def test_the_store_is_the_one_bridge_media_store_names(tmp_path: Path) -> None:
    directory = open_media_store(Settings.from_env({"BRIDGE_MEDIA_DIR": str(tmp_path)}))
    assert isinstance(directory, DirectoryStore)
    assert directory.directory == tmp_path
    s3 = open_media_store(Settings.from_env({
        "BRIDGE_MEDIA_STORE": "s3://my-bucket/videos", "BRIDGE_S3_ENDPOINT_URL": "http://s3.test"}))
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix, s3.endpoint_url) == ("my-bucket", "videos", "http://s3.test")


# -- the bridge on S3: Venice's bytes, served by a redirect ------------------------------------


async def test_venice_bytes_kept_on_s3_are_served_by_a_redirect(
    tmp_path: Path, sims: Sims, moto: str,
) -> None:
    bucket = await new_bucket(moto)
    async with running_bridge(tmp_path, sims, BRIDGE_MEDIA_STORE=f"s3://{bucket}/media",
                              BRIDGE_S3_ENDPOINT_URL=moto) as harness:
        job = await harness.wait((await harness.create(CANAL))["id"])
        assert job["status"] == "succeeded", job
        async with httpx.AsyncClient() as anyone:
            answer = await anyone.get(job["result"]["video_url"])
            video = await anyone.get(answer.headers["location"])
    assert answer.status_code == 302
    assert video.content[4:8] == b"ftyp"
    assert video.headers["content-type"] == "video/mp4"
    assert not (tmp_path / "media").exists()  # nothing on this machine's disk
