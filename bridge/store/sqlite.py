"""The SQLite backend: one file in WAL mode, all of the bridge's SQL.

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
import base64
import functools
import itertools
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite

from bridge import jsoncodec
from bridge.config import ConfiguredEndpoint
from bridge.errors import InvalidRequest, Unavailable
from bridge.models import (
    DEFAULT_ENDPOINT_EVENTS,
    DEFAULT_MAX_CONCURRENCY,
    EVENT_TYPES,
    TERMINAL,
    ApiKey,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    Job,
    JobError,
    JobStatus,
    Tenant,
    Tracking,
    hashed_key_prefix,
    new_id,
    rfc3339_stamp,
    utcnow,
)
from bridge.store.base import AttemptResult, Decide, Outgoing, Page, Stats

_T = TypeVar("_T")
log = logging.getLogger("bridge.store")
_CURSOR = re.compile(r"s([0-9]{1,18})")
_TERMINAL = tuple(str(status) for status in TERMINAL)

MIGRATIONS: Sequence[str] = (
    # 1: tenants, keys, jobs, events
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

    CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        signing_secret TEXT NOT NULL,
        created_at REAL NOT NULL
    );

    CREATE TABLE api_keys (
        key_hash TEXT PRIMARY KEY,
        tenant TEXT NOT NULL REFERENCES tenants(id),
        created_at REAL NOT NULL
    );

    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL REFERENCES tenants(id),
        provider TEXT NOT NULL,
        model TEXT,
        status TEXT NOT NULL,
        tracking TEXT NOT NULL,
        provider_job_id TEXT,
        progress INTEGER,
        request TEXT NOT NULL,
        result TEXT,
        error TEXT,
        cost TEXT,
        metadata TEXT,
        provider_data TEXT NOT NULL DEFAULT '{}',
        webhook_url TEXT,
        webhook_events TEXT,
        idempotency_key TEXT,
        sequence INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        completed_at REAL,
        submit_started_at REAL,
        submitted_at REAL,
        next_check_at REAL,
        lease_until REAL,
        check_count INTEGER NOT NULL DEFAULT 0,
        error_streak INTEGER NOT NULL DEFAULT 0,
        progress_event_at REAL
    );
    CREATE INDEX jobs_due ON jobs(next_check_at) WHERE next_check_at IS NOT NULL;
    CREATE INDEX jobs_tenant ON jobs(tenant, seq);
    CREATE INDEX jobs_provider_status ON jobs(provider, status);
    CREATE UNIQUE INDEX jobs_idempotency ON jobs(tenant, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX jobs_provider_task ON jobs(provider, provider_job_id)
        WHERE provider_job_id IS NOT NULL;

    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        job_id TEXT,
        type TEXT NOT NULL,
        created_at REAL NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX events_tenant ON events(tenant, seq);
    CREATE INDEX events_tenant_type ON events(tenant, type, seq);
    CREATE INDEX events_job ON events(job_id, seq);
    """,
    # 2: webhook endpoints and the delivery outbox
    """
    CREATE TABLE endpoints (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL REFERENCES tenants(id),
        kind TEXT NOT NULL DEFAULT 'endpoint',
        url TEXT NOT NULL,
        events TEXT,
        description TEXT,
        headers TEXT NOT NULL DEFAULT '{}',
        secret TEXT,
        previous_secret TEXT,
        previous_secret_until REAL,
        disabled INTEGER NOT NULL DEFAULT 0,
        disabled_reason TEXT,
        failing_since REAL,
        source TEXT NOT NULL DEFAULT 'api',
        created_at REAL NOT NULL
    );
    CREATE INDEX endpoints_tenant ON endpoints(tenant, seq);

    CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        endpoint_id TEXT,
        url TEXT,
        channel TEXT NOT NULL,
        job_id TEXT,
        sequence INTEGER NOT NULL DEFAULT 0,
        attempt INTEGER NOT NULL,
        first_attempt INTEGER NOT NULL DEFAULT 1,
        status TEXT NOT NULL,
        next_attempt_at REAL,
        lease_until REAL,
        response_status INTEGER,
        duration_ms INTEGER,
        error TEXT,
        response_excerpt TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending';
    CREATE INDEX deliveries_order ON deliveries(channel, job_id, sequence)
        WHERE status = 'pending';
    CREATE INDEX deliveries_endpoint ON deliveries(endpoint_id, seq);
    CREATE INDEX deliveries_event ON deliveries(event_id);
    """,
    # 3: keys named by a prefix, their source, last use and revocation; a tenant's signing
    # secret rotated with an overlap. Keys stored before are named by their hash: their text
    # is not known.
    """
    ALTER TABLE api_keys ADD COLUMN prefix TEXT NOT NULL DEFAULT '';
    UPDATE api_keys SET prefix = 'sha256:' || substr(key_hash, 1, 8);
    ALTER TABLE api_keys ADD COLUMN source TEXT NOT NULL DEFAULT 'unknown';
    ALTER TABLE api_keys ADD COLUMN last_used_at REAL;
    ALTER TABLE api_keys ADD COLUMN revoked_at REAL;
    CREATE INDEX api_keys_prefix ON api_keys(prefix);
    CREATE INDEX api_keys_tenant ON api_keys(tenant, created_at);

    ALTER TABLE tenants ADD COLUMN previous_signing_secret TEXT;
    ALTER TABLE tenants ADD COLUMN previous_signing_secret_until REAL;
    """,
    # 4: each endpoint's cap on attempts in flight at once
    """
    ALTER TABLE endpoints ADD COLUMN max_concurrency INTEGER NOT NULL DEFAULT 4;
    """,
)

_JOB_COLUMNS = (
    "id", "tenant", "provider", "model", "status", "tracking", "provider_job_id", "progress",
    "request", "result", "error", "cost", "metadata", "provider_data", "webhook_url",
    "webhook_events", "idempotency_key", "sequence", "created_at", "updated_at", "completed_at",
    "submit_started_at", "submitted_at", "next_check_at", "check_count", "error_streak",
    "progress_event_at",
)
# Every job read names its columns in this order, and ``_job`` unpacks them by position: a
# name lookup in a ``sqlite3.Row`` scans the column names, 27 times a row.
_JOB_READ = f"{', '.join(_JOB_COLUMNS)}, lease_until"
_JOB_SELECT = f"SELECT {_JOB_READ} FROM jobs"
_JOB_BY_ID = f"{_JOB_SELECT} WHERE id = ?"
_STATUS = _JOB_COLUMNS.index("status")  # positions in a row of _JOB_SELECT
_LEASE_UNTIL = len(_JOB_COLUMNS)
_JOB_INSERT = (
    f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _JOB_COLUMNS)})"
)


KEY_USE_RESOLUTION = 60.0  # seconds: a key's last use is written at most this often
BUSY_TIMEOUT = 3.0  # seconds a write waits for another process's lock before it fails
CHECKPOINT_EVERY = 64  # commits between checkpoints of the write-ahead log
TURN_SCAN = 2  # a claim taking tenants in turns reads up to this many times its limit

