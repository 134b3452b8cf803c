"""bridge's HTTP/1.1 client against scripted HTTP servers on loopback: the bytes it sends, the
ways an answer may be framed, what it keeps of one, and when it reuses a connection."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trustme

import bridge.http1
from bridge.http1 import Answer, Client, ClientClosed, ConnectFailed, ProtocolError

Reply = Callable[["Request", asyncio.StreamWriter], Awaitable[bool]]  # False: close
Serve = Callable[..., Awaitable["Server"]]


@dataclass
class Request:
    connection: int  # which connection, counted from 1
    head: bytes
    body: bytes

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.decode().lower() == name:
                return value.strip().decode()
        return None


@dataclass
class Server:
    """Reads each request (head and Content-Length body) and answers as ``reply`` says."""

    reply: Reply
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    ended: int = 0  # connections that came to their end
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = (await reader.readuntil(b"\r\n\r\n"))[:-4]
                except asyncio.IncompleteReadError:
                    return
                request = Request(number, head, b"")
                request.body = await reader.readexactly(int(request.header("content-length") or 0))
                self.requests.append(request)
                if not await self.reply(request, writer):
                    return
        finally:
            self.ended += 1
            writer.close()


def ok(body: bytes = b"ok", extra: bytes = b"") -> Reply:
    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s"
                     % (len(body), extra, body))
        await writer.drain()
        return True
    return reply


def raw(answer: bytes, *, keep: bool = False) -> Reply:
    async def reply(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer)
        await writer.drain()
        return keep
    return reply


async def loopback(host: str) -> list[str]:
    return ["127.0.0.1"]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply, tls: ssl.SSLContext | None = None) -> Server:
        server = Server(reply)
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
        servers.append(listener)
        port = listener.sockets[0].getsockname()[1]
        server.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        return server

    yield start
    for listener in servers:
        listener.close()
        await listener.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    client = Client(loopback)
    yield client
    await client.close()


async def post(client: Client, url: str, body: bytes = b'{"a":1}', **headers: str
               ) -> Answer:
    async with asyncio.timeout(5):
        return await client.request("POST", url, headers, body, excerpt=1024)


async def test_the_request_is_the_bytes_a_webhook_needs(
    serve: Serve, client: Client,
) -> None:
    server = await serve(ok())
    body = '{"caf\u00e9":"\u2603"}'.encode()
    await post(client, server.url + "/hooks/a b/\u00e9?x=1&y=\u00e9", body,
               **{"webhook-id": "evt_1", "X-Auth": "secret"})
    request = server.requests[0]
    assert request.line == b"POST /hooks/a%20b/%C3%A9?x=1&y=%C3%A9 HTTP/1.1"
    assert request.header("host") == server.url.removeprefix("http://")
    assert request.header("content-length") == str(len(body))
    assert request.header("webhook-id") == "evt_1" and request.header("x-auth") == "secret"
    assert request.body == body


async def test_the_default_port_is_left_out_of_host() -> None:
    seen: list[str] = []

    async def resolve(host: str) -> list[str]:
        seen.append(host)
        raise OSError("no network in tests")

    client = Client(resolve)
    for url in ("https://hooks.example.com/x", "https://B\u00fccher.example/x",
                "https://stra\u00dfe.de/x"):
        with pytest.raises(OSError):
            await client.request("POST", url, {}, b"", excerpt=1024)
    # Lower case; IDNA 2008, where IDNA 2003 would make strasse.de, another domain.
    assert seen == ["hooks.example.com", "xn--bcher-kva.example", "xn--strae-oqa.de"]
    with pytest.raises(ValueError, match="internationalized"):
        await client.request("POST", "https://a\u200db.example/x", {}, b"", excerpt=1024)
    assert bridge.http1._target("https://hooks.example.com:443/x").authority == (
        "hooks.example.com")
    assert bridge.http1._target("http://[::1]:8080/x").authority == "[::1]:8080"


async def test_a_header_with_a_line_break_is_refused_before_sending(
    serve: Serve, client: Client,
) -> None:
    server = await serve(ok())
    for name, value in (("X-A", "v\r\nX-Injected: 1"), ("X-B\n", "v"), ("X-C", "v\x00")):
        with pytest.raises(ValueError, match="line break or NUL"):
            await post(client, server.url + "/x", **{name: value})
    assert server.connections == 0


async def test_a_connection_is_kept_alive_and_reused(serve: Serve, client: Client) -> None:
    server = await serve(ok())
    answers = [await post(client, server.url + f"/{n}") for n in range(5)]
    assert [(a.status, a.body) for a in answers] == [(200, b"ok")] * 5
    assert server.connections == 1 and len(server.requests) == 5


async def test_concurrent_requests_take_connections_of_their_own(
    serve: Serve, client: Client,
) -> None:
    async def slow(request: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)
        return await ok()(request, writer)

    server = await serve(slow)
    answers = await asyncio.gather(*(post(client, server.url + "/x") for _ in range(4)))
    assert all(a.status == 200 for a in answers)
    assert server.connections == 4
    await asyncio.gather(*(post(client, server.url + "/x") for _ in range(4)))
    assert server.connections == 4  # the four kept alive serve the next four


async def test_status_headers_and_the_first_bytes_of_a_long_body(
    serve: Serve, client: Client,
) -> None:
    server = await serve(ok(b"x" * 5000, b"Retry-After: 7\r\nX-Many: a\r\nX-Many: b\r\n"))
    answer = await post(client, server.url + "/x")
    assert answer.status == 200 and answer.body == b"x" * 1024
    assert answer.headers["retry-after"] == "7" and answer.headers["x-many"] == "a, b"
    await post(client, server.url + "/x")
    assert server.connections == 1  # the rest of the body was read: the connection goes on


async def test_a_chunked_answer_with_extensions_and_trailers(
    serve: Serve, client: Client,
) -> None:
    chunked = (b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;name=value\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n")
    server = await serve(raw(chunked, keep=True))
    for _ in range(2):
        answer = await post(client, server.url + "/x")
        assert (answer.status, answer.body) == (202, b"hello world!")
    assert server.connections == 1


async def test_an_answer_sent_in_pieces(serve: Serve, client: Client) -> None:
    whole = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")

    async def trickle(request: Request, writer: asyncio.StreamWriter) -> bool:
        for index in range(len(whole)):
            writer.write(whole[index:index + 1])
            await writer.drain()
            await asyncio.sleep(0)
        return True

    server = await serve(trickle)
    answer = await post(client, server.url + "/x")
    # The answer is there with the first byte of its body, as a client's read(n) has it...
    assert answer.status == 200 and answer.body and b"abcde".startswith(answer.body)
    await asyncio.sleep(0.2)
    await post(client, server.url + "/x")
    assert server.connections == 1  # ...and the rest was read to its end, byte by byte


async def test_an_answer_ended_by_closing_the_connection(
    serve: Serve, client: Client,
) -> None:
    server = await serve(raw(b"HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\n\r\nbroken"))
    for _ in range(2):
        answer = await post(client, server.url + "/x")
        assert (answer.status, answer.body) == (500, b"broken")
    assert server.connections == 2  # such a connection cannot be reused


async def test_connection_close_and_http_1_0_are_not_reused(
    serve: Serve, client: Client,
) -> None:
    server = await serve(ok(extra=b"Connection: close\r\n"))
    await post(client, server.url + "/x")
    await post(client, server.url + "/x")
    assert server.connections == 2
    server = await serve(raw(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", keep=True))
    await post(client, server.url + "/x")
    await post(client, server.url + "/x")
    assert server.connections == 2


async def test_interim_answers_are_passed_over(serve: Serve, client: Client) -> None:
    server = await serve(raw(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
                             b"Link: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", keep=True))
    answer = await post(client, server.url + "/x")
    assert (answer.status, answer.body, answer.headers) == (204, b"", {})


async def test_a_body_too_long_to_drain_closes_its_connection(
    serve: Serve, client: Client,
) -> None:
    size = bridge.http1.DRAIN * 4
    server = await serve(ok(b"y" * size))
    answer = await post(client, server.url + "/x")
    assert answer.body == b"y" * 1024
    await post(client, server.url + "/x")
    assert server.connections == 2


async def test_a_kept_connection_the_server_closed_is_not_used(
    serve: Serve, client: Client,
) -> None:
    # The server answers as if the connection went on, then closes it while it waits.
    server = await serve(raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", keep=False))
    await post(client, server.url + "/x")
    await asyncio.sleep(0.05)
    answer = await post(client, server.url + "/x")
    assert answer.status == 200
    assert server.connections == 2 and len(server.requests) == 2


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_only_an_idempotent_request_the_server_hung_up_on_is_sent_again(
    serve: Serve, client: Client, method: str,
) -> None:
    # The race of keep-alive: the server closes its idle connection just as the next request
    # goes out on it, and no byte of an answer comes. A GET goes again on a new connection; a
    # POST may have been taken (a paid submission, say): it fails, and is not sent again.
    async def close_second(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.connection == 1 and len(server.requests) == 2:
            return False
        return await ok()(request, writer)

    server = await serve(close_second)
    await client.request(method, server.url + "/x", {}, b"")
    if method == "GET":
        answer = await client.request(method, server.url + "/x", {}, b"")
        assert answer.status == 200
        assert [r.connection for r in server.requests] == [1, 1, 2]
    else:
        with pytest.raises(ConnectionResetError, match="before any answer"):
            await client.request(method, server.url + "/x", {}, b"")
        assert [r.connection for r in server.requests] == [1, 1]


async def test_a_close_without_an_answer_fails_the_request(
    serve: Serve, client: Client,
) -> None:
    async def hang_up(request: Request, writer: asyncio.StreamWriter) -> bool:
        return False

    server = await serve(hang_up)
    with pytest.raises(ConnectionResetError, match="before any answer"):
        await post(client, server.url + "/x")
    assert len(server.requests) == 1  # a new connection is not tried again

    server = await serve(raw(b"HTTP/1.1 200 OK\r\nContent-Le"))
    with pytest.raises(ConnectionResetError, match="before the answer was complete"):
        await post(client, server.url + "/x")


@pytest.mark.parametrize("answer", [
    b"ICY 200 OK\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 099 Low\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX",
])
async def test_an_answer_that_is_not_http_is_a_protocol_error(
    serve: Serve, client: Client, answer: bytes,
) -> None:
    server = await serve(raw(answer, keep=True))
    with pytest.raises(ProtocolError):
        await post(client, server.url + "/x")
    await post(client, (await serve(ok())).url + "/x")  # the client goes on


async def test_an_endless_head_is_a_protocol_error(serve: Serve, client: Client) -> None:
    server = await serve(raw(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 70_000, keep=True))
    with pytest.raises(ProtocolError, match="head over"):
        await post(client, server.url + "/x")


async def test_a_request_cut_off_by_its_timeout_does_not_leave_its_connection(
    serve: Serve, client: Client,
) -> None:
    async def late(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.connection == 1:
            await asyncio.sleep(1)  # its answer would come after the timeout
        return await ok()(request, writer)

    server = await serve(late)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.request("POST", server.url + "/x", {}, b"", excerpt=1024)
    answer = await post(client, server.url + "/x")
    assert answer.body == b"ok" and server.connections == 2


async def test_idle_connections_expire(
    serve: Serve, client: Client, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bridge.http1, "KEEPALIVE", 0.1)
    server = await serve(ok())
    await post(client, server.url + "/x")
    await asyncio.sleep(0.2)
    await post(client, server.url + "/x")
    assert server.connections == 2


async def test_a_refused_address_gives_way_to_the_next(serve: Serve) -> None:
    server = await serve(ok())  # listens on 127.0.0.1 only: 127.0.0.2 refuses the port

    async def two(host: str) -> list[str]:
        return ["127.0.0.2", "127.0.0.1"]

    client = Client(two)
    try:
        answer = await post(client, server.url.replace("127.0.0.1", "hooks.example.test") + "/x")
    finally:
        await client.close()
    assert answer.status == 200 and server.connections == 1


async def test_no_address_takes_the_connection(client: Client) -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    with pytest.raises(ConnectFailed) as refused:
        await post(client, f"http://127.0.0.1:{port}/x")
    assert isinstance(refused.value.__cause__, ConnectionRefusedError)


async def test_https_checks_the_host_name_and_connects_to_the_given_address(serve: Serve) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("hooks.example.test")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    server = await serve(ok(), tls=server_context)
    port = server.url.rsplit(":", 1)[1]
    client = Client(loopback, ssl_context=trusting)
    try:
        for _ in range(2):
            answer = await post(client, f"https://hooks.example.test:{port}/x")
            assert answer.status == 200
        assert server.connections == 1
        assert server.requests[0].header("host") == f"hooks.example.test:{port}"
        answer = await post(client, f"https://hooks.example.test.:{port}/x")  # a final dot
        assert answer.status == 200
        with pytest.raises(ConnectFailed) as other:  # a name the certificate lacks
            await post(client, f"https://other.example.test:{port}/x")
        assert isinstance(other.value.__cause__, ssl.SSLCertVerificationError)
    finally:
        await client.close()
    untrusting = Client(loopback)  # the system's trust store: not this authority
    try:
        with pytest.raises(ConnectFailed) as untrusted:
            await post(untrusting, f"https://hooks.example.test:{port}/x")
        assert isinstance(untrusted.value.__cause__, ssl.SSLCertVerificationError)
    finally:
        await untrusting.close()


async def test_close_closes_idle_connections(serve: Serve) -> None:
    server = await serve(ok())
    client = Client(loopback)
    await post(client, server.url + "/x")
    await asyncio.sleep(0.05)
    assert server.ended == 0  # kept alive
    await client.close()
    for _ in range(100):
        if server.ended:
            break
        await asyncio.sleep(0.01)
    assert server.ended == 1


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_long_body_is_answered_at_once_and_its_connection_closed(
    serve: Serve, client: Client, framing: str,
) -> None:
    async def endless(request: Request, writer: asyncio.StreamWriter) -> bool:
        if framing == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
        for _ in range(5000):  # whole 1 KiB chunks, one a write
            writer.write(b"400\r\n" + b"z" * 1024 + b"\r\n" if framing == "chunked"
                         else b"z" * 1024)
            await writer.drain()
            await asyncio.sleep(0.001)
        return False

    server = await serve(endless)
    async with asyncio.timeout(2):
        answer = await client.request("POST", server.url + "/x", {}, b"", excerpt=1024)
    assert answer.status == 200 and answer.body.startswith(b"z")
    for _ in range(300):  # past DRAIN bytes, the client hangs up
        if server.ended:
            break
        await asyncio.sleep(0.01)
    assert server.ended == 1


async def test_a_body_that_stalls_after_its_first_bytes_has_still_answered(
    serve: Serve, client: Client, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bridge.http1, "DRAIN_SECONDS", 0.2)

    async def stall(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.connection == 1:
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"ok":true}')
            await writer.drain()
            await asyncio.sleep(5)
            return False
        return await ok()(request, writer)

    server = await serve(stall)
    async with asyncio.timeout(1):
        answer = await client.request("POST", server.url + "/x", {}, b"", excerpt=1024)
    assert (answer.status, answer.body) == (200, b'{"ok":true}')
    await asyncio.sleep(0.4)  # the rest never came: the connection was closed, not kept
    await post(client, server.url + "/x")
    assert server.connections == 2


async def test_a_delivery_to_a_receiver_stalling_in_its_body_succeeds(serve: Serve) -> None:
    from bridge.delivery import Deliverer
    from bridge.models import Delivery, DeliveryStatus, utcnow
    from bridge.store.base import Outgoing
    from bridge.targets import Guard

    async def stall(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"ok":true}')
        await writer.drain()
        await asyncio.sleep(5)
        return False

    server = await serve(stall)
    deliverer = Deliverer(store=None, guard=Guard(allow_private=True),  # type: ignore[arg-type]
                          schedule=(60.0,))
    delivery = Delivery(id="del_1", tenant="t", event_id="evt_1", event_type="endpoint.test",
                        endpoint_id="ep_1", url=None, job_id=None, sequence=1, attempt=1,
                        status=DeliveryStatus.PENDING, created_at=utcnow())
    outgoing = Outgoing(delivery=delivery, url=server.url + "/x", headers={},
                        secrets=["whsec_" + "A" * 43 + "="], body=b"{}", lease_until=0.0)
    try:
        result = await deliverer.attempt(outgoing, within=1.0)
    finally:
        await deliverer.stop()
    assert result.ok and result.response_status == 200
    assert result.response_excerpt == '{"ok":true}'


@pytest.mark.parametrize("answer", [
    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n",
])
async def test_faulty_framing_is_read_once_and_never_trusted_again(
    serve: Serve, client: Client, answer: bytes,
) -> None:
    server = await serve(raw(answer, keep=True))
    for _ in range(2):
        assert (await post(client, server.url + "/x")).body == b"ok"
    assert server.connections == 2


async def test_idle_connections_are_closed_with_no_more_traffic(
    serve: Serve, client: Client, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bridge.http1, "KEEPALIVE", 0.1)
    server = await serve(ok())
    await post(client, server.url + "/x")
    for _ in range(100):
        if server.ended:
            break
        await asyncio.sleep(0.01)
    assert server.ended == 1


async def test_the_second_try_takes_a_new_connection(
    serve: Serve, client: Client,
) -> None:
    async def close_each_second(request: Request, writer: asyncio.StreamWriter) -> bool:
        if sum(r.connection == request.connection for r in server.requests) == 2:
            return False  # each kept connection hangs up on its second request
        await asyncio.sleep(0.05)
        return await ok()(request, writer)

    server = await serve(close_each_second)
    await asyncio.gather(*(client.request("GET", server.url + "/x", {}) for _ in range(2)))
    assert server.connections == 2
    answer = await client.request("GET", server.url + "/x", {})
    assert answer.status == 200
    assert server.connections == 3  # not the other kept one, which would hang up too


async def test_close_fails_a_request_in_flight_and_keeps_nothing(
    serve: Serve, client: Client,
) -> None:
    async def slow(request: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.3)
        return await ok()(request, writer)

    server = await serve(slow)
    await post(client, server.url + "/x")  # one kept connection
    task = asyncio.create_task(client.request("POST", server.url + "/x", {}, b"", excerpt=1024))
    await asyncio.sleep(0.05)  # in flight on the kept connection
    await client.close()
    with pytest.raises(ConnectionResetError):
        await task
    assert server.connections == 1  # not sent again on a new one
    with pytest.raises(ClientClosed):
        await client.request("POST", server.url + "/x", {}, b"", excerpt=1024)


async def test_a_body_is_read_whole_up_to_its_limit(serve: Serve, client: Client) -> None:
    server = await serve(ok(b"w" * 100_000))
    answer = await client.request("GET", server.url + "/x?q=1", {"Accept": "*/*"})
    assert answer.status == 200 and answer.body == b"w" * 100_000
    request = server.requests[0]
    assert request.line == b"GET /x?q=1 HTTP/1.1" and request.header("content-length") is None
    with pytest.raises(ProtocolError, match="over 1000 bytes"):
        await client.request("GET", server.url + "/x", {}, max_body=1000)
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"400\r\n" + b"c" * 1024 + b"\r\n" for _ in range(100))
               + b"0\r\n\r\n")
    server = await serve(raw(chunked, keep=True))
    answer = await client.request("GET", server.url + "/x", {})
    assert answer.body == b"c" * 102_400  # past DRAIN: a whole body has no drain limit


async def test_a_post_without_a_body_says_its_length(serve: Serve, client: Client) -> None:
    server = await serve(ok())
    await client.request("POST", server.url + "/x", {})
    await client.request("DELETE", server.url + "/x", {})
    assert [r.header("content-length") for r in server.requests] == ["0", None]


async def test_a_connect_timeout_is_a_failure_to_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never(*args: object, **kwargs: object) -> None:
        await asyncio.sleep(10)

    client = Client(loopback, connect_timeout=0.1)
    monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", never)
    try:
        with pytest.raises(ConnectFailed, match=r"no connection within 0\.1 s"):
            await client.request("GET", "http://127.0.0.1:9/x", {})
    finally:
        await client.close()
