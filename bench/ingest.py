"""apixo callbacks per second through the bridge's receiver, beside a bare Starlette endpoint.

    python bench/ingest.py [--duration 12] [--rounds 6] [--warmup 1] [--concurrency 32]
                           [--jobs 1000]  [--client aiohttp|httpx] [--modes off,on] [--no-fail]

Processes (everything on 127.0.0.1, nothing else touched):

* this process is the load generator only (aiohttp: httpx's client tops out near 150 req/s
  against the bare endpoint here, using a whole core itself; aiohttp gives the higher bare
  rate, and the same client is used for every row);
* a simulator process serves the apixo simulator (``bridge.simulators.apixo``), so that the
  provider's own work is not done on the bridge's event loop (a real provider is remote);
* per mode (``BRIDGE_CONFIRM_CALLBACKS=0`` then ``=1``), a fresh server process runs ONE
  uvicorn server whose app sends ``POST /bare`` to a bare Starlette app (read the body,
  answer ``{"received": true}``) and everything else to ``bridge.app.create_app`` (whose
  lifespan runs), on a fresh SQLite file in a temporary directory.

Per mode, what a real apixo callback does, once per job: tasks are created at the simulator
(async mode, finishing at once, through its ``generateTask`` route in its own process) and a
running apixo job naming each is stored in the bridge's fresh database with
``Store.create_job`` (``--jobs`` before the server starts; before each bridge slice as
many more as twice the fastest rate measured so far would use, so no fixed count has to
cover the run; a slice whose jobs still ran out is void, run again with twice as many).
Their callback URLs are signed here with ``bridge.signing.Signer`` and the
``BRIDGE_SECRET_KEY`` given to the server. Then, at a fixed concurrency, ``--duration``
seconds each (after ``--warmup`` unmeasured seconds at the start of each): ``POST /bare``
and ``POST /callbacks/apixo/{token}``, taking turns in ``--rounds`` slices (bare, bridge, bare,
bridge, ...) so that a change in the machine's speed weighs on both alike (by default six
slices of two seconds: on a shared 2-CPU machine single two-second slices of one run were
seen to range from 0.39x to 0.62x, the bare endpoint alone moving by a third, so a row
needs several), each job's URL exactly once, with the apixo success envelope apixo sends
when a task ends (/bare gets a body of the same size). Each callback takes the job to
``succeeded``: a job row update and a ``job.succeeded`` event in one transaction (and,
confirming, a status call to the simulator first). That it did is checked afterwards (status
calls counted by the simulator, succeeded jobs and event rows read from the SQLite file).
Each ratio compares two numbers from the same server run.

A request counts when it completes inside the measured window; any non-2xx answer or
transport error is an error. The CPU columns are cores used over the row (warm-up included):
the server process (its event-loop thread, where the store also writes, and its other
threads: the store's reader and checkpoints), the
simulator, this load generator, and everything else on the machine (a busy "other" column
means a noisy run). The servers listen on ``bridge.serving.bind()`` sockets.

Child processes are stopped in ``finally`` (stdin closed, then SIGTERM, then SIGKILL), exit by
themselves when this process goes away (stdin EOF), and never outlive a generous cap. Exits
1 when a target is missed or any request failed, unless ``--no-fail``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BRIDGE_API_KEY = "brk_bench_ingest_key"
BRIDGE_SECRET = "bench-ingest-secret-key-0123456789"
SIM_API_KEY = "sim-apixo-bench-key"
MODEL = "veo-3-1"
TARGETS = {"off": 0.4, "on": 0.15}  # bridge rate / bare rate, per BRIDGE_CONFIRM_CALLBACKS
HEADROOM = 2.0  # jobs at hand for a bridge slice: this many times the fastest rate seen
RUN_AGAIN = 2  # times a bridge slice whose jobs ran out is run again (each with twice more)
READY = "READY "
SCRIPT = os.path.abspath(__file__)
PATH_DONE = {
    "off": "token verify (itsdangerous HMAC) + body read (<= 1 MiB) + parse_callback + 1 write "
           "transaction (UPDATE job, INSERT event; the job rows, endpoints and the provider "
           "slot read and woken once per batch of callbacks)",
    "on": "token verify (itsdangerous HMAC) + body read (<= 1 MiB) + 1 job read + 1 provider "
          "status call (GET statusTask on the simulator, by the provider client) + 1 write "
          "transaction (UPDATE job, INSERT event; the job rows, endpoints and the provider "
          "slot read and woken once per batch of callbacks)",
}


# -- child processes ---------------------------------------------------------------------
def _uvicorn_config(app: Any) -> Any:
    import uvicorn

    # Identical for the bare endpoint and the bridge: they share this one server.
    return uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                          timeout_graceful_shutdown=1)


async def _exit_on_eof_or_timeout(server: Any, lifetime: float) -> None:
    """Stop the server when the parent closes our stdin (it went away) or after ``lifetime``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lifetime
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (OSError, ValueError):
        pass  # stdin unusable: rely on the lifetime cap alone
    else:
        with contextlib.suppress(TimeoutError):
            while not reader.at_eof():
                await asyncio.wait_for(reader.read(4096), timeout=deadline - loop.time())
    if not reader.at_eof():
        await asyncio.sleep(max(0.0, deadline - loop.time()))
    server.should_exit = True