class Cursor(Protocol):
    """What the works use of a cursor: ``sqlite3.Cursor`` and psycopg's alike."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def close(self) -> None: ...

    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """The connection a work runs on, inside its transaction (see ``_WriteConnection``)."""

    deliveries_added: int
    jobs_due: int
    batch: _JobBatch | None
    for_update: str
    skip_locked: str

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...

    def lock(self, key: str) -> None: ...


_Work = Callable[[Conn], Any]


class _Locked(Exception):
    """``BEGIN IMMEDIATE`` found the database locked: nothing of the batch has run."""


class SQLiteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._write: _WriteConnection | None = None
        self._read: aiosqlite.Connection | None = None
        self._writer_away = False  # a thread has the write connection (see _fetchone)
        self._pending: list[tuple[_Work, asyncio.Future[Any], bool]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._commits = 0  # since the last checkpoint
        # Called after each commit that added deliveries (the deliverer's wake-up): events
        # that go to no endpoint wake nobody.
        self.outbox_listeners: list[Callable[[], None]] = []
        self.job_listeners: list[Callable[[], None]] = []  # after commits that made jobs due
        self._checkpoint: asyncio.Task[None] | None = None
        self._checkpointer: sqlite3.Connection | None = None  # used in a thread only
        self._closing = False

    # -- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
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
                    outcomes = await self._in_thread(write, batch, works)
        except BaseException as exc:  # the commit itself failed: nothing was written
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
                return _one(write, sql, params)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
        rows = await self._reader.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def _fetchall(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return list(await self._reader.execute_fetchall(sql, params))

    async def _newest_first(
        self, table: str, tenant: str, equal: dict[str, Any], limit: int, cursor: str | None,
        columns: str = "*",
    ) -> list[sqlite3.Row]:
        """One page of a tenant's rows, newest first: ``equal`` filters (``None``: no
        filter), one row more than ``limit`` to tell whether another page follows."""
        where = ["tenant = ?"]
        params: list[Any] = [tenant]
        for column, value in equal.items():
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if cursor is not None:
            where.append("seq < ?")
            params.append(decode_cursor(cursor))
        return await self._fetchall(
            f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)} ORDER BY seq DESC "
            "LIMIT ?",
            (*params, limit + 1),
        )

    # -- meta ----------------------------------------------------------------------------
    async def get_or_set_meta(self, key: str, make: Callable[[], str]) -> str:
        def work(conn: Conn) -> str:
            row = _one(conn, "SELECT value FROM meta WHERE key = ?", (key,))
            if row is not None:
                return str(row[0])
            value = make()
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
            return value

        return await self._transaction(work)

    # -- tenants and keys ----------------------------------------------------------------
    async def ensure_tenant(self, name: str, make_secret: Callable[[], str]) -> Tenant:
        def work(conn: Conn) -> Tenant:
            conn.execute(
                "INSERT INTO tenants (id, signing_secret, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (name, make_secret(), time.time()),
            )
            row = _one(conn, "SELECT id, signing_secret FROM tenants WHERE id = ?", (name,))
            assert row is not None  # inserted just above, or already there
            return Tenant(id=row["id"], signing_secret=row["signing_secret"])

        return await self._transaction(work)

    async def add_api_key(self, tenant: str, key_hash: str, *, prefix: str | None = None,
                          source: str = "cli") -> bool:
        prefix = prefix or hashed_key_prefix(key_hash)

        def work(conn: Conn) -> bool:
            if _one(conn, "SELECT 1 FROM api_keys WHERE prefix = ? AND key_hash != ? "
                          "AND revoked_at IS NULL", (prefix, key_hash)) is not None:
                return False
            conn.execute(
                "INSERT INTO api_keys (key_hash, tenant, created_at, prefix, source) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (key_hash) DO UPDATE SET tenant = excluded.tenant",
                (key_hash, tenant, time.time(), prefix, source),
            )
            return True

        return await self._transaction(work)

    async def set_env_api_key(self, tenant: str, key_hash: str) -> tuple[list[ApiKey], bool]:
        def work(conn: Conn) -> tuple[list[ApiKey], bool]:
            now = time.time()
            conn.execute(
                "INSERT INTO api_keys (key_hash, tenant, created_at, prefix, source) "
                "VALUES (?, ?, ?, ?, 'env') "
                "ON CONFLICT (key_hash) DO UPDATE SET tenant = excluded.tenant, source = 'env'",
                (key_hash, tenant, now, hashed_key_prefix(key_hash)),
            )
            earlier = conn.execute(
                f"UPDATE api_keys SET revoked_at = ? WHERE tenant = ? AND source = 'env' "
                f"AND key_hash != ? AND revoked_at IS NULL RETURNING {_KEY_COLUMNS}",
                (now, tenant, key_hash)).fetchall()
            usable = _one(conn, "SELECT revoked_at IS NULL FROM api_keys WHERE key_hash = ?",
                          (key_hash,))
            return [_api_key(row) for row in earlier], bool(usable and usable[0])

        return await self._transaction(work)

    async def tenant_for_key(self, key_hash: str) -> Tenant | None:
        # Read from the database at every request, never cached: a key revoked by any
        # process is refused at once.
        row = await self._fetchone(
            "SELECT t.id, t.signing_secret, k.last_used_at FROM api_keys k "
            "JOIN tenants t ON t.id = k.tenant WHERE k.key_hash = ? AND k.revoked_at IS NULL",
            (key_hash,),
        )
        if row is None:
            return None
        now = time.time()
        if row["last_used_at"] is None or now - row["last_used_at"] >= KEY_USE_RESOLUTION:
            await self._touch_key(key_hash, now)
        return Tenant(id=row["id"], signing_secret=row["signing_secret"])

    async def _touch_key(self, key_hash: str, now: float) -> None:
        """Record a key's use; one that cannot be recorded (the database busy) is let go."""
        def work(conn: Conn) -> None:
            conn.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE key_hash = ? "
                "AND (last_used_at IS NULL OR last_used_at <= ?)",
                (now, key_hash, now - KEY_USE_RESOLUTION))

        try:
            await self._transaction(work)
        except (sqlite3.OperationalError, Unavailable) as exc:
            log.warning("could not record an API key's last use: %s", exc)

    async def list_api_keys(self, tenant: str | None) -> list[ApiKey]:
        where, params = ("AND tenant = ?", (tenant,)) if tenant is not None else ("", ())
        rows = await self._fetchall(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL {where} "
            "ORDER BY created_at DESC, prefix", params)
        return [_api_key(row) for row in rows]

    async def revoke_api_key(self, prefix: str, tenant: str | None,
                             now: datetime) -> ApiKey | None:
        def work(conn: Conn) -> ApiKey | None:
            # A prefix names one active key (see add_api_key); should two keys stored before
            # prefixes share one, both go.
            where, params = ("AND tenant = ?", (tenant,)) if tenant is not None else ("", ())
            rows = conn.execute(
                f"UPDATE api_keys SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL "
                f"{where} RETURNING {_KEY_COLUMNS}", (now.timestamp(), prefix, *params),
            ).fetchall()
            return _api_key(rows[0]) if rows else None

        return await self._transaction(work)

    async def rotate_signing_secret(self, tenant: str, secret: str,
                                    previous_until: datetime) -> Tenant | None:
        def work(conn: Conn) -> Tenant | None:
            row = _one(conn, "UPDATE tenants SET previous_signing_secret = signing_secret, "
                             "previous_signing_secret_until = ?, signing_secret = ? "
                             "WHERE id = ? RETURNING id, signing_secret",
                       (previous_until.timestamp(), secret, tenant))
            return Tenant(id=row["id"], signing_secret=row["signing_secret"]) if row else None

        return await self._transaction(work)

    # -- jobs ----------------------------------------------------------------------------
    async def create_job(self, job: Job, *, idempotency_window: float) -> tuple[Job, bool]:
        def work(conn: Conn) -> tuple[Job, bool]:
            conn.jobs_due += 1
            if job.idempotency_key is not None:
                conn.lock(f"idempotency:{job.tenant}:{job.idempotency_key}")
                row = _one(
                    conn,
                    f"{_JOB_SELECT} WHERE tenant = ? AND idempotency_key = ?",
                    (job.tenant, job.idempotency_key),
                )
                if row is not None:
                    if row["created_at"] >= time.time() - idempotency_window:
                        return _job(row), False
                    # The key's window has passed: it may name a new job now.
                    conn.execute(
                        "UPDATE jobs SET idempotency_key = NULL WHERE id = ?", (row["id"],)
                    )
            conn.execute(_JOB_INSERT, _job_params(job))
            return job, True

        return await self._transaction(work)

    async def get_job(self, job_id: str, tenant: str | None = None) -> Job | None:
        if tenant is None:
            row = await self._fetchone(_JOB_BY_ID, (job_id,))
        else:
            row = await self._fetchone(
                f"{_JOB_SELECT} WHERE id = ? AND tenant = ?", (job_id, tenant)
            )
        return _job(row) if row else None

    async def list_jobs(
        self,
        tenant: str,
        *,
        status: str | None,
        provider: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Job]:
        rows = await self._newest_first(
            "jobs", tenant, {"status": status, "provider": provider}, limit, cursor,
            columns=f"{_JOB_READ}, seq",
        )
        return _page(rows, limit, _job)

    async def update_job(
        self, job_id: str, decide: Decide, *, release_lease: bool = False
    ) -> tuple[Job, Event | None] | None:
        def work(conn: Conn) -> tuple[Job, Event | None] | None:
            batch = conn.batch if isinstance(conn, _WriteConnection) else None
            row = batch.rows.pop(job_id, _UNREAD) if batch is not None else _UNREAD
            if row is _UNREAD:
                row = _one(conn, _JOB_BY_ID + conn.for_update, (job_id,))
            if row is None or row[_STATUS] in _TERMINAL:
                return None
            current = _job(row)
            change = decide(current)
            if change is None:
                if release_lease:
                    conn.execute("UPDATE jobs SET lease_until = NULL WHERE id = ?", (job_id,))
                return None
            job = change.job
            event = None
            stamp = job.updated_at.timestamp()
            if change.event_type is not None:
                job = job.evolve(sequence=current.sequence + 1)
                data = job.to_json()
                data["sequence"] = job.sequence
                event = Event(
                    id=new_id("evt"),
                    tenant=job.tenant,
                    type=change.event_type,
                    job_id=job.id,
                    created_at=job.updated_at,
                    data=data,
                )
                if batch is not None:
                    batch.events.append(_event_params(event))
                else:
                    _insert_event(conn, event)
                _fan_out(conn, event, job, stamp)
            # Write only the columns that changed: each untouched index is a page not
            # rewritten, and a change that changes nothing costs no write at all. Job
            # fields are named as their columns; ``evolve`` shares what it leaves alone.
            before, after = current.__dict__, job.__dict__
            changed = [c for c in _JOB_COLUMNS
                       if after[c] is not before[c] and after[c] != before[c]]
            values = [_JOB_ENCODERS[c](job) for c in changed]
            if release_lease and row[_LEASE_UNTIL] is not None:
                changed.append("lease_until")
                values.append(None)
            if changed:
                assignments = ", ".join(f"{c} = ?" for c in changed)
                conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values, job_id))
            if job.status in TERMINAL:
                # A finished job frees its slot at the provider: the provider's jobs waiting
                # for one are due now.
                if batch is not None:
                    batch.freed[job.provider] = max(stamp, batch.freed.get(job.provider, 0))
                else:
                    _wake_waiting(conn, job.provider, stamp)
            return job, event

        work.job_id = job_id  # type: ignore[attr-defined]  # a job update: see _JobBatch
        return await self._transaction(work)

    async def claim_due_jobs(self, now: datetime, limit: int, lease: float) -> list[Job]:
        stamp = now.timestamp()

        def work(conn: Conn) -> list[sqlite3.Row]:
            return conn.execute(
                "UPDATE jobs SET lease_until = ? WHERE id IN ("
                "  SELECT id FROM jobs WHERE next_check_at <= ?"
                "  AND (lease_until IS NULL OR lease_until < ?)"
                f"  ORDER BY next_check_at LIMIT ?{conn.skip_locked}"
                f") RETURNING {_JOB_READ}",
                (stamp + lease, stamp, stamp, limit),
            ).fetchall()

        jobs = [_job(row) for row in await self._transaction(work)]
        jobs.sort(key=lambda job: job.next_check_at or now)
        return jobs

    async def release_job(self, job_id: str, next_check_at: datetime | None) -> None:
        def work(conn: Conn) -> None:
            conn.execute(
                "UPDATE jobs SET lease_until = NULL, next_check_at = ? "
                "WHERE id = ? AND status NOT IN (?, ?, ?, ?)",
                (_ts(next_check_at), job_id, *_TERMINAL),
            )

        await self._transaction(work)

    async def begin_submit(
        self, job_id: str, provider: str, limit: int | None, now: datetime
    ) -> bool:
        def work(conn: Conn) -> bool:
            if limit is not None:
                conn.lock(f"submit:{provider}")  # the provider's slots, across processes
                busy = _scalar(
                    conn,
                    "SELECT COUNT(*) FROM jobs WHERE provider = ? AND id != ? AND ("
                    "  status IN ('submitted', 'running')"
                    "  OR (status = 'queued' AND submit_started_at IS NOT NULL))",
                    (provider, job_id),
                )
                if busy >= limit:
                    return False
            conn.execute(
                "UPDATE jobs SET submit_started_at = ? WHERE id = ? AND status = 'queued'",
                (now.timestamp(), job_id),
            )
            return True

        return await self._transaction(work)

    async def unfinished_jobs(self) -> list[Job]:
        rows = await self._fetchall(
            f"{_JOB_SELECT} WHERE status NOT IN (?, ?, ?, ?) ORDER BY seq", _TERMINAL
        )
        return [_job(row) for row in rows]

    async def adopted_provider_job(self, provider: str, provider_job_id: str) -> str | None:
        row = await self._fetchone(
            "SELECT id FROM jobs WHERE provider = ? AND provider_job_id = ?",
            (provider, provider_job_id),
        )
        return str(row["id"]) if row else None

    # -- events --------------------------------------------------------------------------
    async def list_events(
        self,
        tenant: str,
        *,
        type: str | None,
        job_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Event]:
        rows = await self._newest_first(
            "events", tenant, {"type": type, "job_id": job_id}, limit, cursor
        )
        return _page(rows, limit, _event)

    async def get_event(self, event_id: str, tenant: str) -> Event | None:
        row = await self._fetchone(
            "SELECT * FROM events WHERE id = ? AND tenant = ?", (event_id, tenant)
        )
        return _event(row) if row else None

    async def job_events(self, job_id: str) -> list[Event]:
        rows = await self._fetchall("SELECT * FROM events WHERE job_id = ? ORDER BY seq", (job_id,))
        return [_event(row) for row in rows]

    async def add_event(self, event: Event, *, endpoint_id: str | None = None) -> Delivery | None:
        def work(conn: Conn) -> Delivery | None:
            _insert_event(conn, event)
            if endpoint_id is None:
                return None
            return _insert_delivery(conn, event, endpoint_id, None,
                                    event.created_at.timestamp())

        return await self._transaction(work)

    async def replay_event(
        self, event: Event, endpoint_id: str | None, now: datetime
    ) -> list[Delivery]:
        stamp = now.timestamp()

        def work(conn: Conn) -> list[Delivery]:
            if endpoint_id is not None:
                return [_insert_delivery(conn, event, endpoint_id, None, stamp, again=True)]
            job = None
            if event.job_id is not None:
                row = _one(conn, _JOB_BY_ID, (event.job_id,))
                job = _job(row) if row is not None else None
            return _fan_out(conn, event, job, stamp, again=True)

        return await self._transaction(work)

    # -- endpoints -----------------------------------------------------------------------
    async def create_endpoint(self, endpoint: Endpoint) -> Endpoint:
        def work(conn: Conn) -> Endpoint:
            conn.execute(_ENDPOINT_INSERT, _endpoint_params(endpoint))
            return endpoint

        return await self._transaction(work)

    async def get_endpoint(self, endpoint_id: str, tenant: str) -> Endpoint | None:
        row = await self._fetchone(
            "SELECT * FROM endpoints WHERE id = ? AND tenant = ?", (endpoint_id, tenant)
        )
        return _endpoint(row) if row else None

    async def list_endpoints(
        self, tenant: str, *, limit: int, cursor: str | None
    ) -> Page[Endpoint]:
        rows = await self._newest_first("endpoints", tenant, {}, limit, cursor)
        return _page(rows, limit, _endpoint)

    async def update_endpoint(
        self, endpoint_id: str, tenant: str, change: Callable[[Endpoint], Endpoint]
    ) -> Endpoint | None:
        def work(conn: Conn) -> Endpoint | None:
            row = _one(conn, "SELECT * FROM endpoints WHERE id = ? AND tenant = ?"
                       + conn.for_update, (endpoint_id, tenant))
            if row is None:
                return None
            current = _endpoint(row)
            updated = change(current)
            if current.disabled and not updated.disabled:
                updated = replace(updated, disabled_reason=None, failing_since=None)
            _write_endpoint(conn, updated)
            if updated.disabled and not current.disabled:
                _fail_pending(conn, "endpoint_id = ?", (endpoint_id,), "endpoint disabled")
            return updated

        return await self._transaction(work)

    async def delete_endpoint(self, endpoint_id: str, tenant: str) -> bool:
        def work(conn: Conn) -> bool:
            gone = conn.execute("DELETE FROM endpoints WHERE id = ? AND tenant = ?",
                                (endpoint_id, tenant)).rowcount
            if gone:
                conn.execute("DELETE FROM deliveries WHERE endpoint_id = ?", (endpoint_id,))
            return bool(gone)

        return await self._transaction(work)

    async def endpoint_deliveries(
        self, endpoint_id: str, *, limit: int, cursor: str | None
    ) -> Page[Delivery]:
        params: list[Any] = [endpoint_id]
        before = ""
        if cursor is not None:
            before = " AND seq < ?"
            params.append(decode_cursor(cursor))
        rows = await self._fetchall(
            f"SELECT {_DELIVERY_READ} FROM deliveries WHERE endpoint_id = ?{before} "
            "ORDER BY seq DESC LIMIT ?",
            (*params, limit + 1),
        )
        return _page(rows, limit, _delivery)

    async def recover_endpoint(
        self, endpoint: Endpoint, since: datetime, now: datetime
    ) -> tuple[int, bool]:
        stamp = now.timestamp()
        wanted = [t for t in EVENT_TYPES if t != "endpoint.test" and endpoint.wants(t)]

        def work(conn: Conn) -> tuple[int, bool]:
            rows = conn.execute(
                "SELECT * FROM events v WHERE v.tenant = ? AND v.created_at >= ? "
                f"AND v.type IN ({', '.join('?' * len(wanted))}) AND NOT EXISTS ("
                "  SELECT 1 FROM deliveries d WHERE d.event_id = v.id AND d.endpoint_id = ?"
                "  AND d.status IN ('pending', 'succeeded', 'skipped')"
                ") ORDER BY v.seq LIMIT ?",
                (endpoint.tenant, max(since, endpoint.created_at).timestamp(), *wanted,
                 endpoint.id, RECOVER_LIMIT + 1),
            ).fetchall()
            for row in rows[:RECOVER_LIMIT]:
                _insert_delivery(conn, _event(row), endpoint.id, None, stamp, again=True)
            return min(len(rows), RECOVER_LIMIT), len(rows) > RECOVER_LIMIT

        return await self._transaction(work, heavy=True)

    # -- deliveries ----------------------------------------------------------------------
    async def claim_due_deliveries(
        self, now: datetime, limit: int, lease: float, *,
        skip_endpoints: frozenset[str] = frozenset(),
        per_tenant: int | None = None,
        tenant_room: Mapping[str, int] | None = None,
    ) -> list[Outgoing]:
        stamp = now.timestamp()
        until = stamp + lease
        room = dict(tenant_room or {})
        full = sorted(tenant for tenant, left in room.items() if left <= 0)
        skip = ""
        if skip_endpoints:
            skip = f"  AND d.channel NOT IN ({', '.join('?' * len(skip_endpoints))})"
        if full:
            skip += f"  AND d.tenant NOT IN ({', '.join('?' * len(full))})"
        # Taking tenants in turns looks further than ``limit``: past the first tenant's rows.
        scan = limit if per_tenant is None else TURN_SCAN * limit

        def work(conn: Conn) -> list[Outgoing]:
            # A delivery waits while its target has an earlier pending one of the same job:
            # an earlier event, or the same event queued before it (a replay).
            due = conn.execute(
                "SELECT d.seq, d.tenant FROM deliveries d WHERE d.status = 'pending'"
                "  AND d.next_attempt_at <= ? AND (d.lease_until IS NULL OR d.lease_until < ?)"
                f"{skip}"
                "  AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.status = 'pending'"
                "    AND e.channel = d.channel AND e.job_id = d.job_id"
                "    AND (e.sequence < d.sequence OR (e.sequence = d.sequence AND e.seq < d.seq)))"
                f"  ORDER BY d.next_attempt_at, d.seq LIMIT ?{conn.skip_locked}",
                (stamp, stamp, *sorted(skip_endpoints), *full, scan),
            ).fetchall()
            taken = _in_turns(due, limit, per_tenant, room)
            if not taken:
                return []
            rows = conn.execute(
                "UPDATE deliveries SET lease_until = ? "
                f"WHERE seq IN ({', '.join('?' * len(taken))}) RETURNING {_DELIVERY_READ}",
                (until, *taken),
            ).fetchall()
            turn = {seq: index for index, seq in enumerate(taken)}
            deliveries = [_delivery(row) for row in sorted(rows, key=lambda r: turn[r["seq"]])]
            return _outgoing(conn, deliveries, stamp, until)

        return await self._transaction(work)

    async def finish_delivery(self, outgoing: Outgoing, result: AttemptResult) -> bool:
        return await self._transaction(
            functools.partial(_finish, outgoing=outgoing, result=result))

    async def finish_deliveries(
        self, finished: Sequence[tuple[Outgoing, AttemptResult]]
    ) -> list[bool | Exception]:
        def work(conn: Conn) -> list[bool | Exception]:
            return [_finish(conn, outgoing, result) for outgoing, result in finished]

        try:
            return await self._transaction(work)  # one work: what nearly always happens
        except Exception as exc:
            if len(finished) == 1:
                return [exc]
        # One of them raised, and all were undone: each again on its own, so that only the
        # one that raises fails.
        futures = [self._enqueue(functools.partial(_finish, outgoing=outgoing, result=result))
                   for outgoing, result in finished]
        return list(await asyncio.gather(*futures, return_exceptions=True))

    async def release_deliveries(self, claimed: Sequence[Outgoing]) -> None:
        def work(conn: Conn) -> None:
            conn.executemany(
                "UPDATE deliveries SET lease_until = NULL "
                "WHERE id = ? AND status = 'pending' AND lease_until = ?",
                [(outgoing.delivery.id, outgoing.lease_until) for outgoing in claimed])

        await self._transaction(work)

    async def sync_configured_endpoints(
        self, endpoints: Sequence[ConfiguredEndpoint], now: datetime,
        make_secret: Callable[[], str],
    ) -> dict[str, int]:
        removed_reason = "removed from BRIDGE_CONFIG"

        def work(conn: Conn) -> dict[str, int]:
            conn.lock("configured endpoints")  # processes starting together sync once
            counts = {"created": 0, "updated": 0, "disabled": 0}
            current = {(e.tenant, e.url): e for e in map(_endpoint, conn.execute(
                "SELECT * FROM endpoints WHERE source = 'config'").fetchall())}
            for wanted in endpoints:
                conn.execute(
                    "INSERT INTO tenants (id, signing_secret, created_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (id) DO NOTHING", (wanted.tenant, make_secret(), now.timestamp()))
                have = current.pop((wanted.tenant, wanted.url), None)
                if have is None:
                    conn.execute(_ENDPOINT_INSERT, _endpoint_params(Endpoint(
                        id=new_id("ep"), tenant=wanted.tenant, url=wanted.url,
                        events=wanted.events, description=wanted.description, headers={},
                        secret=wanted.secret, created_at=now, source="config")))
                    counts["created"] += 1
                    continue
                updated = replace(have, events=wanted.events, description=wanted.description)
                if have.secret != wanted.secret:  # as a rotation: the old one signs for a day
                    updated = replace(updated, secret=wanted.secret, previous_secret=have.secret,
                                      previous_secret_until=now + timedelta(hours=24))
                if have.disabled and have.disabled_reason == removed_reason:
                    updated = replace(updated, disabled=False, disabled_reason=None,
                                      failing_since=None)
                if updated != have:
                    _write_endpoint(conn, updated)
                    counts["updated"] += 1
            for gone in current.values():
                if not gone.disabled:
                    _write_endpoint(conn, replace(gone, disabled=True,
                                                  disabled_reason=removed_reason))
                    _fail_pending(conn, "endpoint_id = ?", (gone.id,), "endpoint disabled")
                    counts["disabled"] += 1
            return counts

        return await self._transaction(work, heavy=True)

    async def stats(self, now: datetime) -> Stats:
        jobs = await self._fetchall(
            "SELECT provider, status, COUNT(*) AS n FROM jobs GROUP BY provider, status")
        # A scan of the outbox, on the reader's thread (``_fetchone`` is for lookups).
        pending = next(iter(await self._fetchall(
            "SELECT COUNT(*) AS n, MIN(v.created_at) AS oldest FROM deliveries d "
            "JOIN events v ON v.id = d.event_id WHERE d.status = 'pending'")), None)
        depth = int(pending["n"]) if pending else 0
        oldest = pending["oldest"] if pending else None
        return Stats(
            jobs={(row["provider"], row["status"]): int(row["n"]) for row in jobs},
            outbox_depth=depth,
            oldest_pending_seconds=max(0.0, now.timestamp() - oldest) if oldest else 0.0,
        )


