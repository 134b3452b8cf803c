"""Signing in to the portal without a browser: ``POST /v1/portal-sessions``, ``bridge
portal-link``, single use under a race, the cookie's attributes and lifetime, sessions kept
in the database, and the store's list of a tenant's deliveries."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from bridge.errors import RateLimited
from bridge.models import Delivery, DeliveryStatus, Event, new_id, parse_rfc3339, utcnow
from bridge.portal.sessions import COOKIE, SESSION_TTL, issue_link
from bridge.signing import Signer
from bridge.store import open_store
from tests.conftest import SQLITE_ONLY, Harness, Sims, running_bridge


def _read_all(database: str) -> list[bytes]:
    """The database file and its write-ahead log, as bytes."""
    paths = [Path(database), Path(database + "-wal")]
    return [path.read_bytes() for path in paths if path.exists()]


async def _rows(database: str, sql: str, params: tuple[str, ...] = ()) -> list[sqlite3.Row]:
    """A look inside the database file, on a connection of the test's own."""
    def read() -> list[sqlite3.Row]:
        with contextlib.closing(sqlite3.connect(database)) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, params).fetchall()

    return await asyncio.to_thread(read)


def _path(url: str) -> str:
    return "/portal/" + url.split("/portal/", 1)[1]


async def test_post_portal_sessions_answers_a_link_and_when_it_expires(harness: Harness) -> None:
    before = utcnow()
    answer = await harness.client.post("/v1/portal-sessions")
    assert answer.status_code == 201
    body = answer.json()
    assert set(body) == {"url", "expires_at"}
    assert body["url"].startswith(f"{harness.url}/portal/login/")
    expires = parse_rfc3339(body["expires_at"])
    assert timedelta(minutes=14) < expires - before <= timedelta(minutes=15, seconds=1)
    shorter = await harness.client.post("/v1/portal-sessions", json={"ttl_seconds": 120})
    assert parse_rfc3339(shorter.json()["expires_at"]) - before <= timedelta(seconds=121)


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"ttl_seconds": 10}, 422, "ttl_seconds"),
    ({"ttl_seconds": 86401}, 422, "ttl_seconds"),
    ({"ttl_seconds": "15m"}, 422, "ttl_seconds"),
    ({"ttl_seconds": True}, 422, "ttl_seconds"),
    ({"tenant": "acme"}, 422, "tenant"),
    ([], 400, None),
])
async def test_post_portal_sessions_refuses_a_bad_body_naming_the_field(
    harness: Harness, body: object, status: int, field: str | None,
) -> None:
    answer = await harness.client.post("/v1/portal-sessions", json=body)
    assert answer.status_code == status
    assert answer.json()["error"].get("field") == field
    assert (await harness.client.post("/v1/portal-sessions", content=b"{nope",
                                      headers={"content-type": "application/json"})
            ).status_code == 400


async def test_post_portal_sessions_needs_an_api_key(harness: Harness) -> None:
    async with httpx.AsyncClient(base_url=harness.url) as anyone:
        assert (await anyone.post("/v1/portal-sessions")).status_code == 401


async def test_a_link_signs_in_once_even_when_two_use_it_at_once(harness: Harness) -> None:
    link = (await harness.client.post("/v1/portal-sessions")).json()["url"]
    async with httpx.AsyncClient(base_url=harness.url) as one, \
            httpx.AsyncClient(base_url=harness.url) as two:
        first, second = await asyncio.gather(one.get(_path(link)), two.get(_path(link)))
    assert sorted([first.status_code, second.status_code]) == [303, 410]
    winner = first if first.status_code == 303 else second
    loser = second if winner is first else first
    assert COOKIE in winner.cookies and COOKIE not in loser.cookies
    assert "used already" in loser.text
    assert loser.headers["content-type"].startswith("text/html")


