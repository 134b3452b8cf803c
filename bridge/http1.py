"""bridge's HTTP/1.1 client: webhook deliveries and provider calls.

Both are small requests to a known host, one at a time per connection, with no redirects,
cookies or proxies; what comes back is a status, headers and a short body. This client does
that and nothing else, for about a third of the CPU aiohttp spends per request
(bench/delivery.py measures it beside aiohttp and httpx):

- connections are kept alive per scheme, host, port and address and reused newest first;
  one idle for ``KEEPALIVE`` seconds (under the 5 s that Node's server, among others, keeps
  an idle connection) is not used again, and is closed soon after;
- every connection goes to an address that ``resolve`` answered (for webhooks, the SSRF
  guard: the very address that was checked), made by ``AI_NUMERICHOST``, never looked up
  again; ``https`` with the system's trust store, the host name checked against the
  certificate and sent as SNI; names are IDNA 2008 (UTS 46), as browsers have them;
- answers framed by ``Content-Length``, by chunks or by the connection's end; interim 1xx
  answers are passed over;
- a body is read whole (up to ``max_body`` bytes), or, with ``excerpt``, only its first
  bytes are awaited: the answer is there as soon as its head and the first of its body are
  (as a general client's ``read(n)`` would have it), so a receiver that stalls in the middle
  of its body has still answered. The rest is read and dropped meanwhile, and the connection
  is reused once it is done; more than ``DRAIN`` bytes, or not done in ``DRAIN_SECONDS``,
  and the connection is closed instead;
- an idempotent request sent on a kept-alive connection that the server had closed
  meanwhile (no byte of an answer came) is sent once more on a new connection. Any other
  is not: a POST may have been taken (never pay twice);
- a failure before the request went (no address, no connection within ``connect_timeout``
  for the lookup and the connection together, shared out among the addresses so that a
  silent one leaves time for the next; the client closed meanwhile) is a
  :class:`ConnectFailed`, and a request that cannot be sent a :class:`RequestRefused`:
  nothing of the request was sent.

Time limits are the caller's (``connect_timeout`` aside): wrap :meth:`Client.request` in
``asyncio.timeout``; a request cut off there closes its connection.
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import EllipsisType
from typing import Any
from urllib.parse import quote, urlsplit

import idna

KEEPALIVE = 4.0  # seconds a connection may wait idle for its next request
MAX_BODY = 16 * 1024 * 1024  # bytes of a body read whole
MAX_IDLE = 64  # idle connections kept to one address
MAX_HEAD = 64 * 1024  # bytes of status line and headers
MAX_INTERIM = 16  # 1xx answers before the final one
MAX_LINE = 4096  # bytes of a chunk-size or trailer line
DRAIN = 64 * 1024  # bytes read past the head to keep a connection (body, chunk framing)
DRAIN_SECONDS = 5.0  # for the rest of a body after the answer was taken
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})  # RFC 9110 9.2.2

# host -> the addresses it may be reached at (the SSRF guard's answer)
Resolve = Callable[[str], Awaitable[list[str]]]

_FORBIDDEN_IN_VALUE = re.compile(r"[\r\n\x00]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_BYTES = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class ProtocolError(Exception):
    """The answer is not HTTP/1.x as the standard has it; the message says where."""


class ConnectFailed(OSError):
    """No connection could be made (refused, unreachable, TLS handshake, ``connect_timeout``):
    nothing of the request was sent. The cause is chained."""


class ConnectTimeout(ConnectFailed, TimeoutError):
    """No connection was made within ``connect_timeout``: nothing was sent."""


class ClientClosed(ConnectFailed):
    """The client was closed before the request went: nothing was sent."""


class RequestRefused(ValueError):
    """A URL, method or header that cannot be sent: nothing was sent."""


class _Stale(Exception):
    """A kept-alive connection was closed by the server before any byte of an answer."""


class Headers(dict[str, str]):
    """An answer's headers: lower-case names, looked up in any case; a repeated header's
    values joined by ", "."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name.lower() if isinstance(name, str) else name)

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


