"""The HTTP client the adapters share in the running service: httpx's API, a lean client's
speed.

Adapters are written against ``httpx.AsyncClient`` (the tests hand them clients over
``httpx.ASGITransport``). In the service, :class:`ProviderClient` sends every buffered
request (``bridge.providers.http.send``: submissions, status calls, cancels) by
:meth:`ProviderClient.fetch` over ``bridge.http1``, the client webhooks go out by, skipping
httpx's per-request URL merging, cookie jar, auth and redirect layers and answering a
:class:`WholeAnswer` rather than an ``httpx.Response`` (a provider status call costs about a
third of the CPU it did over aiohttp; see bench/ingest.py, confirming). Adapters read either
through the :class:`Answer` protocol. Streamed requests (api.airforce's SSE, Venice's video
bytes) go through httpx's usual machinery on one aiohttp session
(:class:`AiohttpTransport`).

Transport failures become httpx exceptions chosen so that "never pay twice" holds: only a
failure before any byte of the request could have left (the connection could not be made,
or no connection came free in time) is a ``ConnectError``, ``ConnectTimeout`` or
``PoolTimeout``; a connection lost once the request may have been sent is a ``ReadError``
or ``RemoteProtocolError``, and a silent provider a ``ReadTimeout``. A POST is never sent
twice by the client itself (``bridge.http1`` sends only an idempotent request again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
import httpx

from bridge import http1
from bridge.targets import is_address, system_resolve

USER_AGENT = "bridge/0.1"
_CHUNK = 64 * 1024
DNS_TTL = 10.0  # seconds a provider host's addresses are kept (aiohttp's default too)
MAX_ANSWER = 16 * 1024 * 1024  # bytes of a buffered answer, decoded


class Answer(Protocol):
    """What adapters read of a provider's whole answer: an ``httpx.Response`` (from any
    ``httpx.AsyncClient``) or a :class:`WholeAnswer` (from :meth:`ProviderClient.fetch`)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # case-insensitive names

    @property
    def is_success(self) -> bool: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


class WholeAnswer:
    """An answer read whole, with its headers as ``bridge.http1`` parsed them. Making an
    ``httpx.Response`` of it instead (headers normalised again, a byte stream, a decoder)
    cost about a tenth of a provider status call's CPU."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        """The body decoded by the charset its Content-Type names (else UTF-8), as httpx
        does; undecodable bytes are replaced, never raised."""
        charset = "utf-8"
        for parameter in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "charset" and value.strip(' "'):
                charset = value.strip(' "')
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


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
    except aiohttp.ClientError as exc:  # reset or broken after connecting, bad payload...
        raise httpx.ReadError(str(exc) or type(exc).__name__) from exc


def _client_timeout(timeout: httpx.Timeout) -> aiohttp.ClientTimeout:
    # aiohttp's ``connect`` covers waiting for a pooled connection and making a new one;
    # httpx's ``write`` has no aiohttp counterpart (requests to providers are small).
    return aiohttp.ClientTimeout(total=None, connect=timeout.pool, sock_connect=timeout.connect,
                                 sock_read=timeout.read)


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

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                keepalive_timeout=self._limits.keepalive_expiry or 5.0,
            )
            # Streamed bodies are passed on undecoded: httpx decodes them by
            # Content-Encoding (``fetch`` has aiohttp decode what it reads whole). No
            # cookie jar: provider APIs authenticate by key, and a jar is consulted on every
            # request.
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  skip_auto_headers=("User-Agent",),
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = httpx.Timeout(**request.extensions.get("timeout", {"timeout": None}))
        body = await request.aread()
        # The body is passed whole: aiohttp frames it (Content-Length) itself.
        headers = [(name, value) for name, value in request.headers.multi_items()
                   if name.lower() not in ("transfer-encoding", "content-length")]
        with httpx_errors():
            response = await self.session.request(
                request.method, str(request.url), headers=headers,
                data=body or None, allow_redirects=False,
                timeout=_client_timeout(timeout),
            )
        return httpx.Response(response.status, headers=response.raw_headers,
                              stream=_AiohttpStream(response), request=request)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _Addresses:
    """A provider host's addresses, kept ``DNS_TTL`` seconds: a status call does not wait
    for a lookup in a thread each time."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[float, list[str]]] = {}

    async def __call__(self, host: str) -> list[str]:
        if is_address(host):
            return [host]
        now = time.monotonic()
        known = self._known.get(host)
        if known is not None and known[0] > now:
            return known[1]
        try:
            found = await system_resolve(host)
        except (OSError, UnicodeError) as exc:
            raise http1.ConnectFailed(f"{host} does not resolve") from exc
        if len(self._known) > 256:
            self._known.clear()
        self._known[host] = (now + DNS_TTL, found)
        return found


