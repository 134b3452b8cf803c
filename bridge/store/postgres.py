"""The PostgreSQL backend: any number of bridge processes on one database.

The store's works (``bridge.store.sql``, ``bridge.store.works``) are plain functions over a
DB-API connection, shared with SQLite; here each runs in a transaction of its own on a
pooled psycopg connection, in a thread (psycopg's synchronous API). Rows a work reads to
change are locked (``FOR UPDATE``; claims pass over rows others hold, ``SKIP LOCKED``), a
provider's submission slots and an idempotency key are serialized by transaction-level
advisory locks, and a transaction that loses a race (a serialization failure, a deadlock, a
unique key taken meanwhile) is run again. Schema changes are applied at start-up under a
session advisory lock, so that processes starting together migrate once.

Job updates (``update_job``) that arrive together are committed together, as on SQLite:
one transaction runs a batch of them with a shared ``JobBatch`` (their rows read and locked
with one statement, in id order, so that two batches never wait for each other in a
circle), and a batch in which one update raises is run again one update at a time. A
callback's update alone would pay for a transaction and some eight round trips of its own.

Commits that add deliveries or make jobs due ``NOTIFY`` the other processes, which wake
their workers at once instead of at their next look. The NOTIFY follows the commit, one for
all the commits made while the one before was being sent: in the transaction, every commit
would queue behind the server's one notification lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool, PoolTimeout

from bridge.errors import InvalidRequest, Unavailable
from bridge.store.base import Stats
from bridge.store.schema import MIGRATIONS as SQLITE_MIGRATIONS
from bridge.store.sql import SQLStore
from bridge.store.works import Conn, JobBatch, run_works

_T = TypeVar("_T")
log = logging.getLogger("bridge.store")

CHANNEL = "bridge_work"  # the NOTIFY channel; payload "jobs" or "deliveries", and the sender
MIGRATION_LOCK = 0x6272_6964_6765  # "bridge": the advisory lock held while migrating
RETRIES = 5  # runs of a transaction that keeps losing races before it fails
CONNECT_TIMEOUT = 5.0  # seconds to get a connection before answering 503
LISTEN_BACKOFF = (0.5, 5.0)  # seconds between attempts to listen again, first and last
BATCH_MAX = 64  # job updates committed in one transaction, at most
BATCHERS = 2  # batches of job updates being committed at once, per process

_Work = Callable[[Conn], Any]

def _in_postgres_types(script: str) -> str:
    """A migration of ``bridge.store.schema`` in PostgreSQL's types: Unix times as double
    precision, and ``seq`` an identity column, as SQLite's rowid alias is."""
    script = script.replace("INTEGER PRIMARY KEY AUTOINCREMENT",
                            "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", script)


MIGRATIONS: Sequence[str] = tuple(_in_postgres_types(script) for script in SQLITE_MIGRATIONS)


# -- the connection the shared works see ------------------------------------------------------
class Row:
    """A row read by position (also slices) or by column name, as ``sqlite3.Row``."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: tuple[Any, ...], index: dict[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: psycopg.Cursor[Any]) -> RowMaker[Row]:
    description = cursor.description or ()
    index = {column.name: number for number, column in enumerate(description)}
    return lambda values: Row(tuple(values), index)


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


@functools.lru_cache(maxsize=512)
def _pyformat(sql: str) -> str:
    """SQLite's parameter marks (``?``, ``:name``) as psycopg's (``%s``, ``%(name)s``).
    The works' SQL has no ``%``, ``?`` or ``:word`` inside its string literals."""
    return _NAMED.sub(r"%(\1)s", sql.replace("?", "%s"))


class Connection:
    """A psycopg connection inside one transaction, with the interface the works use."""

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self._conn = conn
        self.deliveries_added = 0  # deliveries inserted: the commit notifies the deliverers
        self.jobs_due = 0  # jobs made due now: the commit notifies the trackers
        self.batch: JobBatch | None = None  # while a batch of job updates runs
        self.for_update = " FOR UPDATE"  # rows read to be changed are locked
        self.skip_locked = " FOR UPDATE SKIP LOCKED"  # claims pass over rows locked by others

    def execute(self, sql: str, params: Any = ()) -> psycopg.Cursor[Row]:
        return self._conn.execute(_pyformat(sql), params or None)

    def executemany(self, sql: str, params: Sequence[Any]) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(_pyformat(sql), params)

    def pipeline(self) -> contextlib.AbstractContextManager[Any]:
        """Statements sent without waiting for each one's answer until one is read (or the
        block ends): a cursor's ``rowcount`` is not known meanwhile, its rows are."""
        return self._conn.pipeline()

    def lock(self, key: str, *, shared: bool = False) -> None:
        """Hold a transaction-level advisory lock on ``key`` until the commit; ``shared``
        holders exclude only the others."""
        kind = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        self._conn.execute(f"SELECT {kind}(hashtextextended(%s, 0))", (key,))


