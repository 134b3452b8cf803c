"""apixo callbacks per second through the bridge's receiver, beside a bare Starlette endpoint.

    python bench/ingest.py [--duration 12] [--rounds 6] [--warmup 1] [--concurrency 32]
                           [--jobs 30000] [--client aiohttp|httpx] [--modes off,on] [--no-fail]

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

Per mode, what a real apixo callback does, once per job: N tasks are created at the simulator
(async mode, finishing at once) and N running apixo jobs naming them are stored in the bridge's
fresh database with ``SQLiteStore.create_job`` before the server starts. Their callback URLs
are signed here with ``bridge.signing.Signer`` and the ``BRIDGE_SECRET_KEY`` given to the
server. Then, at a fixed concurrency, ``--duration`` seconds each (after ``--warmup``
unmeasured seconds at the start of each): ``POST /bare`` and
``POST /callbacks/apixo/{token}``, taking turns in ``--rounds`` slices (bare, bridge, bare,
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
TARGETS = {"off": 0.5, "on": 0.25}  # bridge rate / bare rate, per BRIDGE_CONFIRM_CALLBACKS
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
    from starlette.types import Receive, Scope, Send

    from bridge.simulators import apixo
    from bridge.simulators.base import SimSettings

    sim = apixo.create_app(SimSettings(api_key=SIM_API_KEY, queue_delay=0.0, seed=1))
    counts = {"status": 0}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["path"] == "/__bench/count":
                body = json.dumps(counts).encode()
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
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
    total: int  # requests completed, warm-up included

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

        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
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
    each URL at most once); count the requests that complete inside
    [start + warmup, start + warmup + duration]."""
    server = pids["server"]
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    loop_before = cpu_seconds(server, server)  # the server's main thread: its event loop
    busy_before = machine_busy_seconds()
    start = time.perf_counter()
    window_start = start + warmup
    window_end = window_start + duration
    latencies: list[float] = []
    errors = 0
    samples: list[str] = []
    counter = 0
    total = 0

    async def worker() -> None:
        nonlocal counter, errors, total
        while True:
            began = time.perf_counter()
            if began >= window_end:
                return
            if once and counter >= len(urls):
                raise RuntimeError(f"all {len(urls)} jobs were called back before the end: "
                                   "run again with a larger --jobs")
            url = urls[counter % len(urls)]
            counter += 1
            try:
                status = await post(url, body)
                problem = None if 200 <= status < 300 else f"HTTP {status}"
            except Exception as exc:  # any transport failure is an error, not a crash
                problem = f"{type(exc).__name__}: {exc}"
            ended = time.perf_counter()
            total += 1
            if window_start <= ended <= window_end:
                latencies.append(ended - began)
                if problem is not None:
                    errors += 1
                    if len(samples) < 3:
                        samples.append(problem)

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))),
                           timeout=warmup + duration + 35)
    elapsed = time.perf_counter() - start
    cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / elapsed for name, pid in pids.items()}
    loop_cpu = (cpu_seconds(server, server) - loop_before) / elapsed
    # Whatever else ran on the machine meanwhile (other people's tests, say).
    cpu["other"] = max(0.0, (machine_busy_seconds() - busy_before) / elapsed - sum(cpu.values()))
    cpu["server loop"] = loop_cpu
    cpu["server threads"] = max(0.0, cpu["server"] - loop_cpu)
    return Result(label, len(latencies) - errors, errors, duration, latencies, samples, cpu,
                  total)


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
                  sum(r.total for r in results))


# -- parent: jobs ------------------------------------------------------------------------
async def prepare_jobs(workdir: str, sim_url: str, count: int, concurrency: int
                       ) -> list[tuple[str, str]]:
    """Create ``count`` finished tasks at the simulator and a running apixo job for each in
    the bridge's database (before the server opens it). Returns (job id, task id) pairs."""
    import aiohttp

    from bridge.core import new_signing_secret
    from bridge.models import Job, JobStatus, Tracking, new_id, utcnow
    from bridge.store.sqlite import SQLiteStore

    headers = {"Authorization": f"Bearer {SIM_API_KEY}"}
    tasks: list[str] = []
    async with aiohttp.ClientSession(headers=headers) as session:
        async def create(index: int) -> str:
            body = {"request_type": "async", "input": {
                "mode": "quality", "generationType": "TEXT_2_VIDEO",
                "prompt": f"bench ingest job {index} [sim:duration=0.01]"}}
            async with session.post(f"{sim_url}/api/v1/generateTask/{MODEL}",
                                    json=body) as answer:
                data = await answer.json()
                return str(data["data"]["taskId"])

        for start in range(0, count, concurrency):
            batch = range(start, min(count, start + concurrency))
            tasks += await asyncio.gather(*(create(i) for i in batch))

    store = SQLiteStore(str(Path(workdir) / "bridge.db"))
    await store.open()
    pairs = []
    try:
        await store.ensure_tenant("default", new_signing_secret)
        now = utcnow()
        for index, task_id in enumerate(tasks):
            job = Job(id=new_id("job"), tenant="default", provider="apixo", model=MODEL,
                      status=JobStatus.RUNNING, tracking=Tracking.CALLBACK,
                      request={"provider": "apixo", "model": MODEL, "mode": "text",
                               "prompt": f"bench ingest job {index}"},
                      created_at=now, updated_at=now, provider_job_id=task_id, progress=0,
                      submitted_at=now, sequence=2,
                      next_check_at=datetime.fromtimestamp(now.timestamp() + 3600, UTC))
            await store.create_job(job, idempotency_window=0)
            pairs.append((job.id, task_id))
    finally:
        await store.close()
    return pairs


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
    jobs: int

    @property
    def ratio(self) -> float:
        return self.bridge.rate / self.bare.rate if self.bare.rate else 0.0


