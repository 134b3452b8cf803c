"""The store's operations on what is not a job: settings kept in the database, tenants, API
keys, and the portal's links and sessions."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from bridge.errors import Unavailable
from bridge.models import ApiKey, Tenant, hashed_key_prefix
from bridge.store.connector import StoreBase, Transaction
from bridge.store.rows import KEYS

log = logging.getLogger("bridge.store")

PORTAL_KEPT = 86400.0  # seconds an expired portal link or session is kept before it goes
KEY_USE_RESOLUTION = 60.0  # seconds: a key's last use is written at most this often


class Accounts(StoreBase):
    async def get_or_set_meta(self, key: str, make: Callable[[], str]) -> str:
        """The value stored under ``key``, storing ``make()`` first if there is none."""
        async def work(tx: Transaction) -> str:
            row = await tx.fetch_one(tx.q.meta, {"key": key})
            if row is not None:
                return str(row["value"])
            value = make()
            await tx.execute(tx.q.insert_meta, {"key": key, "value": value})
            return value

        result: str = await self._write(work)
        return result

    async def ensure_tenant(self, name: str, make_secret: Callable[[], str]) -> Tenant:
        async def work(tx: Transaction) -> Tenant:
            await tx.execute(tx.q.insert_tenant, {"id": name, "secret": make_secret(),
                                                  "now": time.time()})
            row = await tx.fetch_one(tx.q.tenant, {"id": name})
            assert row is not None  # inserted just above, or already there
            return Tenant(id=row["id"], signing_secret=row["signing_secret"])

        result: Tenant = await self._write(work)
        return result

    async def add_api_key(self, tenant: str, key_hash: str, *, prefix: str | None = None,
                          source: str = "cli") -> bool:
        """Store a key by its hash, named by ``prefix`` (``None``: ``hashed_key_prefix``);
        ``False``, storing nothing, when another active key already has that prefix."""
        params = {"tenant": tenant, "key_hash": key_hash, "now": time.time(),
                  "prefix": prefix or hashed_key_prefix(key_hash), "source": source}

        async def work(tx: Transaction) -> bool:
            if await tx.fetch_one(tx.q.other_key_with_prefix, params) is not None:
                return False
            await tx.execute(tx.q.insert_key, params)
            return True

        result: bool = await self._write(work)
        return result

    async def set_env_api_key(self, tenant: str, key_hash: str) -> tuple[list[ApiKey], bool]:
        """Store the key of ``BRIDGE_API_KEY`` for ``tenant`` and revoke the tenant's other
        keys from there, in one transaction. Answers the keys revoked, and whether this one
        may be used (``False``: it was revoked before, and stays revoked)."""
        params = {"tenant": tenant, "key_hash": key_hash, "now": time.time(),
                  "prefix": hashed_key_prefix(key_hash), "source": "env"}

        async def work(tx: Transaction) -> tuple[list[ApiKey], bool]:
            await tx.execute(tx.q.insert_key, params)
            earlier = await tx.fetch_all(tx.q.revoke_other_env_keys, params)
            usable = await tx.fetch_one(tx.q.key_usable, params)
            return [KEYS.of(row) for row in earlier], bool(usable and usable["usable"])

        result: tuple[list[ApiKey], bool] = await self._write(work)
        return result

    async def tenant_for_key(self, key_hash: str) -> Tenant | None:
        """The tenant of a key not revoked, read from the database every time (a key revoked
        by any process is refused at once); its use is written at most once a minute."""
        row = await self.db.fetch_one(self.q.tenant_of_key, {"key_hash": key_hash})
        if row is None:
            return None
        now = time.time()
        if row["last_used_at"] is None or now - row["last_used_at"] >= KEY_USE_RESOLUTION:
            try:
                await self._write(lambda tx: tx.execute(tx.q.key_used, {
                    "now": now, "key_hash": key_hash, "before": now - KEY_USE_RESOLUTION}))
            except Unavailable as exc:  # the database busy: the use is let go
                log.warning("could not record an API key's last use: %s", exc)
        return Tenant(id=row["id"], signing_secret=row["signing_secret"])

    async def list_api_keys(self, tenant: str | None) -> list[ApiKey]:
        """The keys not revoked, newest first: the tenant's, or (``None``) every tenant's."""
        rows = await self.db.fetch_all(self.q.keys, {"tenant": tenant})
        return [KEYS.of(row) for row in rows]

    async def revoke_api_key(self, prefix: str, tenant: str | None,
                             now: datetime) -> ApiKey | None:
        """Revoke the active key named ``prefix`` (only if it is ``tenant``'s, unless
        ``None``); the key as revoked, or ``None`` when there is none. Should two keys stored
        before prefixes share one, both go."""
        params = {"now": now.timestamp(), "prefix": prefix, "tenant": tenant}
        rows = await self._write(lambda tx: tx.fetch_all(tx.q.revoke_key, params))
        return KEYS.of(rows[0]) if rows else None

    async def rotate_signing_secret(self, tenant: str, secret: str,
                                    previous_until: datetime) -> Tenant | None:
        """Make ``secret`` the tenant's signing secret; the one before keeps signing beside
        it until ``previous_until``. ``None`` when there is no such tenant."""
        row = await self._write(lambda tx: tx.fetch_one(tx.q.rotate_signing_secret, {
            "until": previous_until.timestamp(), "secret": secret, "id": tenant}))
        return Tenant(id=row["id"], signing_secret=row["signing_secret"]) if row else None

    # -- the portal ------------------------------------------------------------------------
    async def create_portal_link(self, link_hash: str, tenant: str, now: datetime,
                                 expires_at: datetime) -> bool:
        """Record a single-use portal link by the SHA-256 of its id, valid until
        ``expires_at``; ``False``, storing nothing, when there is no such tenant."""
        stamp = now.timestamp()

        async def work(tx: Transaction) -> bool:
            if await tx.fetch_one(tx.q.tenant, {"id": tenant}) is None:
                return False
            # What can no longer be used is kept a day (for a clear answer), then let go.
            await tx.execute(tx.q.forget_portal_links, {"before": stamp - PORTAL_KEPT})
            await tx.execute(tx.q.forget_portal_sessions, {"before": stamp - PORTAL_KEPT})
            await tx.execute(tx.q.insert_portal_link, {
                "id_hash": link_hash, "tenant": tenant, "now": stamp,
                "expires_at": expires_at.timestamp()})
            return True

        result: bool = await self._write(work)
        return result

    async def redeem_portal_link(self, link_hash: str, now: datetime, session_hash: str,
                                 session_expires_at: datetime) -> str | None:
        """Use the link and open a session for its tenant, in one transaction; the tenant,
        or ``None`` (storing nothing) when the link is unknown, used or expired. Of two
        redemptions of one link, one alone succeeds."""
        stamp = now.timestamp()

        async def work(tx: Transaction) -> str | None:
            row = await tx.fetch_one(tx.q.use_portal_link, {"id_hash": link_hash, "now": stamp})
            if row is None:
                return None
            await tx.execute(tx.q.insert_portal_session, {
                "id_hash": session_hash, "tenant": row["tenant"], "now": stamp,
                "expires_at": session_expires_at.timestamp()})
            return str(row["tenant"])

        result: str | None = await self._write(work)
        return result

    async def portal_session(self, session_hash: str, now: datetime) -> Tenant | None:
        """The tenant of a session neither ended nor expired, read from the database every
        time (a session ended by any process is refused at once)."""
        row = await self.db.fetch_one(self.q.portal_session, {"id_hash": session_hash,
                                                              "now": now.timestamp()})
        return Tenant(id=row["id"], signing_secret=row["signing_secret"]) if row else None

    async def end_portal_session(self, session_hash: str, now: datetime) -> bool:
        """End a session (logging out); ``False`` when it was not open."""
        ended: int = await self._write(lambda tx: tx.execute(tx.q.end_portal_session, {
            "now": now.timestamp(), "id_hash": session_hash}))
        return bool(ended)
