"""The mirror fetcher against the file host simulator on loopback: every hostile link, the
SSRF guard, the size cap and the video check, into a real directory (and moto's S3)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette

from bridge.media import DirectoryStore, Fetcher, MediaStore, Mirrored, MirrorFailed, S3Store
from bridge.serving import bind, serve_in_background
from bridge.simulators.base import fake_mp4
from bridge.simulators.files import create_app, expiring_link
from bridge.targets import Guard
from tests.s3server import moto_server, new_bucket, s3_client

MiB = 1024 * 1024


@pytest.fixture
def host_app() -> Starlette:
    return create_app()


@pytest.fixture
async def host(host_app: Starlette) -> AsyncIterator[str]:
    async with serve_in_background(host_app) as url:
        yield url


@pytest.fixture
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "media")


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    """Private targets allowed: the file host is on loopback, over http."""
    fetching = Fetcher(Guard(allow_private=True), read_timeout=5)
    yield fetching
    await fetching.close()


@pytest.fixture
async def strict() -> AsyncIterator[Fetcher]:
    """As in production: public https targets only."""
    fetching = Fetcher(Guard(allow_private=False), connect_timeout=2, read_timeout=2)
    yield fetching
    await fetching.close()


def failed(result: Mirrored | MirrorFailed) -> MirrorFailed:
    assert isinstance(result, MirrorFailed), result
    return result


def kept(store: DirectoryStore) -> list[str]:
    return sorted(p.name for p in store.directory.iterdir()) if store.directory.exists() else []


async def test_a_video_is_copied_with_its_size_sha256_and_type(
    fetcher: Fetcher, store: DirectoryStore, host: str,
) -> None:
    result = await fetcher.copy(f"{host}/files/job_1.mp4", store, "job_1")
    video = fake_mp4("job_1")
    assert isinstance(result, Mirrored)
    assert result.stored.key == "job_1.mp4"
    assert (result.stored.size, result.stored.sha256, result.stored.content_type) == (
        len(video), hashlib.sha256(video).hexdigest(), "video/mp4")
    assert store.path("job_1.mp4").read_bytes() == video


async def test_a_video_served_without_a_video_type_is_known_by_its_signature(
    fetcher: Fetcher, store: DirectoryStore, host: str,
) -> None:
    result = await fetcher.copy(f"{host}/files/job_1.mp4?type=application/octet-stream",
                                store, "job_1")
    assert isinstance(result, Mirrored)
    assert result.stored.content_type == "video/mp4"


async def test_an_expired_link_fails_for_good_without_naming_the_link(
    fetcher: Fetcher, store: DirectoryStore, host: str,
) -> None:
    live = await fetcher.copy(expiring_link(host, "job_1", 60), store, "job_1")
    assert isinstance(live, Mirrored)
    result = failed(await fetcher.copy(expiring_link(host, "job_2", -1), store, "job_2"))
    assert result == MirrorFailed("the video link answered HTTP 403 (expired or gone)", False)
    assert kept(store) == ["job_1.mp4"]


async def test_a_link_that_disappeared_fails_for_good(
    fetcher: Fetcher, store: DirectoryStore, host: str,
) -> None:
    result = failed(await fetcher.copy(f"{host}/gone/job_1.mp4", store, "job_1"))
    assert result == MirrorFailed("the video link answered HTTP 404 (expired or gone)", False)


async def test_a_link_answering_500_is_worth_retrying_until_it_gives_the_bytes(
    fetcher: Fetcher, store: DirectoryStore, host: str,
) -> None:
    url = f"{host}/flaky/job_1.mp4"
    first, second = [failed(await fetcher.copy(url, store, "job_1")) for _ in range(2)]
    assert first == second == MirrorFailed("the video link answered HTTP 500", True)
    assert isinstance(await fetcher.copy(url, store, "job_1"), Mirrored)


async def test_three_redirects_are_followed_and_a_fourth_is_refused(
    fetcher: Fetcher, store: DirectoryStore, host: str, host_app: Starlette,
) -> None:
    assert isinstance(await fetcher.copy(f"{host}/redirect/2/job_1.mp4", store, "job_1"),
                      Mirrored)  # 2 hops, then the video: 3 redirects
    result = failed(await fetcher.copy(f"{host}/redirect/3/job_2.mp4", store, "job_2"))
    assert result == MirrorFailed("the video link redirected more than 3 times", False)
    assert host_app.state.requests["/files/job_2.mp4"] == 0
    assert kept(store) == ["job_1.mp4"]


@pytest.mark.parametrize(("target", "reason"), [
    ("file:///etc/passwd", "must be an http or https URL; the scheme 'file' is not allowed"),
    ("http://user:secret@127.0.0.1/x.mp4", "must not carry a user name or password"),
])
async def test_where_a_redirect_goes_is_checked_again(
    fetcher: Fetcher, store: DirectoryStore, host: str, target: str, reason: str,
) -> None:
    result = failed(await fetcher.copy(f"{host}/redirect-to?url={target}", store, "job_1"))
    assert result == MirrorFailed(f"refused: the video link {reason}", False)


@pytest.mark.parametrize(("url", "reason"), [
    ("https://169.254.169.254/latest/meta-data/", "points at 169.254.169.254, a cloud metadata "
     "address"),
    ("https://127.0.0.1:{port}/files/job_1.mp4", "points at 127.0.0.1, a loopback address"),
    ("https://localhost:{port}/files/job_1.mp4", "names host 'localhost', which resolves to a "
     "loopback address"),
    ("http://example.com/job_1.mp4", "must be an https URL (http: BRIDGE_ALLOW_PRIVATE_TARGETS=1 "
     "allows it, for local development only)"),
])
async def test_a_link_to_a_private_address_is_refused_unless_private_targets_are_allowed(
    strict: Fetcher, store: DirectoryStore, host_app: Starlette, url: str, reason: str,
) -> None:
    sock = bind()
    async with serve_in_background(host_app, sock=sock):
        link = url.format(port=sock.getsockname()[1])
        result = failed(await strict.copy(link, store, "job_1"))
    assert result == MirrorFailed(f"refused: the video link {reason}", False)
    assert sum(host_app.state.requests.values()) == 0  # not one byte asked for


async def test_a_video_announced_past_the_cap_is_refused_before_a_byte_is_kept(
    fetcher: Fetcher, store: DirectoryStore, host: str,
) -> None:
    result = failed(await fetcher.copy(f"{host}/zeros?interval=0.5", store, "job_1"))  # 3 GiB
    assert result == MirrorFailed(
        "the video is larger than BRIDGE_MEDIA_MAX_BYTES (2 GiB)", False)
    assert kept(store) == []


async def test_a_video_that_grows_past_the_cap_stops_and_nothing_is_kept(
    store: DirectoryStore, host: str,
) -> None:
    fetcher = Fetcher(Guard(allow_private=True), max_bytes=MiB, read_timeout=5)
    result = failed(await fetcher.copy(f"{host}/zeros?length=0&interval=0.001", store, "job_1"))
    await fetcher.close()
    assert result == MirrorFailed("the video is larger than BRIDGE_MEDIA_MAX_BYTES (1 MiB)",
                                  False)
    assert kept(store) == []


async def test_a_page_that_is_not_a_video_is_refused(
    fetcher: Fetcher, store: DirectoryStore, host: str,
) -> None:
    result = failed(await fetcher.copy(f"{host}/html/job_1", store, "job_1"))
    assert result == MirrorFailed(
        "the video link did not give a video (Content-Type text/html)", False)
    assert kept(store) == []


async def test_a_connection_cut_in_the_middle_is_worth_retrying_and_keeps_nothing(
    fetcher: Fetcher, store: DirectoryStore, host: str,
) -> None:
    result = failed(await fetcher.copy(f"{host}/cut/job_1.mp4", store, "job_1"))
    assert result == MirrorFailed(
        "the video link: connection closed in the middle of the answer", True)
    assert kept(store) == []


async def test_a_link_that_stops_sending_times_out_and_is_worth_retrying(
    store: DirectoryStore, host: str,
) -> None:
    fetcher = Fetcher(Guard(allow_private=True), read_timeout=0.2)
    result = failed(await fetcher.copy(f"{host}/zeros?interval=2&size=1000000", store, "job_1"))
    await fetcher.close()
    assert result == MirrorFailed("the video link: timed out after 0.2 s", True)
    assert kept(store) == []


async def test_a_host_that_refuses_connections_is_worth_retrying(
    fetcher: Fetcher, store: DirectoryStore,
) -> None:
    sock = bind()  # bound, never listening: connections are refused
    port = sock.getsockname()[1]
    result = failed(await fetcher.copy(f"http://127.0.0.1:{port}/x.mp4", store, "job_1"))
    sock.close()
    assert result == MirrorFailed("the video link: connection refused", True)


# -- into S3 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("aws")) as endpoint:
        yield endpoint


async def test_a_copy_into_s3_that_passes_the_cap_aborts_its_upload(
    moto: str, host: str,
) -> None:
    bucket = await new_bucket(moto)
    s3: MediaStore = S3Store(bucket, endpoint_url=moto)
    fetcher = Fetcher(Guard(allow_private=True), max_bytes=12 * MiB, read_timeout=5)
    result = failed(await fetcher.copy(
        f"{host}/zeros?length=0&interval=0&chunk=262144", s3, "job_1"))  # two parts went up
    good = await fetcher.copy(f"{host}/files/job_2.mp4?size={7 * MiB}", s3, "job_2")
    await fetcher.close()
    await s3.close()
    assert result == MirrorFailed("the video is larger than BRIDGE_MEDIA_MAX_BYTES (12 MiB)",
                                  False)
    assert isinstance(good, Mirrored)
    assert good.stored.size == 7 * MiB
    async with s3_client(moto) as client:
        uploads = await client.list_multipart_uploads(Bucket=bucket)
        objects = await client.list_objects_v2(Bucket=bucket)
    assert uploads.get("Uploads", []) == []
    assert [item["Key"] for item in objects["Contents"]] == ["job_2.mp4"]