def _one(conn: Conn, sql: str, params: Any = ()) -> sqlite3.Row | None:
    """The first row, with the statement finished (an unfinished one blocks COMMIT)."""
    cursor = conn.execute(sql, params)
    try:
        row: sqlite3.Row | None = cursor.fetchone()
        return row
    finally:
        cursor.close()


def _scalar(conn: Conn, sql: str, params: Any = ()) -> Any:
    row = _one(conn, sql, params)
    assert row is not None
    return row[0]


class _WriteConnection(sqlite3.Connection):
    """The write connection, counting the deliveries its works add to the outbox since the
    store last told its outbox listeners; ``batch`` while a run of job updates is written
    (``_run_works``).

    The works are shared with PostgreSQL (``bridge.store.postgres``), whose connection
    locks what they read to change: here ``BEGIN IMMEDIATE`` already serializes every
    write transaction, so ``for_update`` and ``skip_locked`` add nothing and ``lock`` waits
    for nothing."""

    deliveries_added = 0
    jobs_due = 0  # jobs made due now: the commit wakes the store's job listeners
    batch: _JobBatch | None = None
    for_update = ""
    skip_locked = ""

    def lock(self, key: str) -> None:
        """Serialize the transactions that take ``key`` (here, all already are)."""


_UNREAD: Any = object()  # a job row not read ahead


