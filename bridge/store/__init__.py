"""Durable storage: the store's operations (one module per concept) over a connector, one
per backend: ``bridge.store.sqlite`` (the embedded default) and ``bridge.store.postgres``
(many processes on one database). The store persists and reads; what to write is decided
by the domain (``bridge.events``, ``bridge.retry``, ``bridge.slots``, ``bridge.jobs``)."""

from __future__ import annotations

from bridge.models import Change, Decide, Page
from bridge.settings import is_postgres
from bridge.store.accounts import Accounts
from bridge.store.connector import Connector
from bridge.store.endpoints import Endpoints
from bridge.store.outbox import Outbox
from bridge.store.overview import Overview
from bridge.store.schema import VERSION

__all__ = ["Change", "Decide", "Page", "Store", "open_store"]


class Store(Overview, Outbox, Endpoints, Accounts):
    """Every operation of the store, on one connector."""

    def __init__(self, db: Connector, name: str) -> None:
        super().__init__(db)
        self.name = name  # the database: a file path or a URL

    async def open(self) -> None:
        """Connect and apply the pending migrations."""
        await self.db.open()

    async def close(self) -> None:
        """Commit every write accepted so far, then disconnect."""
        await self.db.close()

    async def ping(self) -> bool:
        """Whether the database answers and its schema is current."""
        return await self.db.schema_version() == VERSION


async def open_store(database: str, *, pool_size: int = 10) -> Store:
    """Open the store named by ``BRIDGE_DATABASE`` (a SQLite file path or a
    ``postgresql://`` URL) and migrate it."""
    db: Connector
    if is_postgres(database):
        try:
            from bridge.store.postgres import PostgresConnector  # psycopg where it is used
        except ImportError as exc:
            raise RuntimeError("PostgreSQL needs psycopg: pip install 'bridge[postgres]'") \
                from exc
        db = PostgresConnector(database, pool_size)
    else:
        from bridge.store.sqlite import SQLiteConnector
        db = SQLiteConnector(database)
    store = Store(db, database)
    await store.open()
    return store
