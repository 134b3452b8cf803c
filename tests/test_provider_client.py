"""The service's provider client (httpx on its own transport), over real loopback sockets: what
it sends, what it answers, and how a failure is classed, sent or not sent, since that decides
whether a submit may be retried (never pay twice)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bridge.core import provider_client
from bridge.errors import ProviderError, SubmitOutcomeUnknown
from bridge.providers.http import send
from bridge.serving import bind, serve_in_background

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
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with provider_client() as made:
        yield made


@contextlib.contextmanager
def lookups_held() -> Iterator[threading.Event]:
    """Host name lookups (the loop's executor runs them) wait until the event is set: the
    one thread there is busy until then, as with a DNS server that does not answer."""
    executor = concurrent.futures.ThreadPoolExecutor(1)
    asyncio.get_running_loop().set_default_executor(executor)
    gate = threading.Event()
    executor.submit(gate.wait)
    try:
        yield gate
    finally:
        gate.set()


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
    client: httpx.AsyncClient,
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


async def test_send_decodes_gzip_and_does_not_follow_redirects(client: httpx.AsyncClient) -> None:
    async with serve_in_background(APP) as url:
        zipped = await send(client, "GET", f"{url}/gzip", provider="p", operation="/x")
        redirect = await send(client, "POST", f"{url}/moved", provider="p",
                              operation="/x", submit=True)
    assert zipped.json() == {"zipped": True}
    assert redirect.status_code == 302


async def test_an_answer_over_16_mib_once_decoded_is_refused_not_read_on(
    client: httpx.AsyncClient,
) -> None:
    async with serve_in_background(APP) as url:
        with pytest.raises(ProviderError) as caught:
            await send(client, "GET", f"{url}/bomb", provider="p", operation="/x")
        with pytest.raises(SubmitOutcomeUnknown):
            await send(client, "POST", f"{url}/bomb", provider="p", operation="/x", submit=True)
    assert caught.value.retryable


async def test_send_decodes_text_by_its_charset_and_never_raises_for_bad_bytes(
    client: httpx.AsyncClient,
) -> None:
    async with serve_in_background(APP) as url:
        latin_answer = await send(client, "GET", f"{url}/latin", provider="p", operation="/x")
        garbled_answer = await send(client, "GET", f"{url}/garbled", provider="p", operation="/x")
    assert latin_answer.text == "prêt"
    assert latin_answer.is_success
    assert garbled_answer.text == "bad \ufffd byte"
    with pytest.raises(ValueError):
        garbled_answer.json()


async def test_a_body_of_megabytes_goes_whole_with_its_length(client: httpx.AsyncClient) -> None:
    body = b"x" * (3 * 1024 * 1024)  # as a submission with an inline image may be
    async with serve_in_background(APP) as url:
        response = await send(client, "POST", f"{url}/size", provider="p",
                              operation="/x", content=body)
    assert response.json() == {"length": str(len(body)), "read": len(body), "whole": True}


async def test_streams_go_through_the_same_session(client: httpx.AsyncClient) -> None:
    async with serve_in_background(APP) as url:
        async with client.stream("GET", f"{url}/chunks") as response:
            lines = [line async for line in response.aiter_lines() if line]
        posted = await client.post(f"{url}/echo", json={"x": 1})
    assert lines == ["data: one", "data: two"]
    assert json.loads(posted.json()["body"]) == {"x": 1}


async def test_refused_connection_was_not_sent_so_a_submit_may_be_retried(
    client: httpx.AsyncClient,
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


async def test_only_a_failure_before_sending_is_a_connect_error(client: httpx.AsyncClient) -> None:
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
        assert isinstance(caught.value,
                          httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError)


async def test_a_post_is_not_sent_again_on_a_kept_connection_closed_under_it(
    client: httpx.AsyncClient,
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
    client: httpx.AsyncClient,
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
    client: httpx.AsyncClient,
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


async def test_a_garbled_answer_is_outcome_unknown(client: httpx.AsyncClient) -> None:
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
async def test_a_url_that_cannot_be_sent_was_not_sent(client: httpx.AsyncClient, url: str) -> None:
    with pytest.raises(ProviderError) as caught:
        await send(client, "POST", url, provider="p", operation="/x", submit=True, json={})
    assert not isinstance(caught.value, SubmitOutcomeUnknown)


async def test_a_hung_lookup_is_bounded_by_the_connect_timeout(
    client: httpx.AsyncClient,
) -> None:
    # httpx's connect timeout covers the lookup, the connection and the TLS handshake.
    client.timeout = httpx.Timeout(5.0, connect=0.3)
    with lookups_held():
        async with asyncio.timeout(3):
            with pytest.raises(httpx.ConnectTimeout):
                await client.post("http://localhost:9/x", json={})
            with pytest.raises(ProviderError) as caught:
                await send(client, "POST", "http://localhost:9/x", provider="p", operation="/x",
                           submit=True, json={})
    assert not isinstance(caught.value, SubmitOutcomeUnknown)
    assert caught.value.retryable


# Run in a mount namespace of its own, where /etc/hosts gives provider.test two addresses:
# ::1 first (tried first), which drops the SYNs it is sent, then 127.0.0.1, which answers.
SILENT_FIRST = """
import asyncio, contextlib, socket, httpx
from bridge.core import provider_client

async def main():
    silent = socket.socket(socket.AF_INET6)
    silent.bind(("::1", 0))
    silent.listen(0)
    port = silent.getsockname()[1]
    fillers = []
    for _ in range(4):  # a full accept queue: later SYNs get no answer
        filler = socket.socket(socket.AF_INET6)
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("::1", port))
        fillers.append(filler)
    assert socket.getaddrinfo("provider.test", port, type=socket.SOCK_STREAM)[0][4][0] == "::1"

    async def answer(reader, writer):
        await reader.readuntil(b"\\r\\n\\r\\n")
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port)
    async with server, provider_client() as client:
        client.timeout = httpx.Timeout(5.0, connect=1.0)
        print((await client.get(f"http://provider.test:{port}/x")).status_code)

