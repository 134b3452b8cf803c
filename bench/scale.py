"""Scale: deliveries and callbacks per second on one SQLite process and on one, two and three
PostgreSQL processes; one process holding 10,000 in-flight jobs, and their release.

    python bench/scale.py [--postgres URL] [--duration 9] [--rounds 3] [--warmup 1.5]
                          [--concurrency 64] [--deliveries 50000] [--callbacks 25000]
                          [--hold 10000] [--idle 10] [--no-analyze] [--no-fail]

Everything on 127.0.0.1. Every bridge is a real ``bridge serve`` process (``python -m
bridge.cli serve``), started fresh for each slice and stopped with SIGTERM after it. Beside
them, in processes of their own: a receiver (a minimal asyncio HTTP/1.1 server that answers
every POST ``200 ok``; on ``/verify/...`` it first verifies the webhook with the Standard
Webhooks library and counts each event once) and the apixo simulator (``bridge.simulators
.apixo``), whose tasks run for an hour unless the bench releases them. This process is the
load generator (aiohttp) and reads the databases directly.

Rows (each configuration on a database of its own, a SQLite file or a new PostgreSQL
database, topped up through the store before each of its slices; then, unless
``--no-analyze``, PostgreSQL's planner statistics are refreshed, as autovacuum would have
done on a database in use: on a table just filled they still describe the table as it was,
and the claim's plan reads every pending delivery each time):

* deliveries/s: ``--deliveries`` pending deliveries of ``job.succeeded`` events to four
  endpoints at the receiver (32 attempts in flight each); the processes' deliverers empty
  the outbox. A slice counts the attempts recorded as succeeded in the database during its
  window;
* callbacks/s: ``--callbacks`` running apixo jobs not yet called back (tracking callback, a
  task id each); this process POSTs each job's callback, once, to
  ``/callbacks/apixo/{token}`` (tokens signed with ``bridge.signing.Signer`` and the fixed
  ``BRIDGE_SECRET_KEY`` the processes get), the jobs spread evenly over the processes, at
  ``--concurrency`` in all. ``BRIDGE_CONFIRM_CALLBACKS=0``: the callback's own path (token,
  body, one transaction storing the job and its ``job.succeeded`` event), with no status
  call to the simulator, so the rows compare the stores. A slice counts the 2xx answers
  completed in its window.

Rows take turns in ``--rounds`` slices (sqlite, pg x1, pg x2, pg x3, then again), each
slice a ``--warmup`` then ``--duration / --rounds`` measured seconds, so that a change in the
machine's speed weighs on every row alike. CPU columns are cores used over the measured
windows: the bridge processes together, this load generator, the receiver and simulator,
and everything else on the machine (the PostgreSQL server among it, and whatever else runs).

Then the hold: one PostgreSQL process with the defaults (callbacks confirmed by a status
call), an endpoint wanting ``job.succeeded`` at the receiver's verifying path, and
``--hold`` apixo jobs created through ``POST /v1/jobs``. apixo runs at most 1,000 tasks at
once per key (the adapter's ``max_concurrent``, from its documented limits): that many are
submitted and held running at the simulator (``SimSettings.duration`` of an hour), the rest
stay queued in the bridge for a slot. Once the simulator holds its 1,000: the process's
resident memory (VmRSS) and its CPU over ``--idle`` seconds, with the simulator's count of
status requests in that window (tracking callback: the first safety-net poll is due 120 s
after a job's submission). Then the release: the simulator ends every task at once and POSTs
each one's callback, as apixo does when a task ends, at most 64 at a time, and from then on
ends each new task as it is submitted; the drain is the time from the release to the last
``job.succeeded`` webhook verified by the receiver, every one of the ``--hold`` jobs.

Targets: pg x1 >= 0.5x sqlite and pg x2 >= 1.4x pg x1, for deliveries and for callbacks;
the hold in <= 150 MB RSS and <= 0.05 cores idle; the release drains at >= 200 jobs/s;
0 lost (a callback answered 2xx whose event was not stored, a held job whose
``job.succeeded`` did not arrive verified, a request that failed). Exits 1 when one is
missed, unless ``--no-fail``.

Child processes die with this one (PR_SET_PDEATHSIG; the receiver and simulator also on
stdin EOF), are stopped in ``finally``, and every wait has a time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SCRIPT = os.path.abspath(__file__)
sys.path.insert(0, str(Path(SCRIPT).parent.parent))

from bench.ingest import callback_body, cpu_seconds, machine_busy_seconds  # noqa: E402

API_KEY = "brk_bench_scale_key"
SECRET_KEY = "bench-scale-secret-key-0123456789"
SIM_KEY = "sim-apixo-bench-scale-key"
MODEL = "veo-3-1"
READY = "READY "
HOLD_SECONDS = 3600.0  # how long the simulator runs a task unless released
ENDPOINTS = 4  # delivery rows: endpoints at the receiver
PER_ENDPOINT = 32  # attempts in flight per endpoint and process
RELEASE_CONCURRENCY = 64  # callbacks the simulator has in flight during the release
TARGETS = {"pg1/sqlite": 0.5, "pg2/pg1": 1.4, "rss_mb": 150.0, "idle_cores": 0.05,
           "drain_per_s": 200.0}
CONFIGS = (("sqlite", 1), ("pg", 1), ("pg", 2), ("pg", 3))


def label(kind: str, processes: int) -> str:
    return "sqlite x1" if kind == "sqlite" else f"pg x{processes}"


# -- child: the receiver ---------------------------------------------------------------------
class _Receiver(asyncio.Protocol):
    """HTTP/1.1 kept alive: ``POST /verify/...`` is verified and counted per event,
    ``POST /__secret`` sets the secret, ``GET /__stats`` answers the counts, any other POST
    is answered ``200 ok``."""

    REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
    stats: dict[str, Any] = {"posts": 0, "verified": 0, "repeats": 0, "invalid": 0,
                             "first": None, "last": None}
    seen: set[str] = set()
    webhook: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            method, path = lines[0].split(" ")[:2]
            self.transport.write(self.answer(method, path, headers, body))

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        stats = _Receiver.stats
        if method == "GET" and path == "/__stats":
            payload = json.dumps(stats).encode()
            return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        if path == "/__secret":
            from standardwebhooks.webhooks import Webhook

            _Receiver.webhook = Webhook(body.decode())
            return self.REPLY
        stats["posts"] += 1
        if path.startswith("/verify") and _Receiver.webhook is not None:
            try:
                event = _Receiver.webhook.verify(body, headers)
            except Exception:
                stats["invalid"] += 1
                return self.REPLY
            if event["type"] == "job.succeeded":
                if event["id"] in _Receiver.seen:
                    stats["repeats"] += 1
                else:
                    _Receiver.seen.add(event["id"])
                    stats["verified"] += 1
                    now = time.time()
                    stats["first"] = stats["first"] or now
                    stats["last"] = now
        return self.REPLY


async def _until_stdin_closes(lifetime: float) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.read(), timeout=lifetime)


async def serve_receiver(lifetime: float) -> None:
    from bridge.serving import bind, url_of

    sock = bind()
    sock.listen(1024)
    server = await asyncio.get_running_loop().create_server(_Receiver, sock=sock)
    print(READY + url_of(sock), flush=True)
    await _until_stdin_closes(lifetime)
    server.close()


# -- child: the apixo simulator, holding its tasks ---------------------------------------------
def _simulator_app() -> Any:
    """apixo's simulator, its tasks running for an hour, with two routes of the bench's:
    ``GET /__bench/count`` and ``POST /__bench/release``: from then on every task, those
    held and those submitted later, ends as soon as it is seen, and its callback is POSTed
    (the envelope apixo POSTs when a task ends, retried as the simulator does) over one
    client: the simulator's own sender opens a client per callback, whose set-up would
    make the simulator, not the bridge, the slowest part of the drain."""
    import aiohttp
    from starlette.types import Receive, Scope, Send

    from bridge.simulators import apixo
    from bridge.simulators.base import SimSettings

    sim = apixo.create_app(SimSettings(api_key=SIM_KEY, duration=(HOLD_SECONDS, HOLD_SECONDS),
                                       queue_delay=0.0, seed=1))
    counts: dict[str, Any] = {"status": 0, "sent": 0, "ok": 0, "failed": 0, "released": 0,
                              "done": None}
    running: set[asyncio.Task[None]] = set()

    async def release() -> None:
        slots = asyncio.Semaphore(RELEASE_CONCURRENCY)
        timeout = aiohttp.ClientTimeout(total=apixo.CALLBACK_TIMEOUT)
        connector = aiohttp.TCPConnector(limit=RELEASE_CONCURRENCY)
        calls: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            async def call(task: Any) -> None:
                payload = {"code": 200, "message": "success", "data": task.data()}
                async with slots:
                    for delay in (0.0, 0.5, 1.0, 2.0):  # apixo's simulator's retries
                        await asyncio.sleep(delay)
                        counts["sent"] += 1
                        try:
                            async with session.post(task.callback_url, json=payload) as answer:
                                await answer.read()
                                if answer.status == 200:
                                    counts["ok"] += 1
                                    break
                        except (aiohttp.ClientError, TimeoutError):
                            pass
                    else:
                        counts["failed"] += 1
                counts["done"] = time.time()

            seen = 0
            while True:  # ends with the process
                fresh = list(sim.state.jobs.values())[seen:]
                seen += len(fresh)
                if fresh:
                    now = time.time()
                    sleeping = {t.get_name(): t for t in sim.state.callback_tasks}
                    for task in fresh:  # ends now: status requests answer success from here on
                        task.sim.duration = max(0.0, now - task.sim.created - task.sim.queue_delay)
                        waiting = sleeping.get(f"apixo-callback:{task.sim.id}")
                        if waiting is not None:  # asleep until the hour's end
                            waiting.cancel()
                        if task.callback_url:
                            counts["released"] += 1
                            sent = asyncio.create_task(call(task))
                            calls.add(sent)
                            sent.add_done_callback(calls.discard)
                await asyncio.sleep(0.02)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/__bench/"):
            if scope["path"] == "/__bench/release":
                job = asyncio.create_task(release())
                running.add(job)
                job.add_done_callback(running.discard)
            body = json.dumps({**counts, "submissions": sim.state.submissions,
                               "tasks": len(sim.state.jobs)}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http" and scope["path"].startswith("/api/v1/statusTask/"):
            counts["status"] += 1
        await sim(scope, receive, send)

    return app


async def serve_simulator(lifetime: float) -> None:
    import uvicorn

    from bridge.serving import bind, url_of

    sock = bind()
    server = uvicorn.Server(uvicorn.Config(_simulator_app(), log_level="warning",
                                           access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=1))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    print(READY + url_of(sock), flush=True)
    await _until_stdin_closes(lifetime)
    server.should_exit = True
    await serving


# -- parent: processes -------------------------------------------------------------------------
def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the bench goes away (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


async def stop(proc: asyncio.subprocess.Process, *, term: bool = True) -> None:
    """Close its stdin, then SIGTERM (if ``term``), then SIGKILL; waits at most 20 s."""
    if proc.stdin is not None and not proc.stdin.is_closing():
        proc.stdin.close()
    for step in ("term", "kill"):
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if step == "kill" or term:
                proc.send_signal(signal.SIGKILL if step == "kill" else signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=10)


async def spawn_child(flag: str, lifetime: float) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, SCRIPT, flag, "--child-lifetime", str(lifetime),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        preexec_fn=_die_with_parent)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        if not line.startswith(READY):
            raise RuntimeError(f"{flag} did not start: {line!r}")
    except BaseException:
        await stop(proc)
        raise
    return proc, line[len(READY):]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Bridge:
    """One ``bridge serve`` process."""

    port: int
    proc: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def bridge_env(database: str, port: int, sim_url: str, workdir: str,
               **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return {**keep, "BRIDGE_DATABASE": database, "BRIDGE_API_KEY": API_KEY,
            "BRIDGE_SECRET_KEY": SECRET_KEY, "BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "BRIDGE_MEDIA_DIR": str(Path(workdir) / "media"),
            "BRIDGE_APIXO_API_KEY": SIM_KEY, "BRIDGE_APIXO_BASE_URL": sim_url,
            "BRIDGE_ALLOW_PRIVATE_TARGETS": "1",  # the receiver is on loopback
            "BRIDGE_LOG_LEVEL": "warning", "BRIDGE_SHUTDOWN_GRACE": "3s", **extra}


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-1500:]


async def start_bridge(env: dict[str, str], port: int, log: Path) -> Bridge:
    import httpx

    with log.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge.cli", "serve", "--port", str(port), env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink,
            preexec_fn=_die_with_parent)
    bridge = Bridge(port, proc)
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=2) as probe:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await probe.get(f"{bridge.url}/readyz")).status_code == 200:
                        return bridge
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"bridge serve on {port} did not start: {_tail(log)}")
                await asyncio.sleep(0.05)
    except BaseException:
        await stop(proc)
        raise


@contextlib.asynccontextmanager
async def bridges(envs: list[dict[str, str]], ports: list[int],
                  workdir: str) -> AsyncIterator[list[Bridge]]:
    started: list[Bridge] = []
    try:
        for env, port in zip(envs, ports, strict=True):
            started.append(await start_bridge(env, port, Path(workdir) / f"serve-{port}.log"))
        yield started
    finally:
        await asyncio.gather(*(stop(bridge.proc) for bridge in started))


# -- parent: databases ------------------------------------------------------------------------
@contextlib.contextmanager
def postgres_database(server: str) -> Iterator[str]:
    """A new database on ``server``, dropped afterwards."""
    import psycopg

    name = "bridge_bench_" + secrets.token_hex(5)
    with psycopg.connect(server, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))
    finally:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def scalar(database: str, sql: str) -> int:
    """One number from the database (SQLite read-only, or PostgreSQL)."""
    if database.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(database, connect_timeout=5) as conn:
            row = conn.execute(sql).fetchone()
    else:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True,
                                                timeout=10)) as conn:
            row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def job_data(index: int) -> dict[str, object]:
    return {"object": "job", "id": f"job_scale{index:09d}", "provider": "apixo",
            "model": MODEL, "status": "succeeded", "progress": 100, "tracking": "callback",
            "request": {"provider": "apixo", "model": MODEL, "mode": "text",
                        "prompt": "A cinematic flyover of a futuristic city at sunrise"},
            "result": {"video_url": f"https://r2.apixo.ai/task_{index}.mp4"},
            "error": None, "sequence": 1}


async def fill_outbox(database: str, receiver: str, count: int, endpoints: list[str],
                      first: int) -> None:
    """``count`` more pending deliveries (events ``first``...) to ``ENDPOINTS`` endpoints at
    the receiver; the endpoints are made the first time (their ids into ``endpoints``)."""
    from bridge.core import new_signing_secret
    from bridge.models import Endpoint, Event, new_id, utcnow
    from bridge.store import open_store

    store = await open_store(database)
    try:
        await store.ensure_tenant("default", new_signing_secret)
        while len(endpoints) < ENDPOINTS:
            endpoint = Endpoint(id=new_id("ep"), tenant="default",
                                url=f"{receiver}/hook/{len(endpoints)}", events=None,
                                description=None, headers={}, secret=new_signing_secret(),
                                created_at=utcnow(), max_concurrency=PER_ENDPOINT)
            await store.create_endpoint(endpoint)
            endpoints.append(endpoint.id)
        for start in range(first, first + count, 500):
            batch = []
            for index in range(start, min(first + count, start + 500)):
                event = Event(id=new_id("evt"), tenant="default", type="job.succeeded",
                              job_id=f"job_scale{index:09d}", created_at=utcnow(),
                              data=job_data(index))
                batch.append(store.add_event(event, endpoint_id=endpoints[index % ENDPOINTS]))
            await asyncio.gather(*batch)
    finally:
        await store.close()


async def fill_jobs(database: str, count: int, first: int) -> list[tuple[str, str]]:
    """``count`` more running apixo jobs (``first``...) waiting for their callback: (job id,
    task id) pairs."""
    from bridge.core import new_signing_secret
    from bridge.models import Job, JobStatus, Tracking, new_id, utcnow
    from bridge.store import open_store

    store = await open_store(database)
    pairs: list[tuple[str, str]] = []
    try:
        await store.ensure_tenant("default", new_signing_secret)
        now = utcnow()
        later = datetime.fromtimestamp(now.timestamp() + 3600, UTC)
        for start in range(first, first + count, 500):
            batch = []
            for index in range(start, min(first + count, start + 500)):
                task_id = f"task_{100_000_000_000 + index}"
                job = Job(id=new_id("job"), tenant="default", provider="apixo", model=MODEL,
                          status=JobStatus.RUNNING, tracking=Tracking.CALLBACK,
                          request={"provider": "apixo", "model": MODEL, "mode": "text",
                                   "prompt": f"bench scale job {index}"},
                          created_at=now, updated_at=now, provider_job_id=task_id,
                          progress=0, submitted_at=now, sequence=2, next_check_at=later)
                batch.append(store.create_job(job, idempotency_window=0))
                pairs.append((job.id, task_id))
            await asyncio.gather(*batch)
    finally:
        await store.close()
    return pairs


# -- parent: measuring ------------------------------------------------------------------------
@dataclass
class Window:
    """CPU seconds and wall time around a measured window."""

    pids: dict[str, list[int]]
    began: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0
    seconds: float = 0.0
    cores: dict[str, float] = field(default_factory=dict)  # over the window, by name

    def __enter__(self) -> Window:
        self.began = time.monotonic()
        self.cpu = self._cpu()
        self.busy = machine_busy_seconds()
        return self

    def _cpu(self) -> dict[str, float]:
        out = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self.pids.items()}
        out["load"] = cpu_seconds()
        return out

    def __exit__(self, *_: object) -> None:
        self.seconds = time.monotonic() - self.began
        after = self._cpu()
        self.cores = {name: (after[name] - self.cpu[name]) / self.seconds for name in after}
        busy = (machine_busy_seconds() - self.busy) / self.seconds
        self.cores["other"] = max(0.0, busy - sum(self.cores.values()))


@dataclass
class Slice:
    done: int
    errors: int
    seconds: float
    cores: dict[str, float]
    failures: Counter[str] = field(default_factory=Counter)  # what each error was


@dataclass
class Row:
    kind: str  # "deliveries" | "callbacks"
    config: tuple[str, int]
    slices: list[Slice] = field(default_factory=list)

    @property
    def rate(self) -> float:
        seconds = sum(s.seconds for s in self.slices)
        return sum(s.done for s in self.slices) / seconds if seconds else 0.0

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.slices)

    @property
    def failures(self) -> Counter[str]:
        return sum((s.failures for s in self.slices), Counter())

    def cores(self, name: str) -> float:
        seconds = sum(s.seconds for s in self.slices)
        return sum(s.cores[name] * s.seconds for s in self.slices) / seconds


@dataclass
class Setup:
    """A configuration's database, ports and what was stored in it."""

    kind: str
    config: tuple[str, int]
    database: str
    ports: list[int]
    pairs: list[tuple[str, str]] = field(default_factory=list)  # callbacks: (job, task)
    next_job: int = 0  # callbacks: the first job not yet called back
    answered: int = 0  # callbacks: 2xx answers, warm-ups included
    endpoints: list[str] = field(default_factory=list)  # deliveries: the endpoints' ids
    stored: int = 0  # deliveries: events stored so far


