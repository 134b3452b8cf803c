"""The bridge's services wired together: what the HTTP handlers and the CLI call."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bridge import inline
from bridge.catalog import Catalog
from bridge.connections import OUTBOUND_CONNECTIONS
from bridge.delivery import Deliverer
from bridge.endpoints import check_url
from bridge.errors import IdempotencyConflict, InvalidRequest
from bridge.jobs import MediaLink, check_capabilities
from bridge.media import Fetcher, MediaStore, open_media_store
from bridge.models import Job, JobStatus, Tenant, Tracking, new_id, utcnow
from bridge.providers import Adapters
from bridge.ratelimit import TokenBuckets
from bridge.settings import Settings
from bridge.signing import Signer
from bridge.store import Store, open_store
from bridge.supervisor import Supervisor
from bridge.targets import Guard
from bridge.timings import Timings
from bridge.tracking import Tracker

if TYPE_CHECKING:  # bridge.schemas reads limits of modules that import this one
    import httpx

    from bridge.schemas import JobRequest

log = logging.getLogger("bridge")

IDEMPOTENCY_WINDOW = 24 * 3600.0
TICK_BUDGET = 10.0  # seconds one tick may take, all rounds together
TICK_JOBS = 50  # due jobs (submissions, polls) claimed per round
TICK_DELIVERIES = 200  # due deliveries claimed per round
MEDIA_LINK_TTL = 7 * 24 * 3600.0
DEFAULT_TENANT = "default"
TEST_BURST = 5  # endpoint.test sends to one endpoint at once, then TEST_PER_SECOND
TEST_PER_SECOND = 1.0
LINKS_PER_MINUTE = 10  # portal sign-in links one tenant may mint, at once or a minute


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return "brk_" + secrets.token_urlsafe(24)


def key_prefix(key: str) -> str:
    """The name of a key made by ``new_api_key``: ``brk_`` and 8 of its 32 random
    characters (the other 144 bits stay secret)."""
    return key[:12]


def new_signing_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


USER_AGENT = "bridge/0.1"


def provider_client(max_connections: int = OUTBOUND_CONNECTIONS) -> httpx.AsyncClient:
    """The HTTP client adapters share, on httpx's own transport: bounded waits, no redirects
    followed silently. Its errors say whether a request could have left: only a
    ``ConnectError``, ``ConnectTimeout`` or ``PoolTimeout`` means nothing was sent, and a
    request is never sent twice (``retries=0``), which ``providers.http.send`` relies on."""
    import httpx  # when the first adapter is made (``providers.Adapters``), not at start-up

    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections // 2)),
        timeout=httpx.Timeout(30.0, connect=10.0), headers={"User-Agent": USER_AGENT})


def media_linker(signer: Signer, public_url: str) -> MediaLink:
    """Public, expiring links to files in the media store."""

    def link(name: str) -> tuple[str, datetime]:
        expires = int(time.time() + MEDIA_LINK_TTL)
        token = signer.media_token(name, expires)
        return f"{public_url}/media/{token}", datetime.fromtimestamp(expires, UTC)

    return link


@dataclass
class Bridge:
    settings: Settings
    store: Store
    providers: Adapters
    catalog: Catalog
    tracker: Tracker
    signer: Signer
    media: MediaStore
    _owns_http: bool
    guard: Guard
    deliverer: Deliverer
    supervisor: Supervisor
    fetcher: Fetcher  # copies providers' video links into the media store
    # POST /v1/endpoints/{id}/test, per endpoint
    test_sends: TokenBuckets = field(
        default_factory=lambda: TokenBuckets(TEST_BURST, TEST_PER_SECOND))
    # portal sign-in links, per tenant
    portal_links: TokenBuckets = field(
        default_factory=lambda: TokenBuckets(LINKS_PER_MINUTE, LINKS_PER_MINUTE / 60))

    @classmethod
    async def open(cls, settings: Settings, http: httpx.AsyncClient | None = None,
                   timings: Timings | None = None) -> Bridge:
        """Open the store (migrating it), load the secret key, bootstrap the default tenant.
        ``timings``: the workers' leases and waits (default: the service's own)."""
        timings = timings or Timings()
        store = await open_store(settings.database, pool_size=settings.database_pool)
        secret = (
            settings.secret_key.reveal()
            if settings.secret_key
            else await store.get_or_set_meta("secret_key", lambda: secrets.token_urlsafe(32))
        )
        await store.ensure_tenant(DEFAULT_TENANT, new_signing_secret)
        if settings.config is not None:
            counts = await store.sync_configured_endpoints(
                settings.configured_endpoints, utcnow(), new_signing_secret)
            log.info("endpoints from BRIDGE_CONFIG: %(created)d created, %(updated)d updated, "
                     "%(disabled)d disabled", counts)
        if settings.api_key is not None:
            # The key from the environment replaces the one from there before: a key taken
            # out of BRIDGE_API_KEY stops working.
            revoked, usable = await store.set_env_api_key(
                DEFAULT_TENANT, hash_key(settings.api_key.reveal()))
            for earlier in revoked:
                log.info("revoked the earlier BRIDGE_API_KEY (%s)", earlier.prefix)
            if not usable:
                log.warning("BRIDGE_API_KEY was revoked and stays revoked: set a new key")
        owns_http = http is None
        media = open_media_store(settings)
        providers = Adapters(settings, provider_client if http is None else lambda: http, media)
        signer = Signer(secret)
        tracker = Tracker(
            store,
            providers,
            signer,
            public_url=settings.public_url,
            media_link=media_linker(signer, settings.public_url),
            confirm_callbacks=settings.confirm_callbacks,
            streams=settings.background,
            timings=timings,
            allow_http_results=settings.allow_private_targets,
        )
        guard = Guard(allow_private=settings.allow_private_targets)
        deliverer = Deliverer(store, guard, settings.retry_schedule, timings=timings)
        store.outbox_listeners.append(deliverer.wake)
        store.job_listeners.append(tracker.wake)
        return cls(settings, store, providers, Catalog(providers), tracker, signer, media,
                   owns_http, guard, deliverer, Supervisor(*timings.restart_backoff),
                   Fetcher(guard, max_bytes=settings.media_max_bytes,
                           read_timeout=settings.request_timeout))

    @property
    def http(self) -> httpx.AsyncClient:
        """The HTTP client the provider adapters share."""
        return self.providers.client()

    async def start(self) -> None:
        """Start the background workers (only with ``BRIDGE_BACKGROUND=on``)."""
        if self.settings.background:
            await self.tracker.start(self.supervisor)
            await self.deliverer.start(self.supervisor)

    async def tick(self, budget: float = TICK_BUDGET) -> dict[str, object]:
        """One bounded round of work for serverless mode (``BRIDGE_BACKGROUND=off``): due
        submissions and polls, then due deliveries (the events just made among them), again
        while there is work and at least half the budget left. No delivery attempt outlasts
        the budget (one cut short is recorded as failed and retried on the schedule); a
        provider call that hangs past it is abandoned, its job's lease lapses and a later
        tick takes it up. Everything is claimed with leases, so overlapping ticks, or a tick
        beside a running worker, never do the same work twice."""
        started = time.monotonic()
        deadline = started + budget
        counts = {"jobs": 0, "deliveries": 0, "rounds": 0}

        async def rounds() -> None:
            while True:
                jobs = await self.tracker.run_once(TICK_JOBS)
                sent = await self.deliverer.run_once(TICK_DELIVERIES, deadline)
                counts["jobs"] += jobs
                counts["deliveries"] += sent
                counts["rounds"] += 1
                if not (jobs or sent) or time.monotonic() - started > budget / 2:
                    return

        finished = True
        try:
            # A little past the budget: deliveries end by the deadline and get recorded.
            await asyncio.wait_for(rounds(), budget + 2.0)
        except TimeoutError:
            finished = False
        return {**counts, "finished": finished,
                "seconds": round(time.monotonic() - started, 3)}

    async def close(self) -> None:
        """Stop the workers, letting what is in flight finish within the shutdown grace,
        then close the clients and the store."""
        grace = self.settings.shutdown_grace
        await asyncio.gather(self.tracker.stop(grace), self.deliverer.stop(grace))
        await self.supervisor.stop()
        if self._owns_http and self.providers.client_made:
            await self.http.aclose()
        await self.fetcher.close()
        await self.media.close()
        await self.store.close()

    # -- tenants -------------------------------------------------------------------------
    async def authenticate(self, key: str) -> Tenant | None:
        if not key:
            return None
        return await self.store.tenant_for_key(hash_key(key))

    async def create_api_key(self, tenant: str) -> str:
        await self.store.ensure_tenant(tenant, new_signing_secret)
        while True:  # a prefix taken already (48 random bits) makes another key
            key = new_api_key()
            if await self.store.add_api_key(tenant, hash_key(key), prefix=key_prefix(key)):
                return key

    # -- jobs ----------------------------------------------------------------------------
    async def create_job(
        self, tenant: Tenant, body: JobRequest, idempotency_key: str | None,
        request_hash: str | None = None,
    ) -> tuple[Job, bool]:
        """Check a new job against its model and store it (``queued``); the tracker
        submits it. ``request_hash`` is the fingerprint of the body that came with
        ``idempotency_key`` (``bridge.jobs.fingerprint``).

        Returns the job and whether it is new (``False``: an earlier job with the same
        ``Idempotency-Key``, which is never submitted a second time). The same key with
        another body is a conflict (409) and submits nothing.
        """
        request = body.for_provider()
        provider = self.providers[request.provider]
        models = await self.catalog.models(request.provider)
        model = None
        if models and request.model is not None:
            model = next((m for m in models if m.id == request.model), None)
            if model is None:
                raise InvalidRequest(
                    f"unknown model {request.model!r} for {request.provider}; "
                    "see GET /v1/models",
                    field="model",
                )
        if model is not None:
            check_capabilities(request, model)
        provider.check(request, model)

        now = utcnow()
        if body.webhook_url is not None:
            await check_url(self.guard, body.webhook_url, "webhook_url")
        # The job shows its data: URLs as summaries; only its submission reads them whole.
        shown, media = inline.split(body.accepted())
        job = Job(
            id=new_id("job"),
            tenant=tenant.id,
            provider=request.provider,
            model=request.model,
            status=JobStatus.QUEUED,
            tracking=Tracking(provider.tracking),
            request=shown,
            created_at=now,
            updated_at=now,
            metadata=body.metadata,
            webhook_url=body.webhook_url,
            webhook_events=body.events,
            idempotency_key=idempotency_key,
            next_check_at=now,
            request_hash=request_hash if idempotency_key is not None else None,
        )
        stored, created = await self.store.create_job(
            job, idempotency_window=IDEMPOTENCY_WINDOW, media=media)
        if created:
            self.tracker.wake()
        elif stored.request_hash not in (None, job.request_hash):
            # (None: a job made before bodies were fingerprinted; it cannot be told apart.)
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different body; use a new key "
                "for a new job", field="Idempotency-Key")
        return stored, created
