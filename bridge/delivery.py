"""Webhook delivery: the worker that empties the outbox, signed per Standard Webhooks.

Every event's deliveries are already stored, in the event's own transaction (the store's
outbox). The :class:`Deliverer` claims due ones with a lease (so overlapping workers and
ticks never send the same attempt twice), signs exactly the bytes it sends, posts them with a
15 s timeout without following redirects, and records the attempt: status code, duration,
error and the first KiB of the answer. A failure is tried again on ``BRIDGE_RETRY_SCHEDULE``
with +-20 % jitter; a 429 or 503 ``Retry-After`` is honoured up to an hour. 410 Gone disables
the endpoint at once; an endpoint whose deliveries have all failed for five days is
disabled. Each target gets a job's events in order (the store hands out the next one only
when the one before is settled).

The HTTP client is aiohttp, chosen by measurement (bench/delivery.py): at 32 concurrent
deliveries it sends several times what httpx's pooled client does. Its resolver is the
SSRF guard's (``bridge.targets``): the connection goes to the very address that was checked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import logging
import random
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import aiohttp

from bridge.metrics import DELIVERY_SECONDS, count_delivery
from bridge.models import utcnow
from bridge.providers.http import parse_retry_after
from bridge.store import Store
from bridge.store.base import AttemptResult, Outgoing
from bridge.targets import Guard, GuardedResolver, TargetRefused, describe, is_address

log = logging.getLogger("bridge.delivery")

TIMEOUT = 15.0  # seconds for one attempt, connect to last byte
LEASE = 30.0  # seconds a claimed delivery is ours; more than TIMEOUT
# An attempt not begun this long after its claim is left for the lease to lapse, so that the
# attempt (at most TIMEOUT) and its record end well inside the lease.
START_WITHIN = LEASE - TIMEOUT - 10.0
EXCERPT_BYTES = 1024
MAX_RETRY_AFTER = 3600.0  # a Retry-After is honoured up to this many seconds
JITTER = 0.2
DISABLE_AFTER = 5 * 86400.0  # seconds of nothing but failed deliveries
CONCURRENCY = 64  # attempts in flight, all targets
PER_TARGET = 8  # attempts in flight to one endpoint (or one job's webhook_url)
SLOW = 1.0  # seconds: an endpoint answering this slowly gets no deliveries claimed ahead
IDLE_WAIT = 1.0  # seconds between looks for due retries when nothing wakes the worker
USER_AGENT = "bridge-webhooks/0.1"
# Headers bridge sets on every delivery; an endpoint's own headers never replace them.
RESERVED_HEADERS = frozenset({
    "webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length",
    "host", "user-agent", "transfer-encoding", "connection",
})


@functools.lru_cache(maxsize=64)
def _timeout(total: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total)


@functools.lru_cache(maxsize=1024)
def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: ``v1,`` and the base64 HMAC-SHA256, keyed with the
    base64 key after ``whsec_``, of ``"{id}.{timestamp}.{body}"``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(_key(secret), signed, hashlib.sha256)).decode()


def signed_headers(
    secrets: list[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        # During a rotation both secrets sign; receivers accept either (space-separated).
        "webhook-signature": " ".join(sign(s, message_id, timestamp, body) for s in secrets),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def _without_urls(text: str) -> str:
    """An error message with every URL in it replaced (aiohttp names the request URL)."""
    return _URL.sub("<url>", text)


def next_attempt(
    attempt: int, schedule: tuple[float, ...], retry_after: float | None, now: datetime,
    jitter: Callable[[float, float], float] = random.uniform,
) -> datetime | None:
    """When attempt ``attempt + 1`` is due after attempt ``attempt`` failed, or ``None``
    once the schedule is spent."""
    if attempt > len(schedule):
        return None
    if retry_after is not None:
        delay = min(retry_after, MAX_RETRY_AFTER)
    else:
        delay = schedule[attempt - 1] * jitter(1 - JITTER, 1 + JITTER)
    return now + timedelta(seconds=delay)


class _Target:
    """An endpoint (or a job's webhook_url) with deliveries claimed here."""

    __slots__ = ("gate", "slow", "users")

    def __init__(self, per_target: int) -> None:
        self.gate = asyncio.Semaphore(per_target)  # its attempts in flight
        self.users = 0  # its deliveries claimed here: in flight or waiting
        self.slow = False  # its last attempt took SLOW seconds or more


class Deliverer:
    def __init__(
        self,
        store: Store,
        guard: Guard,
        schedule: tuple[float, ...],
        *,
        concurrency: int = CONCURRENCY,
        per_target: int = PER_TARGET,
        clock: Callable[[], datetime] = utcnow,
        listeners: list[Callable[[Outgoing, AttemptResult], None]] | None = None,
    ) -> None:
        self.store = store
        self.guard = guard
        self.schedule = schedule
        self.concurrency = concurrency
        self.per_target = per_target
        self.clock = clock
        self.listeners = listeners if listeners is not None else []
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._targets: dict[str, _Target] = {}  # those with deliveries claimed here
        self._sending: set[str] = set()  # ids of the deliveries being attempted here
        self._running: set[asyncio.Task[bool]] = set()
        self._slots = asyncio.Semaphore(concurrency)  # attempts in flight, all targets

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self.guard), use_dns_cache=False,
                limit=self.concurrency, limit_per_host=0,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=TIMEOUT),
            )
        return self._session

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="deliverer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def wake(self) -> None:
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            self._wake.clear()
            # Up to two rounds claimed: the attempts in flight and the next ones, ready to
            # start as slots free, so that no slot waits for a claim.
            room = 2 * self.concurrency - len(self._running)
            if self._running and room < max(1, self.concurrency // 2):
                # Claim in batches, not one row per finished attempt: wait for more room.
                await self._wake.wait()
                continue
            try:
                started = await self._claim_and_start(room)
            except Exception:
                log.exception("claiming due deliveries failed; trying again shortly")
                started = 0
            if started and len(self._running) < self.concurrency:
                continue  # there may be more due
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # comes as the wake does, and stop() would wait for a loop that goes on.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_WAIT):
                    await self._wake.wait()

    async def _claim_and_start(self, room: int) -> int:
        if room <= 0:
            return 0
        claimed = await self.store.claim_due_deliveries(self.clock(), room, LEASE,
                                                        skip_endpoints=self._full_endpoints())
        claimed_at = time.monotonic()
        for outgoing in claimed:
            task = asyncio.create_task(self._deliver(outgoing, claimed_at))
            self._running.add(task)
            task.add_done_callback(self._finished)
        return len(claimed)

    def _full_endpoints(self) -> frozenset[str]:
        """Endpoints with as many deliveries claimed as they may have: claiming more for them
        now would only park slots that other endpoints could use. A quick endpoint may have
        a second round claimed behind the one in flight, so that a slot it frees is used at
        once instead of after a claim; a slow one (see ``SLOW``) may not, since what waits
        behind it would wait past ``START_WITHIN`` and only be claimed again later."""
        return frozenset(
            name for name, target in self._targets.items()
            if name.startswith("ep_")
            and target.users >= (self.per_target if target.slow else 2 * self.per_target))

    def _finished(self, task: asyncio.Task[bool]) -> None:
        self._running.discard(task)
        self.wake()  # room for more; and the target's next event of this job may be due

    async def run_once(self, limit: int, deadline: float | None = None) -> int:
        """One bounded round (tick mode): claim up to ``limit`` due deliveries, send them
        (``concurrency`` at a time) and record the outcomes; answer how many were attempted.
        With ``deadline`` (``time.monotonic()``), no attempt outlasts it: one cut short is
        recorded as a failed attempt (no answer in time) and retried on the schedule."""
        claimed = await self.store.claim_due_deliveries(self.clock(), limit, LEASE)
        claimed_at = time.monotonic()
        gate = asyncio.Semaphore(self.concurrency)

        async def one(outgoing: Outgoing) -> bool:
            async with gate:
                return await self._deliver(outgoing, claimed_at, deadline)

        return sum(await asyncio.gather(*(one(outgoing) for outgoing in claimed)))

    async def _deliver(
        self, outgoing: Outgoing, claimed_at: float, deadline: float | None = None
    ) -> bool:
        """Attempt and record one claimed delivery; ``False`` if it was left for later."""
        if outgoing.delivery.id in self._sending:
            return False  # an earlier claim of it is still being attempted here
        name = outgoing.delivery.endpoint_id or outgoing.url
        target = self._targets.get(name)
        if target is None:
            target = self._targets[name] = _Target(self.per_target)
        target.users += 1
        self._sending.add(outgoing.delivery.id)
        try:
            async with target.gate, self._slots:
                if time.monotonic() - claimed_at > START_WITHIN:
                    # Too long behind the target's other attempts: sending now could outlast
                    # the lease and race a second claim. Let the lease lapse; it comes back.
                    return False
                within = TIMEOUT
                if deadline is not None:
                    within = max(1.0, min(TIMEOUT, deadline - time.monotonic()))
                result = await self.attempt(outgoing, within)
                target.slow = result.duration_ms >= SLOW * 1000
            # Recorded only while the lease is still this claim's (the store checks). The
            # slots are free again already: they bound requests in flight, and the record
            # waits for the next group commit.
            await self.store.finish_delivery(outgoing, result)
        except asyncio.CancelledError:
            raise
        except Exception:  # the lease runs out and the attempt is made again
            log.exception("delivery %s could not be recorded", outgoing.delivery.id)
            return False
        finally:
            self._sending.discard(outgoing.delivery.id)
            target.users -= 1
            if not target.users:
                del self._targets[name]
        for listener in self.listeners:
            listener(outgoing, result)
        return True

    # -- one attempt ---------------------------------------------------------------------
    async def attempt(self, outgoing: Outgoing, within: float = TIMEOUT) -> AttemptResult:
        """Send ``outgoing`` once (``within`` seconds at most) and judge the answer."""
        delivery = outgoing.delivery
        now = time.time()
        headers = {name: value for name, value in outgoing.headers.items()
                   if name.lower() not in RESERVED_HEADERS}
        headers.update(signed_headers(outgoing.secrets, delivery.event_id, int(now),
                                      outgoing.body))
        status: int | None = None
        excerpt: str | None = None
        error: str | None = None
        retry_after = None
        started = time.perf_counter()
        try:
            host = self.guard.check_form(outgoing.url)
            if not self.guard.allow_private and is_address(host):
                # aiohttp connects to a literal address without asking the resolver.
                await self.guard.addresses(host)
            async with self.session.post(
                outgoing.url, data=outgoing.body, headers=headers, allow_redirects=False,
                timeout=_timeout(within),
            ) as response:
                status = response.status
                head = await response.content.read(EXCERPT_BYTES)
                excerpt = head.decode("utf-8", "replace") or None
                if status in (429, 503):
                    retry_after = parse_retry_after(response.headers.get("retry-after"), now)
        except TargetRefused as exc:
            error = f"refused: {exc}"
        except TimeoutError:  # before OSError, of which it is a kind
            error = f"no answer within {within:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            error = describe(exc)
        except Exception as exc:  # anything else fails this attempt, never the delivery
            error = f"{type(exc).__name__}: {exc}"
        duration_ms = round((time.perf_counter() - started) * 1000)
        if error is not None:
            error = _without_urls(error)  # a URL may carry a credential; it never goes on
        ok = status is not None and 200 <= status < 300
        if status is not None and not ok:
            error = f"HTTP {status}"
            if 300 <= status < 400:
                error += " (redirects are not followed)"
        at = self.clock()
        count_delivery(ok)
        DELIVERY_SECONDS.observe(duration_ms / 1000)
        # Ids and outcome only: the URL may carry a credential, the body is the user's.
        if log.isEnabledFor(logging.INFO):
            log.info("delivery attempt", extra={
                "delivery_id": delivery.id, "event_id": delivery.event_id,
                "endpoint_id": delivery.endpoint_id, "job_id": delivery.job_id,
                "attempt": delivery.attempt, "outcome": "succeeded" if ok else "failed",
                "response_status": status, "duration_ms": duration_ms, "error": error,
            })
        return AttemptResult(
            ok=ok, at=at, response_status=status, duration_ms=duration_ms, error=error,
            response_excerpt=excerpt,
            retry_at=None if ok else next_attempt(delivery.attempt - delivery.first_attempt + 1,
                                                  self.schedule, retry_after, at),
            gone=status == 410, disable_after=DISABLE_AFTER,
        )