async def _run_child(app: Any, sock: Any, lifetime: float, profile: str | None) -> None:
    import uvicorn

    from bridge.serving import url_of

    server = uvicorn.Server(_uvicorn_config(app))
    watcher = asyncio.create_task(_exit_on_eof_or_timeout(server, lifetime))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
            raise RuntimeError("server stopped before it started")
        await asyncio.sleep(0.01)
    print(READY + url_of(sock), flush=True)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        await serving
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def _simulator_app() -> Any:
    """apixo's simulator with two routes of the bench's: ``GET /__bench/count`` (status calls
    seen) and ``POST /__bench/tasks`` (``{"first", "count"}``: that many tasks made through the
    simulator's own ``generateTask`` route in this process; answers their ids). One at a time
    over loopback HTTP it made ~1,200 tasks a second here, slower than the bridge ends them."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.types import Message, Receive, Scope, Send

    from bridge.simulators import apixo
    from bridge.simulators.base import SimSettings

    sim = apixo.create_app(SimSettings(api_key=SIM_API_KEY, queue_delay=0.0, seed=1))
    counts = {"status": 0}
    path = f"/api/v1/generateTask/{MODEL}"
    headers = [(b"authorization", f"Bearer {SIM_API_KEY}".encode()),
               (b"content-type", b"application/json")]

    async def create_task(scope: Scope, index: int) -> str:
        payload = json.dumps({"request_type": "async", "input": {
            "mode": "quality", "generationType": "TEXT_2_VIDEO",
            "prompt": f"bench ingest job {index} [sim:duration=0.01]"}}).encode()
        answer: dict[str, Any] = {"status": 0, "body": b""}

        async def receive() -> Message:
            return {"type": "http.request", "body": payload, "more_body": False}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            else:
                answer["body"] += message.get("body", b"")

        # The bench request's own scope (its host names this server in result URLs).
        host = [(name, value) for name, value in scope["headers"] if name == b"host"]
        await sim({**scope, "method": "POST", "path": path, "raw_path": path.encode(),
                   "query_string": b"", "headers": headers + host}, receive, send)
        if answer["status"] != 200:
            raise RuntimeError(f"generateTask answered {answer['status']}: {answer['body']!r}")
        return str(json.loads(answer["body"])["data"]["taskId"])

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["path"] == "/__bench/count":
                await JSONResponse(counts)(scope, receive, send)
                return
            if scope["path"] == "/__bench/tasks":
                asked = await Request(scope, receive).json()
                first, count = int(asked["first"]), int(asked["count"])
                tasks = [await create_task(scope, i) for i in range(first, first + count)]
                await JSONResponse({"tasks": tasks})(scope, receive, send)
                return
            if scope["path"].startswith("/api/v1/statusTask/"):
                counts["status"] += 1
        await sim(scope, receive, send)

    return app


def _server_app(port_url: str, workdir: str, confirm: bool, sim_url: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.types import Receive, Scope, Send

    from bridge.app import create_app
    from bridge.settings import Settings

    env = {
        "BRIDGE_DATABASE": str(Path(workdir) / "bridge.db"),
        "BRIDGE_MEDIA_DIR": str(Path(workdir) / "media"),
        "BRIDGE_API_KEY": BRIDGE_API_KEY,
        "BRIDGE_SECRET_KEY": BRIDGE_SECRET,
        "BRIDGE_PUBLIC_URL": port_url,
        "BRIDGE_CONFIRM_CALLBACKS": "1" if confirm else "0",
        "BRIDGE_APIXO_API_KEY": SIM_API_KEY,
        "BRIDGE_APIXO_BASE_URL": sim_url,
        "BRIDGE_ALLOW_PRIVATE_TARGETS": "1",  # bench/e2e.py's receiver is on loopback
    }
    bridge_app = create_app(Settings.from_env(env))

    async def bare_handler(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"received": True})

    bare_app = Starlette(routes=[Route("/bare", bare_handler, methods=["POST"])])

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # Lifespan and every other path go to the bridge, so its lifespan opens it.
        if scope["type"] == "http" and scope["path"] == "/bare":
            await bare_app(scope, receive, send)
        else:
            await bridge_app(scope, receive, send)

    return app


def child_main(args: argparse.Namespace) -> None:
    import logging

    from bridge.serving import bind, url_of

    for name in ("bridge", "uvicorn", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    sock = bind()
    if args.serve_sim:
        app = _simulator_app()
    else:
        app = _server_app(url_of(sock), args.workdir, args.serve == "on", args.sim_url)
    asyncio.run(_run_child(app, sock, args.child_lifetime, args.profile))


# -- parent: processes -------------------------------------------------------------------
@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    url: str = ""

    async def stop(self) -> None:
        """Close its stdin (it shuts down by itself), then SIGTERM, then SIGKILL."""
        proc = self.proc
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        for step in ("wait", "terminate", "kill"):
            if proc.returncode is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                if step == "terminate":
                    proc.terminate()
                elif step == "kill":
                    proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=5)


async def spawn(name: str, extra: list[str], lifetime: float) -> Child:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, SCRIPT, *extra, "--child-lifetime", str(lifetime),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    child = Child(name, proc)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        text = line.decode().strip()
        if not text.startswith(READY):
            raise RuntimeError(f"{name} did not start (exit {await proc.wait()}): {text!r}")
        child.url = text[len(READY):]
    except BaseException:
        await child.stop()
        raise
    return child


def cpu_seconds(pid: int | None = None, thread: int | None = None) -> float:
    """User + system CPU seconds of a process, all its threads (``None``: this one), or of
    one of its threads."""
    if pid is None:
        return time.process_time()
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        with open(path) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores; /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# -- parent: load ------------------------------------------------------------------------
@dataclass
class Result:
    label: str
    requests: int
    errors: int
    seconds: float
    latencies: list[float]  # seconds, of the requests counted
    error_samples: list[str]
    cpu: dict[str, float]  # CPU share (1.0 = one core) of each process over the whole load
    total: int  # requests answered 2xx, warm-up included
    elapsed: float = 0.0  # wall seconds of the whole load, warm-up included
    ran_out: bool = False  # once: every URL was used before the end (the slice is void)
    taken: int = 0  # URLs taken, whatever came of them

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


Post = Callable[[str, bytes], Awaitable[int]]


@contextlib.asynccontextmanager
async def make_client(kind: str, concurrency: int) -> Any:
    headers = {"content-type": "application/json"}
    if kind == "aiohttp":
        import aiohttp

        # Idle connections closed after 2 s, before uvicorn's 5 s: between slices, while jobs
        # are made, the server would close them under a POST that is then never retried.
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency,
                                         keepalive_timeout=2.0)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         headers=headers) as session:

            async def post_aiohttp(url: str, body: bytes) -> int:
                async with session.post(url, data=body) as answer:
                    await answer.read()
                    return answer.status

            yield post_aiohttp
    else:
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=30, headers=headers) as client:

            async def post_httpx(url: str, body: bytes) -> int:
                answer = await client.post(url, content=body)
                return answer.status_code

            yield post_httpx


async def load(post: Post, label: str, urls: list[str], body: bytes, *, concurrency: int,
               warmup: float, duration: float, pids: dict[str, int | None],
               once: bool = False) -> Result:
    """POST ``body`` round-robin over ``urls`` from ``concurrency`` workers (with ``once``,
    each URL at most once: when they run out, the load stops and says so); count the
    requests that complete inside [start + warmup, start + warmup + duration]."""
    server = pids["server"]
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    loop_before = cpu_seconds(server, server)  # the server's main thread: its event loop
    busy_before = machine_busy_seconds()
    start = time.perf_counter()
    window_start = start + warmup
    window_end = window_start + duration
    latencies: list[float] = []
    errors = 0  # failed requests, warm-up and tail included
    window_errors = 0
    samples: list[str] = []
    counter = 0
    total = 0
    ran_out = False

    async def worker() -> None:
        nonlocal counter, errors, window_errors, total, ran_out
        while True:
            began = time.perf_counter()
            if began >= window_end:
                return
            if once and counter >= len(urls):
                ran_out = True
                return
            url = urls[counter % len(urls)]
            counter += 1
            try:
                status = await post(url, body)
                problem = None if 200 <= status < 300 else f"HTTP {status}"
            except Exception as exc:  # any transport failure is an error, not a crash
                problem = f"{type(exc).__name__}: {exc}"
            ended = time.perf_counter()
            if problem is None:
                total += 1
            else:
                errors += 1
                if len(samples) < 3:
                    samples.append(problem)
            if window_start <= ended <= window_end:
                latencies.append(ended - began)
                window_errors += problem is not None

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))),
                           timeout=warmup + duration + 35)
    elapsed = time.perf_counter() - start
    cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / elapsed for name, pid in pids.items()}
    loop_cpu = (cpu_seconds(server, server) - loop_before) / elapsed
    # Whatever else ran on the machine meanwhile (other people's tests, say).
    cpu["other"] = max(0.0, (machine_busy_seconds() - busy_before) / elapsed - sum(cpu.values()))
    cpu["server loop"] = loop_cpu
    cpu["server threads"] = max(0.0, cpu["server"] - loop_cpu)
    return Result(label, len(latencies) - window_errors, errors, duration, latencies, samples, cpu,
                  total, elapsed, ran_out, counter)


def merge(results: list[Result]) -> Result:
    """One row of several slices: counts and times added, CPU shares weighted by time."""
    first = results[0]
    weights = [r.seconds for r in results]
    cpu = {name: sum(r.cpu[name] * w for r, w in zip(results, weights, strict=True))
           / sum(weights) for name in first.cpu}
    return Result(first.label, sum(r.requests for r in results),
                  sum(r.errors for r in results), sum(weights),
                  [x for r in results for x in r.latencies],
                  [x for r in results for x in r.error_samples][:3], cpu,
                  sum(r.total for r in results), sum(r.elapsed for r in results))


# -- parent: jobs ------------------------------------------------------------------------
class JobSupply:
    """Running apixo jobs to call back about, made as a run needs them: per job, a task at
    the simulator (finishing at once) and a running job naming it in the bridge's database,
    written with the store's public ``create_job``, ``batch`` at a time so that their writes
    share transactions. SQLite lets this process write while the server has the file open."""

    def __init__(self, workdir: str, sim_url: str, batch: int = 1000) -> None:
        self.database = str(Path(workdir) / "bridge.db")
        self.sim_url = sim_url
        self.batch = max(1, batch)
        self.made = 0
        self.seconds = 0.0  # spent making them
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._store: Any = None

    async def __aenter__(self) -> JobSupply:
        import httpx

        from bridge.core import new_signing_secret

        async with contextlib.AsyncExitStack() as stack:
            self._client = await stack.enter_async_context(httpx.AsyncClient(timeout=60))
            from bridge.store import open_store

            store = await open_store(self.database)
            stack.push_async_callback(store.close)
            await store.ensure_tenant("default", new_signing_secret)
            self._store = store
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def make(self, count: int) -> list[tuple[str, str]]:
        """``count`` more jobs; returns their (job id, task id) pairs."""
        from bridge.models import Job, JobStatus, Tracking, new_id, utcnow

        began = time.perf_counter()
        pairs: list[tuple[str, str]] = []
        while len(pairs) < count:
            size = min(self.batch, count - len(pairs))
            answer = await self._client.post(f"{self.sim_url}/__bench/tasks",
                                             json={"first": self.made, "count": size})
            answer.raise_for_status()
            now = utcnow()
            later = datetime.fromtimestamp(now.timestamp() + 3600, UTC)
            jobs = [Job(id=new_id("job"), tenant="default", provider="apixo", model=MODEL,
                        status=JobStatus.RUNNING, tracking=Tracking.CALLBACK,
                        request={"provider": "apixo", "model": MODEL, "mode": "text",
                                 "prompt": f"bench ingest job {self.made + index}"},
                        created_at=now, updated_at=now, provider_job_id=str(task_id),
                        progress=0, submitted_at=now, sequence=2, next_check_at=later)
                    for index, task_id in enumerate(answer.json()["tasks"])]
            await asyncio.gather(*(self._store.create_job(job, idempotency_window=0)
                                   for job in jobs))
            self.made += size
            pairs += [(job.id, str(job.provider_job_id)) for job in jobs]
        self.seconds += time.perf_counter() - began
        return pairs


async def prepare_jobs(workdir: str, sim_url: str, count: int, batch: int = 1000
                       ) -> list[tuple[str, str]]:
    """Create ``count`` finished tasks at the simulator and a running apixo job for each in
    the bridge's database (before the server opens it). Returns (job id, task id) pairs."""
    async with JobSupply(workdir, sim_url, batch) as supply:
        return await supply.make(count)


