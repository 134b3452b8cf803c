"""The store's operations on what is not a job: settings kept in the database, tenants,
API keys, and the portal's links and sessions."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime

from bridge.errors import Unavailable
from bridge.models import (
    ApiKey,
    Tenant,
    hashed_key_prefix,
)
from bridge.store.codec import (
    KEY_COLUMNS,
    api_key_of,
)
from bridge.store.works import (
    Backend,
    Conn,
    one,
)

log = logging.getLogger("bridge.store")

PORTAL_KEPT = 86400.0  # seconds an expired portal link or session is kept before it goes
KEY_USE_RESOLUTION = 60.0  # seconds: a key's last use is written at most this often


class Accounts(Backend):
    """Settings, tenants, keys and portal sessions (a part of ``SQLStore``)."""

    # -- meta ----------------------------------------------------------------------------
    async def get_or_set_meta(self, key: str, make: Callable[[], str]) -> str:
        def work(conn: Conn) -> str:
            row = one(conn, "SELECT value FROM meta WHERE key = ?", (key,))
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
            row = one(conn, "SELECT id, signing_secret FROM tenants WHERE id = ?", (name,))
            assert row is not None  # inserted just above, or already there
            return Tenant(id=row["id"], signing_secret=row["signing_secret"])

        return await self._transaction(work)

    async def add_api_key(self, tenant: str, key_hash: str, *, prefix: str | None = None,
                          source: str = "cli") -> bool:
        prefix = prefix or hashed_key_prefix(key_hash)

        def work(conn: Conn) -> bool:
            if one(conn, "SELECT 1 FROM api_keys WHERE prefix = ? AND key_hash != ? "
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
                f"AND key_hash != ? AND revoked_at IS NULL RETURNING {KEY_COLUMNS}",
                (now, tenant, key_hash)).fetchall()
            usable = one(conn, "SELECT revoked_at IS NULL FROM api_keys WHERE key_hash = ?",
                          (key_hash,))
            return [api_key_of(row) for row in earlier], bool(usable and usable[0])

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
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL {where} "
            "ORDER BY created_at DESC, prefix", params)
        return [api_key_of(row) for row in rows]

    async def revoke_api_key(self, prefix: str, tenant: str | None,
                             now: datetime) -> ApiKey | None:
        def work(conn: Conn) -> ApiKey | None:
            # A prefix names one active key (see add_api_key); should two keys stored before
            # prefixes share one, both go.
            where, params = ("AND tenant = ?", (tenant,)) if tenant is not None else ("", ())
            rows = conn.execute(
                f"UPDATE api_keys SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL "
                f"{where} RETURNING {KEY_COLUMNS}", (now.timestamp(), prefix, *params),
            ).fetchall()
            return api_key_of(rows[0]) if rows else None

        return await self._transaction(work)

    async def rotate_signing_secret(self, tenant: str, secret: str,
                                    previous_until: datetime) -> Tenant | None:
        def work(conn: Conn) -> Tenant | None:
            row = one(conn, "UPDATE tenants SET previous_signing_secret = signing_secret, "
                             "previous_signing_secret_until = ?, signing_secret = ? "
                             "WHERE id = ? RETURNING id, signing_secret",
                       (previous_until.timestamp(), secret, tenant))
            return Tenant(id=row["id"], signing_secret=row["signing_secret"]) if row else None

        return await self._transaction(work)

    # -- portal --------------------------------------------------------------------------
    async def create_portal_link(self, link_hash: str, tenant: str, now: datetime,
                                 expires_at: datetime) -> bool:
        stamp = now.timestamp()

        def work(conn: Conn) -> bool:
            if one(conn, "SELECT 1 FROM tenants WHERE id = ?", (tenant,)) is None:
                return False
            # What can no longer be used is kept a day (for a clear answer), then let go.
            conn.execute("DELETE FROM portal_links WHERE expires_at < ?",
                         (stamp - PORTAL_KEPT,))
            conn.execute("DELETE FROM portal_sessions WHERE expires_at < ?",
                         (stamp - PORTAL_KEPT,))
            conn.execute(
                "INSERT INTO portal_links (id_hash, tenant, created_at, expires_at) "
                "VALUES (?, ?, ?, ?)", (link_hash, tenant, stamp, expires_at.timestamp()))
            return True

        return await self._transaction(work)

    async def redeem_portal_link(self, link_hash: str, now: datetime, session_hash: str,
                                 session_expires_at: datetime) -> str | None:
        stamp = now.timestamp()

        def work(conn: Conn) -> str | None:
            row = one(conn, "UPDATE portal_links SET used_at = ? WHERE id_hash = ? "
                             "AND used_at IS NULL AND expires_at > ? RETURNING tenant",
                       (stamp, link_hash, stamp))
            if row is None:
                return None
            conn.execute(
                "INSERT INTO portal_sessions (id_hash, tenant, created_at, expires_at) "
                "VALUES (?, ?, ?, ?)",
                (session_hash, row["tenant"], stamp, session_expires_at.timestamp()))
            return str(row["tenant"])

        return await self._transaction(work)

    async def portal_session(self, session_hash: str, now: datetime) -> Tenant | None:
        row = await self._fetchone(
            "SELECT t.id, t.signing_secret FROM portal_sessions s JOIN tenants t "
            "ON t.id = s.tenant WHERE s.id_hash = ? AND s.ended_at IS NULL "
            "AND s.expires_at > ?", (session_hash, now.timestamp()))
        return Tenant(id=row["id"], signing_secret=row["signing_secret"]) if row else None

    async def end_portal_session(self, session_hash: str, now: datetime) -> bool:
        def work(conn: Conn) -> bool:
            return bool(conn.execute(
                "UPDATE portal_sessions SET ended_at = ? WHERE id_hash = ? "
                "AND ended_at IS NULL", (now.timestamp(), session_hash)).rowcount)

        return await self._transaction(work)
