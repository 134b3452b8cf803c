"""Chaos: three ``bridge serve`` processes on one PostgreSQL database, a random one SIGKILLed
every few seconds and started again, while 1,000 jobs run across the four simulators and
their webhooks go to a healthy endpoint, a flaky one (30 % of attempts answer 500) and a slow
one (answers after 2 s). Afterwards nothing is lost, sent under two ids, submitted twice,
left unfinished, leased or pending.

The processes run with short leases (``tests.serve``: a job's 10 s, a delivery's 5 s, instead
of the service's 120 s and 30 s): what a killed process held comes back when they lapse.

The simulators and receivers run on this process's event loop; how much CPU it used and how
late its loop ran are printed with the counts, to show whether it held the others back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from bridge.serving import serve_in_background
from bridge.simulators import FACTORIES, venice
from bridge.simulators.base import SimSettings
from tests import serve
from tests.conftest import Receiver, Sims
from tests.postgres import new_database
from tests.test_crash import free_port

KEY = "brk_chaos_test_key"
JOBS = 1000
PROCESSES = 3
CHAOS_SECONDS = 45.0  # processes are killed during this long from the start
KILL_EVERY = (3.0, 6.0)  # seconds between kills, drawn uniformly
SETTLE_SECONDS = 90.0  # after the chaos: a lease (10 s) lapses, its work is done again
CREATE_WORKERS = 16
TERMINAL = ("succeeded", "failed", "canceled", "expired")
TERMINAL_TYPES = {f"job.{status}" for status in TERMINAL}
SEED = 20260
PROVIDERS = ("apixo", "airforce", "infrai", "venice")
BODIES: dict[str, dict[str, Any]] = {
    "apixo": {"provider": "apixo", "model": "veo-3-1"},
    "airforce": {"provider": "airforce", "model": "wan-2.6"},
    "infrai": {"provider": "infrai", "duration_seconds": 5},
    "venice": {"provider": "venice", "model": "seedance-2-0-text-to-video",
               "duration_seconds": 5, "resolution": "720p"},
}


def job_body(index: int) -> dict[str, Any]:
    """Job ``index``: providers in turn, one in 25 failing at its provider; the prompt
    names the job, so a simulator's tasks can be counted per job."""
    provider = PROVIDERS[index % len(PROVIDERS)]
    # Venice answers a generic failure with a 500, which the bridge takes for an outage and
    # follows for minutes: its failures here are content-policy ones (a final 422).
    failure = "[sim:violation]" if provider == "venice" else "[sim:fail]"
    marker = failure if index % 25 == 7 else ""
    return {**BODIES[provider], "prompt": f"chaos job {index} [sim:duration=0.5]{marker}"}


