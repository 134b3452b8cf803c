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

Attempts go out over one ``aiohttp`` session whose resolver is the SSRF guard
(``bridge.webhook_session``), made at the first attempt: a connection goes to the very
address that was checked. Kept-alive connections are reused; a POST is never sent again by
the client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import ssl
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from bridge.failures import describe
from bridge.metrics import count_delivery
from bridge.models import MAX_CONCURRENCY, AttemptResult, Outgoing, utcnow
from bridge.retry import DISABLE_AFTER, next_attempt, parse_retry_after
from bridge.signing import sign_webhook
from bridge.store import Store
from bridge.supervisor import Beat, Supervisor
from bridge.targets import Guard
from bridge.timings import Timings

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("bridge.delivery")

EXCERPT_BYTES = 1024
CONCURRENCY = 64  # attempts in flight, all targets
# Attempts in flight to one target at most, whatever it asks: an endpoint's own
# max_concurrency (DEFAULT_MAX_CONCURRENCY for a job's webhook_url) applies below it.
PER_TARGET = MAX_CONCURRENCY
SLOW = 1.0  # seconds: an endpoint answering this slowly gets no deliveries claimed ahead
USER_AGENT = "bridge-webhooks/0.1"
# Headers bridge sets on every delivery; an endpoint's own headers never replace them.
SET_BY_BRIDGE = frozenset({
    "webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length",
    "host", "user-agent",
})
# Headers of one hop or of the body's encoding, not of the message (RFC 9110 section 7.6.1).
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
    "content-encoding",
})


def refused_header(name: str) -> str | None:
    """Why an endpoint may not set the header ``name``, or ``None``: the one list, for
    registrations (API, portal) and for every delivery of what was kept before."""
    lowered = name.lower()
    if lowered in SET_BY_BRIDGE:
        return f"{name} is set by bridge on every delivery"
    if lowered in HOP_BY_HOP or lowered.startswith("proxy-"):
        return f"{name} is about the connection or the body's encoding, not the event"
    return None


