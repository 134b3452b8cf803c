"""How long a healthy tenant's deliveries wait while other tenants' endpoints all hang.

    python bench/fairness.py [--hanging 0,1,2,5] [--deliveries 100] [--interval 0.02]
                             [--timeout 3] [--database sqlite|postgresql://...] [--no-fail]

Everything on 127.0.0.1. For each N of ``--hanging``: a fresh store (a SQLite file, or a new
database on the PostgreSQL server named), a ``bridge.delivery.Deliverer`` with its default 64
slots and ``--timeout`` seconds per attempt, then N tenants one after another, each with 12
endpoints (4 attempts at once each) of 6 due deliveries, all on black holes (servers that
accept every connection and never answer); once each one's attempts are held, the next comes.
Then a healthy tenant stores ``--deliveries`` deliveries, one every ``--interval`` seconds,
to 3 endpoints on a receiver that answers 200 at once. A delivery's wait is from just before
it is stored to its arrival at the receiver. The row with N = 0 is the baseline in the same
run: each row shows p50, p99 and the most, and its p99 against the baseline's. Exits 1 when
a p99 is 1 s or more, unless ``--no-fail``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.store import Store

TARGET = 1.0  # seconds: a p99 wait at or above it fails the run
ENDPOINTS, EACH, PER_ENDPOINT = 12, 6, 4
SCRIPT = os.path.abspath(__file__)
sys.path.insert(0, str(Path(SCRIPT).parent.parent))


class BlackHole:
    """Accepts every connection, reads what comes, never answers; counts those held."""

    def __init__(self) -> None:
        self.held = 0
        self.url = ""
        self.holding = asyncio.Event()  # set by the first connection
        self._writers: set[asyncio.StreamWriter] = set()

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.held += 1
        self.holding.set()
        self._writers.add(writer)
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        finally:
            self.held -= 1
            self._writers.discard(writer)
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BlackHole]:
        server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            server.close()
            for writer in list(self._writers):
                writer.close()
            await server.wait_closed()


class Arrivals(asyncio.Protocol):
    """A minimal HTTP/1.1 receiver: notes each request's webhook-id and arrival, answers
    200 at once, keeps the connection alive."""

    REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

    def __init__(self, seen: dict[str, float], arrived: asyncio.Event) -> None:
        self.seen, self.arrived, self.buffer = seen, arrived, b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
            fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
            length = int(fields.get(b"content-length", b"0"))
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.seen.setdefault(fields[b"webhook-id"].decode(), time.monotonic())
            self.arrived.set()
            assert self.transport is not None
            self.transport.write(self.REPLY)


@contextlib.contextmanager
def database(where: str, workdir: str, number: int) -> Iterator[str]:
    if where == "sqlite":
        yield os.path.join(workdir, f"bridge-{number}.db")
        return
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = "bridge_bench_" + secrets.token_hex(6)
    with psycopg.connect(where, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        parts = urlsplit(where)
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))
    finally:
        with psycopg.connect(where, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def endpoint(store: Store, tenant: str, url: str) -> str:
    from bridge.core import new_signing_secret
    from bridge.models import Endpoint, new_id, utcnow

    made = await store.create_endpoint(Endpoint(
        id=new_id("ep"), tenant=tenant, url=url, events=None, description=None, headers={},
        secret=new_signing_secret(), created_at=utcnow(), max_concurrency=PER_ENDPOINT))
    return made.id


async def store_delivery(store: Store, tenant: str, endpoint_id: str) -> str:
    from bridge.models import Event, new_id, utcnow

    event = Event(id=new_id("evt"), tenant=tenant, type="endpoint.test", job_id=None,
                  created_at=utcnow(), data={})
    await store.add_event(event, endpoint_id=endpoint_id)
    return event.id


async def one_row(url: str, hanging: int, args: argparse.Namespace) -> list[float]:
    """The healthy tenant's waits, in seconds, beside ``hanging`` tenants' black holes."""
    from bridge.core import new_signing_secret
    from bridge.delivery import Deliverer
    from bridge.store import open_store
    from bridge.targets import Guard
    from bridge.timings import Timings

    timings = Timings(delivery_timeout=args.timeout, record_margin=1.0,
                      delivery_lease=args.timeout + 6.0)
    store = await open_store(url)
    seen: dict[str, float] = {}
    arrived = asyncio.Event()
    server = await asyncio.get_running_loop().create_server(
        lambda: Arrivals(seen, arrived), "127.0.0.1", 0)
    receiver = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    deliverer = Deliverer(store, Guard(allow_private=True), (0.5, 0.5, 0.5), timings=timings)
    store.outbox_listeners.append(deliverer.wake)
    try:
        async with contextlib.AsyncExitStack() as stack:
            holes = [await stack.enter_async_context(BlackHole().running())
                     for _ in range(hanging)]
            await deliverer.start()
            for number, hole in enumerate(holes):
                tenant = f"hanging-{number}"
                await store.ensure_tenant(tenant, new_signing_secret)
                for count in range(ENDPOINTS):
                    target = await endpoint(store, tenant, f"{hole.url}/{count}")
                    for _ in range(EACH):
                        await store_delivery(store, tenant, target)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(hole.holding.wait(), 10)
                await asyncio.sleep(0.2)  # its share of the slots fills
            await store.ensure_tenant("healthy", new_signing_secret)
            mine = [await endpoint(store, "healthy", f"{receiver}/healthy/{n}")
                    for n in range(3)]
            due: dict[str, float] = {}
            for number in range(args.deliveries):
                started = time.monotonic()
                due[await store_delivery(store, "healthy", mine[number % 3])] = started
                await asyncio.sleep(args.interval)
            deadline = time.monotonic() + 60
            while len(seen) < len(due) and time.monotonic() < deadline:
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), deadline - time.monotonic())
            await deliverer.stop()
    finally:
        server.close()
        await store.close()
    # One never delivered counts as the whole wait of the run.
    return [seen.get(event_id, time.monotonic()) - at for event_id, at in due.items()]


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


async def main_async(args: argparse.Namespace) -> int:
    rows = [int(n) for n in args.hanging.split(",")]
    if 0 not in rows:
        rows.insert(0, 0)
    results: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for number, hanging in enumerate(rows):
            with database(args.database, workdir, number) as url:
                results[hanging] = await one_row(url, hanging, args)
    base = p99(results[0])
    print(f"{'hanging tenants':>16} {'p50 s':>8} {'p99 s':>8} {'max s':>8} {'p99 / baseline':>15}")
    for hanging, waits in results.items():
        print(f"{hanging:>16} {statistics.median(waits):8.3f} {p99(waits):8.3f} "
              f"{max(waits):8.3f} {p99(waits) / base:15.2f}")
    missed = [hanging for hanging, waits in results.items() if p99(waits) >= TARGET]
    if missed and not args.no_fail:
        print(f"p99 of {TARGET:.0f} s or more with {missed} hanging tenants")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hanging", default="0,1,2,5")
    parser.add_argument("--deliveries", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--database", default="sqlite")
    parser.add_argument("--no-fail", action="store_true")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