asyncio.run(main())
"""


def test_a_silent_first_address_leaves_time_for_the_next(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("::1 provider.test\n127.0.0.1 provider.test\n")
    script = tmp_path / "silent_first.py"
    script.write_text(SILENT_FIRST)
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", 'mount --bind "$1" /etc/hosts && exec "$2" "$3"',
         "sh", str(hosts), sys.executable, str(script)],
        capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONWARNINGS": "error"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200"]


async def test_a_closed_client_sends_nothing_and_says_so(client: httpx.AsyncClient) -> None:
    seen: list[str] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.close()

    async with raw_server(record) as url:
        port = url.rsplit(":", 1)[1]
        with lookups_held() as gate:
            # The service stops its workers before it closes the client: a request cut off
            # while it waits for its connection has sent nothing.
            waiting = asyncio.create_task(send(client, "POST", f"http://localhost:{port}/x",
                                               provider="p", operation="/x", submit=True,
                                               json={}))
            await asyncio.sleep(0.05)  # looking its host up
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await client.aclose()
            gate.set()
            await asyncio.sleep(0.05)
        with pytest.raises(ProviderError) as after:  # and a closed client sends nothing more
            await send(client, "POST", f"{url}/x", provider="p", operation="/x", submit=True,
                       json={})
        assert not isinstance(after.value, SubmitOutcomeUnknown)
        assert after.value.retryable
    assert seen == []


async def test_requests_keep_to_max_connections_and_a_pool_timeout_was_not_sent() -> None:
    limited = provider_client(max_connections=10)
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
        # No connection comes free in time: the submission never left.
        limited.timeout = httpx.Timeout(10.0, pool=0.2)
        with pytest.raises(ProviderError) as caught:
            await send(limited, "POST", f"{url}/submit", provider="p", operation="/x",
                       submit=True, json={})
        release.set()
        answers = await asyncio.gather(*calls)
    assert not isinstance(caught.value, SubmitOutcomeUnknown)
    assert "PoolTimeout" in caught.value.message
    assert all(answer.status_code == 200 for answer in answers)
    assert peak == 10


async def test_a_gzip_body_cut_short_is_not_taken_whole(client: httpx.AsyncClient) -> None:
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