# -- faults -----------------------------------------------------------------------------------
_RACES = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected,
          psycopg.errors.UniqueViolation)
_UNAVAILABLE = (psycopg.OperationalError, psycopg.errors.DiskFull,
                psycopg.errors.InsufficientResources, psycopg.errors.AdminShutdown,
                psycopg.errors.CannotConnectNow, PoolTimeout)


def _fault(exc: BaseException) -> Unavailable:
    """The ``Unavailable`` of a database that cannot be reached or written."""
    retry_after = 30 if isinstance(exc, psycopg.errors.DiskFull) else 1
    unavailable = Unavailable("the database cannot be reached or written; try again shortly",
                              retry_after=retry_after)
    unavailable.__cause__ = exc
    return unavailable


def _note_data_error(exc: psycopg.DataError) -> None:
    """Log a data error once (no traceback: it is the request's, not a fault)."""
    if str(exc) not in _DATA_ERRORS_SEEN:
        _DATA_ERRORS_SEEN.add(str(exc))
        log.warning("a request held a value PostgreSQL cannot keep: %s", exc)


_DATA_ERRORS_SEEN: set[str] = set()


def _refused(exc: psycopg.DataError) -> InvalidRequest:
    """The answer to a write of a value PostgreSQL cannot keep: 422, as a bad field is."""
    _note_data_error(exc)
    refused = InvalidRequest(f"a value cannot be kept: {exc}")
    refused.__cause__ = exc
    return refused


