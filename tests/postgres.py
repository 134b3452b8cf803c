"""A PostgreSQL database of its own for each test that asks for one.

``BRIDGE_TEST_POSTGRES`` names a server (e.g. ``postgresql://postgres@127.0.0.1:5432/test``);
each test gets a new database on it, dropped afterwards. Without the variable, or when the
server does not answer, those tests are skipped and say why.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

SERVER = os.environ.get("BRIDGE_TEST_POSTGRES", "").strip()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


@contextlib.contextmanager
def new_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped (with whatever still uses it) afterwards."""
    if not SERVER:
        pytest.skip("PostgreSQL tests need BRIDGE_TEST_POSTGRES (e.g. "
                    "postgresql://postgres@127.0.0.1:5432/test)")
    import psycopg

    name = "bridge_test_" + secrets.token_hex(6)
    try:
        with psycopg.connect(SERVER, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at BRIDGE_TEST_POSTGRES does not answer: {exc}")
    try:
        yield _with_database(SERVER, name)
    finally:
        with psycopg.connect(SERVER, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