class _JobBatch:
    """What a run of job updates in one transaction shares, so that each does less alone.

    A burst of callbacks is a burst of ``update_job`` works, committed together; each would
    read its job, insert its event, read its tenant's endpoints and wake its provider's
    waiting jobs with statements of its own. Together:

    * ``rows``: the jobs' rows, read ahead with one ``SELECT ... IN``; a work takes its own
      row (once: a second update of the same job reads it again, after the first);
    * ``events``: the events the works make, inserted with one ``executemany`` at the end;
    * ``endpoints``: each tenant's enabled endpoints, read once;
    * ``freed``: the providers whose jobs ended, their waiting jobs woken once at the end
      (waking one early costs only a check: it asks for its slot again).

    It holds only while job updates run back to back, all of it inside the transaction:
    before any other work (which may write jobs, events or endpoints, or read events) it is
    settled and ended, and a batch that fails is run again without one.
    """

    __slots__ = ("endpoints", "events", "freed", "rows")

    def __init__(self, conn: Conn, job_ids: list[str]) -> None:
        self.rows: dict[str, sqlite3.Row | None] = {}
        self.events: list[tuple[Any, ...]] = []
        self.endpoints: dict[str, list[sqlite3.Row]] = {}
        self.freed: dict[str, float] = {}
        wanted = list(dict.fromkeys(job_ids))
        if len(wanted) < 2:
            return  # one job reads its own row: the same one statement
        for start in range(0, len(wanted), _READ_AHEAD):
            chunk = wanted[start:start + _READ_AHEAD]
            # Padded to a power of two with the last id: a handful of statements to
            # prepare and keep, not one for every size of batch.
            padded = chunk + chunk[-1:] * ((1 << (len(chunk) - 1).bit_length()) - len(chunk))
            self.rows.update(dict.fromkeys(chunk))  # None: no such job
            for row in conn.execute(
                f"{_JOB_SELECT} WHERE id IN ({', '.join('?' * len(padded))})", padded
            ):
                self.rows[row[0]] = row

    def settle(self, conn: Conn) -> None:
        if self.events:
            conn.executemany(_EVENT_INSERT, self.events)
        for provider, stamp in self.freed.items():
            _wake_waiting(conn, provider, stamp)


