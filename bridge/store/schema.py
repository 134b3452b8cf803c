"""The schema, as versioned migrations, written once with the two types the dialects name
differently: ``{serial}`` (a row's number, the key) and ``{real}`` (a Unix time).
Append new migrations; never edit one that has shipped."""

from collections.abc import Sequence

SQLITE_TYPES = {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL"}
POSTGRES_TYPES = {"serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                  "real": "DOUBLE PRECISION"}


def migrations(types: dict[str, str]) -> Sequence[str]:
    """The migrations in one dialect's types, oldest first."""
    return tuple(script.format_map(types) for script in _MIGRATIONS)


_MIGRATIONS = (
    # 1: tenants, keys, jobs, events
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

    CREATE TABLE tenants (
        id TEXT PRIMARY KEY, signing_secret TEXT NOT NULL, created_at {real} NOT NULL
    );

    CREATE TABLE api_keys (
        key_hash TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(id),
        created_at {real} NOT NULL
    );

    CREATE TABLE jobs (
        seq {serial}, id TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL REFERENCES tenants(id),
        provider TEXT NOT NULL, model TEXT, status TEXT NOT NULL, tracking TEXT NOT NULL,
        provider_job_id TEXT, progress INTEGER, request TEXT NOT NULL, result TEXT, error TEXT,
        cost TEXT, metadata TEXT, provider_data TEXT NOT NULL DEFAULT '{{}}', webhook_url TEXT,
        webhook_events TEXT, idempotency_key TEXT, sequence INTEGER NOT NULL DEFAULT 0,
        created_at {real} NOT NULL, updated_at {real} NOT NULL, completed_at {real},
        submit_started_at {real}, submitted_at {real}, next_check_at {real}, lease_until {real},
        check_count INTEGER NOT NULL DEFAULT 0, error_streak INTEGER NOT NULL DEFAULT 0,
        progress_event_at {real}
    );
    CREATE INDEX jobs_due ON jobs(next_check_at) WHERE next_check_at IS NOT NULL;
    CREATE INDEX jobs_tenant ON jobs(tenant, seq);
    CREATE INDEX jobs_provider_status ON jobs(provider, status);
    CREATE UNIQUE INDEX jobs_idempotency ON jobs(tenant, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX jobs_provider_task ON jobs(provider, provider_job_id)
        WHERE provider_job_id IS NOT NULL;

    CREATE TABLE events (
        seq {serial}, id TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL, job_id TEXT,
        type TEXT NOT NULL, created_at {real} NOT NULL, data TEXT NOT NULL
    );
    CREATE INDEX events_tenant ON events(tenant, seq);
    CREATE INDEX events_tenant_type ON events(tenant, type, seq);
    CREATE INDEX events_job ON events(job_id, seq);
    """,
    # 2: webhook endpoints and the delivery outbox
    """
    CREATE TABLE endpoints (
        seq {serial}, id TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL REFERENCES tenants(id),
        kind TEXT NOT NULL DEFAULT 'endpoint', url TEXT NOT NULL, events TEXT, description TEXT,
        headers TEXT NOT NULL DEFAULT '{{}}', secret TEXT, previous_secret TEXT,
        previous_secret_until {real}, disabled INTEGER NOT NULL DEFAULT 0, disabled_reason TEXT,
        failing_since {real}, source TEXT NOT NULL DEFAULT 'api', created_at {real} NOT NULL
    );
    CREATE INDEX endpoints_tenant ON endpoints(tenant, seq);

    CREATE TABLE deliveries (
        seq {serial}, id TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL, event_id TEXT NOT NULL,
        event_type TEXT NOT NULL, endpoint_id TEXT, url TEXT, channel TEXT NOT NULL,
        job_id TEXT, sequence INTEGER NOT NULL DEFAULT 0, attempt INTEGER NOT NULL,
        first_attempt INTEGER NOT NULL DEFAULT 1, status TEXT NOT NULL, next_attempt_at {real},
        lease_until {real}, response_status INTEGER, duration_ms INTEGER, error TEXT,
        response_excerpt TEXT, created_at {real} NOT NULL
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
    ALTER TABLE api_keys ADD COLUMN last_used_at {real};
    ALTER TABLE api_keys ADD COLUMN revoked_at {real};
    CREATE INDEX api_keys_prefix ON api_keys(prefix);
    CREATE INDEX api_keys_tenant ON api_keys(tenant, created_at);

    ALTER TABLE tenants ADD COLUMN previous_signing_secret TEXT;
    ALTER TABLE tenants ADD COLUMN previous_signing_secret_until {real};
    """,
    # 4: each endpoint's cap on attempts in flight at once
    """
    ALTER TABLE endpoints ADD COLUMN max_concurrency INTEGER NOT NULL DEFAULT 4;
    """,
    # 5: what a job's Idempotency-Key was first used with; a job's data: URLs, kept apart
    # from its row (read for its submission only)
    """
    ALTER TABLE jobs ADD COLUMN request_hash TEXT;

    CREATE TABLE job_media (
        job_id TEXT PRIMARY KEY, media TEXT NOT NULL
    );
    """,
    # 6: the portal's single-use links and its sessions (both kept by the SHA-256 of their
    # id), and a tenant's deliveries listed newest first
    """
    CREATE TABLE portal_links (
        id_hash TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(id),
        created_at {real} NOT NULL, expires_at {real} NOT NULL, used_at {real}
    );
    CREATE INDEX portal_links_expiry ON portal_links(expires_at);

    CREATE TABLE portal_sessions (
        id_hash TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(id),
        created_at {real} NOT NULL, expires_at {real} NOT NULL, ended_at {real}
    );
    CREATE INDEX portal_sessions_expiry ON portal_sessions(expires_at);

    CREATE INDEX deliveries_tenant ON deliveries(tenant, seq);
    """,
    # 7: a provider's jobs waiting for a slot, in the order they came
    """
    CREATE INDEX jobs_waiting ON jobs(provider, seq)
        WHERE status = 'queued' AND submit_started_at IS NULL;
    """,
    # 8: a provider's jobs being submitted, counted against its slots
    """
    CREATE INDEX jobs_submitting ON jobs(provider)
        WHERE status = 'queued' AND submit_started_at IS NOT NULL;
    """,
    # 9: a delivery's target (an endpoint's id, or "job": its job's own webhook_url) named so
    """
    ALTER TABLE deliveries RENAME COLUMN channel TO target;
    """,
    # 10: each tenant's due deliveries, earliest first (a claim takes some of every tenant's)
    """
    CREATE INDEX deliveries_tenant_due ON deliveries(tenant, next_attempt_at, seq)
        WHERE status = 'pending';
    """,
)

VERSION = len(_MIGRATIONS)  # the schema a store of this code works on
