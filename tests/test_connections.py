"""What a client may hold of ``bridge serve`` without any credential: slow headers and
bodies get 408, silent and idle connections are closed, connections beyond
``BRIDGE_MAX_CONNECTIONS`` get 503, and a flood of idle sockets leaves ``/healthz``
answering and the log quiet. Every test runs a real ``bridge serve`` on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bridge.signing import Signer
from tests.test_crash import free_port

KEY = "brk_connections_test_key"
SECRET_KEY = "connections-test-secret-key"
TIMEOUT = 2.0  # BRIDGE_REQUEST_TIMEOUT of these servers, seconds


class Server:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.base = f"http://127.0.0.1:{port}"

    def lines(self) -> list[dict[str, object]]:
        text = self.log.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)


def _limit_open_files(count: int) -> Callable[[], None]:
    def limit() -> None:  # in the child, before bridge starts: it cannot raise it again
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))
    return limit


@contextlib.contextmanager
def bridge_serve(tmp_path: Path, open_files: int | None = None, **env: str) -> Iterator[Server]:
    port = free_port()
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    log = tmp_path / f"serve-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "serve", "--port", str(port)],
            env={**keep, "BRIDGE_DATABASE": str(tmp_path / f"bridge-{port}.db"),
                 "BRIDGE_MEDIA_DIR": str(tmp_path / "media"), "BRIDGE_API_KEY": KEY,
                 "BRIDGE_SECRET_KEY": SECRET_KEY, "BRIDGE_REQUEST_TIMEOUT": f"{TIMEOUT:g}s",
                 **env},
            stdout=sink, stderr=sink,
            preexec_fn=_limit_open_files(open_files) if open_files else None)
    server = Server(process, port, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.base}/readyz", timeout=1).status_code == 200:
                    break
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "bridge serve did not start"
            time.sleep(0.1)
        yield server
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with bridge_serve(tmp_path_factory.mktemp("serve"), BRIDGE_MAX_CONNECTIONS="8") as running:
        yield running


def _until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and how long that took;
    ``inf`` if it is still open after ``seconds``."""
    started = time.monotonic()
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return received, math.inf
    except ConnectionResetError:
        pass
    return received, time.monotonic() - started


def test_headers_that_do_not_arrive_in_time_get_408_and_a_close(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and no blank line
        answer, waited = _until_closed(sock, TIMEOUT + 5)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
    assert TIMEOUT - 0.2 < waited < TIMEOUT + 1.5


@pytest.mark.parametrize("route", ["/v1/jobs", "/callbacks/apixo/{token}"])
def test_a_body_that_does_not_arrive_in_time_gets_408_and_a_close(
    server: Server, route: str,
) -> None:
    path = route.format(token=Signer(SECRET_KEY).callback_token("apixo", "job_slow"))
    with server.connect() as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())
        answer, waited = _until_closed(sock, TIMEOUT + 5)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert TIMEOUT - 0.2 < waited < TIMEOUT + 1.5


def test_a_connection_that_sends_nothing_is_closed_within_the_request_timeout(
    server: Server,
) -> None:
    with server.connect() as sock:
        answer, waited = _until_closed(sock, TIMEOUT + 5)
    assert answer == b""  # closed without a word: there was no request to answer
    assert TIMEOUT - 0.2 < waited < TIMEOUT + 1.5


def test_an_idle_keep_alive_connection_is_closed_after_5_s(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer, waited = _until_closed(sock, 10)  # its answer, then nothing until the close
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert 4.5 < waited < 7


def test_beyond_max_connections_requests_get_503_and_idle_ones_make_room(
    server: Server,
) -> None:
    # Eight requests in flight (bodies on their way) fill the cap: a ninth gets 503.
    busy = [server.connect() for _ in range(8)]
    try:
        for sock in busy:
            sock.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n"
                         "Content-Length: 10\r\n\r\n".encode())
        time.sleep(0.3)
        answer = httpx.get(f"{server.base}/healthz", timeout=1)
        assert answer.status_code == 503
    finally:
        for sock in busy:
            sock.close()
    # Idle connections do not fill it: the oldest idle one is closed for each new one.
    idle = [server.connect() for _ in range(30)]
    try:
        answer = httpx.get(f"{server.base}/healthz", timeout=1)
        assert answer.status_code == 200
        _, waited = _until_closed(idle[0], 1)
        assert waited < 1  # closed for a newer one, not left to its timeout
    finally:
        for sock in idle:
            sock.close()


def test_a_flood_of_idle_sockets_leaves_healthz_answering_and_the_log_quiet(
    tmp_path: Path,
) -> None:
    # 256 open files: BRIDGE_MAX_CONNECTIONS comes to a quarter, 64; 600 idle sockets, at
    # some 1,000 a second, is a flood. (A burst of more than the files left over at once
    # runs out of them for a moment: the next test.)
    with bridge_serve(tmp_path, open_files=256) as server:
        log_before = server.log.stat().st_size
        flood: list[socket.socket] = []
        try:
            for _ in range(30):
                flood += [server.connect() for _ in range(20)]
                time.sleep(0.02)
            slowest = 0.0
            for _ in range(5):
                began = time.monotonic()
                answer = httpx.get(f"{server.base}/healthz", timeout=1)
                assert answer.status_code == 200
                slowest = max(slowest, time.monotonic() - began)
            held = server.open_files()
            closed = sum(_until_closed(sock, 0.01)[1] < 1 for sock in flood[:500])
            print(f"/healthz at worst {slowest * 1000:.0f} ms; the server held {held} files; "
                  f"{closed} of the first 500 idle sockets closed for newer ones")
            assert held < 64 + 60  # the cap's connections and the process's own files
        finally:
            for sock in flood:
                sock.close()
        logged = server.log.stat().st_size - log_before
        assert logged < 5000, server.log.read_text()[-3000:]
        assert not [line for line in server.lines() if line["level"] == "error"]
        me = httpx.get(f"{server.base}/v1/me", headers={"X-API-Key": KEY}, timeout=2)
        assert me.status_code == 200
    started = [line for line in server.lines() if line["message"] == "bridge serving"]
    assert [line.get("max_connections") for line in started] == [64]


def test_failed_accepts_are_logged_once_a_second_and_idle_sockets_are_closed(
    tmp_path: Path,
) -> None:
    # A cap above what 256 open files allow: accepts fail until idle sockets time out.
    with bridge_serve(tmp_path, open_files=256, BRIDGE_MAX_CONNECTIONS="1000") as server:
        began = time.monotonic()
        flood = [server.connect() for _ in range(400)]
        try:
            deadline = began + TIMEOUT * 3 + 5
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{server.base}/healthz", timeout=1).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the idle sockets were never closed"
            recovered = time.monotonic() - began
            _, waited = _until_closed(flood[0], 1)
            assert waited < 1  # closed by the server long since
        finally:
            for sock in flood:
                sock.close()
        failures = [line for line in server.lines()
                    if str(line["message"]).startswith("socket.accept() out of system resource")]
        assert 1 <= len(failures) <= recovered + 2
        assert sum(int(str(line.get("suppressed", 0))) for line in failures) > 0
        assert server.log.stat().st_size < 100_000