async def run_mode(mode: str, sim: Child, args: argparse.Namespace) -> ModeRun:
    from bridge.signing import Signer

    with tempfile.TemporaryDirectory(prefix="bridge-bench-ingest-") as workdir:
        pairs = await prepare_jobs(workdir, sim.url, args.jobs, args.concurrency)
        extra = ["--serve", mode, "--workdir", workdir, "--sim-url", sim.url]
        if args.profile:
            extra += ["--profile", f"{args.profile}.{mode}.prof"]
        server = await spawn(f"server ({mode})", extra, args.child_lifetime)
        try:
            signer = Signer(BRIDGE_SECRET)
            urls = [f"{server.url}/callbacks/apixo/{signer.callback_token('apixo', job_id)}"
                    for job_id, _ in pairs]
            bodies = {url: callback_body(task_id) for url, (_, task_id) in zip(
                urls, pairs, strict=True)}
            body0 = bodies[urls[0]]
            pids = {"server": server.proc.pid, "sim": sim.proc.pid, "client": None}
            async with make_client(args.client, args.concurrency) as post:

                async def post_job(url: str, _: bytes) -> int:
                    return await post(url, bodies[url])

                database = str(Path(workdir) / "bridge.db")
                calls_before = await sim_status_calls(sim.url)
                # Interleaved: bare, bridge, bare, bridge, ... in slices of the measured time,
                # so a change in the machine's speed weighs on both rows alike.
                slice_ = args.duration / args.rounds
                bares: list[Result] = []
                bridges: list[Result] = []
                remaining = list(urls)
                for number in range(args.rounds):
                    warmup = args.warmup if number == 0 else 0.0
                    bares.append(await load(post, "bare", [f"{server.url}/bare"], body0,
                                            concurrency=args.concurrency, warmup=warmup,
                                            duration=slice_, pids=pids))
                    result = await load(post_job, "bridge", remaining, b"",
                                        concurrency=args.concurrency, warmup=warmup,
                                        duration=slice_, pids=pids, once=True)
                    remaining = remaining[result.total:]
                    bridges.append(result)
                bare, bridge = merge(bares), merge(bridges)
                calls = await sim_status_calls(sim.url) - calls_before
                events, succeeded = db_counts(database)
        finally:
            await server.stop()
    return ModeRun(mode, bare, bridge, calls, events, succeeded, len(pairs))


# -- parent: report ----------------------------------------------------------------------
def report(runs: list[ModeRun], args: argparse.Namespace) -> bool:
    ok = True
    print(f"client {args.client}, concurrency {args.concurrency}, {args.jobs} apixo jobs, "
          f"warm-up {args.warmup:g} s, measured {args.duration:g} s per row; "
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
        per = run.status_calls / run.bridge.total if run.bridge.total else 0.0
        print(f"  checked: {run.bridge.total} callbacks sent (warm-up included) to "
              f"{run.bridge.total} of {run.jobs} jobs made {run.status_calls} provider status "
              f"calls ({per:.2f} per callback), {run.succeeded} jobs succeeded and "
              f"{run.events_written} job.succeeded events were stored")
    print()
    for run in runs:
        target = TARGETS[run.mode]
        errors = run.bare.errors + run.bridge.errors
        lost = run.bridge.total - run.events_written  # callbacks answered but not stored
        passed = run.ratio >= target and errors == 0 and lost == 0 and (
            run.succeeded == run.bridge.total)
        ok = ok and passed
        print(f"{'PASS' if passed else 'FAIL'}  confirm {run.mode}: bridge {run.bridge.rate:.0f} "
              f"req/s = {run.ratio:.2f}x bare {run.bare.rate:.0f} req/s "
              f"(target >= {target:g}x), errors {errors} (target 0), callbacks not stored "
              f"{lost} (target 0)")
    return ok


async def main_async(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.child_lifetime is None:
        # Far beyond the planned run, so it only ever ends a process we lost track of.
        args.child_lifetime = 60.0 + 3 * len(modes) * 2 * (args.warmup + args.duration)
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
    parser.add_argument("--jobs", type=int, default=30000,
                        help="apixo jobs to call back about (each finishes once)")
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
