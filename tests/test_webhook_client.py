"""One webhook attempt over aiohttp against scripted receivers on loopback: what goes out, what
is kept of the answer, and the promises a delivery makes (no redirect followed, the checked
address and no other, a POST never sent twice, TLS checked, a stalled receiver recorded)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trustme
from standardwebhooks.webhooks import Webhook

from bridge.delivery import USER_AGENT, Deliverer
from bridge.failures import reworded
from bridge.models import Delivery, DeliveryStatus, Outgoing, utcnow
from bridge.targets import Guard

SECRET = "whsec_" + "A" * 43 + "="
Reply = Callable[["Request", asyncio.StreamWriter], Awaitable[bool]]  # False: close


def outgoing(url: str, body: bytes = b'{"type":"endpoint.test"}',
             headers: dict[str, str] | None = None) -> Outgoing:
    delivery = Delivery(id="del_1", tenant="t", event_id="evt_1", event_type="endpoint.test",
                        endpoint_id="ep_1", url=None, job_id=None, sequence=1, attempt=1,
                        status=DeliveryStatus.PENDING, created_at=utcnow())
    return Outgoing(delivery=delivery, url=url, headers=headers or {}, secrets=[SECRET],
                    body=body, lease_until=0.0)


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
    one_ended: asyncio.Event = field(default_factory=asyncio.Event)  # a connection came to its end
    url: str = ""
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = (await reader.readuntil(b"\r\n\r\n"))[:-4]
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request = Request(number, head, b"")
                request.body = await reader.readexactly(int(request.header("content-length") or 0))
                self.requests.append(request)
                if not await self.reply(request, writer):
                    return
        finally:
            self.one_ended.set()
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


Serve = Callable[..., Awaitable[Server]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply, tls: ssl.SSLContext | None = None) -> Server:
        server = Server(reply)
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
        servers.append(listener)
        server.port = listener.sockets[0].getsockname()[1]
        server.url = f"{'https' if tls else 'http'}://127.0.0.1:{server.port}"
        return server

    yield start
    for listener in servers:
        listener.close()
        await listener.wait_closed()


async def loopback(host: str) -> list[str]:
    return ["127.0.0.1"]


@pytest.fixture
async def deliverer() -> AsyncIterator[Deliverer]:
    made = Deliverer(store=None, guard=Guard(allow_private=True, resolve=loopback),  # type: ignore[arg-type]
                     schedule=(60.0,))
    yield made
    await made.stop()


async def test_an_attempt_sends_the_signed_body_and_nothing_else(
    serve: Serve, deliverer: Deliverer,
) -> None:
    server = await serve(ok(b'{"received":true}'))
    body = '{"caf\u00e9":"\u2603"}'.encode()
    result = await deliverer.attempt(outgoing(
        server.url + "/hooks/a b/\u00e9?x=1", body, {"X-Auth": "secret", "Host": "evil"}))
    assert result.ok and result.response_status == 200 and result.error is None
    assert result.response_excerpt == '{"received":true}'
    request = server.requests[0]
    assert request.line == b"POST /hooks/a%20b/%C3%A9?x=1 HTTP/1.1"
    assert request.header("host") == f"127.0.0.1:{server.port}"  # never the endpoint's own
    assert request.header("x-auth") == "secret"
    assert request.header("user-agent") == USER_AGENT
    assert request.header("content-type") == "application/json"
    assert request.header("content-length") == str(len(body))
    assert request.header("accept-encoding") is None  # only an excerpt is kept: no coding
    assert request.header("cookie") is None
    assert request.body == body
    headers = {name: request.header(name) or "" for name in
               ("webhook-id", "webhook-timestamp", "webhook-signature")}
    assert Webhook(SECRET).verify(body, headers) == {"caf\u00e9": "\u2603"}


async def test_attempts_reuse_a_kept_alive_connection(serve: Serve, deliverer: Deliverer) -> None:
    server = await serve(ok())
    for _ in range(5):
        assert (await deliverer.attempt(outgoing(server.url + "/x"))).ok
    assert server.connections == 1 and len(server.requests) == 5


async def test_a_redirect_is_a_failed_attempt_and_not_followed(
    serve: Serve, deliverer: Deliverer,
) -> None:
    server = await serve(raw(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\n"
                             b"Content-Length: 0\r\n\r\n", keep=True))
    result = await deliverer.attempt(outgoing(server.url + "/x"))
    assert not result.ok and result.response_status == 302
    assert result.error == "HTTP 302 (redirects are not followed)"
    assert result.retry_at is not None
    assert [r.line for r in server.requests] == [b"POST /x HTTP/1.1"]  # Location not visited


async def test_the_excerpt_is_at_most_a_kib_of_a_huge_body(
    serve: Serve, deliverer: Deliverer,
) -> None:
    async def endless(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
        for _ in range(20_000):  # 160 MB, were it all read
            writer.write(b"z" * 8192)
            await writer.drain()
        return False

    server = await serve(endless)
    async with asyncio.timeout(3):
        result = await deliverer.attempt(outgoing(server.url + "/x"))
    assert result.ok and result.response_excerpt is not None
    assert 0 < len(result.response_excerpt) <= 1024 and set(result.response_excerpt) == {"z"}
    async with asyncio.timeout(3):
        await server.one_ended.wait()  # not read on: the connection was closed


async def test_a_receiver_stalling_in_its_body_has_still_answered(
    serve: Serve, deliverer: Deliverer,
) -> None:
    async def stall(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"ok":true}')
        await writer.drain()
        await asyncio.sleep(5)
        return False

    server = await serve(stall)
    result = await deliverer.attempt(outgoing(server.url + "/x"), within=1.0)
    assert result.ok and result.response_status == 200
    assert result.response_excerpt == '{"ok":true}'


@pytest.mark.parametrize("stall_after", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"])
async def test_a_stalled_receiver_is_a_failed_attempt_tried_again_later(
    serve: Serve, deliverer: Deliverer, stall_after: bytes,
) -> None:
    async def stall(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(stall_after)  # nothing, or a head and none of its body
        await writer.drain()
        await asyncio.sleep(5)
        return False

    server = await serve(stall)
    result = await deliverer.attempt(outgoing(server.url + "/x"), within=0.5)
    assert not result.ok and result.response_status is None
    assert result.error == "timed out after 0.5 s"
    assert result.retry_at is not None and 400 <= result.duration_ms < 2000
    assert len(server.requests) == 1


async def test_a_post_is_never_sent_twice_on_a_connection_closed_under_it(
    serve: Serve, deliverer: Deliverer,
) -> None:
    # The race of keep-alive: the server closes its idle connection just as the next attempt
    # goes out on it, and no byte of an answer comes. The attempt fails; it is not sent again
    # on a new connection (the receiver may have taken it).
    async def close_second(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.connection == 1 and len(server.requests) == 2:
            return False
        return await ok()(request, writer)

    server = await serve(close_second)
    assert (await deliverer.attempt(outgoing(server.url + "/x"))).ok
    failed = await deliverer.attempt(outgoing(server.url + "/x"))
    assert not failed.ok and failed.response_status is None
    assert failed.error == "connection closed before an answer"
    assert failed.retry_at is not None
    assert [r.connection for r in server.requests] == [1, 1]
    assert (await deliverer.attempt(outgoing(server.url + "/x"))).ok  # a new one next time
    assert [r.connection for r in server.requests] == [1, 1, 2]


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 200 OK\r\nContent-Le"])
async def test_a_post_cut_off_mid_answer_is_sent_once(
    serve: Serve, deliverer: Deliverer, answer: bytes,
) -> None:
    server = await serve(raw(answer))
    result = await deliverer.attempt(outgoing(server.url + "/x"))
    assert not result.ok and result.response_status is None
    assert result.error in ("connection closed before an answer",
                            "the answer was not valid HTTP")
    await asyncio.sleep(0.1)
    assert len(server.requests) == 1 and server.connections == 1


async def test_a_connection_the_receiver_closed_after_answering_is_not_reused(
    serve: Serve, deliverer: Deliverer,
) -> None:
    # Answers as if the connection went on, then closes it: the next attempt takes a new one.
    server = await serve(raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    for _ in range(3):
        assert (await deliverer.attempt(outgoing(server.url + "/x"))).ok
        await asyncio.sleep(0.05)
    assert len(server.requests) == 3 and server.connections == 3


async def test_https_is_checked_against_the_trust_given(serve: Serve) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("hooks.example.test").configure_cert(server_context)
    server = await serve(ok(), tls=server_context)
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    guard = Guard(allow_private=True, resolve=loopback)
    ours = Deliverer(store=None, guard=guard, schedule=(60.0,),  # type: ignore[arg-type]
                     ssl_context=trusting)
    system = Deliverer(store=None, guard=guard, schedule=(60.0,))  # type: ignore[arg-type]
    url = f"https://hooks.example.test:{server.port}/x"
    try:
        for _ in range(2):
            assert (await ours.attempt(outgoing(url))).ok
        assert (await ours.attempt(outgoing(url.replace(".test:", ".test.:")))).ok  # final dot
        assert server.requests[0].header("host") == f"hooks.example.test:{server.port}"
        other = await ours.attempt(outgoing(url.replace("hooks.", "other.")))  # not in the cert
        untrusted = await system.attempt(outgoing(url))  # the system's store lacks this CA
    finally:
        await ours.stop()
        await system.stop()
    for refused in (other, untrusted):
        assert not refused.ok and refused.response_status is None
    assert other.error == "TLS certificate not valid for this host name"
    assert untrusted.error == "TLS certificate not trusted"
    assert len(server.requests) == 3


async def test_an_idna_2008_name_goes_to_the_address_of_its_ascii_form(serve: Serve) -> None:
    asked: list[str] = []

    async def resolve(host: str) -> list[str]:
        asked.append(host)
        return {"xn--strae-oqa.de": ["127.0.0.1"]}[host]  # not strasse.de, another domain

    server = await serve(ok())
    deliverer = Deliverer(store=None, guard=Guard(allow_private=True, resolve=resolve),  # type: ignore[arg-type]
                          schedule=(60.0,))
    try:
        result = await deliverer.attempt(outgoing(f"http://stra\u00dfe.de:{server.port}/hook"))
    finally:
        await deliverer.stop()
    assert result.ok, result.error
    assert asked == ["xn--strae-oqa.de"]
    assert server.requests[0].header("host") == f"xn--strae-oqa.de:{server.port}"


async def test_a_private_address_in_the_url_is_refused_without_connecting(serve: Serve) -> None:
    server = await serve(ok())
    deliverer = Deliverer(store=None, guard=Guard(allow_private=False),  # type: ignore[arg-type]
                          schedule=(60.0,))
    try:
        for url in (f"https://127.0.0.1:{server.port}/x", f"https://[::1]:{server.port}/x"):
            result = await deliverer.attempt(outgoing(url))
            assert not result.ok and result.error is not None
            assert result.error.startswith("refused: the URL points at ")
    finally:
        await deliverer.stop()
    assert server.connections == 0


async def test_an_error_never_shows_the_url(deliverer: Deliverer) -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    result = await deliverer.attempt(outgoing(f"http://127.0.0.1:{port}/x?token=s3cret"))
    assert not result.ok and result.error is not None
    assert result.error == "connection refused"  # in words, and no part of the URL


async def test_a_name_that_does_not_resolve_is_said_in_words() -> None:
    async def nowhere(host: str) -> list[str]:
        raise OSError(f"no such host {host}")

    unknown = Deliverer(store=None, guard=Guard(allow_private=True, resolve=nowhere),  # type: ignore[arg-type]
                        schedule=(60.0,))
    try:
        result = await unknown.attempt(outgoing("http://hooks.invalid/x"))
    finally:
        await unknown.stop()
    assert result.error == "name not resolved"


@pytest.mark.parametrize(("stored", "shown"), [
    ("no answer within 15 s", "timed out after 15 s"),
    ("ClientConnectorError: Cannot connect to host 127.0.0.1:9 ssl:default "
     "[Connect call failed ('127.0.0.1', 9)]", "connection refused"),
    ("ClientConnectorCertificateError: Cannot connect to host hooks.example.com:443 "
     "ssl:True [SSLCertVerificationError: certificate verify failed]",
     "TLS certificate not trusted"),
    ("ClientConnectorDNSError: Cannot connect to host nowhere.invalid:443", "name not resolved"),
    ("ServerDisconnectedError: Server disconnected", "connection closed before an answer"),
    ("HTTP 500", "HTTP 500"),
    ("connection refused", "connection refused"),
])
def test_an_error_stored_before_the_words_is_shown_in_them(stored: str, shown: str) -> None:
    assert reworded(stored) == shown
