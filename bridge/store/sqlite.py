"""The SQLite connector: one file in WAL mode, through aiosqlite.

Writes go through one connection, each transaction a ``BEGIN IMMEDIATE`` (which also
serializes against other processes on the same file, a ``bridge tick`` beside ``bridge
serve``), and every write goes through the ``WriteQueue``: writes that arrive together are
one transaction and one commit, in the order they came. Reads use a second connection, which
WAL lets run beside the writer. ``synchronous=NORMAL`` in WAL mode keeps every committed
transaction across a crash of the process; only a power loss can take the last few.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import aiosqlite
import orjson

from bridge.errors import Unavailable
from bridge.store.connector import Params, Row, Wake, Work, WriteQueue, each
from bridge.store.queries import Queries
from bridge.store.schema import SQLITE_TYPES, migrations

T = TypeVar("T")
BUSY_TIMEOUT = 3.0  # seconds a write waits for another process's lock before it fails
MIGRATIONS = migrations(SQLITE_TYPES)
QUERIES = Queries(":{name}", "(SELECT value FROM json_each(:{name}))", locks=False)

# Faults of the database rather than of a request: the same request may succeed later.
_FAULTS = {
    sqlite3.SQLITE_BUSY: ("the database is busy; try again shortly", 1),
    sqlite3.SQLITE_LOCKED: ("the database is busy; try again shortly", 1),
    sqlite3.SQLITE_FULL: ("the database or its disk is full; try again later", 30),
    sqlite3.SQLITE_IOERR: ("the database could not be written; try again later", 30),
}


def _fault(exc: BaseException) -> BaseException:
    """``Unavailable`` for a fault of the database (nothing of the transaction is kept),
    else ``exc`` itself."""
    if isinstance(exc, sqlite3.OperationalError):
        fault = _FAULTS.get(getattr(exc, "sqlite_errorcode", -1) & 0xFF)
        if fault is not None:
            unavailable = Unavailable(fault[0], retry_after=fault[1])
            unavailable.__cause__ = exc
            return unavailable
    return exc


def _dict_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Row:
    return dict(zip([column[0] for column in cursor.description], values, strict=True))


def _adapt(params: Params) -> Params:
    """A list parameter (``{name:list}``) goes to SQLite as a JSON array for json_each."""
    if any(isinstance(value, list) for value in params.values()):
        return {k: orjson.dumps(v).decode() if isinstance(v, list) else v
                for k, v in params.items()}
    return params


class SQLiteTransaction:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.q: Queries = QUERIES
        self.woken: set[Wake] = set()

    async def fetch_all(self, sql: str, params: Params = {}) -> list[Row]:  # noqa: B006
        return list(await self.conn.execute_fetchall(sql, _adapt(params)))  # type: ignore[arg-type]

    async def fetch_one(self, sql: str, params: Params = {}) -> Row | None:  # noqa: B006
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Params = {}) -> int:  # noqa: B006
        cursor = await self.conn.execute(sql, _adapt(params))
        return cursor.rowcount

    async def execute_many(self, sql: str, params: Sequence[Params]) -> None:
        await self.conn.executemany(sql, [_adapt(p) for p in params])

    async def lock(self, key: str, *, shared: bool = False) -> None:
        """Nothing to take: ``BEGIN IMMEDIATE`` already serializes every writer."""


class SQLiteConnector:
    q: Queries = QUERIES

    def __init__(self, path: str, *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.listeners: dict[Wake, list[Callable[[], None]]] = {wake: [] for wake in Wake}
        self.queue = WriteQueue(self.run)
        self.writer: aiosqlite.Connection | None = None  # statements traced through it
        self._reader: aiosqlite.Connection | None = None
        self._writing = asyncio.Lock()
        self._locked_until = 0.0  # until then, a lock found held fails a write at once

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = _dict_row  # type: ignore[assignment]
        for pragma in (f"busy_timeout={int(self.busy_timeout * 1000)}", "journal_mode=WAL",
                       "synchronous=NORMAL", "foreign_keys=ON"):
            await conn.execute(f"PRAGMA {pragma}")
        return conn

    async def open(self) -> None:
        try:
            self.writer = await self._connect()
            await self._migrate(self.writer)
            self._reader = await self._connect()
        except BaseException:
            await self.close()
            raise

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        if await _version(conn) >= len(MIGRATIONS):
            return  # current: no write at start-up
        await conn.execute("BEGIN IMMEDIATE")
        try:
            version = await _version(conn)
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(None, (part.strip() for part in script.split(";"))):
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version = {number}")
            await conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        self.queue.closed = True  # no new writes; every accepted one is committed first
        await self.queue.drain()
        for conn in (self._reader, self.writer):  # the writer last: it removes the log
            if conn is not None:
                await conn.close()
        self._reader = self.writer = None
        self.queue = WriteQueue(self.run)

    async def run(self, work: Work[T]) -> T:
        if self.writer is None:
            raise RuntimeError("store is not open")
        async with self._writing:
            # Shielded: the connection is the transaction's until it commits or rolls back.
            running = asyncio.ensure_future(self._transaction(self.writer, work))
            try:
                woken, result = await asyncio.shield(running)
            except asyncio.CancelledError:
                await asyncio.wait({running})
                raise
        for wake in woken:
            for listener in self.listeners[wake]:
                listener()
        return result

    async def _transaction(self, conn: aiosqlite.Connection,
                           work: Work[T]) -> tuple[set[Wake], T]:
        tx = SQLiteTransaction(conn)
        try:
            await self._begin(conn)
            result = await work(tx)
            await conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:  # SQLite itself rolls back on some faults
                await conn.execute("ROLLBACK")
            fault = _fault(exc)
            if fault is exc:
                raise
            raise fault from exc
        return tx.woken, result

    async def _begin(self, conn: aiosqlite.Connection) -> None:
        """``BEGIN IMMEDIATE``, waiting up to ``busy_timeout`` for another process's lock;
        right after such a wait ran out, not waiting again: those callers are answered now."""
        quick = time.monotonic() < self._locked_until
        if quick:
            await conn.execute("PRAGMA busy_timeout=0")
        try:
            await conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY and not quick:
                self._locked_until = time.monotonic() + self.busy_timeout
            raise
        finally:
            if quick:
                await conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")

    async def write(self, work: Work[T]) -> T:
        result: T = await self.queue.write(each, work)
        return result

    def _read_on(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("store is not open")
        return self._reader

    async def fetch_all(self, sql: str, params: Params = {}) -> list[Row]:  # noqa: B006
        try:
            return list(await self._read_on().execute_fetchall(sql, _adapt(params)))  # type: ignore[arg-type]
        except sqlite3.OperationalError as exc:
            raise _fault(exc) from exc

    async def fetch_one(self, sql: str, params: Params = {}) -> Row | None:  # noqa: B006
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    def pool_stats(self) -> dict[str, int] | None:
        return None

    async def schema_version(self) -> int | None:
        try:
            return await _version(self._read_on())
        except (sqlite3.Error, ValueError, RuntimeError):
            return None


async def _version(conn: aiosqlite.Connection) -> int:
    rows = list(await conn.execute_fetchall("PRAGMA user_version"))
    return int(rows[0]["user_version"])

