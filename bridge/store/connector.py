"""What the store's operations need of a database, and the group commit both backends share.

A connector (``bridge.store.sqlite``, ``bridge.store.postgres``) runs an operation's
statements inside one transaction (``Connector.run``) or reads outside one, on its driver's
public async API. Statements are named in ``bridge.store.queries``, in the connector's
dialect. Writes that arrive together are committed together by a ``WriteQueue``.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from bridge.errors import Unavailable
from bridge.models import Page
from bridge.store.queries import Queries
from bridge.store.rows import Codec, decode_cursor, page_of

T = TypeVar("T")
Row = dict[str, Any]
Params = Mapping[str, Any]


class Wake(enum.StrEnum):
    """What a commit may have made for the workers: jobs due now, deliveries to send."""

    JOBS = "jobs"
    DELIVERIES = "deliveries"


class Transaction(Protocol):
    """An open transaction: statements run in order, all kept at the commit or none."""

    q: Queries
    woken: set[Wake]  # what the commit tells the listeners

    async def fetch_all(self, sql: str, params: Params = ...) -> list[Row]: ...

    async def fetch_one(self, sql: str, params: Params = ...) -> Row | None: ...

    async def execute(self, sql: str, params: Params = ...) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def execute_many(self, sql: str, params: Sequence[Params]) -> None: ...

    async def lock(self, key: str, *, shared: bool = False) -> None:
        """Serialize the transactions that take ``key``, across processes, until the
        commit (``shared``: exclude only the others)."""
        ...


Work = Callable[[Transaction], Awaitable[T]]


class Connector(Protocol):
    q: Queries
    listeners: dict[Wake, list[Callable[[], None]]]
    queue: WriteQueue

    async def open(self) -> None:
        """Connect and apply the pending migrations."""
        ...

    async def close(self) -> None: ...

    async def run(self, work: Work[T]) -> T:
        """Run ``work`` in a transaction of its own and commit it (again, if it loses a
        race); then call the listeners of what it woke."""
        ...

    async def write(self, work: Work[T]) -> T:
        """``run``, or (SQLite) the next group commit of ``queue``."""
        ...

    async def fetch_all(self, sql: str, params: Params = ...) -> list[Row]:
        """Rows read outside any transaction, seeing every commit made before."""
        ...

    async def fetch_one(self, sql: str, params: Params = ...) -> Row | None: ...

    def pool_stats(self) -> dict[str, int] | None:
        """This process's connections: ``in_use`` and ``idle`` (``None``: no pool)."""
        ...

    async def schema_version(self) -> int | None:
        """The schema's version, or ``None`` when the database does not answer."""
        ...


Bulk = Callable[[Transaction, list[Any]], Awaitable[list[Any]]]


async def each(tx: Transaction, works: list[Work[Any]]) -> list[Any]:
    """The bulk form of plain works: one after another."""
    return [await work(tx) for work in works]


@dataclass(slots=True)
class _Queued:
    bulk: Bulk
    item: Any
    future: asyncio.Future[Any] = field(default_factory=lambda: (
        asyncio.get_running_loop().create_future()))