@dataclass(slots=True)
class Answer:
    status: int
    headers: Headers
    body: bytes  # whole, or its first ``excerpt`` bytes


@dataclass(frozen=True, slots=True)
class _Target:
    tls: bool
    host: str  # ASCII form, no brackets: what is resolved and checked
    port: int
    path: str  # the request target: path and query, percent-encoded
    authority: str  # the Host header


@functools.lru_cache(maxsize=4096)
def ascii_host(host: str) -> str:
    """``host`` as DNS has it: IDNA 2008 with the UTS 46 mapping for a name that is not
    ASCII (``straße.de`` is ``xn--strae-oqa.de``, not IDNA 2003's ``strasse.de``, a
    different domain). ``ValueError`` for a name IDNA refuses."""
    if host.isascii():
        return host
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        raise RequestRefused("the host is not a valid internationalized domain name") from None


@functools.lru_cache(maxsize=1024)
def _target(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        given_port = parts.port
    except ValueError as exc:  # a broken IPv6 literal, a port out of range
        raise RequestRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RequestRefused("not an http(s) URL with a host")
    tls = parts.scheme == "https"
    host = ascii_host(parts.hostname)
    port = given_port or (443 if tls else 80)
    authority = f"[{host}]" if ":" in host else host
    if port != (443 if tls else 80):
        authority += f":{port}"
    path = quote(parts.path or "/", safe="/%!$&'()*+,;=:@-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/?%!$&'()*+,;=:@-._~")
    return _Target(tls, host, port, path, authority)


def _head(method: str, target: _Target, headers: Mapping[str, str], length: int) -> bytes:
    lines = [f"{method} {target.path} HTTP/1.1\r\nHost: {target.authority}\r\n"]
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or _FORBIDDEN_IN_VALUE.search(value):
            raise RequestRefused(f"header {name!r} is not a header name, or its value holds a "
                             "line break or NUL")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {length}\r\n\r\n" if length or method not in IDEMPOTENT
                 else "\r\n")
    return "".join(lines).encode()


# Where an answer being read stands.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _IDLE = range(8)