def signed_headers(
    secrets: list[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        # During a rotation both secrets sign; receivers accept either (space-separated).
        "webhook-signature": " ".join(sign_webhook(s, message_id, timestamp, body)
                                      for s in secrets),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def _target_name(outgoing: Outgoing) -> str:
    return outgoing.delivery.endpoint_id or outgoing.url


_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def _without_urls(text: str) -> str:
    """An error message with every URL in it replaced (a URL may carry a credential)."""
    return _URL.sub("<url>", text)


def _may_start(target_room: int, tenant_busy: int, share: int, free: int) -> bool:
    """Whether one more attempt may start: its target under its limit, its tenant (with
    ``tenant_busy`` attempts in flight) under its share, and a share's worth of the ``free``
    slots left for a tenant with none in flight (which may take any free slot)."""
    return (target_room > 0 and tenant_busy < share and free > 0
            and (tenant_busy == 0 or free > share))


class _Target:
    """An endpoint (or a job's own webhook_url) with deliveries claimed here."""

    __slots__ = ("claimed", "in_flight", "limit", "slow")

    def __init__(self, limit: int) -> None:
        self.claimed = 0  # its deliveries claimed here and not yet recorded
        self.in_flight = 0  # its attempts being made
        self.limit = limit  # its attempts in flight at most
        self.slow = False  # its last attempt took SLOW seconds or more


class _Tenant:
    """A tenant with deliveries claimed here."""

    __slots__ = ("claimed", "in_flight")

    def __init__(self) -> None:
        self.claimed = 0
        self.in_flight = 0


class Deliverer:
    """Claims due deliveries, sends them and records what came of each.

    Claimed deliveries wait in ``_ready`` (claim order) until a slot, their target and
    their tenant have room; one that may start passes those that may not. Up to
    ``concurrency`` sender tasks take them from there, one after another while any can go,
    so that a freed slot starts the next attempt at once. A sender hands each outcome to
    the recorder and goes on; the recorder writes the outcomes that came in meanwhile in
    one store call. ``_run`` claims whenever it is woken (new work, or a tenant with room
    for a batch) and every ``Timings.delivery_idle``.

    Fairness (fair queueing of the slots): with T tenants having deliveries claimed here, a
    tenant's share is ``concurrency // (T + 1)`` attempts in flight (at least one), so
    that each share falls as more tenants have work and there is always room for one more
    tenant: a tenant with attempts in flight starts another only while a share's worth of
    slots stays free, one with none takes any free slot. A target has at most its
    ``max_concurrency`` attempts in flight (and never more than ``per_target``). Claims
    take tenants in turns, each up to two rounds of its share claimed here, and always
    leave room for a tenant not seen yet.
    """

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
        ssl_context: ssl.SSLContext | None = None,
        timings: Timings | None = None,
    ) -> None:
        self.store = store
        self.timings = timings or Timings()
        self.guard = guard
        self.schedule = schedule
        self.concurrency = concurrency
        self.per_target = per_target
        self.clock = clock
        self.listeners = listeners if listeners is not None else []
        self.ssl_context = ssl_context  # the trust for https; None: the system's
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._targets: dict[str, _Target] = {}  # those with deliveries claimed here
        self._tenants: dict[str, _Tenant] = {}  # likewise
        self._ready: collections.deque[tuple[Outgoing, float]] = collections.deque()
        self._claimed = 0  # claimed here and not yet recorded (or given back)
        self._in_flight = 0  # attempts being made, all tenants
        self._unstarted: set[asyncio.Task[None]] = set()  # senders yet to pick their first
        self._sending: set[str] = set()  # ids of the deliveries claimed here
        self._senders: set[asyncio.Task[None]] = set()
        self._records: list[tuple[Outgoing, AttemptResult]] = []
        self._recorder: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()  # set whenever nothing claimed here is unsettled
        self._settled.set()
        self._deadline: float | None = None  # run_once's, in time.monotonic()
        self._attempted = 0  # attempts recorded or given to the recorder, for run_once

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session attempts go out by, made on first use (inside the loop)."""
        if self._session is None or self._session.closed:
            from bridge.webhook_session import open_session

            self._session = open_session(self.guard, self.concurrency, self.ssl_context)
        return self._session

    @property
    def running(self) -> bool:
        """Whether the claim loop runs (between ``start`` and ``stop``)."""
        return self._task is not None and not self._task.done()

    @property
    def sending(self) -> int:
        """Attempts being made now, or about to be."""
        return len(self._senders)

    async def start(self, supervisor: Supervisor | None = None) -> None:
        """Run the claim loop in the background, under ``supervisor`` (restarted if it
        raises)."""
        if self._task is None:
            supervisor = supervisor or Supervisor(*self.timings.restart_backoff)
            self._task = supervisor.spawn("deliverer", self._run)

    async def stop(self, grace: float = 0.0) -> None:
        """Stop claiming; let the attempts in flight finish for up to ``grace`` seconds and
        record them. Deliveries claimed and not begun are given back at once (their leases
        end, so that another process sends them now); attempts cut off by the end of the
        grace come back, with the same ``webhook-id``, when their lease lapses."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._halt(grace)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _halt(self, grace: float = 0.0) -> None:
        """Give back what waits, let the attempts in flight finish for up to ``grace``
        seconds, cut off the rest, record what was sent."""
        waiting = [self._ready.popleft()[0] for _ in range(len(self._ready))]
        for outgoing in waiting:
            self._release(outgoing)
        senders = list(self._senders)
        if senders and grace > 0:
            await asyncio.wait(senders, timeout=grace)
        for task in senders:
            task.cancel()
        if senders:
            await asyncio.gather(*senders, return_exceptions=True)
        while self._ready:
            self._release(self._ready.popleft()[0])
        if self._recorder is not None:
            await asyncio.gather(self._recorder, return_exceptions=True)
            self._recorder = None
        if waiting:
            try:
                await self.store.release_deliveries(waiting)
            except Exception as exc:  # they come back when their leases lapse
                log.warning("%d claimed deliveries could not be given back: %s",
                            len(waiting), exc)

    def wake(self) -> None:
        self._wake.set()

    # -- claiming ------------------------------------------------------------------------
    async def _run(self, beat: Beat) -> None:
        while True:
            self._wake.clear()
            # Claimed: the attempts in flight and the next ones, ready to start as slots
            # free, so that no slot waits for a claim; woken by new work, a claim looks for
            # tenants not seen yet even while the others' deliveries fill every slot.
            claimed = await self._claim(self._room())  # if it raises, the supervisor restarts us
            beat()
            if claimed and self._claimed < self.concurrency:
                continue  # there may be more due
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # comes as the wake does, and stop() would wait for a loop that goes on.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timings.delivery_idle):
                    await self._wake.wait()

    def _share(self, tenants: int | None = None) -> int:
        """Attempts in flight for one tenant when ``tenants`` (by default those with
        deliveries claimed here) have work: room is left for one more."""
        if tenants is None:
            tenants = len(self._tenants)
        return max(1, self.concurrency // (tenants + 1))

    def _room(self) -> int:
        """Deliveries this worker may claim now: two rounds in all, less what it holds, and
        always two rounds of the share of a tenant with nothing claimed here yet."""
        return max(2 * self.concurrency - self._claimed,
                   2 * self._share(len(self._tenants) + 1))

    async def _claim(self, room: int, *, skip_full: bool = True) -> int:
        if room <= 0:
            return 0
        lease = self.timings.delivery_lease
        if skip_full:
            claimed = await self.store.claim_due_deliveries(
                self.clock(), room, lease, skip_endpoints=self._full_endpoints(),
                per_tenant=2 * self._share(len(self._tenants) + 1),
                tenant_slots={name: self._tenant_slots(name) for name in self._tenants})
        else:  # one batch and no claim after it (a tick): tenants take turns, none capped
            claimed = await self.store.claim_due_deliveries(
                self.clock(), room, lease, per_tenant=room)
        claimed_at = time.monotonic()
        taken = 0
        for outgoing in claimed:
            delivery_id = outgoing.delivery.id
            if delivery_id in self._sending:
                continue  # an earlier claim of it is still being attempted here
            self._sending.add(delivery_id)
            name = _target_name(outgoing)
            limit = min(outgoing.max_concurrency, self.per_target)
            target = self._targets.get(name)
            if target is None:
                target = self._targets[name] = _Target(limit)
            target.limit = limit  # as the endpoint says now
            target.claimed += 1
            tenant = self._tenants.get(outgoing.delivery.tenant)
            if tenant is None:
                tenant = self._tenants[outgoing.delivery.tenant] = _Tenant()
            tenant.claimed += 1
            self._claimed += 1
            self._ready.append((outgoing, claimed_at))
            taken += 1
        if taken:
            self._settled.clear()
        if self._ready:  # and what waited may start now: shares grow as tenants leave
            self._fill()
        return taken

    def _full_endpoints(self) -> frozenset[str]:
        """Endpoints with as many deliveries claimed as they may have: claiming more for them
        now would only park slots that other endpoints could use. A quick endpoint may have
        a second round claimed behind the one in flight, so that a slot it frees is used at
        once instead of after a claim; a slow one (see ``SLOW``) may not, since what waits
        behind it would wait past ``Timings.start_within`` and only be claimed again later."""
        return frozenset(
            name for name, target in self._targets.items()
            if name.startswith("ep_")
            and target.claimed >= (target.limit if target.slow else 2 * target.limit))

    def _tenant_slots(self, name: str) -> int:
        """Deliveries a claim may take for this tenant: up to two rounds of its share in
        all, and none until half a round is free (claims come in batches)."""
        tenant = self._tenants.get(name)
        share = self._share()
        slots = 2 * share - (tenant.claimed if tenant is not None else 0)
        return slots if slots >= max(1, share // 2) else 0

    async def run_once(self, limit: int, deadline: float | None = None) -> int:
        """One bounded round (tick mode): claim up to ``limit`` due deliveries, send them
        (``concurrency`` at a time, within the target and tenant caps) and record the outcomes;
        answer how many were attempted. With ``deadline`` (``time.monotonic()``), no
        attempt outlasts it: one cut short is recorded as a failed attempt (no answer in
        time) and retried on the schedule."""
        self._deadline, self._attempted = deadline, 0
        try:
            await self._claim(limit, skip_full=False)
            await self._settled.wait()
        except asyncio.CancelledError:  # the tick's own time is up: no attempt outlives it
            await self._halt()
            raise
        finally:
            self._deadline = None
        return self._attempted

    # -- sending -------------------------------------------------------------------------
    def _fill(self) -> None:
        """Start senders for the claimed deliveries that may start now, while slots are
        free. Each takes its first delivery itself when it runs (one cancelled before it
        runs takes none), and one that finds none it may send ends."""
        wanted = self._startable() - len(self._unstarted)
        for _ in range(min(self.concurrency - len(self._senders), wanted)):
            sender = asyncio.create_task(self._sender())
            self._senders.add(sender)
            self._unstarted.add(sender)
            sender.add_done_callback(self._senders.discard)  # also if it never ran
            sender.add_done_callback(self._unstarted.discard)

    def _startable(self) -> int:
        """How many of the claimed deliveries could start now, one after another."""
        share, in_flight = self._share(), self._in_flight
        targets: dict[str, int] = {}  # attempts this count has started, by target
        tenants: dict[str, int] = {}  # and by tenant
        for outgoing, _ in self._ready:
            name, tenant_name = _target_name(outgoing), outgoing.delivery.tenant
            target_busy = self._targets[name].in_flight + targets.get(name, 0)
            tenant_busy = self._tenants[tenant_name].in_flight + tenants.get(tenant_name, 0)
            if _may_start(self._targets[name].limit - target_busy, tenant_busy, share,
                          self.concurrency - in_flight):
                targets[name] = targets.get(name, 0) + 1
                tenants[tenant_name] = tenants.get(tenant_name, 0) + 1
                in_flight += 1
        return in_flight - self._in_flight

    def _pick(self) -> tuple[Outgoing, float, _Target, _Tenant] | None:
        """The first claimed delivery that may start (see ``_may_start``), taken out."""
        share = self._share()
        for index, (outgoing, claimed_at) in enumerate(self._ready):
            target = self._targets[_target_name(outgoing)]
            tenant = self._tenants[outgoing.delivery.tenant]
            if _may_start(target.limit - target.in_flight, tenant.in_flight, share,
                          self.concurrency - self._in_flight):
                del self._ready[index]
                target.in_flight += 1
                tenant.in_flight += 1
                self._in_flight += 1
                return outgoing, claimed_at, target, tenant
        return None

    async def _sender(self) -> None:
        task = asyncio.current_task()
        self._unstarted.discard(task)
        try:
            while (picked := self._pick()) is not None:
                outgoing, claimed_at, target, tenant = picked
                result = None
                try:
                    if time.monotonic() - claimed_at <= self.timings.start_within:
                        result = await self._attempt_within(outgoing)
                    # else: too long behind the target's other attempts: sending now could
                    # outlast the lease and race a second claim. The lease lapses; it comes
                    # back.
                except Exception:  # the lease runs out and the attempt is made again
                    log.exception("delivery %s could not be attempted", outgoing.delivery.id)
                finally:
                    target.in_flight -= 1
                    tenant.in_flight -= 1
                    self._in_flight -= 1
                    if result is None:  # not sent, failed to, or cut off by stop()
                        self._release(outgoing)
                if result is not None:
                    target.slow = result.duration_ms >= SLOW * 1000
                    self._record(outgoing, result)
        finally:
            # Out of the count at once, not a turn later: a claim that comes in meanwhile
            # starts senders for the slots this one leaves.
            if task is not None:
                self._senders.discard(task)

    async def _attempt_within(self, outgoing: Outgoing) -> AttemptResult:
        within = self.timings.delivery_timeout
        if self._deadline is not None:
            within = max(1.0, min(within, self._deadline - time.monotonic()))
        return await self.attempt(outgoing, within)

    # -- recording -----------------------------------------------------------------------
    def _record(self, outgoing: Outgoing, result: AttemptResult) -> None:
        self._attempted += 1
        self._records.append((outgoing, result))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._write_records(), name="deliverer.record")

    async def _write_records(self) -> None:
        """Record the outcomes that are in, each batch in one store call, until none are
        left. Each is recorded only while its claim's lease still holds (the store checks);
        one that cannot be recorded is attempted again once the lease lapses."""
        while self._records:
            batch, self._records = self._records, []
            try:
                recorded = await self.store.record_attempts(batch)
            except BaseException as exc:
                # Not even queued (the store is closing), or cancelled with the loop.
                for outgoing, _ in batch:
                    self._release(outgoing)
                if not isinstance(exc, Exception):
                    raise
                log.exception("%d delivery outcomes could not be recorded", len(batch))
                continue
            for (outgoing, result), outcome in zip(batch, recorded, strict=True):
                self._release(outgoing)
                if isinstance(outcome, Exception):
                    log.error("delivery %s could not be recorded", outgoing.delivery.id,
                              exc_info=outcome)
                    continue
                for listener in self.listeners:
                    try:
                        listener(outgoing, result)
                    except Exception:
                        log.exception("a delivery listener failed")

    def _release(self, outgoing: Outgoing) -> None:
        """A delivery claimed here is settled: recorded, or left for its lease to lapse."""
        self._sending.discard(outgoing.delivery.id)
        name = _target_name(outgoing)
        target = self._targets[name]
        target.claimed -= 1
        if not target.claimed:
            del self._targets[name]
        tenant = self._tenants[outgoing.delivery.tenant]
        tenant.claimed -= 1
        self._claimed -= 1
        if not self._claimed:
            self._settled.set()
        if not tenant.claimed:
            del self._tenants[outgoing.delivery.tenant]
        if self._tenant_slots(outgoing.delivery.tenant):
            # Room for a batch of this tenant's; and the target's next event of this job may
            # be due.
            self.wake()

    # -- one attempt ---------------------------------------------------------------------
    async def attempt(self, outgoing: Outgoing, within: float | None = None) -> AttemptResult:
        """Send ``outgoing`` once (``within`` seconds at most, by default the timings'
        ``delivery_timeout``) and judge the answer."""
        if within is None:
            within = self.timings.delivery_timeout
        delivery = outgoing.delivery
        now = time.time()
        headers = {name: value for name, value in outgoing.headers.items()
                   if refused_header(name) is None}
        headers.update(signed_headers(outgoing.secrets, delivery.event_id, int(now),
                                      outgoing.body))
        status: int | None = None
        excerpt: str | None = None
        error: str | None = None
        retry_after = None
        started = time.perf_counter()
        try:
            self.guard.check_form(outgoing.url)  # and an address in it: no resolver sees it
            async with asyncio.timeout(within):
                async with self.session.post(outgoing.url, data=outgoing.body,
                                             headers=headers, allow_redirects=False) as answer:
                    # The answer is in with the first of its body (up to 1 KiB; a longer one's
                    # connection is closed, not read on).
                    first = await answer.content.read(EXCERPT_BYTES)
                    status = answer.status
                    excerpt = first.decode("utf-8", "replace") or None
                    if status in (429, 503):
                        retry_after = parse_retry_after(answer.headers.get("retry-after"), now)
        except Exception as exc:  # anything else fails this attempt, never the delivery
            error = describe(exc, within)  # in words: "connection refused", "timed out ..."
        duration_ms = round((time.perf_counter() - started) * 1000)
        if error is not None:
            error = _without_urls(error)  # a URL may carry a credential; it never goes on
        ok = status is not None and 200 <= status < 300
        if status is not None and not ok:
            error = f"HTTP {status}"
            if 300 <= status < 400:
                error += " (redirects are not followed)"
        at = self.clock()
        count_delivery(ok, duration_ms / 1000)
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
