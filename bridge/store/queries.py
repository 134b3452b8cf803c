"""Every statement the store runs, named for what it does.

Each is written once where SQLite and PostgreSQL agree, with its parameters as ``{name}``
and, where a dialect differs, a PostgreSQL variant in ``PostgresQueries``. A connector
renders them for its driver once, at start-up: ``{name}`` becomes ``:name`` (sqlite3) or
``%(name)s`` (psycopg); ``{name:list}`` (texts) and ``{name:ints}`` are a list given as one
parameter (a JSON array in SQLite, an array in PostgreSQL); ``{FOR_UPDATE}`` and
``{SKIP_LOCKED}`` lock rows read to be changed, on PostgreSQL only (SQLite's ``BEGIN
IMMEDIATE`` serializes every writer).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from bridge.models import Delivery, Endpoint, Event, Job


def _columns(kind: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(kind))


JOB_COLUMNS, EVENT_COLUMNS, ENDPOINT_COLUMNS = _columns(Job), _columns(Event), _columns(Endpoint)
DELIVERY_COLUMNS = (*_columns(Delivery), "target")  # the endpoint's id, or "job": its webhook
KEY_COLUMNS = "prefix, tenant, source, created_at, last_used_at, revoked_at"

JOB = f"{', '.join(JOB_COLUMNS)}, lease_until, seq"
DELIVERY = f"{', '.join(DELIVERY_COLUMNS)}, seq"
UNFINISHED = "status NOT IN ('succeeded', 'failed', 'canceled', 'expired')"


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return (f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('{' + c + '}' for c in columns)})")


class Queries:
    # -- jobs ------------------------------------------------------------------------------
    insert_job = _insert("jobs", JOB_COLUMNS)
    job = f"SELECT {JOB} FROM jobs WHERE id = {{id}}"
    job_of_tenant = f"SELECT {JOB} FROM jobs WHERE id = {{id}} AND tenant = {{tenant}}"
    jobs_to_change = f"SELECT {JOB} FROM jobs WHERE id IN {{ids:list}} ORDER BY id{{FOR_UPDATE}}"
    job_by_idempotency_key = (f"SELECT {JOB} FROM jobs WHERE tenant = {{tenant}} "
                              "AND idempotency_key = {key}")
    forget_idempotency_key = "UPDATE jobs SET idempotency_key = NULL WHERE id = {id}"
    insert_job_media = "INSERT INTO job_media (job_id, media) VALUES ({job_id}, {media})"
    job_media = "SELECT media FROM job_media WHERE job_id = {job_id}"
    unfinished_jobs = f"SELECT {JOB} FROM jobs WHERE {UNFINISHED} ORDER BY seq"
    job_of_provider_task = ("SELECT id FROM jobs WHERE provider = {provider} "
                            "AND provider_job_id = {provider_job_id}")
    claim_due_jobs = (
        "UPDATE jobs SET lease_until = {until} WHERE id IN ("
        "  SELECT id FROM jobs WHERE next_check_at <= {now}"
        "  AND (lease_until IS NULL OR lease_until < {now})"
        f"  ORDER BY next_check_at LIMIT {{limit}}{{SKIP_LOCKED}}) RETURNING {JOB}")
    release_job = ("UPDATE jobs SET lease_until = NULL, next_check_at = {next_check_at} "
                   f"WHERE id = {{id}} AND {UNFINISHED}")
    release_job_lease = "UPDATE jobs SET lease_until = NULL WHERE id = {id}"
    begin_submit = ("UPDATE jobs SET submit_started_at = {now} "
                    "WHERE id = {id} AND status = 'queued'")
    # A provider's slots: its jobs at the provider, and those being submitted.
    busy_slots = (
        "SELECT (SELECT COUNT(*) FROM jobs WHERE provider = {provider}"
        "  AND id NOT IN {asking:list} AND status IN ('submitted', 'running'))"
        " + (SELECT COUNT(*) FROM jobs WHERE provider = {provider}"
        "  AND id NOT IN {asking:list} AND status = 'queued'"
        "  AND submit_started_at IS NOT NULL) AS busy")
    begin_submits = ("UPDATE jobs SET submit_started_at = {now} WHERE status = 'queued' "
                     "AND id IN {ids:list} RETURNING id")
    wait_for_slot = ("UPDATE jobs SET lease_until = NULL, "
                     "next_check_at = COALESCE({until}, next_check_at) "
                     "WHERE id = {id} AND status = 'queued'")
    postpone_waiting = (
        "UPDATE jobs SET next_check_at = {until} WHERE id IN ("
        "  SELECT id FROM jobs WHERE provider = {provider} AND status = 'queued'"
        "  AND submit_started_at IS NULL AND next_check_at <= {now}"
        "  AND (lease_until IS NULL OR lease_until < {now})"
        "  ORDER BY next_check_at LIMIT {limit}{SKIP_LOCKED})")
    wake_waiting = (
        "UPDATE jobs SET next_check_at = {now} WHERE id IN ("
        "  SELECT id FROM jobs WHERE provider = {provider} AND status = 'queued'"
        "  AND submit_started_at IS NULL AND next_check_at > {now}"
        "  ORDER BY seq LIMIT {freed}{SKIP_LOCKED}) RETURNING id")
    job_counts = "SELECT provider, status, COUNT(*) AS n FROM jobs GROUP BY provider, status"

    # -- events ----------------------------------------------------------------------------
    insert_event = _insert("events", EVENT_COLUMNS)
    event_of_tenant = "SELECT * FROM events WHERE id = {id} AND tenant = {tenant}"
    job_events = "SELECT * FROM events WHERE job_id = {job_id} ORDER BY seq"
    events_to_send = "SELECT id, type, created_at, data FROM events WHERE id IN {ids:list}"
    # An endpoint's events since ``since`` neither sent, nor superseded, nor pending there.
    events_to_recover = (
        "SELECT * FROM events v WHERE v.tenant = {tenant} AND v.created_at >= {since}"
        " AND v.type IN {types:list} AND NOT EXISTS ("
        "  SELECT 1 FROM deliveries d WHERE d.event_id = v.id AND d.endpoint_id = {endpoint}"
        "  AND d.status IN ('pending', 'succeeded', 'skipped')"
        ") ORDER BY v.seq LIMIT {limit}")

    # -- endpoints -------------------------------------------------------------------------
    insert_endpoint = _insert("endpoints", ENDPOINT_COLUMNS)
    endpoint_of_tenant = "SELECT * FROM endpoints WHERE id = {id} AND tenant = {tenant}"
    endpoint_to_change = ("SELECT * FROM endpoints WHERE id = {id} AND tenant = {tenant}"
                          "{FOR_UPDATE}")
    endpoint = "SELECT * FROM endpoints WHERE id = {id}"
    update_endpoint = ("UPDATE endpoints SET " + ", ".join(
        f"{c} = {{{c}}}" for c in ENDPOINT_COLUMNS if c not in ("id", "tenant", "created_at"))
        + " WHERE id = {id}")
    delete_endpoint = "DELETE FROM endpoints WHERE id = {id} AND tenant = {tenant}"
    delete_endpoint_deliveries = "DELETE FROM deliveries WHERE endpoint_id = {id}"
    subscribers = "SELECT id, events FROM endpoints WHERE tenant = {tenant} AND disabled = 0"
    configured_endpoints = "SELECT * FROM endpoints WHERE source = 'config'"
    endpoints_to_send = ("SELECT id, url, headers, secret, previous_secret, "
                         "previous_secret_until, max_concurrency FROM endpoints "
                         "WHERE id IN {ids:list}")
    endpoint_standing = ("SELECT failing_since, disabled FROM endpoints WHERE id = {id}"
                         "{FOR_UPDATE}")
    endpoint_failing = "UPDATE endpoints SET failing_since = {since} WHERE id = {id}"
    endpoint_succeeded = ("UPDATE endpoints SET failing_since = NULL "
                          "WHERE id = {id} AND failing_since IS NOT NULL")
    disable_endpoint = ("UPDATE endpoints SET disabled = 1, disabled_reason = {reason}, "
                        "failing_since = {since} WHERE id = {id}")

    # -- deliveries ------------------------------------------------------------------------
    insert_delivery = _insert("deliveries", DELIVERY_COLUMNS)
    attempts_of = ("SELECT COUNT(*) AS n FROM deliveries "
                   "WHERE event_id = {event_id} AND target = {target}")
    # Each target's older job.progress of the job, still waiting: superseded.
    skip_superseded = (
        "UPDATE deliveries SET status = 'skipped', next_attempt_at = NULL, "
        "error = 'superseded by a later event of the job' WHERE status = 'pending' "
        "AND target = {target} AND job_id = {job_id} AND sequence < {sequence} "
        "AND event_type IN {types:list} AND (lease_until IS NULL OR lease_until < {now})")
    fail_pending_of_endpoint = (
        "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, "
        "lease_until = NULL, error = {error} WHERE status = 'pending' AND endpoint_id = {id}")
    fail_pending_of_webhook = (
        "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, "
        "lease_until = NULL, error = {error} WHERE status = 'pending' AND target = 'job' "
        "AND job_id = {job_id}")
    forget_webhook = "UPDATE jobs SET webhook_url = NULL WHERE id = {job_id}"
    # Each tenant's earliest due deliveries, up to ``{per_tenant}`` of each (so that no
    # tenant's backlog hides another's), earliest first. A delivery waits while its target
    # has an earlier pending one of the same job: an earlier event, or the same event queued
    # before it (a replay).
    _due_of_tenant = (
        " FROM deliveries e WHERE e.tenant = t.id"
        "  AND e.status = 'pending' AND e.next_attempt_at <= {now}"
        "  AND (e.lease_until IS NULL OR e.lease_until < {now})"
        "  AND e.target NOT IN {skip_targets:list}"
        "  AND NOT EXISTS (SELECT 1 FROM deliveries f WHERE f.status = 'pending'"
        "    AND f.target = e.target AND f.job_id = e.job_id"
        "    AND (f.sequence < e.sequence OR (f.sequence = e.sequence AND f.seq < e.seq)))"
        "  ORDER BY e.next_attempt_at, e.seq LIMIT {per_tenant}")
    # SQLite has no LATERAL: each tenant's rows are picked by a correlated subquery.
    due_deliveries = (
        "SELECT d.seq, d.tenant FROM tenants t JOIN deliveries d ON d.seq IN (SELECT e.seq"
        + _due_of_tenant + ")"
        " WHERE t.id NOT IN {skip_tenants:list} ORDER BY d.next_attempt_at, d.seq")
    lease_deliveries = ("UPDATE deliveries SET lease_until = {until} WHERE seq IN {seqs:ints} "
                        f"RETURNING {DELIVERY}")
    later_sequence = ("SELECT MAX(sequence) AS later FROM deliveries WHERE target = {target}"
                      " AND job_id = {job_id} AND sequence > {sequence}")
    pending_leases = ("SELECT id, lease_until FROM deliveries WHERE id IN {ids:list} "
                      "AND status = 'pending'{FOR_UPDATE}")
    record_attempt = (
        "UPDATE deliveries SET status = {status}, lease_until = NULL, "
        "next_attempt_at = {retry_at}, response_status = {response_status}, "
        "duration_ms = {duration_ms}, error = {error}, response_excerpt = {response_excerpt} "
        "WHERE id = {id}")
    release_delivery = ("UPDATE deliveries SET lease_until = NULL WHERE id = {id} "
                        "AND status = 'pending' AND lease_until = {lease_until}")
    endpoint_deliveries = (f"SELECT {DELIVERY} FROM deliveries WHERE endpoint_id = {{id}} "
                           "AND seq < {before} ORDER BY seq DESC LIMIT {limit}")
    outbox = ("SELECT COUNT(*) AS n, MIN(v.created_at) AS oldest FROM deliveries d "
              "JOIN events v ON v.id = d.event_id WHERE d.status = 'pending'")

    # -- settings, tenants, keys -----------------------------------------------------------
    meta = "SELECT value FROM meta WHERE key = {key}"
    insert_meta = "INSERT INTO meta (key, value) VALUES ({key}, {value})"
    insert_tenant = ("INSERT INTO tenants (id, signing_secret, created_at) "
                     "VALUES ({id}, {secret}, {now}) ON CONFLICT (id) DO NOTHING")
    tenant = "SELECT id, signing_secret FROM tenants WHERE id = {id}"
    tenants_to_send = ("SELECT id, signing_secret, previous_signing_secret, "
                       "previous_signing_secret_until FROM tenants WHERE id IN {ids:list}")
    rotate_signing_secret = (
        "UPDATE tenants SET previous_signing_secret = signing_secret, "
        "previous_signing_secret_until = {until}, signing_secret = {secret} "
        "WHERE id = {id} RETURNING id, signing_secret")
    other_key_with_prefix = ("SELECT 1 AS taken FROM api_keys WHERE prefix = {prefix} "
                             "AND key_hash != {key_hash} AND revoked_at IS NULL")
    # A key stored again keeps its source, unless it comes from BRIDGE_API_KEY now.
    insert_key = (
        "INSERT INTO api_keys (key_hash, tenant, created_at, prefix, source) "
        "VALUES ({key_hash}, {tenant}, {now}, {prefix}, {source}) ON CONFLICT (key_hash) "
        "DO UPDATE SET tenant = excluded.tenant, source = CASE WHEN excluded.source = 'env' "
        "THEN 'env' ELSE api_keys.source END")
    revoke_other_env_keys = (
        "UPDATE api_keys SET revoked_at = {now} WHERE tenant = {tenant} AND source = 'env' "
        f"AND key_hash != {{key_hash}} AND revoked_at IS NULL RETURNING {KEY_COLUMNS}")
    key_usable = "SELECT revoked_at IS NULL AS usable FROM api_keys WHERE key_hash = {key_hash}"
    tenant_of_key = (
        "SELECT t.id, t.signing_secret, k.last_used_at FROM api_keys k "
        "JOIN tenants t ON t.id = k.tenant WHERE k.key_hash = {key_hash} "
        "AND k.revoked_at IS NULL")
    key_used = ("UPDATE api_keys SET last_used_at = {now} WHERE key_hash = {key_hash} "
                "AND (last_used_at IS NULL OR last_used_at <= {before})")
    # ``{tenant}`` NULL: every tenant's.
    keys = (f"SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL "
            "AND tenant = COALESCE({tenant}, tenant) ORDER BY created_at DESC, prefix")
    revoke_key = ("UPDATE api_keys SET revoked_at = {now} WHERE prefix = {prefix} AND "
                  "revoked_at IS NULL AND tenant = COALESCE({tenant}, tenant) "
                  f"RETURNING {KEY_COLUMNS}")

    # -- the portal ------------------------------------------------------------------------
    forget_portal_links = "DELETE FROM portal_links WHERE expires_at < {before}"
    forget_portal_sessions = "DELETE FROM portal_sessions WHERE expires_at < {before}"
    insert_portal_link = ("INSERT INTO portal_links (id_hash, tenant, created_at, expires_at) "
                          "VALUES ({id_hash}, {tenant}, {now}, {expires_at})")
    use_portal_link = ("UPDATE portal_links SET used_at = {now} WHERE id_hash = {id_hash} "
                       "AND used_at IS NULL AND expires_at > {now} RETURNING tenant")
    insert_portal_session = (
        "INSERT INTO portal_sessions (id_hash, tenant, created_at, expires_at) "
        "VALUES ({id_hash}, {tenant}, {now}, {expires_at})")
    portal_session = (
        "SELECT t.id, t.signing_secret FROM portal_sessions s JOIN tenants t "
        "ON t.id = s.tenant WHERE s.id_hash = {id_hash} AND s.ended_at IS NULL "
        "AND s.expires_at > {now}")
    end_portal_session = ("UPDATE portal_sessions SET ended_at = {now} "
                          "WHERE id_hash = {id_hash} AND ended_at IS NULL")
    # An attempt counts in the bucket of when it was made (pending: queued); ``{every}`` 1:
    # of every endpoint. SQLite's CAST truncates (and a bucket's offset is never negative).
    delivery_outcomes = (
        "SELECT CAST((created_at - {start}) / {width} AS INTEGER) AS bucket, status, "
        "COUNT(*) AS n FROM deliveries WHERE tenant = {tenant} AND created_at >= {start} "
        "AND created_at < {end} AND ({every} = 1 OR endpoint_id IN {endpoints:list}) "
        "AND status IN ('succeeded', 'failed', 'pending') GROUP BY 1, status")
    endpoint_health = (
        "SELECT endpoint_id,"
        " SUM(CASE WHEN status = 'succeeded' AND created_at >= {since} THEN 1 ELSE 0 END) AS ok,"
        " SUM(CASE WHEN status = 'failed' AND created_at >= {since} THEN 1 ELSE 0 END) AS bad,"
        " MAX(CASE WHEN status = 'succeeded' THEN created_at END) AS last_ok "
        "FROM deliveries WHERE tenant = {tenant} AND endpoint_id IN {endpoints:list} "
        "GROUP BY endpoint_id")
    # A job named by an id (its own or one of its events') or by words of its prompt or
    # metadata; ``{words}`` is a LIKE pattern.
    job_named = ("(id = {text} OR id IN (SELECT job_id FROM events WHERE id = {text}"
                 " AND tenant = {tenant})"
                 " OR LOWER(json_extract(request, '$.prompt')) LIKE {words} ESCAPE '\\'"
                 " OR LOWER(metadata) LIKE {words} ESCAPE '\\')")

    def __init__(self, mark: str, list_mark: str, locks: bool) -> None:
        """``mark`` and ``list_mark``: a parameter's, with ``{name}`` and ``{type}``."""
        marks = _Marks(mark, list_mark, locks)
        for name in dir(type(self)):
            template = getattr(type(self), name)
            if not name.startswith("_") and isinstance(template, str):
                setattr(self, name, template.format_map(marks))
        self._marks = marks

    @functools.lru_cache(maxsize=64)  # noqa: B019  # one instance per connector, kept
    def update_job(self, columns: tuple[str, ...]) -> str:
        """An UPDATE of the named columns of a job."""
        sets = ", ".join(f"{c} = {{{c}}}" for c in columns)
        return f"UPDATE jobs SET {sets} WHERE id = {{id}}".format_map(self._marks)

    @functools.lru_cache(maxsize=64)  # noqa: B019
    def newest_first(self, table: str, columns: str, filters: tuple[str, ...],
                     condition: str = "") -> str:
        """One page of a tenant's rows, newest first: ``filters`` are columns equal to the
        parameter of the same name, ``condition`` one more (a template of this class)."""
        where = ["tenant = {tenant}", "seq < {before}", *(f"{c} = {{{c}}}" for c in filters)]
        if condition:
            where.append(getattr(type(self), condition))
        return (f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)} "
                "ORDER BY seq DESC LIMIT {limit}").format_map(self._marks)