@SQLITE_ONLY
async def test_the_session_cookie_is_httponly_lax_and_lasts_at_most_12_hours(
    harness: Harness,
) -> None:
    link = (await harness.client.post("/v1/portal-sessions")).json()["url"]
    async with httpx.AsyncClient(base_url=harness.url) as browser:
        answer = await browser.get(_path(link))
        assert answer.headers["location"] == "/portal"
        cookie = answer.headers["set-cookie"]
        attributes = [part.strip().lower() for part in cookie.split(";")]
        assert "httponly" in attributes and "samesite=lax" in attributes
        assert "path=/portal" in attributes
        assert "secure" not in attributes  # BRIDGE_PUBLIC_URL is http://
        max_age = next(int(a.split("=")[1]) for a in attributes if a.startswith("max-age="))
        assert 0 < max_age <= SESSION_TTL.total_seconds() == 12 * 3600
        assert (await browser.get("/portal")).status_code == 200
    # The database ends the session after 12 hours, whatever the cookie says.
    [row] = await _rows(harness.env["BRIDGE_DATABASE"],
                        "SELECT id_hash, expires_at - created_at AS ttl FROM portal_sessions")
    assert row["ttl"] == SESSION_TTL.total_seconds()
    later = utcnow() + SESSION_TTL + timedelta(seconds=1)
    assert await harness.bridge.store.portal_session(row["id_hash"], later) is None


async def test_the_cookie_is_secure_when_the_public_url_is_https(
    tmp_path: Path, sims: Sims,
) -> None:
    async with running_bridge(tmp_path, sims,
                              BRIDGE_PUBLIC_URL="https://bridge.example.com") as harness:
        link = (await harness.client.post("/v1/portal-sessions")).json()["url"]
        assert link.startswith("https://bridge.example.com/portal/login/")
        async with httpx.AsyncClient(base_url=harness.url) as browser:
            answer = await browser.get(_path(link))
    assert answer.status_code == 303
    assert "secure" in [part.strip().lower() for part in answer.headers["set-cookie"].split(";")]


async def test_a_forged_or_foreign_cookie_is_signed_out(harness: Harness) -> None:
    foreign = Signer("another bridge's secret key").portal_session_token("x" * 43)
    for value in ("garbage", foreign):
        async with httpx.AsyncClient(base_url=harness.url, cookies={COOKIE: value}) as browser:
            answer = await browser.get("/portal")
        assert answer.status_code == 401
        assert "not signed in" in answer.text
        assert 'max-age=0' in answer.headers["set-cookie"].lower()  # the cookie is dropped


@SQLITE_ONLY
async def test_links_and_sessions_are_kept_only_as_hashes(harness: Harness) -> None:
    link = (await harness.client.post("/v1/portal-sessions")).json()["url"]
    async with httpx.AsyncClient(base_url=harness.url) as browser:
        cookie = (await browser.get(_path(link))).cookies[COOKIE]
    raw = b"".join(await asyncio.to_thread(_read_all, harness.env["BRIDGE_DATABASE"]))
    session_id = harness.bridge.signer.portal_session_id(cookie)
    link_id = harness.bridge.signer.portal_link_id(link.rsplit("/", 1)[1])
    assert session_id.encode() not in raw and link_id.encode() not in raw
    for kept in (session_id, link_id):  # what the database has instead
        assert hashlib.sha256(kept.encode()).hexdigest().encode() in raw


async def test_portal_link_prints_a_link_that_signs_in(tmp_path: Path, sims: Sims) -> None:
    async with running_bridge(tmp_path, sims) as harness:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")},
               **harness.env}

        async def portal_link(*args: str) -> tuple[int, str, str]:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge.cli", "portal-link", *args, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(process.communicate(), 30)
            assert process.returncode is not None
            return process.returncode, out.decode(), err.decode()

        code, out, _ = await portal_link("--tenant", "default", "--ttl", "5m")
        assert code == 0
        link = out.strip()
        assert link.startswith(f"{harness.url}/portal/login/")
        async with httpx.AsyncClient(base_url=harness.url) as browser:
            assert (await browser.get(_path(link))).status_code == 303
            assert "Jobs" in (await browser.get("/portal")).text
        code, _, err = await portal_link("--tenant", "nobody")
        assert code == 1 and "no tenant 'nobody'" in err
        code, _, err = await portal_link("--tenant", "default", "--ttl", "2d")
        assert code == 2 and "--ttl" in err
        code, _, err = await portal_link("--tenant", "default", "--ttl", "soon")
        assert code == 2 and "--ttl" in err