_READ_AHEAD = 256  # job rows per read-ahead statement (SQLite's older limit is 999 values)


def _run_works(conn: _WriteConnection, works: list[_Work]) -> list[tuple[bool, Any]]:
    """Run ``works`` in order (inside a transaction), each run of job updates sharing a
    ``_JobBatch``; raises what a work raises."""
    job_ids: list[str | None] = [getattr(work, "job_id", None) for work in works]
    outcomes: list[tuple[bool, Any]] = []
    try:
        for index, (work, job_id) in enumerate(zip(works, job_ids, strict=True)):
            if job_id is None and conn.batch is not None:
                conn.batch.settle(conn)
                conn.batch = None
            elif job_id is not None and conn.batch is None:
                run = itertools.takewhile(lambda later: later is not None, job_ids[index:])
                conn.batch = _JobBatch(conn, [later for later in run if later is not None])
            outcomes.append((True, work(conn)))
        if conn.batch is not None:
            conn.batch.settle(conn)
    finally:
        conn.batch = None
    return outcomes


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
                outcomes = _run_works(conn, works)
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
    version = _scalar(conn, "PRAGMA user_version")
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")


# -- rows -------------------------------------------------------------------------------


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


_dumps = jsoncodec.dumps


def _loads(value: str | None) -> Any:
    return None if value is None else jsoncodec.loads(value)


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _at(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _json_or_null(value: Any) -> str | None:
    return None if value is None else _dumps(value)


# How each job column is written, from the job field of the same name.
_JOB_ENCODERS: dict[str, Callable[[Job], Any]] = {
    "id": lambda job: job.id,
    "tenant": lambda job: job.tenant,
    "provider": lambda job: job.provider,
    "model": lambda job: job.model,
    "status": lambda job: str(job.status),
    "tracking": lambda job: str(job.tracking),
    "provider_job_id": lambda job: job.provider_job_id,
    "progress": lambda job: job.progress,
    "request": lambda job: _dumps(job.request),
    "result": lambda job: _json_or_null(job.result),
    "error": lambda job: _json_or_null(job.error.to_json() if job.error else None),
    "cost": lambda job: _json_or_null(job.cost),
    "metadata": lambda job: _json_or_null(job.metadata),
    "provider_data": lambda job: _dumps(job.provider_data),
    "webhook_url": lambda job: job.webhook_url,
    "webhook_events": lambda job: _json_or_null(job.webhook_events),
    "idempotency_key": lambda job: job.idempotency_key,
    "sequence": lambda job: job.sequence,
    "created_at": lambda job: job.created_at.timestamp(),
    "updated_at": lambda job: job.updated_at.timestamp(),
    "completed_at": lambda job: _ts(job.completed_at),
    "submit_started_at": lambda job: _ts(job.submit_started_at),
    "submitted_at": lambda job: _ts(job.submitted_at),
    "next_check_at": lambda job: _ts(job.next_check_at),
    "check_count": lambda job: job.check_count,
    "error_streak": lambda job: job.error_streak,
    "progress_event_at": lambda job: _ts(job.progress_event_at),
}
assert tuple(_JOB_ENCODERS) == _JOB_COLUMNS


def _job_params(job: Job) -> dict[str, Any]:
    return {column: encode(job) for column, encode in _JOB_ENCODERS.items()}


_STATUSES = {str(status): status for status in JobStatus}
_TRACKINGS = {str(tracking): tracking for tracking in Tracking}


def _job(row: sqlite3.Row) -> Job:
    """A job from a row of ``_JOB_SELECT`` (its columns by position, in ``_JOB_COLUMNS``
    order). Read for every state change: no JSON parser for empty values."""
    (id_, tenant, provider, model, status, tracking, provider_job_id, progress, request,
     result, error, cost, metadata, provider_data, webhook_url, webhook_events,
     idempotency_key, sequence, created_at, updated_at, completed_at, submit_started_at,
     submitted_at, next_check_at, check_count, error_streak, progress_event_at) = row[:27]
    return Job(
        id=id_,
        tenant=tenant,
        provider=provider,
        model=model,
        status=_STATUSES[status],
        tracking=_TRACKINGS[tracking],
        request=jsoncodec.loads(request),
        created_at=_at(created_at),
        updated_at=_at(updated_at),
        provider_job_id=provider_job_id,
        progress=progress,
        result=_loads(result),
        error=None if error is None else JobError.from_json(jsoncodec.loads(error)),
        cost=_loads(cost),
        metadata=_loads(metadata),
        completed_at=_dt(completed_at),
        sequence=sequence,
        provider_data={} if provider_data in (None, "{}") else jsoncodec.loads(provider_data),
        submit_started_at=_dt(submit_started_at),
        submitted_at=_dt(submitted_at),
        check_count=check_count,
        error_streak=error_streak,
        webhook_url=webhook_url,
        webhook_events=_loads(webhook_events),
        next_check_at=_dt(next_check_at),
        progress_event_at=_dt(progress_event_at),
        idempotency_key=idempotency_key,
    )


def _event(row: sqlite3.Row) -> Event:
    return Event(
        id=row["id"],
        tenant=row["tenant"],
        type=row["type"],
        job_id=row["job_id"],
        created_at=_dt(row["created_at"]) or utcnow(),
        data=_loads(row["data"]),
    )


# -- events and the outbox ----------------------------------------------------------------
RECOVER_LIMIT = 10_000  # events one recover call queues again, oldest first


_EVENT_INSERT = (
    "INSERT INTO events (id, tenant, job_id, type, created_at, data) VALUES (?, ?, ?, ?, ?, ?)"
)


def _event_params(event: Event) -> tuple[Any, ...]:
    return (event.id, event.tenant, event.job_id, event.type, event.created_at.timestamp(),
            _dumps(event.data))


def _insert_event(conn: Conn, event: Event) -> None:
    conn.execute(_EVENT_INSERT, _event_params(event))


def _wake_waiting(conn: Conn, provider: str, stamp: float) -> None:
    """A job of ``provider`` ended at ``stamp``: its jobs waiting for a slot are due then.
    Only when there were any are the job listeners woken (on PostgreSQL, a NOTIFY)."""
    woken = conn.execute(
        "UPDATE jobs SET next_check_at = ? WHERE provider = ? AND status = 'queued' "
        "AND submit_started_at IS NULL AND next_check_at > ?",
        (stamp, provider, stamp),
    ).rowcount
    if woken:
        conn.jobs_due += 1


def _fan_out(
    conn: Conn, event: Event, job: Job | None, stamp: float, *,
    again: bool = False,
) -> list[Delivery]:
    """The event's deliveries: one per enabled endpoint of the tenant that wants it, one
    for the job's own webhook. Each target's older ``job.progress`` still waiting for the
    same job is skipped: this event supersedes it."""
    made = []
    batch = conn.batch if isinstance(conn, _WriteConnection) else None
    rows = batch.endpoints.get(event.tenant) if batch is not None else None
    if rows is None:
        rows = conn.execute(
            "SELECT id, events FROM endpoints WHERE tenant = ? AND disabled = 0",
            (event.tenant,),
        ).fetchall()
        if batch is not None:
            batch.endpoints[event.tenant] = rows
    for row in rows:
        events = _loads(row["events"])
        if event.type in (events if events is not None else DEFAULT_ENDPOINT_EVENTS):
            made.append(_insert_delivery(conn, event, row["id"], None, stamp, again=again))
    if job is not None and job.webhook_url is not None and event.type in (
        job.webhook_events if job.webhook_events is not None else DEFAULT_ENDPOINT_EVENTS
    ):
        made.append(_insert_delivery(conn, event, None, job.webhook_url, stamp, again=again))
    if made and event.job_id is not None:
        channels = [d.endpoint_id or "job" for d in made]
        conn.execute(
            "UPDATE deliveries SET status = 'skipped', next_attempt_at = NULL, "
            "error = 'superseded by a later event of the job' WHERE status = 'pending' "
            f"AND channel IN ({', '.join('?' * len(channels))}) AND job_id = ? "
            "AND sequence < ? AND event_type = 'job.progress' "
            "AND (lease_until IS NULL OR lease_until < ?)",
            (*channels, event.job_id, _sequence(event), stamp),
        )
    return made


def _sequence(event: Event) -> int:
    value = event.data.get("sequence") if isinstance(event.data, dict) else None
    return value if isinstance(value, int) else 0


def _finish(conn: Conn, outgoing: Outgoing, result: AttemptResult) -> bool:
    """Record one attempt (see ``Store.finish_delivery``)."""
    delivery = outgoing.delivery
    retry_at = None if result.ok or result.gone else _ts(result.retry_at)
    if retry_at is not None and delivery.event_type == "job.progress" and _one(
        conn,
        "SELECT 1 FROM deliveries WHERE channel = ? AND job_id = ? AND sequence > ?",
        (delivery.endpoint_id or "job", delivery.job_id, delivery.sequence),
    ):
        retry_at = None  # superseded while it was being sent: not tried again
    recorded = conn.execute(
        "UPDATE deliveries SET status = ?, lease_until = NULL, next_attempt_at = ?, "
        "response_status = ?, duration_ms = ?, error = ?, response_excerpt = ? "
        "WHERE id = ? AND status = 'pending' AND lease_until = ?",
        (DeliveryStatus.SUCCEEDED if result.ok else DeliveryStatus.FAILED, retry_at,
         result.response_status, result.duration_ms, result.error,
         result.response_excerpt, delivery.id, outgoing.lease_until),
    ).rowcount
    if not recorded:
        return False  # deleted, failed by a disable, or claimed again meanwhile
    if retry_at is not None:
        conn.execute(_DELIVERY_INSERT, _delivery_params(replace(
            delivery, id=new_id("del"), attempt=delivery.attempt + 1,
            status=DeliveryStatus.PENDING, created_at=result.at,
            next_attempt_at=result.retry_at, response_status=None, duration_ms=None,
            error=None, response_excerpt=None)))
    _after_attempt(conn, delivery, result, result.at.timestamp())
    return True


def _after_attempt(
    conn: Conn, delivery: Delivery, result: AttemptResult, stamp: float
) -> None:
    """Keep the target's failure record after an attempt (see ``finish_delivery``)."""
    if delivery.endpoint_id is None:
        if result.gone:  # the job's own webhook said 410: send it nothing more
            _fail_pending(conn, "channel = 'job' AND job_id = ?", (delivery.job_id,),
                          "the target answered 410 Gone")
            conn.execute("UPDATE jobs SET webhook_url = NULL WHERE id = ?", (delivery.job_id,))
        return
    if result.ok:
        conn.execute("UPDATE endpoints SET failing_since = NULL "
                     "WHERE id = ? AND failing_since IS NOT NULL",
                     (delivery.endpoint_id,))
        return
    endpoint = _one(conn, "SELECT failing_since, disabled FROM endpoints WHERE id = ?"
                    + conn.for_update, (delivery.endpoint_id,))
    if endpoint is None or endpoint["disabled"]:
        return
    since = endpoint["failing_since"] or stamp
    reason = None
    if result.gone:
        reason = "the endpoint answered 410 Gone"
    elif stamp - since >= result.disable_after:
        days = result.disable_after / 86400
        reason = f"every delivery failed for {days:g} days"
    if reason is None:
        conn.execute("UPDATE endpoints SET failing_since = ? WHERE id = ?",
                     (since, delivery.endpoint_id))
        return
    conn.execute(
        "UPDATE endpoints SET disabled = 1, disabled_reason = ?, failing_since = ? "
        "WHERE id = ?", (reason, since, delivery.endpoint_id),
    )
    _fail_pending(conn, "endpoint_id = ?", (delivery.endpoint_id,), "endpoint disabled")


def _insert_delivery(
    conn: Conn, event: Event, endpoint_id: str | None, url: str | None,
    stamp: float, *, again: bool = False,
) -> Delivery:
    """A pending delivery, due at ``stamp``; ``again``: the event was sent before (replay,
    recover), so its attempts are numbered on from the earlier ones."""
    attempts = _scalar(
        conn,
        "SELECT COUNT(*) FROM deliveries WHERE event_id = ? AND channel = ?",
        (event.id, endpoint_id or "job"),
    ) if again else 0
    delivery = Delivery(
        id=new_id("del"), tenant=event.tenant, event_id=event.id, event_type=event.type,
        endpoint_id=endpoint_id, url=url, job_id=event.job_id, sequence=_sequence(event),
        attempt=attempts + 1, first_attempt=attempts + 1, status=DeliveryStatus.PENDING,
        created_at=datetime.fromtimestamp(stamp, UTC),
        next_attempt_at=datetime.fromtimestamp(stamp, UTC),
    )
    conn.execute(_DELIVERY_INSERT, _delivery_params(delivery))
    conn.deliveries_added += 1
    return delivery


def _fail_pending(
    conn: Conn, where: str, params: tuple[Any, ...], error: str
) -> None:
    conn.execute(
        "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, lease_until = NULL, "
        f"error = ? WHERE status = 'pending' AND {where}", (error, *params),
    )


def _by_id(
    conn: Conn, columns: str, table: str, ids: set[str]
) -> dict[str, sqlite3.Row]:
    if not ids:
        return {}
    rows = conn.execute(
        f"SELECT {columns} FROM {table} WHERE id IN ({', '.join('?' * len(ids))})", tuple(ids)
    ).fetchall()
    return {row["id"]: row for row in rows}


def _in_turns(
    due: list[sqlite3.Row], limit: int, per_tenant: int | None, room: dict[str, int]
) -> list[int]:
    """Up to ``limit`` of the ``due`` rows' seqs (earliest first), the tenants taking turns:
    each tenant's first, then each one's second, and so on; at most ``room[tenant]`` or
    ``per_tenant`` rows of one tenant."""
    if per_tenant is None:
        return [seq for seq, _ in due[:limit]]
    queues: dict[str, list[int]] = {}
    for seq, tenant in due:
        queue = queues.setdefault(tenant, [])
        if len(queue) < room.get(tenant, per_tenant):
            queue.append(seq)
    taken = [seq for turn in itertools.zip_longest(*queues.values()) for seq in turn
             if seq is not None]
    return taken[:limit]


def _outgoing(
    conn: Conn, deliveries: list[Delivery], stamp: float, lease_until: float
) -> list[Outgoing]:
    """What sending each claimed delivery needs, read in the claiming transaction (one
    query per table for the whole batch)."""
    events = _by_id(conn, "id, type, created_at, data", "events",
                    {d.event_id for d in deliveries})
    tenants = _by_id(conn, "id, signing_secret, previous_signing_secret, "
                     "previous_signing_secret_until", "tenants", {d.tenant for d in deliveries})
    endpoints = _by_id(conn, "id, url, headers, secret, previous_secret, previous_secret_until, "
                       "max_concurrency", "endpoints",
                       {d.endpoint_id for d in deliveries if d.endpoint_id})
    out = []
    for delivery in deliveries:
        event = events.get(delivery.event_id)
        tenant = tenants.get(delivery.tenant)
        if event is None or tenant is None:
            continue
        # The tenant's secrets: the current one first, the one before while it overlaps.
        _, tenant_secret, tenant_previous, tenant_until = tenant
        tenant_secrets = [tenant_secret]
        if tenant_previous and tenant_until is not None and tenant_until > stamp:
            tenant_secrets.append(tenant_previous)
        headers: dict[str, str] = {}
        cap = DEFAULT_MAX_CONCURRENCY
        if delivery.endpoint_id is None:
            url, secrets = delivery.url or "", tenant_secrets
        else:
            endpoint = endpoints.get(delivery.endpoint_id)
            if endpoint is None:
                continue
            _, url, stored_headers, secret, previous, until, cap = endpoint
            if stored_headers not in (None, "{}"):
                headers = jsoncodec.loads(stored_headers)
            if secret is None:  # a REST hook: signed as the tenant signs
                secrets = tenant_secrets
            else:
                secrets = [secret]
                if previous and until is not None and until > stamp:
                    secrets.append(previous)
        # The stored event's own JSON text goes out as is: the bytes signed are the bytes
        # sent, and the body is the same on every attempt.
        _, event_type, created_at, data = event
        body = (
            '{"id":' + _dumps(delivery.event_id) + ',"type":' + _dumps(event_type)
            + ',"timestamp":"' + rfc3339_stamp(created_at) + '","data":' + data + "}"
        ).encode()
        out.append(Outgoing(delivery, url, headers, secrets, body, lease_until, cap))
    return out


_KEY_COLUMNS = "prefix, tenant, source, created_at, last_used_at, revoked_at"


def _api_key(row: sqlite3.Row) -> ApiKey:
    prefix, tenant, source, created_at, last_used_at, revoked_at = row
    return ApiKey(prefix=prefix, tenant=tenant, source=source, created_at=_at(created_at),
                  last_used_at=_dt(last_used_at), revoked_at=_dt(revoked_at))


_ENDPOINT_COLUMNS = (
    "id", "tenant", "kind", "url", "events", "description", "headers", "secret",
    "previous_secret", "previous_secret_until", "disabled", "disabled_reason", "failing_since",
    "source", "created_at", "max_concurrency",
)
_ENDPOINT_INSERT = (
    f"INSERT INTO endpoints ({', '.join(_ENDPOINT_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _ENDPOINT_COLUMNS)})"
)


def _write_endpoint(conn: Conn, endpoint: Endpoint) -> None:
    columns = [c for c in _ENDPOINT_COLUMNS if c not in ("id", "tenant", "created_at")]
    conn.execute(f"UPDATE endpoints SET {', '.join(f'{c} = :{c}' for c in columns)} "
                 "WHERE id = :id", _endpoint_params(endpoint))


def _endpoint_params(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "tenant": endpoint.tenant,
        "kind": endpoint.kind,
        "url": endpoint.url,
        "events": _json_or_null(list(endpoint.events) if endpoint.events is not None else None),
        "description": endpoint.description,
        "headers": _dumps(endpoint.headers),
        "secret": endpoint.secret,
        "previous_secret": endpoint.previous_secret,
        "previous_secret_until": _ts(endpoint.previous_secret_until),
        "disabled": int(endpoint.disabled),
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": _ts(endpoint.failing_since),
        "source": endpoint.source,
        "created_at": endpoint.created_at.timestamp(),
        "max_concurrency": endpoint.max_concurrency,
    }


def _endpoint(row: sqlite3.Row) -> Endpoint:
    events = _loads(row["events"])
    return Endpoint(
        id=row["id"],
        tenant=row["tenant"],
        kind=row["kind"],
        url=row["url"],
        events=tuple(events) if events is not None else None,
        description=row["description"],
        headers=_loads(row["headers"]) or {},
        secret=row["secret"],
        previous_secret=row["previous_secret"],
        previous_secret_until=_dt(row["previous_secret_until"]),
        disabled=bool(row["disabled"]),
        disabled_reason=row["disabled_reason"],
        failing_since=_dt(row["failing_since"]),
        source=row["source"],
        created_at=_dt(row["created_at"]) or utcnow(),
        max_concurrency=row["max_concurrency"],
    )


_DELIVERY_COLUMNS = (
    "id", "tenant", "event_id", "event_type", "endpoint_id", "url", "channel", "job_id",
    "sequence", "attempt", "first_attempt", "status", "next_attempt_at", "response_status",
    "duration_ms", "error", "response_excerpt", "created_at",
)
# Delivery reads name these columns in this order (``_delivery`` unpacks them by position).
_DELIVERY_READ = f"{', '.join(_DELIVERY_COLUMNS)}, seq"
_DELIVERY_INSERT = (
    f"INSERT INTO deliveries ({', '.join(_DELIVERY_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _DELIVERY_COLUMNS)})"
)


def _delivery_params(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "tenant": delivery.tenant,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "endpoint_id": delivery.endpoint_id,
        "url": delivery.url,
        "channel": delivery.endpoint_id or "job",
        "job_id": delivery.job_id,
        "sequence": delivery.sequence,
        "attempt": delivery.attempt,
        "first_attempt": delivery.first_attempt,
        "status": str(delivery.status),
        "next_attempt_at": _ts(delivery.next_attempt_at),
        "response_status": delivery.response_status,
        "duration_ms": delivery.duration_ms,
        "error": delivery.error,
        "response_excerpt": delivery.response_excerpt,
        "created_at": delivery.created_at.timestamp(),
    }


_DELIVERY_STATUSES = {str(status): status for status in DeliveryStatus}


def _delivery(row: sqlite3.Row) -> Delivery:
    """A delivery from a row of ``_DELIVERY_READ`` columns, by position."""
    (id_, tenant, event_id, event_type, endpoint_id, url, _, job_id, sequence, attempt,
     first_attempt, status, next_attempt_at, response_status, duration_ms, error,
     response_excerpt, created_at) = row[:18]
    return Delivery(
        id=id_,
        tenant=tenant,
        event_id=event_id,
        event_type=event_type,
        endpoint_id=endpoint_id,
        url=url,
        job_id=job_id,
        sequence=sequence,
        attempt=attempt,
        status=_DELIVERY_STATUSES[status],
        created_at=_at(created_at),
        next_attempt_at=_dt(next_attempt_at),
        response_status=response_status,
        duration_ms=duration_ms,
        error=error,
        response_excerpt=response_excerpt,
        first_attempt=first_attempt,
    )


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        text = ""
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise InvalidRequest("cursor is not one this API returned", field="cursor",
                             status_code=400)
    return int(match.group(1))


def _page(
    rows: list[sqlite3.Row], limit: int, convert: Callable[[sqlite3.Row], _T]
) -> Page[_T]:
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["seq"]) if more and rows else None
    return Page([convert(row) for row in rows], next_cursor)