class PostgresConnector:
    """The pool, the worker threads, the listener and the migrations of one process."""

    def __init__(self, url: str, pool_size: int) -> None:
        self.url = url
        self.pool_size = pool_size
        self.listeners: dict[str, list[Callable[[], None]]] = {"jobs": [], "deliveries": []}
        self._pool: ConnectionPool[psycopg.Connection[Row]] | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._listener: asyncio.Task[None] | None = None
        self.token = secrets.token_hex(8)  # names this process's NOTIFYs
        self._unannounced: set[str] = set()  # kinds of work committed, not yet notified
        self._announcer: asyncio.Task[None] | None = None
        self._updates: list[tuple[_Work, asyncio.Future[Any]]] = []  # job updates queued
        self._batchers: set[asyncio.Task[None]] = set()
        self.races = 0  # transactions run again after losing a race

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self, migrations: Sequence[str] = MIGRATIONS) -> None:
        """Connect (``OSError``-like ``psycopg.OperationalError`` if the server does not
        answer) and apply pending migrations."""
        self._threads = ThreadPoolExecutor(self.pool_size, thread_name_prefix="bridge-pg")
        # One connection first, so that a server that does not answer says why (the pool
        # would only time out).
        await self._in_thread(self._probe)
        pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            self.url, min_size=1, max_size=self.pool_size, open=False, timeout=CONNECT_TIMEOUT,
            kwargs={"row_factory": _row_factory, "connect_timeout": int(CONNECT_TIMEOUT)},
            name="bridge")
        self._pool = pool
        await self._in_thread(functools.partial(pool.open, wait=True,
                                                timeout=CONNECT_TIMEOUT))
        await self._in_thread(functools.partial(self._migrate, migrations))
        listening = await self._listening()  # before open returns: no NOTIFY is missed
        self._listener = asyncio.create_task(self._listen(listening), name="store.listen")

    async def close(self) -> None:
        while self._batchers:  # every job update accepted is committed first
            await asyncio.wait(self._batchers)
        await self.announced()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._pool is not None:
            await self._in_thread(self._pool.close)
            self._pool = None
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None

    def _probe(self) -> None:
        psycopg.connect(self.url, connect_timeout=int(CONNECT_TIMEOUT)).close()

    def _migrate(self, migrations: Sequence[str]) -> None:
        assert self._pool is not None
        with self._pool.connection() as conn:
            conn.autocommit = True
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
                row = conn.execute("SELECT version FROM schema_version").fetchone()
                version = row[0] if row is not None else 0
                for number, script in enumerate(migrations[version:], start=version + 1):
                    with conn.transaction():
                        conn.execute(script)
                        conn.execute("DELETE FROM schema_version")
                        conn.execute("INSERT INTO schema_version VALUES (%s)", (number,))
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))

    async def version(self) -> int | None:
        """The schema version, or ``None`` if the database does not answer."""
        def read(conn: psycopg.Connection[Row]) -> int:
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            return int(row[0]) if row is not None else 0

        try:
            return await self.read(read)
        except Exception:
            return None

    def pool_stats(self) -> tuple[int, int]:
        """Connections of this process's pool: in use, idle."""
        if self._pool is None:
            return 0, 0
        stats = self._pool.get_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        return size - idle, idle

    # -- running works ---------------------------------------------------------------------
    async def _in_thread(self, call: Callable[[], _T]) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, call)

    async def transaction(self, work: Callable[[Conn], _T]) -> _T:
        """Run ``work`` in a transaction of its own (a job update: in a batch of them), again
        if it loses a race; once it is committed, wake the listeners it concerns in this
        process (others by NOTIFY)."""
        if getattr(work, "job_id", None) is not None:
            result: _T = await self._batched(work)
            return result
        return await self._committed(functools.partial(self._run, work))

    async def _committed(self, call: Callable[[], tuple[_T, list[str]]]) -> _T:
        """``call`` (it commits, and says what kinds of work it made) in a thread."""
        try:
            result, notified = await self._in_thread(call)
        except _UNAVAILABLE as exc:
            raise _fault(exc) from exc
        self._committed_work(notified)
        return result

    def _committed_work(self, notified: Sequence[str]) -> None:
        for kind in notified:
            for listener in self.listeners[kind]:
                listener()
        if notified:
            self._unannounced.update(notified)
            if self._announcer is None or self._announcer.done():
                self._announcer = asyncio.create_task(self._announce(), name="store.notify")

    def _batched(self, work: _Work) -> asyncio.Future[Any]:
        """Queue a job update for the next batch; the future holds what it answers."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._updates.append((work, future))
        if len(self._batchers) < BATCHERS:
            batcher = asyncio.create_task(self._commit_updates(), name="store.updates")
            self._batchers.add(batcher)
            batcher.add_done_callback(self._batcher_ended)
        return future

    def _batcher_ended(self, batcher: asyncio.Task[None]) -> None:
        """A batcher cancelled with updates queued (the loop is going away): what was never
        begun is never written, and its callers are told so rather than left waiting."""
        self._batchers.discard(batcher)
        if batcher.cancelled() and not self._batchers:
            waiting, self._updates = self._updates, []
            for _, future in waiting:
                future.cancel()

    async def _commit_updates(self) -> None:
        while self._updates:
            # One more turn of the loop first: the callbacks it is reading now join this
            # batch instead of paying for one of their own (at rest the turn is free).
            await asyncio.sleep(0)
            batch, self._updates = self._updates[:BATCH_MAX], self._updates[BATCH_MAX:]
            if not batch:
                continue
            try:
                outcomes, notified = await self._in_thread(
                    functools.partial(self._run_batch, [work for work, _ in batch]))
            except BaseException as exc:  # nothing of the batch was committed
                failure = _fault(exc) if isinstance(exc, _UNAVAILABLE) else exc
                for _, future in batch:
                    if future.done():
                        continue
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(failure)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            self._committed_work(notified)

    def _run_batch(self, works: list[_Work]) -> tuple[list[tuple[bool, Any]], list[str]]:
        """Commit ``works`` in one transaction; if one raises, each in its own, so that only
        that one fails. Each work's outcome: ``(True, result)`` or ``(False, exception)``."""
        if len(works) > 1:
            try:
                results, notified = self._run_again(functools.partial(_in_batch, works))
            except _UNAVAILABLE:
                raise
            except Exception:
                pass  # one of them raised, and all were undone
            else:
                return [(True, result) for result in results], notified
        outcomes: list[tuple[bool, Any]] = []
        kinds: set[str] = set()
        for work in works:
            try:
                result, notified = self._run(work)
            except _UNAVAILABLE as exc:
                outcomes.append((False, _fault(exc)))
            except Exception as exc:
                outcomes.append((False, exc))
            else:
                outcomes.append((True, result))
                kinds.update(notified)
        return outcomes, sorted(kinds)

    async def announced(self) -> None:
        """Wait until the work committed so far has been announced to other processes."""
        if self._announcer is not None:
            await asyncio.gather(self._announcer, return_exceptions=True)

    async def _announce(self) -> None:
        """NOTIFY the other processes of the work committed since the last NOTIFY, until
        there is none; if the server does not answer, they find it at their next look."""
        while self._unannounced:
            kinds, self._unannounced = sorted(self._unannounced), set()
            try:
                await self._in_thread(functools.partial(self._notify, kinds))
            except Exception as exc:
                log.warning("could not notify other processes of new %s: %s",
                            " and ".join(kinds), exc)
                return

    def _notify(self, kinds: list[str]) -> None:
        assert self._pool is not None
        with self._pool.connection() as conn, conn.transaction():
            for kind in kinds:
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{kind} {self.token}"))

    def _run(self, work: Callable[[Connection], _T]) -> tuple[_T, list[str]]:
        try:
            return self._run_again(work)
        except psycopg.DataError as exc:
            raise _refused(exc) from exc
        except StopIteration as exc:
            # A future refuses a StopIteration (the caller would wait forever): wrapped.
            raise RuntimeError("a store work raised StopIteration") from exc

    def _run_again(self, work: Callable[[Connection], _T]) -> tuple[_T, list[str]]:
        """Run ``work`` until it commits without losing a race (``RETRIES`` at most)."""
        assert self._pool is not None
        for attempt in range(1, RETRIES + 1):
            with self._pool.connection() as conn:
                try:
                    with conn.transaction():
                        view = Connection(conn)
                        result = work(view)
                        notified = [kind for kind, count in (
                            ("jobs", view.jobs_due), ("deliveries", view.deliveries_added))
                            if count]
                    return result, notified
                except _RACES:
                    if attempt == RETRIES:
                        raise
                    self.races += 1
                    time.sleep(0.005 * attempt)
        raise AssertionError("unreachable")

    async def read(self, query: Callable[[psycopg.Connection[Row]], _T]) -> _T:
        """Run a read on a pooled connection (no transaction of its own)."""
        assert self._pool is not None
        pool = self._pool

        def run() -> _T:
            with pool.connection() as conn:
                return query(conn)

        try:
            return await self._in_thread(run)
        except _UNAVAILABLE as exc:
            raise _fault(exc) from exc

    # -- wake-ups from other processes -----------------------------------------------------
    async def _listening(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT))
        await conn.execute(f"LISTEN {CHANNEL}")
        return conn

    async def _listen(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        """Hear the other processes' NOTIFYs on ``conn``, connecting again (with backoff)
        when the connection is lost."""
        backoff = LISTEN_BACKOFF[0]
        while True:
            try:
                if conn is None:
                    conn = await self._listening()
                    backoff = LISTEN_BACKOFF[0]
                    # Anything may have happened while nobody listened: look now.
                    for kind in self.listeners:
                        self._wake(kind)
                async with conn:
                    async for notify in conn.notifies():
                        kind, _, sender = notify.payload.partition(" ")
                        if sender != self.token:  # this process woke its own at the commit
                            self._wake(kind)
            except psycopg.Error as exc:
                log.warning("listening for other processes' work failed (%s); again in "
                            "%.1fs", exc, backoff)
            conn = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, LISTEN_BACKOFF[1])

    def _wake(self, kind: str) -> None:
        for listener in self.listeners.get(kind, ()):
            listener()