def _parse_head(head: bytes) -> tuple[int, Headers, bool]:
    """Status, headers, and whether the connection may carry another request."""
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if (version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit()
            or rest[3:4] not in (b"", b" ")):
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN_BYTES.fullmatch(name):  # also obsolete line folding
            raise ProtocolError(f"not a header line: {line[:80]!r}")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        previous = dict.get(headers, key)  # the name is lower case already
        headers[key] = text if previous is None else f"{previous}, {text}"
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    reusable = "close" not in tokens if version == b"HTTP/1.1" else "keep-alive" in tokens
    if "transfer-encoding" in headers and (
            "content-length" in headers or version == b"HTTP/1.0"):
        reusable = False  # framing that RFC 9112 (6.1, 6.3) calls faulty: never trusted again
    return int(code), headers, reusable


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection, carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self.key: tuple[bool, str, int, str] = (False, "", 0, "")  # tls, host, port, address
        # Called once the body taken after its answer is read to its end (see ``request``).
        self.when_drained: Callable[[_Connection], None] | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self._buffer = bytearray()
        self._state = _IDLE
        self._waiter: asyncio.Future[Answer] | None = None
        self._received = False  # a byte of the current answer came
        self._interim = 0  # 1xx answers so far
        self._status = 0
        self._headers = Headers()
        self._remaining = 0  # bytes of the body, or of the chunk, still to come
        self._excerpt = bytearray()  # the body, or its first bytes
        self._limit = 0  # bytes of the body to keep (whole: at most)
        self._whole = False  # the answer waits for the whole body
        self._read = 0  # bytes read after the final head

    @property
    def reading(self) -> bool:
        """The answer was taken and the rest of its body is still being read."""
        return self._state != _IDLE

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._state == _IDLE:  # nothing was asked: a server talking out of turn
            self.reusable = False
            self.close()
            return
        self._received = True
        self._buffer += data
        try:
            self._parse()
        except (ProtocolError, ValueError) as exc:
            self._fail(exc if isinstance(exc, ProtocolError) else ProtocolError(str(exc)))
            return
        if not self._whole and self._state != _HEAD and (self._excerpt or not self._limit):
            self._answer()  # the head and the first of the body are in

    def eof_received(self) -> None:
        self.closed = True  # the server is done with it: never taken from the pool again

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_drain_timer()
        if self._state == _IDLE:
            return
        if self._state == _UNTIL_CLOSE:
            self._finish()
        elif not self._received:
            self._fail(_Stale())
        else:
            self._fail(ConnectionResetError(
                "the connection closed before the answer was complete"))

    # -- one request -----------------------------------------------------------------------
    async def exchange(self, data: bytes, limit: int, whole: bool) -> Answer:
        """Send ``data``; the answer once its whole body is in (``whole``: at most ``limit``
        bytes of it), or else once its head and the first of its body are (``limit``
        bytes kept), the rest being read after (``reading``)."""
        assert self.transport is not None
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._state, self._received, self._interim = _HEAD, False, 0
        self._excerpt, self._limit, self._whole, self._read = bytearray(), limit, whole, 0
        self.transport.write(data)
        try:
            return await waiter
        finally:
            self._waiter = None
            if not waiter.done() or waiter.cancelled() or waiter.exception() is not None:
                self.reusable = False  # cut off, or the answer was bad: never reused

    def drain_within(self, seconds: float, then: Callable[[_Connection], None]) -> None:
        """Read the rest of the body for at most ``seconds``; then ``then(self)``, or close."""
        self.when_drained = then
        self._drain_timer = asyncio.get_running_loop().call_later(seconds, self.close)

    def close(self) -> None:
        self.closed = True
        self._stop_drain_timer()
        if self.transport is not None:
            self.transport.abort()

    def _stop_drain_timer(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None

    # -- reading the answer ----------------------------------------------------------------
    def _parse(self) -> None:
        buffer = self._buffer
        while True:
            state = self._state
            if state != _HEAD and self._read > DRAIN and not self._whole:
                self._finish_early()
                return
            if state == _HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise ProtocolError(f"answer head over {MAX_HEAD} bytes")
                    return
                status, headers, reusable = _parse_head(bytes(buffer[:end]))
                del buffer[:end + 4]
                if status < 200:
                    if status < 100:
                        raise ProtocolError(f"status {status} is not an HTTP status")
                    if status == 101:
                        raise ProtocolError("101 Switching Protocols to a webhook")
                    self._interim += 1
                    if self._interim > MAX_INTERIM:
                        raise ProtocolError(f"more than {MAX_INTERIM} interim answers")
                    continue  # an interim answer (100 Continue, 103 Early Hints)
                self._status, self._headers = status, headers
                self.reusable = self.reusable and reusable
                self._frame(status, headers)
            elif state in (_LENGTH, _CHUNK_DATA):
                take = min(self._remaining, len(buffer))
                self._keep(buffer, take)
                self._remaining -= take
                if self._remaining:
                    return
                if state == _LENGTH:
                    self._finish()
                    return
                self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(buffer) < 2:
                    return
                if buffer[:2] != b"\r\n":
                    raise ProtocolError("a chunk does not end with CRLF")
                del buffer[:2]
                self._read += 2
                self._state = _CHUNK_SIZE
            elif state in (_CHUNK_SIZE, _TRAILERS):
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_LINE:
                        raise ProtocolError(f"a chunk-size or trailer line over {MAX_LINE} bytes")
                    return
                line = bytes(buffer[:end])
                del buffer[:end + 2]
                self._read += end + 2
                if state == _TRAILERS:
                    if not line:
                        self._finish()
                        return
                    continue  # trailers are not kept
                size = line.split(b";", 1)[0].strip()
                if not size or size.strip(b"0123456789abcdefABCDEF"):
                    raise ProtocolError(f"not a chunk size: {line[:40]!r}")
                self._remaining = int(size, 16)
                self._state = _CHUNK_DATA if self._remaining else _TRAILERS
            elif state == _UNTIL_CLOSE:
                self._keep(buffer, len(buffer))
                if self._read > DRAIN and not self._whole:
                    self._finish_early()
                return
            else:
                return

    def _frame(self, status: int, headers: Headers) -> None:
        """How the body of this answer is delimited (RFC 9112 section 6.3)."""
        coding = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if status in (204, 304):
            self._finish()
        elif coding is not None:
            if coding.rsplit(",", 1)[-1].strip().lower() == "chunked":
                self._state = _CHUNK_SIZE
            else:  # a coding that is not chunked runs to the connection's end
                self.reusable = False
                self._state = _UNTIL_CLOSE
        elif length is not None:
            values = {v.strip() for v in length.split(",")}
            if len(values) != 1 or not (value := values.pop()).isdigit():
                raise ProtocolError(f"not a Content-Length: {length[:40]!r}")
            self._remaining = int(value)
            self._state = _LENGTH
            if not self._remaining:
                self._finish()
        else:
            self.reusable = False
            self._state = _UNTIL_CLOSE

    def _keep(self, buffer: bytearray, size: int) -> None:
        room = self._limit - len(self._excerpt)
        if self._whole and size > room:
            raise ProtocolError(f"an answer body over {self._limit} bytes")
        if room > 0:
            self._excerpt += buffer[:min(room, size)]
        self._read += size
        del buffer[:size]

    def _answer(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(Answer(self._status, self._headers, bytes(self._excerpt)))

    def _finish(self) -> None:
        self._state = _IDLE
        if self._buffer:  # bytes past the answer: nothing was asked for them
            self.reusable = False
        self._answer()
        then, self.when_drained = self.when_drained, None
        if then is not None:
            self._stop_drain_timer()
            then(self)

    def _finish_early(self) -> None:
        """The rest of the body is too long to read: answer with what is in, and close."""
        self.reusable = False
        self._answer()
        self._state = _IDLE
        self.when_drained = None
        self.close()

    def _fail(self, exc: BaseException) -> None:
        self._state = _IDLE
        self.reusable = False
        self.when_drained = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()


class Client:
    """Requests over kept-alive connections to the addresses ``resolve`` answers.
    ``ssl_context``: the trust for ``https`` (default: the system's); ``connect_timeout``:
    seconds to make a connection (``None``: the caller's limit alone)."""

    def __init__(self, resolve: Resolve, *, ssl_context: ssl.SSLContext | None = None,
                 connect_timeout: float | None = None) -> None:
        self._resolve = resolve
        self._ssl = ssl_context
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple[bool, str, int, str], list[_Connection]] = {}
        self._busy: set[_Connection] = set()  # carrying a request, or reading its body
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b"", *,
        excerpt: int | None = None, max_body: int = MAX_BODY,
        answer_within: float | None = None,
        connect_timeout: float | EllipsisType | None = ...,
    ) -> Answer:
        """Send ``method`` ``url`` with ``headers`` (and ``Host``, ``Content-Length``) and
        ``body``; the answer's status, headers and body: whole (``max_body`` bytes at
        most, or ``ProtocolError``), or with ``excerpt``, its first bytes (see the module
        docstring). Raises ``RequestRefused`` for a URL or header that cannot be sent,
        ``ConnectFailed`` when nothing was sent (no address took the connection in time, or
        the client is closed; and what ``resolve`` raises), ``ProtocolError`` for an answer
        that is not HTTP, ``ConnectionResetError`` when one is cut off once sent.
        ``answer_within``: seconds for the whole answer once the request is on its way
        (``TimeoutError``); ``connect_timeout``: this request's, instead of the client's."""
        if self._closed:
            raise ClientClosed("the client is closed")
        if method == "HEAD":
            raise RequestRefused("HEAD requests are not supported")
        target = _target(url)
        data = _head(method, target, headers, len(body)) + body
        limit, whole = (max_body, True) if excerpt is None else (excerpt, False)
        for attempt in (1, 2):
            connection, reused = await self._ready(
                target, fresh=attempt > 1,
                within=self.connect_timeout if connect_timeout is ... else connect_timeout)
            self._busy.add(connection)
            try:
                async with asyncio.timeout(answer_within):
                    answer = await connection.exchange(data, limit, whole)
            except _Stale:
                if (reused and attempt == 1 and method in IDEMPOTENT
                        and not self._closed):
                    continue  # the server had closed it while it waited: once more, anew
                raise ConnectionResetError(
                    "the connection closed before any answer came") from None
            finally:
                if connection.reading and connection.reusable and not connection.closed:
                    connection.drain_within(DRAIN_SECONDS, self._give_back)
                else:
                    self._give_back(connection)
            return answer
        raise AssertionError("unreachable")

    async def _ready(self, target: _Target, *, fresh: bool, within: float | None
                     ) -> tuple[_Connection, bool]:
        """The addresses, then a kept connection to one (unless ``fresh``) or a new one, all
        within ``within`` seconds; and whether it was kept. Nothing is sent before."""
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        try:
            async with asyncio.timeout_at(deadline):
                addresses = await self._resolve(target.host)
                self._refuse_if_closed()  # while it looked the host up
                connection = None if fresh else self._kept(target, addresses)
                reused = connection is not None
                if connection is None:
                    connection = await self._connect(target, addresses, deadline)
        except TimeoutError:
            raise ConnectTimeout(f"no connection within {within:g} s") from None
        try:
            self._refuse_if_closed()  # while it connected
        except ClientClosed:
            connection.close()
            raise
        return connection, reused

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise ClientClosed("the client was closed")

    def _kept(self, target: _Target, addresses: list[str]) -> _Connection | None:
        now = time.monotonic()
        for address in addresses:
            idle = self._idle.get((target.tls, target.host, target.port, address))
            while idle:
                connection = idle.pop()
                if (not connection.closed and now - connection.idle_since < KEEPALIVE
                        and connection.transport is not None
                        and not connection.transport.is_closing()):
                    return connection
                connection.close()
        return None

    async def _connect(self, target: _Target, addresses: list[str], deadline: float | None
                       ) -> _Connection:
        loop = asyncio.get_running_loop()
        failure: OSError | None = None
        for index, address in enumerate(addresses):
            # Each address gets its share of the time left: one that never answers (a
            # dropped route, say) leaves time for the next.
            share = None
            if deadline is not None:
                share = (deadline - loop.time()) / (len(addresses) - index)
            try:
                async with asyncio.timeout(share):
                    _, connection = await loop.create_connection(
                        _Connection, host=address, port=target.port,
                        flags=socket.AI_NUMERICHOST,  # an address, never a name to look up
                        ssl=self._tls() if target.tls else None,
                        # A name's final dot is not part of the certificate's.
                        server_hostname=target.host.rstrip(".") if target.tls else None,
                    )
            except OSError as exc:  # ssl.SSLError and this address's TimeoutError included
                failure = exc
                continue
            except ValueError as exc:  # a host name TLS will not take (a leading dot, say)
                raise RequestRefused(str(exc)) from None
            connection.key = (target.tls, target.host, target.port, address)
            return connection
        if failure is None:
            raise ConnectFailed(f"{target.host} has no address")
        if isinstance(failure, TimeoutError):
            raise failure  # every address used its share of the time: _ready says so
        raise ConnectFailed(str(failure) or type(failure).__name__) from failure

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _give_back(self, connection: _Connection) -> None:
        """The request is done with ``connection`` (and its body read): idle, or closed."""
        self._busy.discard(connection)
        if self._closed or connection.closed or not connection.reusable:
            connection.close()
            return
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= MAX_IDLE:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(KEEPALIVE, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle too long (or closed by their server), every
        ``KEEPALIVE`` seconds while any are idle: none waits on forever."""
        self._sweeper = None
        now = time.monotonic()
        for key in list(self._idle):
            kept = []
            for connection in self._idle[key]:
                if connection.closed or now - connection.idle_since >= KEEPALIVE:
                    connection.close()
                else:
                    kept.append(connection)
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        if self._idle:
            self._sweeper = asyncio.get_running_loop().call_later(KEEPALIVE, self._sweep)

    async def close(self) -> None:
        """Close every connection, idle or in use (a request in flight fails)."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()
        self._busy.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost run
