"""The SQLite backend: one file in WAL mode.

Writes go through one connection, each in a ``BEGIN IMMEDIATE`` transaction (which also
serializes against other processes on the same file, e.g. a ``bridge tick`` beside
``bridge serve``); reads use a second connection, which WAL lets run beside a writer.
``synchronous=NORMAL`` in WAL mode keeps every committed transaction across a crash of the
process; only a power loss can take the last few.

Where writes run: a write transaction that waits for no lock touches only pages in memory
(in WAL mode a commit appends to the log and does not sync it), so it runs on the event
loop itself, batched (group commit). Handing it to a thread instead made each statement
pass the GIL between the two threads and back: measured with bench/ingest.py, that traffic
cost more CPU than the SQL. What may block runs in a thread: a batch that finds the file
locked by another process waits there (``busy_timeout``), bulk works (``heavy=True``) run
there, and so do the checkpoints that copy the log into the database and sync it, which
SQLite would otherwise run inside a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

import aiosqlite

from bridge.errors import Unavailable
from bridge.store.schema import MIGRATIONS
from bridge.store.sql import SQLStore
from bridge.store.works import Conn, JobBatch, one, run_works, scalar

_T = TypeVar("_T")
log = logging.getLogger("bridge.store")



BUSY_TIMEOUT = 3.0  # seconds a write waits for another process's lock before it fails


CHECKPOINT_EVERY = 64  # commits between checkpoints of the write-ahead log


_Work = Callable[[Conn], Any]


class _Locked(Exception):
    """``BEGIN IMMEDIATE`` found the database locked: nothing of the batch has run."""


class _WriteConnection(sqlite3.Connection):
    """The write connection, counting the deliveries its works add to the outbox since the
    store last told its outbox listeners; ``batch`` while a run of job updates is written
    (``run_works``).

    The works are shared with PostgreSQL (``bridge.store.postgres``), whose connection
    locks what they read to change: here ``BEGIN IMMEDIATE`` already serializes every
    write transaction, so ``for_update`` and ``skip_locked`` add nothing and ``lock`` waits
    for nothing."""

    deliveries_added = 0
    jobs_due = 0  # jobs made due now: the commit wakes the store's job listeners
    batch: JobBatch | None = None
    for_update = ""
    skip_locked = ""

    def lock(self, key: str, *, shared: bool = False) -> None:
        """Serialize the transactions that take ``key`` (here, all already are)."""

    def pipeline(self) -> contextlib.AbstractContextManager[None]:
        """Statements run as they are made here: nothing to send together."""
        return contextlib.nullcontext()


def _writer(path: str) -> _WriteConnection:
    """The write connection. It is used by one caller at a time (the store's flusher), on
    the loop or in a thread it waits for, so it may cross threads."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           factory=_WriteConnection)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # the store checkpoints, off the loop
    conn.execute("PRAGMA busy_timeout=0")  # on the loop a lock is never waited for
    return conn


def _settle(
    batch: list[tuple[_Work, asyncio.Future[Any], bool]], outcomes: list[tuple[bool, Any]]
) -> None:
    """Hand each committed work's caller its result (or its own exception)."""
    for (_, future, _), (ok, value) in zip(batch, outcomes, strict=True):
        if future.done():
            continue
        if ok:
            future.set_result(value)
        elif isinstance(value, StopIteration):
            # A future refuses a StopIteration (TypeError), which would leave this caller
            # and the rest of the batch waiting forever: wrapped, as generators do.
            wrapped = RuntimeError("a store work raised StopIteration")
            wrapped.__cause__ = value
            future.set_exception(wrapped)
        else:
            future.set_exception(_fault(value))


def _busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or one of its extended codes (BUSY_RECOVERY, BUSY_SNAPSHOT, ...)."""
    return (exc.sqlite_errorcode & 0xFF) == sqlite3.SQLITE_BUSY


# Faults of the database rather than of a request: the same request may succeed later.
_FAULTS = {
    sqlite3.SQLITE_BUSY: ("the database is busy; try again shortly", 1),
    sqlite3.SQLITE_LOCKED: ("the database is busy; try again shortly", 1),
    sqlite3.SQLITE_FULL: ("the database or its disk is full; try again later", 30),
    sqlite3.SQLITE_IOERR: ("the database could not be written; try again later", 30),
}


def _fault(exc: BaseException) -> BaseException:
    """``Unavailable`` for a database fault (the transaction was rolled back, nothing of it
    is kept), else ``exc`` itself."""
    if isinstance(exc, sqlite3.OperationalError):
        fault = _FAULTS.get(getattr(exc, "sqlite_errorcode", -1) & 0xFF)
        if fault is not None:
            unavailable = Unavailable(fault[0], retry_after=fault[1])
            unavailable.__cause__ = exc
            return unavailable
    return exc


def _commit(conn: _WriteConnection, works: list[_Work]) -> list[tuple[bool, Any]]:
    """Run the works in one transaction and commit them together; a work that raises is
    undone alone (its neighbours commit). ``_Locked`` when another connection holds the
    write lock (nothing was committed).

    The works run back to back first; only if one raises is the transaction rolled back
    and the batch run again with a savepoint around each work. A work only reads and
    writes the database (and decides from what it read), so running it again is safe, and
    the savepoints' two statements a work are spent only on the rare batch that needs them.
    """
    outcomes = _commit_batch(conn, works, savepoints=False)
    if outcomes is None:
        outcomes = _commit_batch(conn, works, savepoints=True)
        assert outcomes is not None
    return outcomes


def _commit_batch(
    conn: _WriteConnection, works: list[_Work], *, savepoints: bool
) -> list[tuple[bool, Any]] | None:
    """One transaction of ``works``. Without ``savepoints``, ``None`` (and nothing
    written) when a work raised."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if _busy(exc):
            raise _Locked from None
        raise
    try:
        if savepoints:
            outcomes = [_in_savepoint(conn, work) for work in works]
        else:
            try:
                outcomes = run_works(conn, works)
            except Exception:
                if conn.in_transaction:  # SQLite itself rolls back on some faults
                    conn.execute("ROLLBACK")
                return None
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _in_savepoint(conn: _WriteConnection, work: _Work) -> tuple[bool, Any]:
    conn.execute("SAVEPOINT work")
    try:
        outcome = (True, work(conn))
    except Exception as exc:
        if not conn.in_transaction:
            raise  # SQLite rolled the whole transaction back (a full disk): the batch fails
        conn.execute("ROLLBACK TO work")
        outcome = (False, exc)
    conn.execute("RELEASE work")
    return outcome


def _commit_waiting(conn: _WriteConnection, works: list[_Work]) -> list[tuple[bool, Any]]:
    """``_commit_batch`` in a thread, waiting up to ``BUSY_TIMEOUT`` for the write lock."""
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
    try:
        return _commit(conn, works)
    except _Locked:
        raise Unavailable(_FAULTS[sqlite3.SQLITE_BUSY][0]) from None
    finally:
        conn.execute("PRAGMA busy_timeout=0")


def _migrate(conn: Conn) -> None:
    version = scalar(conn, "PRAGMA user_version")
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


class SQLiteStore(SQLStore):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._write: _WriteConnection | None = None
        self._read: aiosqlite.Connection | None = None
        self._writer_away = False  # a thread has the write connection (see _fetchone)
        self._pending: list[tuple[_Work, asyncio.Future[Any], bool]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._commits = 0  # since the last checkpoint
        self._checkpoint: asyncio.Task[None] | None = None
        self._checkpointer: sqlite3.Connection | None = None  # used in a thread only
        self._closing = False
        self._locked_until = 0.0  # until then, a lock found held fails a batch at once

    # -- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        self._write = await asyncio.to_thread(_writer, self.path)
        await self._transaction(_migrate, heavy=True)
        self._read = await self._connect()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute_fetchall("PRAGMA busy_timeout=10000")
        await conn.execute_fetchall("PRAGMA synchronous=NORMAL")
        await conn.execute_fetchall("PRAGMA foreign_keys=ON")
        return conn

    async def close(self) -> None:
        self._closing = True  # no new writes; every accepted one is committed first
        while self._flusher is not None and not self._flusher.done():
            await asyncio.wait({self._flusher})
        self._flusher = None
        if self._checkpoint is not None:
            await asyncio.wait({self._checkpoint})
            self._checkpoint = None
        if self._read is not None:
            await self._read.close()
        for conn in (self._checkpointer, self._write):
            if conn is not None:
                conn.close()  # the writer last: the last connection out removes the log
        self._read = self._write = self._checkpointer = None
        self._closing = False

    async def ping(self) -> bool:
        try:
            rows = await self._reader.execute_fetchall("PRAGMA user_version")
        except (aiosqlite.Error, ValueError, RuntimeError):
            return False
        return bool(rows) and next(iter(rows))[0] == len(MIGRATIONS)

    @property
    def _reader(self) -> aiosqlite.Connection:
        if self._read is None:
            raise RuntimeError("store is not open")
        return self._read

    async def _transaction(
        self, work: Callable[[Conn], _T], *, heavy: bool = False
    ) -> _T:
        """Run ``work`` atomically; return once it is committed.

        Group commit: works that arrive while a batch is being written wait for it and then
        go together in one ``BEGIN IMMEDIATE`` transaction. A work that raises is undone
        alone (its caller gets the exception); its neighbours commit (see ``_commit``).
        Under load one commit serves many callers; alone, a work is committed at once.
        ``heavy``: a bulk work (many rows), written in a thread so that the loop does not
        wait for it.
        """
        result: _T = await self._enqueue(work, heavy)
        return result

    def _enqueue(self, work: _Work, heavy: bool = False) -> asyncio.Future[Any]:
        """Queue ``work`` for the next group commit; the future holds what it answers."""
        if self._write is None or self._closing:
            raise RuntimeError("store is not open")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((work, future, heavy))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(self._write), name="store.commit")
            self._flusher.add_done_callback(self._flusher_ended)
        return future

    async def _flush(self, write: _WriteConnection) -> None:
        while self._pending:
            # One more turn of the loop first: the requests it is reading now join this
            # commit instead of paying for one of their own (at rest the turn is free).
            await asyncio.sleep(0)
            batch, self._pending = self._pending, []
            await self._write_batch(write, batch)

    def _flusher_ended(self, flusher: asyncio.Task[None]) -> None:
        """A flusher that ended with works left was cancelled (the loop is going away,
        perhaps before it ever ran): what was never begun is never written, and its
        callers are told so rather than left waiting."""
        if flusher is self._flusher and self._pending:
            waiting, self._pending = self._pending, []
            for _, future, _ in waiting:
                future.cancel()

    async def _write_batch(
        self, write: _WriteConnection, batch: list[tuple[_Work, asyncio.Future[Any], bool]]
    ) -> None:
        works = [work for work, _, _ in batch]
        try:
            if any(heavy for _, _, heavy in batch):
                outcomes = await self._in_thread(write, batch, works)
            else:
                try:
                    outcomes = _commit(write, works)
                except _Locked:
                    if time.monotonic() < self._locked_until:
                        # The batch before waited out BUSY_TIMEOUT for this same lock
                        # moments ago: these callers are answered now, not after a wait
                        # of their own.
                        raise Unavailable(_FAULTS[sqlite3.SQLITE_BUSY][0]) from None
                    outcomes = await self._in_thread(write, batch, works)
        except BaseException as exc:  # the commit itself failed: nothing was written
            if isinstance(_fault(exc), Unavailable):
                self._locked_until = time.monotonic() + BUSY_TIMEOUT
            for _, future, _ in batch:
                if not future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(_fault(exc))
            if not isinstance(exc, Exception):
                raise
            return
        _settle(batch, outcomes)
        if write.deliveries_added:
            write.deliveries_added = 0
            for listener in self.outbox_listeners:
                listener()
        if write.jobs_due:
            write.jobs_due = 0
            for listener in self.job_listeners:
                listener()
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY and (
                self._checkpoint is None or self._checkpoint.done()):
            self._commits = 0
            self._checkpoint = asyncio.create_task(self._checkpoint_log(),
                                                   name="store.checkpoint")

    async def _in_thread(
        self, write: _WriteConnection, batch: list[tuple[_Work, asyncio.Future[Any], bool]],
        works: list[_Work],
    ) -> list[tuple[bool, Any]]:
        """``_commit_waiting`` in a thread. If this task is cancelled meanwhile, the thread
        still has the connection: it is waited for (nothing else may use the connection
        until it is done) and its callers get what it did, then the cancel goes on."""
        thread = asyncio.get_running_loop().run_in_executor(None, _commit_waiting, write, works)
        self._writer_away = True
        thread.add_done_callback(self._writer_back)
        try:
            return await asyncio.shield(thread)
        except asyncio.CancelledError:
            await asyncio.wait({thread})
            if not thread.cancelled() and thread.exception() is None:
                _settle(batch, thread.result())
            raise

    def _writer_back(self, _: object) -> None:
        self._writer_away = False

    async def _checkpoint_log(self) -> None:
        """Copy the write-ahead log into the database and sync it, in a thread on a
        connection of its own. PASSIVE: it neither waits for nor blocks readers and writers
        (what it cannot copy now, the next one does)."""
        try:
            await asyncio.to_thread(self._checkpoint_now)
        except sqlite3.Error as exc:
            log.warning("checkpoint of the write-ahead log failed: %s", exc)

    def _checkpoint_now(self) -> None:
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(self.path, isolation_level=None,
                                                 check_same_thread=False)
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    async def _fetchone(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        """A one-row lookup by key: a few pages read, on the loop, on the write connection
        between its batches. Its page cache stays warm across its own commits, where any
        other connection's is dropped at the first read after each of them. WAL readers
        wait for no writer; when a thread has the write connection, or in the rare moment
        the log itself is busy, the read is made in the reader's thread."""
        write = self._write
        if write is not None and not self._writer_away and not write.in_transaction:
            try:
                return one(write, sql, params)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
        rows = await self._reader.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def _fetchall(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return list(await self._reader.execute_fetchall(sql, params))