def analyze(database: str) -> None:
    """Fresh planner statistics, as autovacuum keeps them on a database in use."""
    if database.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(database, autocommit=True, connect_timeout=5) as conn:
            conn.execute("ANALYZE")


async def top_up(setup: Setup, args: argparse.Namespace, receiver: str) -> float:
    """Store what the next slice may use up: ``--deliveries`` pending deliveries, or
    ``--callbacks`` jobs not yet called back. Answers the seconds it took."""
    began = time.monotonic()
    if setup.kind == "deliveries":
        pending = 0 if not setup.endpoints else await asyncio.to_thread(  # else: no tables
            scalar, setup.database, "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'")
        more = max(0, args.deliveries - pending)
        await fill_outbox(setup.database, receiver, more, setup.endpoints, setup.stored)
        setup.stored += more
    else:
        more = max(0, args.callbacks - (len(setup.pairs) - setup.next_job))
        setup.pairs += await fill_jobs(setup.database, more, len(setup.pairs))
    if more and not args.no_analyze:
        await asyncio.to_thread(analyze, setup.database)
    return time.monotonic() - began


async def delivery_slice(setup: Setup, args: argparse.Namespace, envs: list[dict[str, str]],
                         others: dict[str, list[int]], seconds: float) -> Slice:
    query = "SELECT COUNT(*) FROM deliveries WHERE status = 'succeeded'"
    failures = "SELECT COUNT(*) FROM deliveries WHERE status = 'failed' OR attempt > 1"
    failed_before = await asyncio.to_thread(scalar, setup.database, failures)
    async with bridges(envs, setup.ports, args.workdir) as started:
        await asyncio.sleep(args.warmup)
        with Window({"bridges": [b.proc.pid for b in started], **others}) as window:
            before = await asyncio.to_thread(scalar, setup.database, query)
            await asyncio.sleep(seconds)
            after = await asyncio.to_thread(scalar, setup.database, query)
    pending = await asyncio.to_thread(
        scalar, setup.database, "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'")
    if pending == 0:
        raise RuntimeError("the outbox ran dry during a slice: run with more --deliveries")
    failed = await asyncio.to_thread(scalar, setup.database, failures) - failed_before
    return Slice(after - before, failed, window.seconds, window.cores)