def callback_body(task_id: str) -> bytes:
    """What apixo POSTs when a task ends: the status envelope of a successful task."""
    now_ms = int(time.time() * 1000)
    return json.dumps({"code": 200, "message": "success", "data": {
        "taskId": task_id, "state": "success",
        "resultJson": json.dumps({"resultUrls": [f"https://r2.apixo.ai/{task_id}.mp4"]}),
        "createTime": now_ms - 120_000, "completeTime": now_ms, "costTime": 120_000}}).encode()


def db_counts(path: str) -> tuple[int, int]:
    """(job.succeeded event rows, succeeded jobs) in the bench database, read-only."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        events = conn.execute(
            "SELECT COUNT(*) FROM events WHERE type = 'job.succeeded'").fetchone()[0]
        done = conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0]
    return int(events), int(done)


async def sim_status_calls(sim_url: str) -> int:
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        return int((await client.get(f"{sim_url}/__bench/count")).json()["status"])


# -- parent: one mode --------------------------------------------------------------------
@dataclass
class ModeRun:
    mode: str
    bare: Result
    bridge: Result
    status_calls: int
    events_written: int  # job.succeeded events
    succeeded: int  # jobs in state succeeded
    jobs: int  # jobs made
    making: float  # seconds spent making them
    sent: int  # callbacks sent: warm-up and any slice run again included
    void: int  # bridge slices run again: their jobs ran out before their end

    @property
    def ratio(self) -> float:
        return self.bridge.rate / self.bare.rate if self.bare.rate else 0.0


def jobs_needed(fastest: float, seconds: float, concurrency: int) -> int:
    """Jobs to have at hand for a bridge slice of ``seconds``: what the fastest slice seen so
    far (bare or bridge, req/s over its wall time) would use, twice over."""
    return int(HEADROOM * fastest * seconds) + 2 * concurrency


async def run_mode(mode: str, sim: Child, args: argparse.Namespace) -> ModeRun:
    from bridge.signing import Signer

    with tempfile.TemporaryDirectory(prefix="bridge-bench-ingest-") as workdir:
        async with contextlib.AsyncExitStack() as stack:
            supply = await stack.enter_async_context(JobSupply(workdir, sim.url))
            first = await supply.make(args.jobs)  # before the server opens the database
            extra = ["--serve", mode, "--workdir", workdir, "--sim-url", sim.url]
            if args.profile:
                extra += ["--profile", f"{args.profile}.{mode}.prof"]
            server = await spawn(f"server ({mode})", extra, args.child_lifetime)
            stack.push_async_callback(server.stop)
            signer = Signer(BRIDGE_SECRET)
            bodies: dict[str, bytes] = {}
            remaining: list[str] = []  # callback URLs of the jobs not called back yet

            def add(pairs: list[tuple[str, str]]) -> None:
                for job_id, task_id in pairs:
                    url = f"{server.url}/callbacks/apixo/{signer.callback_token('apixo', job_id)}"
                    bodies[url] = callback_body(task_id)
                    remaining.append(url)

            add(first)
            body0 = bodies[remaining[0]]
            pids = {"server": server.proc.pid, "sim": sim.proc.pid, "client": None}
            post = await stack.enter_async_context(make_client(args.client, args.concurrency))

            async def post_job(url: str, _: bytes) -> int:
                return await post(url, bodies[url])

            calls_before = await sim_status_calls(sim.url)
            # Interleaved: bare, bridge, bare, bridge, ... in slices of the measured time, so a
            # change in the machine's speed weighs on both rows alike. Before each bridge slice,
            # jobs are made for it from the rates measured so far (the first bare slice's first).
            slice_ = args.duration / args.rounds
            bares: list[Result] = []
            bridges: list[Result] = []
            fastest = 0.0
            sent = void = 0
            for number in range(args.rounds):
                warmup = args.warmup if number == 0 else 0.0
                bare_slice = await load(post, "bare", [f"{server.url}/bare"], body0,
                                        concurrency=args.concurrency, warmup=warmup,
                                        duration=slice_, pids=pids)
                bares.append(bare_slice)
                fastest = max(fastest, bare_slice.total / bare_slice.elapsed)
                for attempt in range(RUN_AGAIN + 1):
                    need = jobs_needed(fastest, warmup + slice_, args.concurrency) << attempt
                    if len(remaining) < need:
                        add(await supply.make(need - len(remaining)))
                    result = await load(post_job, "bridge", remaining, b"",
                                        concurrency=args.concurrency, warmup=warmup,
                                        duration=slice_, pids=pids, once=True)
                    del remaining[:result.taken]
                    sent += result.total
                    fastest = max(fastest, result.total / result.elapsed)
                    if not result.ran_out:
                        break
                    void += 1
                    # Void: its jobs ran out before its end; again with twice as many at hand.
                else:
                    raise RuntimeError(f"bridge slice {number + 1} ran out of jobs "
                                       f"{RUN_AGAIN + 1} times")
                bridges.append(result)
            bare, bridge = merge(bares), merge(bridges)
            calls = await sim_status_calls(sim.url) - calls_before
            await stack.aclose()  # the server stops and the bench's store closes: counts final
            events, succeeded = db_counts(supply.database)
    return ModeRun(mode, bare, bridge, calls, events, succeeded, supply.made,
                   supply.seconds, sent, void)


# -- parent: report ----------------------------------------------------------------------
def report(runs: list[ModeRun], args: argparse.Namespace) -> bool:
    ok = True
    print(f"client {args.client}, concurrency {args.concurrency}, apixo jobs made as the rates "
          f"need, warm-up {args.warmup:g} s, measured {args.duration:g} s per row; "
          f"server and apixo simulator in their own processes; {os.cpu_count()} CPUs")
    print()
    header = (f"{'confirm':<8} {'endpoint':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'requests':>9} {'errors':>6} {'x bare':>7}   CPU (cores): "
              f"{'server':>6} (loop {'thr':>4}) {'sim':>5} {'client':>6} {'other':>5}")
    print(header)
    print("-" * len(header))
    for run in runs:
        for result in (run.bare, run.bridge):
            ratio = f"{result.rate / run.bare.rate:.2f}x" if run.bare.rate else "-"
            print(f"{run.mode:<8} {result.label:<8} {result.rate:>9.0f} {result.pct(0.5):>8.1f} "
                  f"{result.pct(0.99):>8.1f} {result.requests:>9} {result.errors:>6} {ratio:>7}"
                  f"{'':>16}{result.cpu['server']:>6.2f} ({result.cpu['server loop']:>4.2f} "
                  f"{result.cpu['server threads']:>4.2f}) {result.cpu['sim']:>5.2f} "
                  f"{result.cpu['client']:>6.2f} {result.cpu['other']:>5.2f}")
            for sample in result.error_samples:
                print(f"{'':<17}error: {sample}")
    print()
    for run in runs:
        print(f"confirm {run.mode}: each callback did: {PATH_DONE[run.mode]}")
        per = run.status_calls / run.sent if run.sent else 0.0
        print(f"  jobs: {run.jobs} made ({run.making:.1f} s, before the server started and "
              f"between slices), {run.sent} of them called back and answered 2xx "
              f"(warm-up included); "
              f"{run.void} bridge slices void (jobs ran out) and run again")
        print(f"  checked: the {run.sent} callbacks made {run.status_calls} provider status "
              f"calls ({per:.2f} per callback), {run.succeeded} jobs succeeded and "
              f"{run.events_written} job.succeeded events were stored")
    print()
    for run in runs:
        target = TARGETS[run.mode]
        errors = run.bare.errors + run.bridge.errors
        lost = run.sent - run.events_written  # callbacks answered but not stored
        passed = run.ratio >= target and errors == 0 and lost == 0 and (
            run.succeeded == run.sent)
        ok = ok and passed
        print(f"{'PASS' if passed else 'FAIL'}  confirm {run.mode}: bridge {run.bridge.rate:.0f} "
              f"req/s = {run.ratio:.2f}x bare {run.bare.rate:.0f} req/s "
              f"(target >= {target:g}x), errors {errors} (target 0), callbacks not stored "
              f"{lost} (target 0)")
    return ok


async def main_async(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.child_lifetime is None:
        # Far beyond the planned run (jobs made included), so it only ever ends a process
        # we lost track of.
        args.child_lifetime = 300.0 + 4 * len(modes) * 2 * (args.warmup + args.duration)
    sim = await spawn("apixo simulator", ["--serve-sim"], args.child_lifetime)
    try:
        runs = [await run_mode(mode, sim, args) for mode in modes]
    finally:
        await sim.stop()
    ok = report(runs, args)
    if not ok and not args.no_fail:
        return 1
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=12.0, help="measured seconds per row")
    parser.add_argument("--rounds", type=int, default=6,
                        help="slices each row's time is cut into, bare and bridge taking turns")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=1000,
                        help="apixo jobs made before the server starts; more are made before "
                             "each bridge slice, as the rates measured so far need")
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp")
    parser.add_argument("--modes", default="off,on",
                        help="BRIDGE_CONFIRM_CALLBACKS settings to run, of off,on")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even on a miss")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="cProfile the server process to PREFIX.{off,on}.prof")
    # Internal: the child processes.
    parser.add_argument("--serve", choices=("off", "on"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-sim", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--sim-url", help=argparse.SUPPRESS)
    parser.add_argument("--child-lifetime", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.concurrency < 1 or args.jobs < 1:
        parser.error("--duration, --concurrency and --jobs must be positive")
    if set(m.strip() for m in args.modes.split(",") if m.strip()) - set(TARGETS):
        parser.error("--modes takes off, on or off,on")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve or args.serve_sim:
        child_main(args)
        return 0
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
