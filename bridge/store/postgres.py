"""The PostgreSQL connector: any number of bridge processes on one database, through
``psycopg_pool.AsyncConnectionPool`` and psycopg's async connections.

Each write is a transaction of its own on a pooled connection; job updates and recorded
attempts that arrive together share one (``WriteQueue``). Rows read to be changed are locked
(claims pass over rows others hold), a provider's slots and an idempotency key are held by
advisory locks, and a transaction that loses a race (a deadlock, a key taken meanwhile) is
run again. Migrations run under a session advisory lock: processes starting together
migrate once. Commits that add deliveries or make jobs due ``NOTIFY`` the other processes,
once after the commit for all made meanwhile (inside it, every commit would queue behind the
server's one notification lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bridge.errors import InvalidRequest, Unavailable
from bridge.store.connector import Params, Row, Wake, Work, WriteQueue
from bridge.store.queries import PostgresQueries, Queries
from bridge.store.schema import POSTGRES_TYPES, migrations

T = TypeVar("T")
log = logging.getLogger("bridge.store")

NOTIFY_CHANNEL = "bridge_work"  # payload: what was woken (``Wake``) and the sender's token
MIGRATION_LOCK = 0x6272_6964_6765  # "bridge": the advisory lock held while migrating
RETRIES = 5  # runs of a transaction that keeps losing races before it fails
CONNECT_TIMEOUT = 5.0  # seconds to get a connection before answering 503
LISTEN_BACKOFF = (0.5, 5.0)  # seconds between attempts to listen again, first and last
MIGRATIONS = migrations(POSTGRES_TYPES)
QUERIES = PostgresQueries("%({name})s", "(SELECT unnest(CAST(%({name})s AS {type}[])))",
                          locks=True)

_RACES = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected,
          psycopg.errors.UniqueViolation)
_UNAVAILABLE = (psycopg.OperationalError, psycopg.errors.DiskFull,
                psycopg.errors.InsufficientResources, psycopg.errors.AdminShutdown,
                psycopg.errors.CannotConnectNow, PoolTimeout)
_DATA_ERRORS_SEEN: set[str] = set()


def _unavailable(exc: BaseException) -> Unavailable:
    retry_after = 30 if isinstance(exc, psycopg.errors.DiskFull) else 1
    unavailable = Unavailable("the database cannot be reached or written; try again shortly",
                              retry_after=retry_after)
    unavailable.__cause__ = exc
    return unavailable


def _note_data_error(exc: psycopg.DataError) -> None:
    """Log a value PostgreSQL cannot keep (a NUL character) once, with no traceback: it is
    the request's fault, not the server's."""
    if str(exc) not in _DATA_ERRORS_SEEN:
        _DATA_ERRORS_SEEN.add(str(exc))
        log.warning("a request held a value PostgreSQL cannot keep: %s", exc)


class PostgresTransaction:
    def __init__(self, conn: psycopg.AsyncConnection[Row]) -> None:
        self.conn = conn
        self.q: Queries = QUERIES
        self.woken: set[Wake] = set()

    async def fetch_all(self, sql: str, params: Params = {}) -> list[Row]:  # noqa: B006
        return await (await self.conn.execute(sql, params or None)).fetchall()

    async def fetch_one(self, sql: str, params: Params = {}) -> Row | None:  # noqa: B006
        return await (await self.conn.execute(sql, params or None)).fetchone()

    async def execute(self, sql: str, params: Params = {}) -> int:  # noqa: B006
        return (await self.conn.execute(sql, params or None)).rowcount

    async def execute_many(self, sql: str, params: Sequence[Params]) -> None:
        async with self.conn.cursor() as cursor:
            await cursor.executemany(sql, params)

    async def lock(self, key: str, *, shared: bool = False) -> None:
        kind = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        await self.conn.execute(f"SELECT {kind}(hashtextextended(%(key)s, 0))", {"key": key})


class PostgresConnector:
    q: Queries = QUERIES

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = pool_size
        self.listeners: dict[Wake, list[Callable[[], None]]] = {wake: [] for wake in Wake}
        self.queue = WriteQueue(self.run, writers=2, most=64)
        self.token = secrets.token_hex(8)  # names this process's NOTIFYs
        self.races = 0  # transactions run again after losing a race
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Row]] | None = None
        # Work waits here for a connection, however long; the pool's own timeout is left to
        # tell a database that does not answer (one connection is kept for the NOTIFYs).
        self._turns = asyncio.Semaphore(max(1, pool_size - 1))
        self._listener: asyncio.Task[None] | None = None
        self._unannounced: set[Wake] = set()
        self._announcer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Connect (``psycopg.OperationalError`` saying why, if the server does not answer)
        and apply the pending migrations."""
        try:
            # One connection first, so that a server that does not answer says why (the
            # pool would only time out).
            await (await psycopg.AsyncConnection.connect(
                self.url, connect_timeout=int(CONNECT_TIMEOUT))).close()
            self._pool = AsyncConnectionPool(
                self.url, min_size=1, max_size=self.pool_size, open=False,
                timeout=CONNECT_TIMEOUT, name="bridge",
                kwargs={"row_factory": dict_row, "connect_timeout": int(CONNECT_TIMEOUT)})
            await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            await self._migrate()
            listening = await self._listening()  # before open returns: no NOTIFY is missed
            self._listener = asyncio.create_task(self._listen(listening), name="store.listen")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self.queue.closed = True
        await self.queue.drain()  # every write accepted is committed first
        await self.announced()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        self.queue = WriteQueue(self.run, writers=2, most=64)

    async def _migrate(self) -> None:
        assert self._pool is not None
        async with self._pool.connection() as conn:
            await conn.set_autocommit(True)
            if await _version(conn) == len(MIGRATIONS):
                return  # current: no lock, no write at start-up
            await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            try:
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
                version = await _version(conn)
                for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                    async with conn.transaction():
                        await conn.execute(script)
                        await conn.execute("DELETE FROM schema_version")
                        await conn.execute("INSERT INTO schema_version VALUES (%s)", (number,))
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
                await conn.set_autocommit(False)

    async def schema_version(self) -> int | None:
        if self._pool is None:
            return None
        try:
            async with self._pool.connection() as conn:
                return await _version(conn)
        except Exception:
            return None

    def pool_stats(self) -> dict[str, int] | None:
        if self._pool is None:
            return {"in_use": 0, "idle": 0}
        stats = self._pool.get_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        return {"in_use": size - idle, "idle": idle}

    async def run(self, work: Work[T]) -> T:
        if self._pool is None:
            raise RuntimeError("store is not open")
        for attempt in range(1, RETRIES + 1):
            try:
                async with self._turns, self._pool.connection() as conn, conn.transaction():
                    tx = PostgresTransaction(conn)
                    result = await work(tx)
                break
            except _RACES:
                if attempt == RETRIES:
                    raise
                self.races += 1
                await asyncio.sleep(0.005 * attempt)
            except psycopg.DataError as exc:
                _note_data_error(exc)
                raise InvalidRequest(f"a value cannot be kept: {exc}") from exc
            except _UNAVAILABLE as exc:
                raise _unavailable(exc) from exc
        self._woke(tx.woken)
        return result

    async def write(self, work: Work[T]) -> T:
        return await self.run(work)  # concurrent, each its own transaction

    async def fetch_all(self, sql: str, params: Params = {}) -> list[Row]:  # noqa: B006
        if self._pool is None:
            raise RuntimeError("store is not open")
        try:
            async with self._turns, self._pool.connection() as conn:
                return await (await conn.execute(sql, params or None)).fetchall()
        except psycopg.DataError as exc:
            # A value no row can hold (a NUL character in an id): nothing matches it, as on
            # SQLite, whose answer (404, an empty page) the caller gives.
            _note_data_error(exc)
            return []
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    async def fetch_one(self, sql: str, params: Params = {}) -> Row | None:  # noqa: B006
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    # -- wake-ups across processes ---------------------------------------------------------
    def _woke(self, woken: set[Wake]) -> None:
        self._wake(woken)
        if woken:
            self._unannounced |= woken
            if self._announcer is None or self._announcer.done():
                self._announcer = asyncio.create_task(self._announce(), name="store.notify")

    async def announced(self) -> None:
        """Wait until what was committed so far has been told to other processes."""
        if self._announcer is not None:
            await asyncio.gather(self._announcer, return_exceptions=True)

    async def _announce(self) -> None:
        """NOTIFY the other processes of what was committed since the last NOTIFY, until
        nothing is left; if the server does not answer, they find it at their next look."""
        while self._unannounced and self._pool is not None:
            woken, self._unannounced = sorted(self._unannounced), set()
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    for wake in woken:
                        await conn.execute("SELECT pg_notify(%s, %s)",
                                           (NOTIFY_CHANNEL, f"{wake} {self.token}"))
            except Exception as exc:
                log.warning("could not notify other processes of new %s: %s",
                            " and ".join(woken), exc)
                return

    async def _listening(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT))
        await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return conn

    async def _listen(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        """Hear the other processes' NOTIFYs, connecting again (with backoff) when the
        connection is lost."""
        backoff = LISTEN_BACKOFF[0]
        while True:
            try:
                if conn is None:
                    conn = await self._listening()
                    backoff = LISTEN_BACKOFF[0]
                    self._wake(set(Wake))  # anything may have happened while nobody listened
                async with conn:
                    async for notify in conn.notifies():
                        kind, _, sender = notify.payload.partition(" ")
                        if sender != self.token and kind in set(Wake):  # ours: woken at commit
                            self._wake({Wake(kind)})
            except psycopg.Error as exc:
                log.warning("listening for other processes' work failed (%s); again in "
                            "%.1fs", exc, backoff)
            conn = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, LISTEN_BACKOFF[1])

    def _wake(self, woken: set[Wake]) -> None:
        for wake in woken:
            for listener in self.listeners[wake]:
                listener()


async def _version(conn: psycopg.AsyncConnection[Any]) -> int:
    try:
        cursor = await conn.execute("SELECT version FROM schema_version")
    except psycopg.errors.UndefinedTable:
        return 0
    row = await cursor.fetchone()
    return int(row["version"] if isinstance(row, dict) else row[0]) if row else 0