Post = Callable[[str, bytes], Awaitable[int]]


async def callback_slice(setup: Setup, args: argparse.Namespace, envs: list[dict[str, str]],
                         others: dict[str, list[int]], seconds: float, post: Post) -> Slice:
    from bridge.signing import Signer

    signer = Signer(SECRET_KEY)
    processes = len(setup.ports)
    async with bridges(envs, setup.ports, args.workdir) as started:
        pids = {"bridges": [b.proc.pid for b in started], **others}
        counts = {"done": 0, "errors": 0}
        failures: Counter[str] = Counter()
        measuring = False
        stop_at = time.monotonic() + args.warmup + seconds

        async def worker() -> None:
            while time.monotonic() < stop_at:
                if setup.next_job >= len(setup.pairs):
                    raise RuntimeError("every job was called back: run with more --callbacks")
                index = setup.next_job
                setup.next_job += 1
                job_id, task_id = setup.pairs[index]
                url = (f"{started[index % processes].url}/callbacks/apixo/"
                       f"{signer.callback_token('apixo', job_id)}")
                try:
                    status = await post(url, callback_body(task_id))
                    ok = 200 <= status < 300
                    failure = f"HTTP {status}"
                except Exception as exc:
                    ok, failure = False, f"{type(exc).__name__}: {exc}"[:120]
                setup.answered += ok
                if not ok:
                    failures[failure] += 1
                if measuring and time.monotonic() < stop_at:
                    counts["done" if ok else "errors"] += 1
                elif not ok:
                    counts["errors"] += 1

        workers = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
        try:
            await asyncio.sleep(args.warmup)
            with Window(pids) as window:
                measuring = True
                await asyncio.sleep(seconds)
            await asyncio.wait_for(asyncio.gather(*workers), timeout=60)
        finally:
            for task in workers:
                task.cancel()
    return Slice(counts["done"], counts["errors"], window.seconds, window.cores, failures)


