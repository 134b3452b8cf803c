"""The mirror fetcher: a provider's video link copied into the media store.

A link comes from a provider, so it is fetched as a webhook URL is sent to: through the SSRF
guard (``bridge.targets``; private addresses only with ``BRIDGE_ALLOW_PRIVATE_TARGETS=1``),
each of at most ``MAX_REDIRECTS`` redirects checked again. The bytes stream into the store,
capped by ``BRIDGE_MEDIA_MAX_BYTES``, and must be a video: a ``video/*`` Content-Type, or the
MP4 (``ftyp``) or WebM/Matroska (EBML) signature in the first bytes. What fails is a
:class:`MirrorFailed` whose ``error`` is the short ``mirror_error`` text (never the URL: a
signed link is a credential) and ``retryable`` whether trying later may help (5xx, 429, a
timeout, a broken connection) or not (4xx, too big, not a video, a refused target).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from bridge.failures import describe
from bridge.media.base import EXTENSIONS, MediaStore, Stored
from bridge.targets import Guard, NotResolved, TargetRefused

if TYPE_CHECKING:  # imported with the first copy: a process may never make one
    import aiohttp

MAX_REDIRECTS = 3
DEFAULT_MAX_BYTES = 2 * 1024**3
CHUNK = 1024 * 1024
SNIFF = 16  # bytes enough for both signatures
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRYABLE = frozenset({408, 425, 429})
_EBML = b"\x1a\x45\xdf\xa3"


@dataclass(frozen=True)
class Mirrored:
    stored: Stored


@dataclass(frozen=True)
class MirrorFailed:
    error: str  # the job's result.mirror_error
    retryable: bool


MirrorResult = Mirrored | MirrorFailed


class _Stop(Exception):
    """Raised inside the byte stream to end the write (nothing kept) with ``failure``."""

    def __init__(self, failure: MirrorFailed) -> None:
        self.failure = failure


def sniff(head: bytes) -> str | None:
    """The video type the first bytes show, if any."""
    if head[4:8] == b"ftyp":
        return "video/mp4"
    if head.startswith(_EBML):
        return "video/webm"
    return None


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale and count % scale == 0:
            return f"{count // scale} {unit}"
    return f"{count} bytes"


class Fetcher:
    """Copies provider links into a media store over one guarded HTTP session.

    ``read_timeout``: seconds the answer may pause before the copy fails (retryable).
    """

    def __init__(self, guard: Guard, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 connect_timeout: float = 10.0, read_timeout: float = 30.0,
                 max_redirects: int = MAX_REDIRECTS) -> None:
        self.guard = guard
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            import aiohttp

            from bridge.webhook_session import ADDRESSES_TTL, GuardResolver

            connector = aiohttp.TCPConnector(resolver=GuardResolver(self.guard), limit=32,
                                             ttl_dns_cache=ADDRESSES_TTL)
            # The bytes as sent (no decoding, so Content-Length counts them); no cookies.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False, timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout),
                headers={"Accept-Encoding": "identity", "User-Agent": "bridge-media/0.1"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def copy(self, url: str, store: MediaStore, name: str) -> MirrorResult:
        """Fetch ``url`` into ``store`` as ``<name>.<ext>`` (the extension from the video's
        type). Never raises for what the link or the store does: the result says."""
        import aiohttp

        try:
            return Mirrored(await self._copy(url, store, name))
        except _Stop as stop:
            return stop.failure
        except TargetRefused as exc:
            return _refused(exc)
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, TargetRefused):
                return _refused(exc.os_error)
            return MirrorFailed(f"the video link: {describe(exc, self.read_timeout)}", True)
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            return MirrorFailed(f"the video link: {describe(exc, self.read_timeout)}", True)
        except Exception as exc:  # the store's: a full disk, S3 answering 5xx
            return MirrorFailed(f"the media store could not keep the video "
                                f"({type(exc).__name__})", True)

    async def _copy(self, url: str, store: MediaStore, name: str) -> Stored:
        current = url
        for hop in range(self.max_redirects + 1):
            self.guard.check_form(current)  # and the resolver checks every address
            async with self.session.get(current, allow_redirects=False) as answer:
                location = answer.headers.get("Location")
                if answer.status in _REDIRECTS and location:
                    if hop == self.max_redirects:
                        raise _Stop(MirrorFailed(
                            f"the video link redirected more than {self.max_redirects} times",
                            False))
                    current = urljoin(current, location)
                    continue
                if answer.status != 200:
                    raise _Stop(_status(answer.status))
                if answer.content_length is not None and answer.content_length > self.max_bytes:
                    raise _Stop(self._too_big())
                return await self._store(answer, store, name)
        raise AssertionError("unreachable")

    async def _store(self, answer: aiohttp.ClientResponse, store: MediaStore,
                     name: str) -> Stored:
        chunks = answer.content.iter_chunked(CHUNK)
        head = b""
        async for chunk in chunks:
            head += chunk
            if len(head) >= SNIFF:
                break
        declared = (answer.content_type or "").lower()
        kind = declared if declared.startswith("video/") else sniff(head)
        if kind is None or not head:
            raise _Stop(MirrorFailed(
                f"the video link did not give a video (Content-Type {declared or 'none'})",
                False))
        if len(head) > self.max_bytes:
            raise _Stop(self._too_big())
        extension = EXTENSIONS.get(kind) or EXTENSIONS.get(sniff(head) or "", "mp4")

        async def stream() -> AsyncIterator[bytes]:
            total = len(head)
            yield head
            async for chunk in chunks:
                total += len(chunk)
                if total > self.max_bytes:  # the store drops what it has written
                    raise _Stop(self._too_big())
                yield chunk

        return await store.put(f"{name}.{extension}", stream(), content_type=kind)

    def _too_big(self) -> MirrorFailed:
        return MirrorFailed(f"the video is larger than BRIDGE_MEDIA_MAX_BYTES "
                            f"({_size(self.max_bytes)})", False)


def _status(status: int) -> MirrorFailed:
    if status >= 500 or status in _RETRYABLE:
        return MirrorFailed(f"the video link answered HTTP {status}", True)
    if status in (403, 404, 410):
        return MirrorFailed(f"the video link answered HTTP {status} (expired or gone)", False)
    return MirrorFailed(f"the video link answered HTTP {status}", False)


def _refused(exc: TargetRefused) -> MirrorFailed:
    # A name that does not resolve may resolve later; an address refused stays refused.
    reason = str(exc).split("; webhooks may only go")[0]
    return MirrorFailed(f"refused: the video link {reason}", isinstance(exc, NotResolved))