# -- the processes -----------------------------------------------------------------------------
@dataclass
class Node:
    """One ``bridge serve`` (``tests.serve``) on a fixed port, started again on the same port
    after a kill."""

    name: str
    port: int
    env: dict[str, str]
    log: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        with self.log.open("ab") as sink:
            self.process = await asyncio.create_subprocess_exec(
                *serve.COMMAND, "--port", str(self.port), env=self.env, stdout=sink,
                stderr=sink, cwd=serve.ROOT)
        self.starts += 1
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=2) as probe:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await probe.get(f"{self.url}/readyz")).status_code == 200:
                        return
                assert self.process.returncode is None, f"{self.name} exited: {self.tail()}"
                assert time.monotonic() < deadline, f"{self.name} did not start: {self.tail()}"
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            await asyncio.wait_for(self.process.wait(), 10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


@contextlib.asynccontextmanager
async def simulators() -> AsyncIterator[Sims]:
    """The four simulators, jobs of 0.5 s; Venice's request limits (40 queue and 120
    retrieve requests a minute per key) lifted, or its quarter of the jobs would take
    minutes to queue."""
    settings = {name: SimSettings(api_key=f"sim-{name}-key", duration=(0.3, 0.6),
                                  queue_delay=0.05, seed=SEED) for name in FACTORIES}
    apps = {name: make(settings[name]) for name, make in FACTORIES.items()}
    apps["venice"] = venice.create_app(settings["venice"], queue_rpm=100_000,
                                       retrieve_rpm=100_000)
    async with contextlib.AsyncExitStack() as stack:
        urls = {name: await stack.enter_async_context(serve_in_background(app))
                for name, app in apps.items()}
        yield Sims(apps, urls)


@dataclass
class Target:
    """A webhook endpoint's receiver and what it answered."""

    receiver: Receiver
    answers: list[int] | None = None  # the status of its i-th POST, when drawn beforehand

    def answered(self, number: int) -> int:
        return self.answers[number] if self.answers is not None else self.receiver.default[0]


@contextlib.asynccontextmanager
async def receivers() -> AsyncIterator[dict[str, Target]]:
    rng = random.Random(SEED)
    flaky = [500 if rng.random() < 0.3 else 200 for _ in range(50_000)]
    made = {"healthy": Target(Receiver()), "flaky": Target(Receiver(), flaky),
            "slow": Target(Receiver())}
    made["flaky"].receiver.script = [(status, {}, 0.0) for status in flaky]
    made["slow"].receiver.default = (200, {}, 2.0)
    async with contextlib.AsyncExitStack() as stack:
        for target in made.values():
            target.receiver.url = await stack.enter_async_context(
                serve_in_background(target.receiver.app))
        yield made


class LoopLag:
    """How late this process's event loop runs a 50 ms sleep: a busy loop here (simulators,
    receivers, the test's own requests) would slow everything it serves."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.cores = 0.0  # CPU this process used during the chaos, in cores
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(0.05)
            self.lags.append(time.monotonic() - began - 0.05)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._watch())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def summary(self) -> str:
        if not self.lags:
            return "no samples"
        ordered = sorted(self.lags)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        return (f"{self.cores:.2f} cores during the chaos; a 50 ms sleep late by median "
                f"{statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
                f"worst {ordered[-1] * 1000:.0f} ms over {len(ordered)} samples")


# -- the load and the chaos --------------------------------------------------------------------
@dataclass
class Created:
    ids: dict[int, str] = field(default_factory=dict)  # job index -> job id
    retries: int = 0
    replays: int = 0  # answered 200: the Idempotency-Key found the job a lost answer made
    seconds: float = 0.0  # from the first request to the last answer


async def create_jobs(nodes: list[Node], created: Created, deadline: float) -> None:
    """POST the jobs to live processes at random, each with an Idempotency-Key, again (at
    another process, maybe) when a process dies under the request."""
    queue = list(range(JOBS))
    rng = random.Random(SEED + 1)

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            index = queue.pop(0)
            while True:
                assert time.monotonic() < deadline, f"job {index} could not be created"
                alive = [node for node in nodes if node.alive] or nodes
                node = rng.choice(alive)
                try:
                    answer = await client.post(
                        f"{node.url}/v1/jobs", json=job_body(index),
                        headers={"Idempotency-Key": f"chaos-{index}"})
                except httpx.TransportError:
                    answer = None
                if answer is not None and answer.status_code in (200, 202):
                    job_id = answer.json()["id"]
                    created.replays += answer.status_code == 200
                    assert created.ids.setdefault(index, job_id) == job_id
                    break
                assert answer is None or answer.status_code == 503, answer.text
                created.retries += 1
                await asyncio.sleep(0.2)
    headers = {"Authorization": f"Bearer {KEY}"}
    began = time.monotonic()
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        await asyncio.gather(*(worker(client) for _ in range(CREATE_WORKERS)))
    created.seconds = time.monotonic() - began


async def chaos(nodes: list[Node], until: float, kills: list[str]) -> None:
    """SIGKILL a random process every few seconds and start it again at once."""
    rng = random.Random(SEED + 2)
    while True:
        await asyncio.sleep(rng.uniform(*KILL_EVERY))
        if time.monotonic() >= until:
            return
        node = rng.choice(nodes)
        await node.kill()
        kills.append(node.name)
        await node.start()


# -- the database, read directly -------------------------------------------------------------
def read_database(url: str) -> dict[str, Any]:
    import psycopg

    now = time.time()
    with psycopg.connect(url, connect_timeout=5) as conn:
        def scalar(sql: str, *params: Any) -> int:
            row = conn.execute(sql, params).fetchone()
            assert row is not None
            return int(row[0])

        return {
            "jobs": scalar("SELECT COUNT(*) FROM jobs"),
            "unfinished": scalar("SELECT COUNT(*) FROM jobs WHERE status <> ALL(%s)",
                                 list(TERMINAL)),
            "pending": scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'"),
            "jobs_leased": scalar("SELECT COUNT(*) FROM jobs WHERE lease_until > %s", now),
            "deliveries_leased": scalar(
                "SELECT COUNT(*) FROM deliveries WHERE lease_until > %s", now),
            "statuses": dict(conn.execute(
                "SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()),
            "errors": dict(conn.execute(
                "SELECT error::json->>'code', COUNT(*) FROM jobs WHERE error IS NOT NULL "
                "GROUP BY 1").fetchall()),
            "terminal_events": [tuple(row) for row in conn.execute(
                "SELECT id, job_id FROM events WHERE type = ANY(%s)",
                (sorted(TERMINAL_TYPES),)).fetchall()],
            "tasks": [tuple(row) for row in conn.execute(
                "SELECT id, provider, provider_job_id, request::json->>'prompt' FROM jobs "
                "WHERE provider_job_id IS NOT NULL").fetchall()],
            "stuck": [tuple(row) for row in conn.execute(
                "SELECT id, provider, status, next_check_at - %s, lease_until - %s, "
                "%s - submitted_at, check_count, error_streak FROM jobs "
                "WHERE status <> ALL(%s) ORDER BY seq LIMIT 20",
                (now, now, now, list(TERMINAL))).fetchall()],
        }


def settled(url: str) -> bool:
    counts = read_database(url)
    return bool(counts["jobs"] == JOBS and counts["unfinished"] == 0 and counts["pending"] == 0
            and counts["jobs_leased"] == 0 and counts["deliveries_leased"] == 0)


def task_prompts(sims: Sims) -> dict[str, dict[str, str]]:
    """Each simulator's tasks: task id -> the prompt it was asked for (naming the job)."""
    jobs = {name: app.state.jobs for name, app in sims.apps.items()}
    return {
        "apixo": {key: task.sim.body["input"]["prompt"] for key, task in jobs["apixo"].items()},
        "airforce": {key: task.sim.body["prompt"] for key, task in jobs["airforce"].items()},
        "infrai": {key: job.sim.body["prompt"] for key, job in jobs["infrai"].items()},
        "venice": {key: job.clock.body["prompt"] for key, job in jobs["venice"].items()},
    }


# -- the test ----------------------------------------------------------------------------------
# Slow: a thousand jobs through three processes take about a minute of both cores.
@pytest.mark.slow
async def test_three_processes_killed_at_random_lose_double_and_leave_nothing(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    with new_database() as url:
        async with simulators() as sims, receivers() as endpoints:
            keep = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
            ports = [free_port() for _ in range(PROCESSES)]
            nodes = []
            for number, port in enumerate(ports):
                env = {
                    **keep, **sims.env(),
                    "BRIDGE_DATABASE": url,
                    "BRIDGE_MEDIA_DIR": str(tmp_path / "media"),  # shared, as on one volume
                    "BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
                    "BRIDGE_API_KEY": KEY,
                    "BRIDGE_SECRET_KEY": "chaos-test-secret-key-0123456789",
                    "BRIDGE_ALLOW_PRIVATE_TARGETS": "1",
                    "BRIDGE_RETRY_SCHEDULE": ",".join(["500ms"] * 30),
                    "BRIDGE_LOG_LEVEL": "warning",
                }
                nodes.append(Node(f"bridge-{number}", port, env, tmp_path / f"bridge-{number}.log"))
            try:
                await asyncio.gather(*(node.start() for node in nodes))
                secrets = await register_endpoints(nodes[0], endpoints)
                kills: list[str] = []
                created = Created()
                with LoopLag() as lag:
                    chaos_began, cpu_began = time.monotonic(), time.process_time()
                    await asyncio.gather(
                        create_jobs(nodes, created, deadline=chaos_began + CHAOS_SECONDS + 60),
                        chaos(nodes, chaos_began + CHAOS_SECONDS, kills))
                    chaos_ended = time.monotonic()
                    lag.cores = (time.process_time() - cpu_began) / (chaos_ended - chaos_began)
                    deadline = chaos_ended + SETTLE_SECONDS
                    while not await asyncio.to_thread(settled, url):
                        if time.monotonic() > deadline:
                            break
                        await asyncio.sleep(1.0)
                    settled_at = time.monotonic()
            finally:
                for node in nodes:
                    with contextlib.suppress(Exception):
                        await node.kill()
            counts = await asyncio.to_thread(read_database, url)
            tasks = task_prompts(sims)
            submissions = {name: app.state.submissions for name, app in sims.apps.items()}
        check(counts, tasks, submissions, endpoints, secrets, created, kills, lag,
              times=(chaos_began - started, chaos_ended - chaos_began,
                     settled_at - chaos_ended))


async def register_endpoints(node: Node, endpoints: dict[str, Target]) -> dict[str, str]:
    """The three endpoints; the slow one wants only the terminal events. Answers their
    secrets by name."""
    wants: dict[str, dict[str, Any]] = {
        "healthy": {},
        "flaky": {},
        # 2 s an answer: as many in flight as an endpoint may have, so that it keeps up.
        "slow": {"events": sorted(TERMINAL_TYPES), "max_concurrency": 32},
    }
    secrets = {}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as api:
        for name, target in endpoints.items():
            answer = await api.post(f"{node.url}/v1/endpoints",
                                    json={"url": f"{target.receiver.url}/{name}",
                                          **wants[name]})
            assert answer.status_code == 201, answer.text
            secrets[name] = answer.json()["secret"]
    return secrets


def check(counts: dict[str, Any], tasks: dict[str, dict[str, str]], submissions: dict[str, int],
          endpoints: dict[str, Target], secrets: dict[str, str], created: Created,
          kills: list[str], lag: LoopLag, times: tuple[float, float, float]) -> None:
    terminal = {event_id: job_id for event_id, job_id in counts["terminal_events"]}
    print(f"\nchaos: {len(kills)} SIGKILLs in {times[1]:.0f} s ({dict(Counter(kills))}); "
          f"settled {times[2]:.0f} s later; start-up {times[0]:.0f} s")
    print(f"jobs: {len(created.ids)} created in {created.seconds:.0f} s ({created.retries} "
          f"requests again after a failure, {created.replays} answered by their "
          f"Idempotency-Key), {counts['jobs']} stored, statuses {counts['statuses']}, "
          f"errors {counts['errors']}")
    print(f"terminal events: {len(terminal)} for {len(set(terminal.values()))} jobs")
    print(f"left behind: {counts['unfinished']} jobs unfinished, {counts['pending']} "
          f"deliveries pending, {counts['jobs_leased']} jobs and "
          f"{counts['deliveries_leased']} deliveries leased")
    per_job = {name: Counter(prompt.split(" [sim:")[0] for prompt in prompts.values())
               for name, prompts in tasks.items()}
    doubles = {name: sum(n > 1 for n in counted.values()) for name, counted in per_job.items()}
    # The task each job recorded is the one the simulator made for that job's prompt.
    mismatched = [job_id for job_id, provider, task_id, prompt in counts["tasks"]
                  if tasks[provider].get(task_id) != prompt]
    for stuck in counts["stuck"]:
        print("unfinished (id, provider, status, due in, leased for, submitted ago, checks, "
              "errors):", stuck)
    print(f"simulators: submissions {submissions}, tasks per job above 1: {doubles}; "
          f"{len(counts['tasks'])} jobs name a task, {len(mismatched)} of them another "
          f"job's or none; {sum(submissions.values()) - len(counts['tasks'])} tasks no job "
          f"names (their submission's answer was lost with a killed process)")
    print(f"the test process's event loop (simulators, receivers, load): {lag.summary()}")

    problems = []
    for name, target in endpoints.items():
        receiver = target.receiver
        ids_by_event: dict[str, set[str]] = defaultdict(set)
        reached: set[str] = set()
        first_sequences: dict[str, list[int]] = defaultdict(list)
        seen: set[str] = set()
        for number, got in enumerate(receiver.received):
            payload = Webhook(secrets[name]).verify(got.body, got.headers)
            ids_by_event[payload["id"]].add(got.headers["webhook-id"])
            if target.answered(number) < 300:
                reached.add(payload["id"])
            if payload["id"] not in seen:
                seen.add(payload["id"])
                first_sequences[payload["data"]["id"]].append(payload["data"]["sequence"])
        missing = set(terminal) - reached
        two_ids = sum(len(ids) > 1 for ids in ids_by_event.values())
        out_of_order = sum(seqs != sorted(seqs) for seqs in first_sequences.values())
        repeats = len(receiver.received) - len(ids_by_event)
        print(f"endpoint {name}: {len(receiver.received)} webhooks verified, "
              f"{len(ids_by_event)} events ({repeats} sent again), terminal events reached "
              f"{len(set(terminal) & reached)} of {len(terminal)}, events under two ids "
              f"{two_ids}, jobs whose events came out of order {out_of_order}")
        if missing:
            problems.append(f"{name}: {len(missing)} terminal events never reached it")
        if two_ids:
            problems.append(f"{name}: {two_ids} events arrived under more than one webhook-id")
        if out_of_order:
            problems.append(f"{name}: {out_of_order} jobs' events arrived out of order")

    assert len(created.ids) == JOBS
    assert counts["jobs"] == JOBS, "a retried request made a second job"
    assert len(set(created.ids.values())) == JOBS
    assert counts["unfinished"] == 0, "jobs not in a terminal state"
    assert len(set(terminal.values())) == JOBS == len(terminal), "not one terminal event a job"
    assert counts["pending"] == 0, "deliveries still pending"
    assert counts["jobs_leased"] == 0 and counts["deliveries_leased"] == 0, "leases left"
    assert not problems, problems
    for name, counted in per_job.items():
        assert all(n == 1 for n in counted.values()), f"{name} saw a job submitted twice"
        assert sum(counted.values()) == submissions[name]
    assert sum(submissions.values()) <= JOBS
    assert not mismatched, f"jobs following another job's task, or none: {mismatched[:5]}"