@SQLITE_ONLY
async def test_past_10_links_a_minute_a_tenant_gets_429_and_another_tenant_does_not(
    harness: Harness,
) -> None:
    for _ in range(10):
        assert (await harness.client.post("/v1/portal-sessions")).status_code == 201
    refused = await harness.client.post("/v1/portal-sessions")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "10 sign-in links a minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 6
    with pytest.raises(RateLimited):  # what bridge portal-link goes through
        await issue_link(harness.bridge, "default")
    other = await harness.bridge.create_api_key("other")
    answer = await harness.client.post("/v1/portal-sessions",
                                       headers={"Authorization": f"Bearer {other}"})
    assert answer.status_code == 201


@SQLITE_ONLY
async def test_an_expired_link_is_refused_and_opens_no_session(harness: Harness) -> None:
    link = await issue_link(harness.bridge, "default", now=utcnow() - timedelta(minutes=16))
    assert link is not None
    async with httpx.AsyncClient(base_url=harness.url) as browser:
        answer = await browser.get(_path(link[0]))
    assert answer.status_code == 410
    assert "expired" in answer.text and COOKIE not in answer.cookies
    assert await _rows(harness.env["BRIDGE_DATABASE"], "SELECT * FROM portal_sessions") == []


# -- the store ----------------------------------------------------------------------------
async def test_list_deliveries_filters_by_endpoint_event_and_status(tmp_path: Path) -> None:
    store = await open_store(str(tmp_path / "s.db"))
    try:
        await store.ensure_tenant("t", lambda: "whsec_x")
        await store.ensure_tenant("u", lambda: "whsec_y")
        made: list[Delivery] = []
        for tenant, endpoint_id in (("t", "ep_a"), ("t", "ep_b"), ("t", "ep_a"), ("u", "ep_c")):
            event = Event(id=new_id("evt"), tenant=tenant, type="endpoint.test", job_id=None,
                          created_at=utcnow(), data={})
            delivery = await store.add_event(event, endpoint_id=endpoint_id)
            assert delivery is not None
            made.append(delivery)
        everything = await store.list_deliveries("t", endpoint_id=None, event_id=None,
                                                 status=None, limit=10, cursor=None)
        assert [d.id for d in everything.data] == [made[2].id, made[1].id, made[0].id]
        first = await store.list_deliveries("t", endpoint_id=None, event_id=None, status=None,
                                            limit=2, cursor=None)
        rest = await store.list_deliveries("t", endpoint_id=None, event_id=None, status=None,
                                           limit=2, cursor=first.next_cursor)
        assert [d.id for d in first.data + rest.data] == [d.id for d in everything.data]
        assert rest.next_cursor is None
        to_a = await store.list_deliveries("t", endpoint_id="ep_a", event_id=None, status=None,
                                           limit=10, cursor=None)
        assert [d.id for d in to_a.data] == [made[2].id, made[0].id]
        of_event = await store.list_deliveries("t", endpoint_id=None, event_id=made[1].event_id,
                                               status=None, limit=10, cursor=None)
        assert [d.id for d in of_event.data] == [made[1].id]
        pending = await store.list_deliveries("t", endpoint_id=None, event_id=None,
                                              status=str(DeliveryStatus.PENDING), limit=10,
                                              cursor=None)
        failed = await store.list_deliveries("t", endpoint_id=None, event_id=None,
                                             status=str(DeliveryStatus.FAILED), limit=10,
                                             cursor=None)
        assert len(pending.data) == 3 and failed.data == []
        other = await store.list_deliveries("u", endpoint_id="ep_a", event_id=None, status=None,
                                            limit=10, cursor=None)
        assert other.data == []  # another tenant's endpoint id finds nothing
        plan = await _rows(
            store.name, "EXPLAIN QUERY PLAN SELECT * FROM deliveries WHERE tenant = ? "
                        "ORDER BY seq DESC LIMIT 5", ("t",))
        assert "deliveries_tenant" in " ".join(str(tuple(row)) for row in plan)
    finally:
        await store.close()
