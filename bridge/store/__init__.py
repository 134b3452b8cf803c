"""Durable storage. ``Store`` is the interface; ``SQLiteStore`` the embedded default and
``PostgresStore`` the one many processes share."""

from bridge.store.base import Change, Decide, Page, Store
from bridge.store.sql import SQLStore
from bridge.store.sqlite import SQLiteStore

__all__ = ["Change", "Decide", "Page", "SQLStore", "SQLiteStore", "Store", "open_store"]


async def open_store(database: str, *, pool_size: int = 10) -> Store:
    """Open the store named by ``BRIDGE_DATABASE`` (a SQLite file path or a
    ``postgresql://`` URL) and migrate it."""
    from bridge.settings import is_postgres

    store: Store
    if is_postgres(database):
        try:
            from bridge.store.postgres import PostgresStore  # psycopg only where it is used
        except ImportError as exc:
            raise RuntimeError("PostgreSQL needs psycopg: pip install 'bridge[postgres]'") \
                from exc

        store = PostgresStore(database, pool_size)
    else:
        store = SQLiteStore(database)
    await store.open()
    return store