@contextlib.asynccontextmanager
async def poster(concurrency: int) -> AsyncIterator[Post]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30),
        headers={"content-type": "application/json", "authorization": f"Bearer {API_KEY}"},
    ) as session:
        async def post(url: str, body: bytes) -> int:
            async with session.post(url, data=body) as answer:
                await answer.read()
                return answer.status

        yield post


# -- parent: the hold ----------------------------------------------------------------------------
@dataclass
class Hold:
    jobs: int
    created: int = 0
    create_errors: int = 0
    create_seconds: float = 0.0
    submit_seconds: float = 0.0
    rss_mb: float = 0.0
    settle_seconds: float = 0.0  # from the first job created to none due
    idle_cores: float = 0.0
    idle_seconds: float = 0.0
    idle_status_calls: int = 0
    idle_other: float = 0.0
    in_flight: int = 0  # submitted or running at the simulator
    waiting: int = 0  # queued for a slot under apixo's cap
    error: str = ""  # why the hold could not be measured
    drain_seconds: float = float("inf")
    verified: int = 0
    repeats: int = 0
    invalid: int = 0
    callbacks_failed: int = 0
    callbacks_seconds: float = 0.0
    release_rss_mb: float = 0.0
    drain_cores: dict[str, float] = field(default_factory=dict)
    succeeded: int = 0

    @property
    def drain_rate(self) -> float:
        return self.verified / self.drain_seconds if self.drain_seconds > 0 else 0.0


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def get_json(url: str) -> Any:
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.request("POST" if url.endswith("/release") else "GET", url)
        answer.raise_for_status()
        return answer.json()