class WriteQueue:
    """Group commit: writes that arrive while a commit is being made go together in the
    next transaction, in the order they came, so that one commit serves many callers.

    A write is an item and its ``bulk`` function, which writes a list of such items and
    answers each one's result (``update_jobs`` reads all of its jobs with one statement);
    neighbours with the same bulk function are handed to it together. A transaction in
    which anything raises is undone and each write is run again in one of its own, so that
    only the write that raises fails. ``writers`` commits may be under way at once.
    """

    def __init__(self, run: Callable[[Work[list[Any]]], Awaitable[list[Any]]], *,
                 writers: int = 1, most: int = 256) -> None:
        self._run = run
        self._writers = writers
        self._most = most  # writes in one transaction, at most
        self._queued: list[_Queued] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def write(self, bulk: Bulk, item: Any) -> asyncio.Future[Any]:
        """Queue ``item``; the future answers its result once it is committed."""
        if self.closed:
            raise RuntimeError("store is not open")
        queued = _Queued(bulk, item)
        self._queued.append(queued)
        if sum(not task.done() for task in self._tasks) < self._writers:
            task = asyncio.create_task(self._commit_queued(), name="store.commit")
            self._tasks.add(task)
            task.add_done_callback(self._ended)
        return queued.future

    async def drain(self) -> None:
        """Wait until every write queued so far is committed."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def _ended(self, task: asyncio.Task[None]) -> None:
        # A task cancelled with writes queued (the loop is going away): what was never
        # begun is never written, and its callers are told so rather than left waiting.
        self._tasks.discard(task)
        if task.cancelled() and not self._tasks:
            queued, self._queued = self._queued, []
            for write in queued:
                write.future.cancel()

    async def _commit_queued(self) -> None:
        while self._queued:
            # One more turn of the loop first: the requests it is reading now join this
            # commit instead of paying for one of their own (at rest the turn is free).
            await asyncio.sleep(0)
            batch, self._queued = self._queued[:self._most], self._queued[self._most:]
            batch = [write for write in batch if not write.future.cancelled()]
            if not batch:
                continue
            try:
                results = await self._run(_together(batch))
            except asyncio.CancelledError:
                for write in batch:
                    write.future.cancel()
                raise
            except Exception as exc:
                if len(batch) == 1 or isinstance(exc, Unavailable):
                    for write in batch:  # the database's fault: no write was kept
                        _answer(write, exc)
                    continue
                for write in batch:  # each alone: only what raises fails
                    try:
                        [result] = await self._run(_alone(write))
                    except asyncio.CancelledError:
                        write.future.cancel()
                        raise
                    except Exception as alone:
                        _answer(write, alone)
                    else:
                        _answer(write, result)
                continue
            for write, result in zip(batch, results, strict=True):
                _answer(write, result)


async def _in_order(tx: Transaction, batch: list[_Queued]) -> list[Any]:
    """The batch's writes in order, each run of neighbours with one bulk function together."""
    results: list[Any] = []
    start = 0
    while start < len(batch):
        end = start + 1
        while end < len(batch) and batch[end].bulk == batch[start].bulk:
            end += 1
        results += await batch[start].bulk(tx, [write.item for write in batch[start:end]])
        start = end
    return results


def _together(batch: list[_Queued]) -> Work[list[Any]]:
    async def work(tx: Transaction) -> list[Any]:
        return await _in_order(tx, batch)

    return work


def _alone(write: _Queued) -> Work[list[Any]]:
    return _together([write])


def _answer(write: _Queued, outcome: Any) -> None:
    if write.future.done():
        return
    if isinstance(outcome, StopIteration):
        # A future refuses a StopIteration (its caller would wait forever): wrapped.
        wrapped = RuntimeError("a store write raised StopIteration")
        wrapped.__cause__ = outcome
        write.future.set_exception(wrapped)
    elif isinstance(outcome, BaseException):
        write.future.set_exception(outcome)
    else:
        write.future.set_result(outcome)


class StoreBase:
    """The connector and the listeners every part of the store shares."""

    def __init__(self, db: Connector) -> None:
        self.db = db
        self.q = db.q
        # Called after each commit that added deliveries (the deliverer's wake-up) or made
        # jobs due (the tracker's): this process's commits, and on PostgreSQL others' too.
        self.outbox_listeners = db.listeners[Wake.DELIVERIES]
        self.job_listeners = db.listeners[Wake.JOBS]

    async def _page(self, table: str, codec: Codec[T], tenant: str, cursor: str | None,
                    limit: int, filters: dict[str, Any], columns: str = "*",
                    condition: str = "", **also: Any) -> Page[T]:
        """A page of the tenant's rows, newest first; ``filters`` left ``None`` filter
        nothing; ``condition`` one more (a statement of ``Queries``, parameters ``also``)."""
        named = {column: value for column, value in filters.items() if value is not None}
        sql = self.q.newest_first(table, columns, tuple(named), condition)
        rows = await self.db.fetch_all(sql, {"tenant": tenant, "before": decode_cursor(cursor),
                                             "limit": limit + 1, **named, **also})
        return page_of(rows, limit, codec.of)

    async def _write(self, work: Work[Any]) -> Any:
        """Run ``work`` in a transaction; answer once it is committed."""
        return await self.db.write(work)