def _decoded(answer: http1.Answer) -> bytes:
    """The body without its Content-Encoding (gzip or deflate, which ``fetch`` accepts)."""
    coding = answer.headers.get("content-encoding", "").strip().lower()
    if coding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
    elif coding == "deflate":  # zlib-wrapped as the standard says; raw deflate as some send
        wrapped = answer.body[:1] and (answer.body[0] & 0x0F) == 8
        decoder = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
    else:
        return answer.body
    try:
        body = decoder.decompress(answer.body, MAX_ANSWER)
    except zlib.error as exc:
        raise http1.ProtocolError(f"a {coding} body that does not decode: {exc}") from None
    if decoder.unconsumed_tail:
        raise http1.ProtocolError(f"an answer over {MAX_ANSWER} bytes once decoded")
    if not decoder.eof:
        raise http1.ProtocolError(f"a {coding} body cut short")
    return body


class ProviderClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose buffered requests go by ``bridge.http1`` and whose
    streams go by aiohttp; see the module docstring."""

    def __init__(self, *, limits: httpx.Limits, timeout: httpx.Timeout) -> None:
        self._aiohttp = AiohttpTransport(limits)
        super().__init__(transport=self._aiohttp, timeout=timeout,
                         headers={"User-Agent": USER_AGENT})
        self._http = http1.Client(_Addresses())
        # At most this many buffered requests at once, as httpx's pool would allow.
        self._slots = (asyncio.Semaphore(limits.max_connections)
                       if limits.max_connections else None)

    async def fetch(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        content: bytes | str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> WholeAnswer:
        """Send one request and read its whole answer, with the client's headers and
        timeouts: ``pool`` to wait for a free slot (``limits.max_connections``), ``connect``
        for the lookup and the connection, ``read`` for the whole answer (httpx's is
        between reads; provider answers are small)."""
        merged = dict(self.headers)  # lower-case names
        merged["accept-encoding"] = "gzip, deflate"
        if headers:
            merged.update((name.lower(), value) for name, value in headers.items())
        data = content.encode() if isinstance(content, str) else content or b""
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":")).encode()
            merged.setdefault("content-type", "application/json")
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        timeout = self.timeout
        slots = self._slots
        if slots is not None:
            try:
                async with asyncio.timeout(timeout.pool):
                    await slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout(f"no free connection within {timeout.pool:g} s") from None
        try:
            answer = await self._http.request(method, url, merged, data, max_body=MAX_ANSWER,
                                              answer_within=timeout.read,
                                              connect_timeout=timeout.connect)
            body = _decoded(answer)
        except http1.RequestRefused as exc:  # a URL or header that cannot be sent: nothing was
            raise httpx.UnsupportedProtocol(str(exc)) from exc
        except http1.ConnectTimeout as exc:
            raise httpx.ConnectTimeout(str(exc)) from exc
        except http1.ConnectFailed as exc:  # refused, unreachable, no address, TLS
            raise httpx.ConnectError(str(exc)) from exc
        except TimeoutError as exc:  # sent, and no answer in time
            raise httpx.ReadTimeout(f"no answer within {timeout.read:g} s") from exc
        except (http1.ProtocolError, ValueError) as exc:  # any other: as if it went
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except OSError as exc:  # reset or closed once the request may have been sent
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        finally:
            if slots is not None:
                slots.release()
        return WholeAnswer(answer.status, answer.headers, body)

    async def aclose(self) -> None:
        await self._http.close()
        await super().aclose()

    async def __aexit__(self, *args: Any) -> None:
        await self._http.close()
        await super().__aexit__(*args)
