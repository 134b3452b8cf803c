"""API keys (SPEC section 9, "Keys and secrets"): listed by prefix and never shown, revoked at
once in every process, last use kept to the minute, and a key taken out of BRIDGE_API_KEY
stops working. A real bridge on a loopback socket, a real SQLite file, the real CLI."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.core import Bridge, hash_key
from bridge.models import parse_rfc3339
from bridge.settings import Settings
from bridge.store import open_store
from bridge.store.sqlite import MIGRATIONS
from tests.conftest import API_KEY, SQLITE_ONLY, Harness

ENV_PREFIX = "sha256:" + hash_key(API_KEY)[:8]
FIELDS = {"prefix", "tenant", "source", "created_at", "last_used_at", "revoked_at"}


def client_for(harness: Harness, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=harness.url, headers={"Authorization": f"Bearer {key}"},
                             timeout=10)


async def listed(harness: Harness) -> list[dict[str, Any]]:
    answer = await harness.client.get("/v1/keys")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert body["next_cursor"] is None
    data: list[dict[str, Any]] = body["data"]
    return data


async def cli(database: str, *args: str) -> tuple[int, str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "keys", *args,
        env={**keep, "BRIDGE_DATABASE": database,
             "BRIDGE_MEDIA_DIR": str(Path(database).parent / "cli-media")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# -- the API ---------------------------------------------------------------------------------


async def test_keys_are_listed_by_prefix_never_by_key(harness: Harness) -> None:
    key = await harness.bridge.create_api_key("default")
    other = await harness.bridge.create_api_key("acme")
    answer = await harness.client.get("/v1/keys")
    assert answer.status_code == 200
    assert key not in answer.text and API_KEY not in answer.text and other not in answer.text
    data = answer.json()["data"]
    assert [item["prefix"] for item in data] == [key[:12], ENV_PREFIX]  # newest first
    assert all(set(item) == FIELDS and item["tenant"] == "default" for item in data)
    assert [item["source"] for item in data] == ["cli", "env"]
    assert data[0]["revoked_at"] is None
    assert data[0]["last_used_at"] is None  # made, not used yet
    assert data[1]["last_used_at"] is not None  # this very request used it


async def test_a_revoked_key_answers_401_at_once(harness: Harness) -> None:
    key = await harness.bridge.create_api_key("default")
    async with client_for(harness, key) as holder:
        assert (await holder.get("/v1/me")).status_code == 200
        revoked = await harness.client.delete(f"/v1/keys/{key[:12]}")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["prefix"] == key[:12]
        assert parse_rfc3339(revoked.json()["revoked_at"])
        refused = await holder.get("/v1/me")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
    assert [item["prefix"] for item in await listed(harness)] == [ENV_PREFIX]
    again = await harness.client.delete(f"/v1/keys/{key[:12]}")
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"


async def test_another_tenants_key_answers_404_and_stays_valid(harness: Harness) -> None:
    other = await harness.bridge.create_api_key("acme")
    answer = await harness.client.delete(f"/v1/keys/{other[:12]}")
    assert answer.status_code == 404
    async with client_for(harness, other) as acme:
        assert (await acme.get("/v1/me")).json()["tenant"] == "acme"
        assert [item["prefix"] for item in (await acme.get("/v1/keys")).json()["data"]] == \
            [other[:12]]


@SQLITE_ONLY
async def test_last_use_is_written_at_most_once_a_minute(harness: Harness) -> None:
    key = await harness.bridge.create_api_key("default")
    hashed = hash_key(key)

    def set_last_use(seconds_ago: float) -> float:
        stamp = int(time.time() - seconds_ago)
        with sqlite3.connect(harness.env["BRIDGE_DATABASE"]) as db:
            db.execute("UPDATE api_keys SET last_used_at = ? WHERE key_hash = ?",
                       (stamp, hashed))
        return stamp

    async def last_use() -> float:
        [item] = [item for item in await listed(harness) if item["prefix"] == key[:12]]
        return parse_rfc3339(item["last_used_at"]).timestamp()

    async with client_for(harness, key) as holder:
        recent = set_last_use(30)
        assert (await holder.get("/v1/me")).status_code == 200
        assert await last_use() == recent  # used within the minute: no write
        set_last_use(120)
        before = time.time()
        assert (await holder.get("/v1/me")).status_code == 200
        assert await last_use() >= int(before)


# -- the command line, another process -------------------------------------------------------


async def test_keys_list_and_revoke_from_another_process(harness: Harness) -> None:
    database = harness.env["BRIDGE_DATABASE"]
    key = await harness.bridge.create_api_key("acme")
    status, out, err = await cli(database, "list", "--tenant", "acme")
    assert status == 0, err
    [line] = out.splitlines()
    shown = json.loads(line)
    assert set(shown) == FIELDS
    assert (shown["prefix"], shown["tenant"], shown["source"]) == (key[:12], "acme", "cli")
    assert key not in out + err
    status, out, _ = await cli(database, "list")
    assert {json.loads(line)["prefix"] for line in out.splitlines()} == {key[:12], ENV_PREFIX}

    async with client_for(harness, key) as holder:
        assert (await holder.get("/v1/me")).status_code == 200
        status, out, err = await cli(database, "revoke", key[:12])
        assert status == 0, err
        assert json.loads(out)["revoked_at"] is not None
        # The serving process was not told: it reads the database.
        assert (await holder.get("/v1/me")).status_code == 401
    status, out, err = await cli(database, "revoke", key[:12])
    assert status == 1 and out == ""
    assert "no active key" in err and "Traceback" not in err


# -- BRIDGE_API_KEY across restarts ----------------------------------------------------------


async def test_a_key_taken_out_of_bridge_api_key_stops_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    base = {"BRIDGE_DATABASE": str(tmp_path / "b.db"),
            "BRIDGE_MEDIA_DIR": str(tmp_path / "media")}
    first_key, second_key = "brk_first_bootstrap_key", "brk_second_bootstrap_key"

    async def open_with(**env: str) -> Bridge:
        return await Bridge.open(Settings.from_env({**base, **env}))

    async def tenant_of(bridge: Bridge, key: str) -> str | None:
        tenant = await bridge.authenticate(key)
        return tenant.id if tenant else None

    bridge = await open_with(BRIDGE_API_KEY=first_key)
    try:
        assert await tenant_of(bridge, first_key) == "default"
        made = await bridge.create_api_key("default")
    finally:
        await bridge.close()

    bridge = await open_with(BRIDGE_API_KEY=second_key)
    try:
        assert await tenant_of(bridge, first_key) is None
        assert await tenant_of(bridge, second_key) == "default"
        assert await tenant_of(bridge, made) == "default"  # only keys from the env go
        keys = await bridge.store.list_api_keys("default")
        assert {(k.prefix, k.source) for k in keys} == {
            ("sha256:" + hash_key(second_key)[:8], "env"), (made[:12], "cli")}
    finally:
        await bridge.close()

    bridge = await open_with()  # unset (a shell running bridge keys): nothing is revoked
    try:
        assert await tenant_of(bridge, second_key) == "default"
    finally:
        await bridge.close()

    caplog.set_level(logging.WARNING, logger="bridge")
    bridge = await open_with(BRIDGE_API_KEY=first_key)  # a revoked key does not come back
    try:
        assert await tenant_of(bridge, first_key) is None
        assert await tenant_of(bridge, second_key) is None
        assert await tenant_of(bridge, made) == "default"
    finally:
        await bridge.close()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "BRIDGE_API_KEY was revoked and stays revoked: set a new key"]
    assert first_key not in caplog.text and second_key not in caplog.text


async def test_keys_stored_before_prefixes_are_named_by_their_hash(tmp_path: Path) -> None:
    database = tmp_path / "old.db"
    old_key = "brk_stored_by_an_older_bridge"
    with sqlite3.connect(database) as db:  # a database as the bridge left it before
        for script in MIGRATIONS[:2]:
            db.executescript(script)
        db.execute("PRAGMA user_version = 2")
        db.execute("INSERT INTO tenants (id, signing_secret, created_at) "
                   "VALUES ('acme', 'whsec_acme', 1)")
        db.execute("INSERT INTO api_keys (key_hash, tenant, created_at) VALUES (?, 'acme', 1)",
                   (hash_key(old_key),))
    store = await open_store(str(database))
    try:
        [key] = await store.list_api_keys("acme")
        assert (key.prefix, key.source) == ("sha256:" + hash_key(old_key)[:8], "unknown")
        tenant = await store.tenant_for_key(hash_key(old_key))
        assert tenant is not None and tenant.id == "acme"
    finally:
        await store.close()
