"""The service's provider client (httpx's API over aiohttp), over real loopback sockets: what it
sends, what it answers, and how a failure is classed, sent or not sent, since that decides
whether a submit may be retried (never pay twice)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bridge.core import provider_client
from bridge.errors import ProviderError, SubmitOutcomeUnknown
from bridge.providers.client import ProviderClient
from bridge.providers.http import send
from bridge.serving import bind, serve_in_background
from bridge.targets import Guard, GuardResolver, Resolve

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({
        "method": request.method,
        "query": dict(request.query_params),
        "headers": {k: v for k, v in request.headers.items()},
        "body": (await request.body()).decode(),
    }, headers={"Retry-After": "7"})


async def gzipped(request: Request) -> Response:
    return Response(gzip.compress(b'{"zipped": true}'), media_type="application/json",
                    headers={"Content-Encoding": "gzip"})


async def chunks(request: Request) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        for part in (b"data: one\n\n", b"data: two\n\n"):
            yield part

    return StreamingResponse(body(), media_type="text/event-stream")


async def latin(request: Request) -> Response:
    return Response("prêt".encode("latin-1"), headers={
        "Content-Type": 'text/plain; charset="ISO-8859-1"'})


async def garbled(request: Request) -> Response:
    return Response(b"bad \xff byte", media_type="text/plain")


async def size(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"length": request.headers.get("content-length"), "read": len(body),
                         "whole": body == b"x" * len(body)})


async def bomb(request: Request) -> Response:
    # 17 MiB of zeros in about 17 KB: over the answer cap only once decoded.
    return Response(gzip.compress(bytes(17 * 1024 * 1024)), media_type="application/json",
                    headers={"Content-Encoding": "gzip"})


async def moved(request: Request) -> Response:
    return Response(status_code=302, headers={"Location": "/echo"})


APP = Starlette(routes=[
    Route("/echo", echo, methods=["GET", "POST"]),
    Route("/gzip", gzipped),
    Route("/bomb", bomb, methods=["GET", "POST"]),
    Route("/chunks", chunks),
    Route("/moved", moved, methods=["POST"]),
    Route("/size", size, methods=["POST"]),
    Route("/latin", latin),
    Route("/garbled", garbled),
])


@pytest.fixture
async def client() -> AsyncIterator[ProviderClient]:
    made = provider_client()
    assert isinstance(made, ProviderClient)
    async with made:
        yield made


def resolving(resolve: Resolve, timeout: httpx.Timeout) -> ProviderClient:
    """A provider client whose host names resolve by ``resolve``."""
    return ProviderClient(limits=httpx.Limits(max_connections=100), timeout=timeout,
                          resolver=GuardResolver(Guard(allow_private=True, resolve=resolve)))


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A TCP server on loopback that runs ``handler`` on each connection."""
    server = await asyncio.start_server(handler, sock=bind())
    try:
        host, port = server.sockets[0].getsockname()[:2]
        yield f"http://{host}:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> str:
    """Read one request; return its method."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head.split(b" ", 1)[0].decode()


async def test_send_sends_json_headers_and_params_and_reads_the_answer(
    client: ProviderClient,
) -> None:
    async with serve_in_background(APP) as url:
        response = await send(client, "POST", f"{url}/echo", provider="p", operation="/x",
                              headers={"Authorization": "Bearer k"}, json={"a": [1, "é"]},
                              params={"taskId": "t 1"})
    assert response.status_code == 200
    assert response.headers["retry-after"] == "7"
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["query"] == {"taskId": "t 1"}
    assert json.loads(seen["body"]) == {"a": [1, "é"]}
    assert seen["headers"]["authorization"] == "Bearer k"
    assert seen["headers"]["content-type"] == "application/json"
    assert seen["headers"]["user-agent"].startswith("bridge/")


async def test_send_decodes_gzip_and_does_not_follow_redirects(client: ProviderClient) -> None:
    async with serve_in_background(APP) as url:
        zipped = await send(client, "GET", f"{url}/gzip", provider="p", operation="/x")
        redirect = await send(client, "POST", f"{url}/moved", provider="p",
                              operation="/x", submit=True)
    assert zipped.json() == {"zipped": True}
    assert redirect.status_code == 302


async def test_an_answer_over_16_mib_once_decoded_is_refused_not_read_on(
    client: ProviderClient,
) -> None:
    async with serve_in_background(APP) as url:
        with pytest.raises(ProviderError) as caught:
            await send(client, "GET", f"{url}/bomb", provider="p", operation="/x")
        with pytest.raises(SubmitOutcomeUnknown):
            await send(client, "POST", f"{url}/bomb", provider="p", operation="/x", submit=True)
    assert caught.value.retryable


async def test_send_decodes_text_by_its_charset_and_never_raises_for_bad_bytes(
    client: ProviderClient,
) -> None:
    async with serve_in_background(APP) as url:
        latin_answer = await send(client, "GET", f"{url}/latin", provider="p", operation="/x")
        garbled_answer = await send(client, "GET", f"{url}/garbled", provider="p", operation="/x")
    assert latin_answer.text == "prêt"
    assert latin_answer.is_success
    assert garbled_answer.text == "bad \ufffd byte"
    with pytest.raises(ValueError):
        garbled_answer.json()


async def test_a_body_of_megabytes_goes_whole_with_its_length(client: ProviderClient) -> None:
    body = b"x" * (3 * 1024 * 1024)  # as a submission with an inline image may be
    async with serve_in_background(APP) as url:
        response = await send(client, "POST", f"{url}/size", provider="p",
                              operation="/x", content=body)
    assert response.json() == {"length": str(len(body)), "read": len(body), "whole": True}


async def test_streams_go_through_the_same_session(client: ProviderClient) -> None:
    async with serve_in_background(APP) as url:
        async with client.stream("GET", f"{url}/chunks") as response:
            lines = [line async for line in response.aiter_lines() if line]
        posted = await client.post(f"{url}/echo", json={"x": 1})
    assert lines == ["data: one", "data: two"]
    assert json.loads(posted.json()["body"]) == {"x": 1}


async def test_refused_connection_was_not_sent_so_a_submit_may_be_retried(
    client: ProviderClient,
) -> None:
    sock = bind()  # bound, never listening: connections are refused
    port = sock.getsockname()[1]
    try:
        with pytest.raises(ProviderError) as caught:
            await send(client, "POST", f"http://127.0.0.1:{port}/x", provider="p",
                       operation="/x", submit=True)
    finally:
        sock.close()
    assert not isinstance(caught.value, SubmitOutcomeUnknown)
    assert caught.value.code == "provider_unavailable"
    assert caught.value.retryable


async def test_only_a_failure_before_sending_is_a_connect_error(client: ProviderClient) -> None:
    sock = bind()  # bound, never listening: refused
    try:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"http://127.0.0.1:{sock.getsockname()[1]}/x", json={})
    finally:
        sock.close()

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()  # accepted, then closed before any answer

    async def close_after_reading(reader: asyncio.StreamReader,
                                  writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    for handler in (close_at_once, close_after_reading):
        async with raw_server(handler) as url:
            with pytest.raises(httpx.TransportError) as caught:
                await client.post(f"{url}/generate", json={})
        assert isinstance(caught.value, httpx.ReadError | httpx.RemoteProtocolError)


async def test_a_post_is_not_sent_again_on_a_kept_connection_closed_under_it(
    client: ProviderClient,
) -> None:
    seen: list[tuple[int, str]] = []
    connections = 0

    async def close_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                seen.append((number, await read_request(reader)))
                if len(seen) == 2:
                    break  # the second request on the kept connection: hang up, no answer
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    async with raw_server(close_second) as url:
        assert (await client.post(f"{url}/a", json={})).status_code == 200
        with pytest.raises(SubmitOutcomeUnknown):
            await send(client, "POST", f"{url}/b", provider="p",
                       operation="/x", submit=True, json={})
    assert seen == [(1, "POST"), (1, "POST")]


async def test_connection_dropped_after_the_request_means_outcome_unknown(
    client: ProviderClient,
) -> None:
    seen: list[str] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.close()

    async with raw_server(hang_up) as url:
        with pytest.raises(SubmitOutcomeUnknown):
            await send(client, "POST", f"{url}/generate", provider="p",
                       operation="/x", submit=True, json={})
        with pytest.raises(ProviderError) as status:  # not a submit: retryable
            await send(client, "GET", f"{url}/status", provider="p", operation="/x")
    # The POST went once and was not repeated (a GET may be, which is harmless).
    assert seen.count("POST") == 1 and "GET" in seen
    assert status.value.code == "provider_unavailable" and status.value.retryable


async def test_silence_after_the_request_is_a_timeout_and_outcome_unknown(
    client: ProviderClient,
) -> None:
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await release.wait()
        writer.close()

    client.timeout = httpx.Timeout(0.3)
    async with raw_server(silent) as url:
        try:
            with pytest.raises(SubmitOutcomeUnknown):
                await send(client, "POST", f"{url}/generate", provider="p",
                           operation="/x", submit=True,
                           json={})
            with pytest.raises(ProviderError) as status:
                await send(client, "GET", f"{url}/status", provider="p", operation="/x")
        finally:
            release.set()
    assert status.value.code == "timeout"


async def test_a_garbled_answer_is_outcome_unknown(client: ProviderClient) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    async with raw_server(garbage) as url:
        with pytest.raises(SubmitOutcomeUnknown):
            await send(client, "POST", f"{url}/generate", provider="p",
                       operation="/x", submit=True, json={})


@pytest.mark.parametrize("url", [
    "ftp://x/y", "http://[::1/x", "http://h:99999/x", "http:///x",
    "https://a\u200db.example/x", "https://.example.com/x",
])
async def test_a_url_that_cannot_be_sent_was_not_sent(client: ProviderClient, url: str) -> None:
    with pytest.raises(ProviderError) as caught:
        await send(client, "POST", url, provider="p", operation="/x", submit=True, json={})
    assert not isinstance(caught.value, SubmitOutcomeUnknown)


async def test_a_hung_lookup_is_bounded_by_the_connect_timeouts() -> None:
    async def hung(host: str) -> list[str]:
        await asyncio.sleep(30)
        return ["127.0.0.1"]

    # aiohttp bounds the wait for a pooled connection, the lookup and the connection
    # together: httpx's pool and connect timeouts added up.
    async with resolving(hung, httpx.Timeout(5.0, connect=0.3, pool=0.2)) as client:
        async with asyncio.timeout(3):
            with pytest.raises(httpx.ConnectTimeout):
                await client.post("http://provider.test/x", json={})
            with pytest.raises(ProviderError) as caught:
                await send(client, "POST", "http://provider.test/x", provider="p", operation="/x",
                           submit=True, json={})
    assert not isinstance(caught.value, SubmitOutcomeUnknown)


async def test_a_silent_first_address_leaves_time_for_the_next() -> None:
    # 127.0.0.2 listens with a full accept queue: it drops the SYNs it is sent.
    silent = bind("127.0.0.2")
    silent.listen(0)
    port = silent.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.2", port))
        fillers.append(filler)

    async def two(host: str) -> list[str]:
        return ["127.0.0.2", "127.0.0.1"]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, sock=bind("127.0.0.1", port))
    try:
        async with resolving(two, httpx.Timeout(5.0, connect=1.0)) as client:
            response = await client.get(f"http://provider.test:{port}/x")
    finally:
        server.close()
        await server.wait_closed()
        silent.close()
        for filler in fillers:
            filler.close()
    assert response.status_code == 200


async def test_a_closed_client_sends_nothing_and_says_so() -> None:
    seen: list[str] = []
    gate = asyncio.Event()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.close()

    async def slow(host: str) -> list[str]:
        await gate.wait()
        return ["127.0.0.1"]

    made = resolving(slow, httpx.Timeout(5.0))
    async with raw_server(record) as url:
        port = url.rsplit(":", 1)[1]
        waiting = asyncio.create_task(send(made, "POST", f"http://provider.test:{port}/x",
                                           provider="p", operation="/x", submit=True, json={}))
        await asyncio.sleep(0.05)  # looking its host up
        await made.aclose()
        gate.set()
        with pytest.raises(ProviderError) as caught:
            await waiting
        assert not isinstance(caught.value, SubmitOutcomeUnknown)
        with pytest.raises(ProviderError) as after:  # and any later one
            await send(made, "POST", f"{url}/x", provider="p", operation="/x", submit=True, json={})
        assert not isinstance(after.value, SubmitOutcomeUnknown)
    assert seen == []


async def test_requests_keep_to_max_connections() -> None:
    limited = ProviderClient(limits=httpx.Limits(max_connections=10),
                             timeout=httpx.Timeout(10.0))
    waiting = peak = 0
    release = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal waiting, peak
        await read_request(reader)
        waiting += 1
        peak = max(peak, waiting)
        await release.wait()
        waiting -= 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async with limited, raw_server(hold) as url:
        calls = [asyncio.create_task(limited.get(f"{url}/{n}")) for n in range(30)]
        await asyncio.sleep(0.5)
        assert peak == 10
        release.set()
        answers = await asyncio.gather(*calls)
    assert all(answer.status_code == 200 for answer in answers)


async def test_a_gzip_body_cut_short_is_not_taken_whole(client: ProviderClient) -> None:
    whole = gzip.compress(b'{"id": "' + b"t" * 2000 + b'"}', mtime=0)
    cut = whole[:len(whole) // 2]

    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                     % len(cut) + cut)
        await writer.drain()
        writer.close()

    async with raw_server(short) as url:
        response = await send(client, "POST", f"{url}/x", provider="p", operation="/x", json={})
        with pytest.raises(ValueError):
            response.json()
