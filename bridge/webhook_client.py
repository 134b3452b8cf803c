"""The HTTP/1.1 client that carries webhook deliveries.

A delivery is one POST of a small body to a URL the SSRF guard allows, to an address the guard
answered, with no redirects, cookies, proxies or compression; what bridge keeps of the answer
is its status, its headers (for ``Retry-After``) and the first KiB of its body. This client
does exactly that and nothing else, for about a third of the CPU a general client spends per
request (bench/delivery.py measures it beside aiohttp and httpx):

- connections are kept alive per scheme, host, port and address, reused newest first, and
  closed after ``KEEPALIVE`` seconds idle (under the 5 s that Node's server, among others,
  keeps an idle connection);
- ``https`` with the system's trust store, the host name checked against the certificate
  and sent as SNI, while the TCP connection goes to the checked address;
- answers framed by ``Content-Length``, by chunks or by the connection's end; interim 1xx
  answers are passed over;
- the first ``excerpt`` bytes of the body are kept and the rest read and dropped; a body of
  more than ``DRAIN`` bytes is not read to its end: its connection is closed instead;
- a request sent on a kept-alive connection that the server had closed meanwhile (no byte
  of an answer came) is sent once more on a new connection.

Time limits are the caller's: wrap :meth:`WebhookClient.post` in ``asyncio.timeout``; a
request cut off there closes its connection.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

KEEPALIVE = 4.0  # seconds a connection may wait idle for its next request
MAX_IDLE = 64  # idle connections kept to one address
MAX_HEAD = 64 * 1024  # bytes of status line and headers
MAX_LINE = 4096  # bytes of a chunk-size or trailer line
DRAIN = 64 * 1024  # bytes of a body read past the excerpt to keep its connection

# host -> the addresses it may be reached at (the SSRF guard's answer)
Resolve = Callable[[str], Awaitable[list[str]]]

_FORBIDDEN_IN_HEADER = re.compile(r"[\r\n\x00]")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class ProtocolError(Exception):
    """The answer is not HTTP/1.x as the standard has it; the message says where."""


class _Stale(Exception):
    """A kept-alive connection was closed by the server before any byte of an answer."""


@dataclass(slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header's values joined by ", "
    excerpt: bytes  # the body's first bytes


@dataclass(frozen=True, slots=True)
class _Target:
    tls: bool
    host: str  # ASCII (IDNA) form, no brackets: what is resolved and checked, and the SNI
    port: int
    head: bytes  # the request line and Host header


@functools.lru_cache(maxsize=1024)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL with a host")
    tls = parts.scheme == "https"
    host = parts.hostname
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    port = parts.port or (443 if tls else 80)
    authority = f"[{host}]" if ":" in host else host
    if port != (443 if tls else 80):
        authority += f":{port}"
    path = quote(parts.path or "/", safe="/%!$&'()*+,;=:@-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/?%!$&'()*+,;=:@-._~")
    return _Target(tls, host, port, f"POST {path} HTTP/1.1\r\nHost: {authority}\r\n".encode())


def _head(target: _Target, headers: Mapping[str, str], length: int) -> bytes:
    lines = []
    for name, value in headers.items():
        if _FORBIDDEN_IN_HEADER.search(name) or _FORBIDDEN_IN_HEADER.search(value):
            raise ValueError(f"header {name!r} holds a line break or NUL")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {length}\r\n\r\n")
    return target.head + "".join(lines).encode()


# Where an answer being read stands.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _IDLE = range(8)


def _parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    """Status, headers, and whether the connection may carry another request."""
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if (version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit()
            or rest[3:4] not in (b"", b" ")):
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):  # also obsolete line folding
            raise ProtocolError(f"not a header line: {line[:80]!r}")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    reusable = "close" not in tokens if version == b"HTTP/1.1" else "keep-alive" in tokens
    return int(code), headers, reusable


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection, carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self.key: tuple[bool, str, int, str] = (False, "", 0, "")  # tls, host, port, address
        self._buffer = bytearray()
        self._state = _IDLE
        self._waiter: asyncio.Future[Answer] | None = None
        self._received = False  # a byte of the current answer came
        self._status = 0
        self._headers: dict[str, str] = {}
        self._remaining = 0  # bytes of the body, or of the chunk, still to come
        self._excerpt = bytearray()
        self._limit = 0  # bytes of the body to keep
        self._dropped = 0  # bytes of the body read past the excerpt

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():  # a server talking out of turn
            self.reusable = False
            self.close()
            return
        self._received = True
        self._buffer += data
        try:
            self._parse()
        except (ProtocolError, ValueError) as exc:
            self._fail(exc if isinstance(exc, ProtocolError) else ProtocolError(str(exc)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if self._state == _UNTIL_CLOSE:
            self._finish()
        elif not self._received:
            self._fail(_Stale())
        else:
            self._fail(ConnectionResetError(
                "the connection closed before the answer was complete"))

    # -- one request -----------------------------------------------------------------------
    async def request(self, data: bytes, excerpt: int) -> Answer:
        assert self.transport is not None
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._state, self._received = _HEAD, False
        self._excerpt, self._limit, self._dropped = bytearray(), excerpt, 0
        self.transport.write(data)
        try:
            return await waiter
        finally:
            self._waiter = None
            if not waiter.done() or waiter.cancelled() or waiter.exception() is not None:
                self.reusable = False  # cut off, or the answer was bad: never reused

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- reading the answer ----------------------------------------------------------------
    def _parse(self) -> None:
        buffer = self._buffer
        while True:
            state = self._state
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
                    continue  # an interim answer (100 Continue, 103 Early Hints)
                self._status, self._headers = status, headers
                self.reusable = self.reusable and reusable
                self._frame(status, headers)
            elif state in (_LENGTH, _CHUNK_DATA):
                take = min(self._remaining, len(buffer))
                self._keep(buffer, take)
                self._remaining -= take
                if self._remaining:
                    if self._dropped > DRAIN:
                        self._finish_early()
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
                self._state = _CHUNK_SIZE
            elif state in (_CHUNK_SIZE, _TRAILERS):
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_LINE:
                        raise ProtocolError(f"a chunk-size or trailer line over {MAX_LINE} bytes")
                    return
                line = bytes(buffer[:end])
                del buffer[:end + 2]
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
                if self._dropped > DRAIN:
                    self._finish_early()
                return
            else:
                return

    def _frame(self, status: int, headers: dict[str, str]) -> None:
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
        if room > 0:
            self._excerpt += buffer[:min(room, size)]
        if size > room:
            self._dropped += size - max(room, 0)
        del buffer[:size]

    def _finish(self) -> None:
        self._state = _IDLE
        if self._buffer:  # bytes past the answer: nothing was asked for them
            self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(Answer(self._status, self._headers, bytes(self._excerpt)))

    def _finish_early(self) -> None:
        """The excerpt is in and the rest is too long to read: answer, and close."""
        self.reusable = False
        self._finish()
        self.close()

    def _fail(self, exc: BaseException) -> None:
        self._state = _IDLE
        self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()


class WebhookClient:
    """POSTs to webhook URLs over kept-alive connections to the addresses ``resolve``
    answers (the SSRF guard's: the connection goes to the very address that was checked).
    ``ssl_context``: the trust for ``https`` (default: the system's)."""

    def __init__(self, resolve: Resolve, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._resolve = resolve
        self._ssl = ssl_context
        self._idle: dict[tuple[bool, str, int, str], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._swept = time.monotonic()

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, *,
                   excerpt: int = 1024) -> Answer:
        """POST ``body`` with ``headers`` (and ``Host``, ``Content-Length``) to ``url``;
        the answer's status, headers and first ``excerpt`` bytes of its body. Raises
        ``ValueError`` for a header holding a line break, ``OSError`` when no address
        takes the connection (and what ``resolve`` raises), ``ProtocolError`` for an answer
        that is not HTTP, ``ConnectionResetError`` when one is cut off."""
        target = _target(url)
        data = _head(target, headers, len(body)) + body
        addresses = await self._resolve(target.host)
        for attempt in (1, 2):
            connection, reused = await self._connection(target, addresses)
            self._busy.add(connection)
            try:
                answer = await connection.request(data, excerpt)
            except _Stale:
                if reused and attempt == 1:
                    continue  # the server had closed it while it waited: once more, anew
                raise ConnectionResetError(
                    "the connection closed before any answer came") from None
            finally:
                self._busy.discard(connection)
                self._give_back(connection)
            return answer
        raise AssertionError("unreachable")

    async def _connection(self, target: _Target, addresses: list[str]
                          ) -> tuple[_Connection, bool]:
        now = time.monotonic()
        if now - self._swept > KEEPALIVE:
            self._sweep(now)
        for address in addresses:
            idle = self._idle.get((target.tls, target.host, target.port, address))
            while idle:
                connection = idle.pop()
                if not connection.closed and now - connection.idle_since < KEEPALIVE:
                    return connection, True
                connection.close()
        loop = asyncio.get_running_loop()
        failure: OSError | None = None
        for address in addresses:
            try:
                _, connection = await loop.create_connection(
                    _Connection, host=address, port=target.port,
                    ssl=self._tls() if target.tls else None,
                    server_hostname=target.host if target.tls else None,
                )
            except OSError as exc:
                failure = exc
                continue
            connection.key = (target.tls, target.host, target.port, address)
            return connection, False
        assert failure is not None
        raise failure

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _give_back(self, connection: _Connection) -> None:
        if connection.closed or not connection.reusable:
            connection.close()
            return
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= MAX_IDLE:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def _sweep(self, now: float) -> None:
        """Close the connections idle too long, so that none waits on forever."""
        self._swept = now
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

    async def close(self) -> None:
        """Close every connection, idle or in use (a request in flight fails)."""
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()
        await asyncio.sleep(0)  # let the transports' connection_lost run