class PostgresQueries(Queries):
    # Each tenant's rows by a LATERAL join, those locked by another claim passed over.
    due_deliveries = (
        "SELECT d.seq, d.tenant FROM tenants t CROSS JOIN LATERAL ("
        "SELECT e.seq, e.tenant, e.next_attempt_at" + Queries._due_of_tenant
        + "{SKIP_LOCKED}) d"
        " WHERE t.id NOT IN {skip_tenants:list} ORDER BY d.next_attempt_at, d.seq")
    # PostgreSQL's CAST rounds: FLOOR, as SQLite truncates.
    delivery_outcomes = (
        "SELECT FLOOR((created_at - {start}) / {width}) AS bucket, status, "
        "COUNT(*) AS n FROM deliveries WHERE tenant = {tenant} AND created_at >= {start} "
        "AND created_at < {end} AND ({every} = 1 OR endpoint_id IN {endpoints:list}) "
        "AND status IN ('succeeded', 'failed', 'pending') GROUP BY 1, status")
    job_named = ("(id = {text} OR id IN (SELECT job_id FROM events WHERE id = {text}"
                 " AND tenant = {tenant})"
                 " OR LOWER(CAST(request AS jsonb) ->> 'prompt') LIKE {words} ESCAPE '\\'"
                 " OR LOWER(metadata) LIKE {words} ESCAPE '\\')")


class _Marks(dict[str, Any]):
    """The values ``str.format_map`` puts in a template: a parameter's mark, or a lock."""

    def __init__(self, mark: str, list_mark: str, locks: bool) -> None:
        super().__init__(FOR_UPDATE=" FOR UPDATE" if locks else "",
                         SKIP_LOCKED=" FOR UPDATE SKIP LOCKED" if locks else "")
        self.mark, self.list_mark = mark, list_mark

    def __missing__(self, name: str) -> _Mark:
        return _Mark(self, name)


class _Mark:
    def __init__(self, marks: _Marks, name: str) -> None:
        self.marks, self.name = marks, name

    def __format__(self, spec: str) -> str:
        if spec in ("list", "ints"):
            kind = "text" if spec == "list" else "bigint"
            return self.marks.list_mark.format(name=self.name, type=kind)
        return self.marks.mark.format(name=self.name)
