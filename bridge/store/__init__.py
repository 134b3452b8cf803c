"""Durable storage. ``Store`` is the interface; ``SQLiteStore`` the embedded default."""

from bridge.store.base import Change, Decide, Page, Store
from bridge.store.sqlite import SQLiteStore

__all__ = ["Change", "Decide", "Page", "SQLiteStore", "Store", "open_store"]


async def open_store(database: str) -> Store:
    """Open the store named by ``BRIDGE_DATABASE`` (a SQLite file path) and migrate it."""
    store = SQLiteStore(database)
    await store.open()
    return store