async def wait_for(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {seconds:g} s waiting for {what}")
        await asyncio.sleep(0.5)


async def hold(args: argparse.Namespace, sim: tuple[Any, str], receiver: tuple[Any, str],
               post: Post) -> Hold:
    import httpx

    from bridge.providers.apixo import ApixoProvider

    cap = ApixoProvider.max_concurrent or args.hold  # apixo's tasks per key at once
    result = Hold(args.hold)
    sim_proc, sim_url = sim
    receiver_proc, receiver_url = receiver
    port = free_port()
    with postgres_database(args.postgres) as url:
        env = bridge_env(url, port, sim_url, args.workdir)
        async with bridges([env], [port], args.workdir) as (bridge,):
            async with httpx.AsyncClient(base_url=bridge.url, timeout=10, headers={
                    "authorization": f"Bearer {API_KEY}"}) as api:
                answer = await api.post("/v1/endpoints", json={
                    "url": f"{receiver_url}/verify/held", "events": ["job.succeeded"],
                    "max_concurrency": 32})
                answer.raise_for_status()
                async with httpx.AsyncClient(timeout=10) as client:
                    await client.post(f"{receiver_url}/__secret",
                                      content=answer.json()["secret"].encode())
            began = time.monotonic()
            queue = iter(range(args.hold))

            async def create() -> None:
                for index in queue:
                    body = json.dumps({"provider": "apixo", "model": MODEL,
                                       "prompt": f"held job {index}"}).encode()
                    try:
                        status = await post(f"{bridge.url}/v1/jobs", body)
                    except Exception:
                        status = 0
                    if status == 202:
                        result.created += 1
                    else:
                        result.create_errors += 1

            await asyncio.wait_for(asyncio.gather(*(create() for _ in range(32))),
                                   timeout=args.hold / 10 + 120)
            result.create_seconds = time.monotonic() - began

            async def all_submitted() -> bool:
                counts = await get_json(f"{sim_url}/__bench/count")
                return bool(counts["submissions"] >= min(result.created, cap))

            await wait_for(all_submitted, args.hold / 20 + 120,
                           "the held jobs submitted up to apixo's cap")
            result.submit_seconds = time.monotonic() - began

            async def none_due() -> bool:
                # Idle: every job created has been looked at; those waiting for a slot are
                # next due only when one frees (or at the safety net's look, minutes away).
                due = await asyncio.to_thread(
                    scalar, url, "SELECT COUNT(*) FROM jobs WHERE status NOT IN "
                    "('succeeded', 'failed', 'canceled', 'expired') "
                    f"AND next_check_at <= {time.time()}")
                return due == 0

            await wait_for(none_due, args.hold / 20 + 120, "no held job due")
            result.settle_seconds = time.monotonic() - began
            await asyncio.sleep(3.0)  # the last writes and wake-ups settle
            result.in_flight = await asyncio.to_thread(
                scalar, url, "SELECT COUNT(*) FROM jobs WHERE status IN ('submitted', 'running')")
            result.waiting = await asyncio.to_thread(
                scalar, url, "SELECT COUNT(*) FROM jobs WHERE status = 'queued'")
            calls_before = (await get_json(f"{sim_url}/__bench/count"))["status"]
            with Window({"bridge": [bridge.proc.pid]}) as idle:
                await asyncio.sleep(args.idle)
            result.idle_status_calls = (await get_json(f"{sim_url}/__bench/count"))["status"] \
                - calls_before
            result.rss_mb = rss_mb(bridge.proc.pid)
            result.idle_cores = idle.cores["bridge"]
            result.idle_other = idle.cores["other"]
            result.idle_seconds = idle.seconds

            # The release: every task ends at once and calls back.
            pids = {"bridge": [bridge.proc.pid], "sim": [sim_proc.pid],
                    "receiver": [receiver_proc.pid]}
            with Window(pids) as drain:
                released_at = time.time()
                await get_json(f"{sim_url}/__bench/release")

                async def drained() -> bool:
                    stats = await get_json(f"{receiver_url}/__stats")
                    result.release_rss_mb = max(result.release_rss_mb, rss_mb(bridge.proc.pid))
                    return bool(stats["verified"] >= result.created)

                with contextlib.suppress(RuntimeError):
                    await wait_for(drained, args.hold / 50 + 120, "the release to drain")
            result.drain_cores = drain.cores
            stats = await get_json(f"{receiver_url}/__stats")
            sent = await get_json(f"{sim_url}/__bench/count")
            result.verified = stats["verified"]
            result.repeats = stats["repeats"]
            result.invalid = stats["invalid"]
            if stats["last"] is not None:
                result.drain_seconds = stats["last"] - released_at
            result.callbacks_failed = sent["failed"]
            if sent["done"] is not None:
                result.callbacks_seconds = sent["done"] - released_at
            result.succeeded = await asyncio.to_thread(
                scalar, url, "SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'")
    return result


# -- parent: the run ---------------------------------------------------------------------------
def prepare(args: argparse.Namespace, stack: contextlib.ExitStack) -> list[Setup]:
    setups = []
    for kind in ("deliveries", "callbacks"):
        for config in CONFIGS:
            store, processes = config
            if store == "sqlite":
                database = str(Path(args.workdir) / f"{kind}.db")
            else:
                database = stack.enter_context(postgres_database(args.postgres))
            setups.append(Setup(kind, config, database,
                                [free_port() for _ in range(processes)]))
    return setups


async def main_async(args: argparse.Namespace) -> int:
    lifetime = 3600.0
    with tempfile.TemporaryDirectory(prefix="bridge-bench-scale-") as workdir, \
            contextlib.ExitStack() as databases:
        args.workdir = workdir
        receiver = await spawn_child("--serve-receiver", lifetime)
        try:
            sim = await spawn_child("--serve-sim", lifetime)
            try:
                setups = [] if args.only_hold else prepare(args, databases)
                others = {"receiver+sim": [receiver[0].pid, sim[0].pid]}
                rows = {(s.kind, s.config): Row(s.kind, s.config) for s in setups}
                slice_ = args.duration / args.rounds
                async with poster(args.concurrency) as post:
                    for number in range(args.rounds):
                        for setup in setups:
                            filled = await top_up(setup, args, receiver[1])
                            extra = {"BRIDGE_CONFIRM_CALLBACKS": "0"} \
                                if setup.kind == "callbacks" else {}
                            envs = [bridge_env(setup.database, port, sim[1], workdir, **extra)
                                    for port in setup.ports]
                            if setup.kind == "deliveries":
                                done = await delivery_slice(setup, args, envs, others, slice_)
                            else:
                                done = await callback_slice(setup, args, envs, others, slice_,
                                                            post)
                            rows[(setup.kind, setup.config)].slices.append(done)
                            print(f"round {number + 1}/{args.rounds} {setup.kind:<10} "
                                  f"{label(*setup.config):<9} {done.done / done.seconds:>7.0f}/s"
                                  f" (stored beforehand in {filled:.0f} s)", flush=True)
                    stored = {s.config: await asyncio.to_thread(
                        scalar, s.database,
                        "SELECT COUNT(*) FROM events WHERE type = 'job.succeeded'")
                        for s in setups if s.kind == "callbacks"}
                    try:
                        held = await hold(args, sim, receiver, post)
                    except RuntimeError as exc:  # a time limit: reported, rows kept
                        held = Hold(args.hold, error=str(exc))
            finally:
                await stop(sim[0])
        finally:
            await stop(receiver[0])
    return report(args, list(rows.values()), setups, stored, held)


def report(args: argparse.Namespace, rows: list[Row], setups: list[Setup],
           stored: dict[tuple[str, int], int], held: Hold) -> int:
    print()
    print(f"{os.cpu_count()} CPUs; every bridge a `bridge serve` process started fresh for "
          f"each slice; {args.rounds} interleaved slices of {args.duration / args.rounds:g} s "
          f"per row after {args.warmup:g} s of warm-up each; callbacks at concurrency "
          f"{args.concurrency} in all (BRIDGE_CONFIRM_CALLBACKS=0), deliveries to "
          f"{ENDPOINTS} endpoints x {PER_ENDPOINT} in flight per process; PostgreSQL "
          f"statistics {'left to autovacuum' if args.no_analyze else 'refreshed'} after "
          f"each top-up")
    print()
    header = (f"{'row':<11}{'config':<10}{'per s':>8}{'x sqlite':>9}{'x pg1':>7}{'errors':>7}"
              f"   CPU (cores): {'bridges':>7} {'load':>5} {'recv+sim':>8} {'other':>6}")
    print(header)
    print("-" * len(header))
    by = {(row.kind, row.config): row for row in rows}
    for row in rows:
        base = by[(row.kind, ("sqlite", 1))].rate
        pg1 = by[(row.kind, ("pg", 1))].rate
        print(f"{row.kind:<11}{label(*row.config):<10}{row.rate:>8.0f}"
              f"{row.rate / base if base else 0:>8.2f}x{row.rate / pg1 if pg1 else 0:>6.2f}x"
              f"{row.errors:>7}   {'':>13}{row.cores('bridges'):>7.2f} "
              f"{row.cores('load'):>5.2f} {row.cores('receiver+sim'):>8.2f} "
              f"{row.cores('other'):>6.2f}")
    for row in rows:
        if row.failures:
            print(f"{row.kind} {label(*row.config)} failed: "
                  + ", ".join(f"{count} x {what}" for what, count in row.failures.items()))
    print()
    lost_callbacks = 0
    for setup in setups:
        if setup.kind == "callbacks":
            lost = setup.answered - stored[setup.config]
            lost_callbacks += max(0, lost)
            print(f"callbacks {label(*setup.config)}: {setup.answered} answered 2xx (warm-ups "
                  f"included), {stored[setup.config]} job.succeeded events stored")
    print()
    if held.error:
        print(f"hold: not measured: {held.error}")
    print(f"hold: {held.created} apixo jobs created through POST /v1/jobs in "
          f"{held.create_seconds:.0f} s ({held.create_errors} failed); after "
          f"{held.submit_seconds:.0f} s {held.in_flight} submitted and running at the "
          f"simulator (apixo allows 1,000 tasks at once per key) and {held.waiting} queued "
          f"for a slot: {held.in_flight + held.waiting} unfinished; after "
          f"{held.settle_seconds:.0f} s each had been looked at and none was due")
    print(f"  one PostgreSQL process holding them: {held.rss_mb:.0f} MB RSS; "
          f"{held.idle_cores:.3f} cores over {held.idle_seconds:.0f} s idle "
          f"({held.idle_status_calls} status requests at the simulator; the rest of the "
          f"machine {held.idle_other:.2f} cores)")
    print(f"  release (the simulator's tasks end at once and new ones at their submission): "
          f"{held.verified} job.succeeded webhooks verified {held.drain_seconds:.1f} s "
          f"after the release = {held.drain_rate:.0f} jobs/s ({held.repeats} repeats, "
          f"{held.invalid} invalid); the simulator's last callback answered after "
          f"{held.callbacks_seconds:.1f} s ({held.callbacks_failed} given up); "
          f"{held.succeeded} jobs succeeded; peak RSS during the drain "
          f"{held.release_rss_mb:.0f} MB")
    cores = held.drain_cores
    if cores:
        print(f"  CPU during the drain (cores): bridge {cores['bridge']:.2f}, simulator "
              f"{cores['sim']:.2f}, receiver {cores['receiver']:.2f}, load {cores['load']:.2f}, "
              f"other {cores['other']:.2f}")
    print()

    checks = []
    for kind in ("deliveries", "callbacks") if rows else ():
        sqlite_rate = by[(kind, ("sqlite", 1))].rate
        pg1, pg2 = by[(kind, ("pg", 1))].rate, by[(kind, ("pg", 2))].rate
        checks.append((pg1 >= TARGETS["pg1/sqlite"] * sqlite_rate,
                       f"{kind}: pg x1 {pg1:.0f}/s = {pg1 / sqlite_rate:.2f}x sqlite x1 "
                       f"{sqlite_rate:.0f}/s (target >= {TARGETS['pg1/sqlite']}x)"))
        checks.append((pg2 >= TARGETS["pg2/pg1"] * pg1,
                       f"{kind}: pg x2 {pg2:.0f}/s = {pg2 / pg1 if pg1 else 0:.2f}x pg x1 "
                       f"(target >= {TARGETS['pg2/pg1']}x)"))
    measured = not held.error
    checks.append((measured and held.rss_mb <= TARGETS["rss_mb"],
                   f"hold: {held.in_flight + held.waiting} unfinished ({held.in_flight} running "
                   f"at the simulator) in {held.rss_mb:.0f} MB RSS "
                   f"(target <= {TARGETS['rss_mb']:g} MB)"))
    checks.append((measured and held.idle_cores <= TARGETS["idle_cores"],
                   f"hold: {held.idle_cores:.3f} cores idle (target <= "
                   f"{TARGETS['idle_cores']})"))
    checks.append((measured and held.drain_rate >= TARGETS["drain_per_s"],
                   f"release: {held.drain_rate:.0f} jobs/s to the last verified webhook "
                   f"(target >= {TARGETS['drain_per_s']:g})"))
    errors = sum(row.errors for row in rows) + held.create_errors
    lost = lost_callbacks + (held.created - held.verified) + held.invalid
    checks.append((measured and lost == 0 and errors == 0,
                   f"lost: {lost} (callbacks not stored {lost_callbacks}, held jobs without a "
                   f"verified job.succeeded {held.created - held.verified}, invalid "
                   f"{held.invalid}); failed requests or deliveries {errors} (target 0)"))
    for passed, text in checks:
        print(f"{'PASS' if passed else 'MISS'}  {text}")
    print(json.dumps({
        "deliveries": {label(*row.config): round(row.rate) for row in rows
                       if row.kind == "deliveries"},
        "callbacks": {label(*row.config): round(row.rate) for row in rows
                      if row.kind == "callbacks"},
        "hold": {"unfinished": held.in_flight + held.waiting, "running": held.in_flight,
                 "rss_mb": round(held.rss_mb, 1),
                 "idle_cores": round(held.idle_cores, 4),
                 "drain_jobs_per_s": round(held.drain_rate, 1)},
        "lost": lost}))
    ok = all(passed for passed, _ in checks)
    return 0 if ok or args.no_fail else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=os.environ.get(
        "BRIDGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL server where databases may be made (default: "
             "BRIDGE_TEST_POSTGRES or postgresql://postgres@127.0.0.1:5432/test)")
    parser.add_argument("--duration", type=float, default=9.0, help="measured seconds per row")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=64,
                        help="callbacks in flight, all processes together")
    parser.add_argument("--deliveries", type=int, default=50000,
                        help="pending deliveries stored before each slice")
    parser.add_argument("--callbacks", type=int, default=25000,
                        help="jobs waiting for their callback stored before each slice")
    parser.add_argument("--hold", type=int, default=10000, help="jobs held in flight")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measured")
    parser.add_argument("--only-hold", action="store_true", help="skip the rate rows")
    parser.add_argument("--no-analyze", action="store_true",
                        help="leave PostgreSQL's statistics to autovacuum after storing")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even on a miss")
    parser.add_argument("--serve-receiver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-sim", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-lifetime", type=float, default=3600.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.duration, args.rounds, args.concurrency, args.hold, args.idle) <= 0:
        parser.error("--duration, --rounds, --concurrency, --hold and --idle must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_receiver:
        asyncio.run(serve_receiver(args.child_lifetime))
        return 0
    if args.serve_sim:
        asyncio.run(serve_simulator(args.child_lifetime))
        return 0
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