def _in_batch(works: list[_Work], conn: Connection) -> list[Any]:
    """Job updates back to back in one transaction, sharing a ``JobBatch``. In pipeline
    mode: their writes go to the server together, and only a read waits for its answer."""
    with conn.pipeline():
        return [result for _, result in run_works(conn, works)]


class PostgresStore(SQLStore):
    """The store's operations (``bridge.store.sql``) on PostgreSQL, through
    ``PostgresConnector``."""

    floor = "FLOOR({})"  # CAST would round
    prompt = "(CAST(request AS jsonb) ->> 'prompt')"

    def __init__(self, url: str, pool_size: int = 10) -> None:
        super().__init__()
        self.path = url
        self.connector = PostgresConnector(url, pool_size)
        # Called after a commit of any process that added deliveries or made jobs due.
        self.connector.listeners["deliveries"] = self.outbox_listeners
        self.connector.listeners["jobs"] = self.job_listeners

    async def open(self) -> None:
        try:
            await self.connector.open()
        except BaseException:
            await self.connector.close()
            raise

    async def close(self) -> None:
        await self.connector.close()

    async def ping(self) -> bool:
        return await self.connector.version() == len(MIGRATIONS)

    async def stats(self, now: datetime) -> Stats:
        in_use, idle = self.connector.pool_stats()
        return replace(await super().stats(now), connections={"in_use": in_use, "idle": idle})

    async def _transaction(self, work: Callable[[Conn], _T], *, heavy: bool = False) -> _T:
        return await self.connector.transaction(work)

    def _enqueue(self, work: Callable[[Conn], Any], heavy: bool = False) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self.connector.transaction(work))

    async def _fetchone(self, sql: str, params: Any = ()) -> Any:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    async def _fetchall(self, sql: str, params: Any = ()) -> list[Any]:
        try:
            return await self.connector.read(
                lambda conn: conn.execute(_pyformat(sql), params or None).fetchall())
        except psycopg.DataError as exc:
            # A value no row can hold (a NUL character in an id): nothing matches it, as on
            # SQLite, whose answer (404, an empty page) the caller gives.
            _note_data_error(exc)
            return []
