"""The HTTP client the adapters share in the running service: httpx's API over aiohttp.

Adapters are written against ``httpx.AsyncClient`` (the tests hand them clients over
``httpx.ASGITransport``). In the service, :class:`ProviderClient` is one with a single
transport, :class:`AiohttpTransport`, over one aiohttp session: submissions, status calls,
cancels, SSE streams and video downloads all go that way.

Transport failures become httpx exceptions chosen so that "never pay twice" holds: only a
failure before any byte of the request could have left (the connection could not be made,
or no connection came free in time) is a ``ConnectError``, ``ConnectTimeout`` or
``PoolTimeout``; a connection lost once the request may have been sent is a ``ReadError``
or ``RemoteProtocolError``, and a silent provider a ``ReadTimeout``. aiohttp sends a request
again only if it is idempotent (never a POST).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver

USER_AGENT = "bridge/0.1"
_CHUNK = 64 * 1024
DNS_TTL = 10  # seconds a provider host's addresses are kept
LARGE_BODY = 1024 * 1024  # bytes: a longer body goes to aiohttp as a file, sent in chunks


@contextlib.contextmanager
def httpx_errors() -> Iterator[None]:
    """Re-raise aiohttp's transport errors as the httpx errors that say the same thing."""
    try:
        yield
    except aiohttp.ClientConnectorError as exc:  # includes DNS and TLS handshake failures
        raise httpx.ConnectError(str(exc)) from exc
    except aiohttp.ConnectionTimeoutError as exc:  # no connection made, or none free, in time
        raise httpx.ConnectTimeout(str(exc)) from exc
    except aiohttp.ServerTimeoutError as exc:  # sent, no answer in time
        raise httpx.ReadTimeout(str(exc)) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError) as exc:
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
        raise httpx.UnsupportedProtocol(str(exc)) from exc
    except UnicodeError as exc:  # a host name the lookup cannot encode (an empty label)
        raise httpx.ConnectError(f"the host name cannot be looked up: {exc}") from exc
    except aiohttp.ClientError as exc:  # reset or broken after connecting, bad payload...
        raise httpx.ReadError(str(exc) or type(exc).__name__) from exc


@functools.lru_cache(maxsize=64)
def _client_timeout(pool: float | None, connect: float | None,
                    read: float | None) -> aiohttp.ClientTimeout:
    # aiohttp's ``connect`` covers the wait for a pooled connection, the lookup and the
    # connection, which httpx splits into ``pool`` and ``connect``; httpx's ``write`` has no
    # aiohttp counterpart (requests to providers are small).
    both = None if pool is None or connect is None else pool + connect
    return aiohttp.ClientTimeout(total=None, connect=both, sock_connect=connect, sock_read=read)


class _AiohttpStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with httpx_errors():
            async for chunk in self._response.content.iter_chunked(_CHUNK):
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over one aiohttp session (made on first use, inside the loop)."""

    def __init__(self, limits: httpx.Limits, resolver: AbstractResolver | None = None) -> None:
        self._limits = limits
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                keepalive_timeout=self._limits.keepalive_expiry or 5.0,
                resolver=self._resolver, ttl_dns_cache=DNS_TTL,
            )
            # Bodies are passed on undecoded: httpx decodes them by Content-Encoding. No
            # cookie jar: provider APIs authenticate by key, and a jar is consulted on every
            # request.
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  skip_auto_headers=("User-Agent",),
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise httpx.ConnectError("the client is closed")
        timeout = request.extensions.get("timeout", {})
        body = await request.aread()
        # The body is passed whole (a long one as a file, which aiohttp writes a piece at a
        # time): aiohttp frames it (Content-Length) itself.
        headers = [(name, value) for name, value in request.headers.multi_items()
                   if name.lower() not in ("transfer-encoding", "content-length")]
        try:
            with httpx_errors():
                response = await self.session.request(
                    request.method, str(request.url), headers=headers,
                    data=io.BytesIO(body) if len(body) > LARGE_BODY else body or None,
                    allow_redirects=False,
                    timeout=_client_timeout(timeout.get("pool"), timeout.get("connect"),
                                            timeout.get("read")),
                )
        except asyncio.CancelledError:
            if self._cancelled_by_close():
                raise httpx.ConnectError("the client was closed before the request went"
                                         ) from None
            raise
        return httpx.Response(response.status, headers=response.raw_headers,
                              stream=_AiohttpStream(response), request=request)

    def _cancelled_by_close(self) -> bool:
        """Closing the session cancels the requests still waiting for a lookup or a free
        connection (none of them was sent), not the tasks that sent them."""
        task = asyncio.current_task()
        return self._closed and task is not None and not task.cancelling()

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()


class ProviderClient(httpx.AsyncClient):
    """The ``httpx.AsyncClient`` adapters share in the service: every request, buffered or
    streamed, goes by one :class:`AiohttpTransport`. ``resolver``: aiohttp's, for the
    provider hosts (default: the system's, its answers kept ``DNS_TTL`` seconds)."""

    def __init__(self, *, limits: httpx.Limits, timeout: httpx.Timeout,
                 resolver: AbstractResolver | None = None) -> None:
        super().__init__(transport=AiohttpTransport(limits, resolver), timeout=timeout,
                         headers={"User-Agent": USER_AGENT})
