"""Following jobs to the end: submission, polling, streams and provider callbacks.

Every job that is not finished has a next-check time in the store. The tracker claims the
due ones (with a lease, so two workers never work one job) and does what the job needs:

- ``queued``: submit it, if the provider has a free slot (api.airforce: 4 tasks per key);
  a submission whose outcome is unknown is looked up at the provider, never blindly resent;
- ``submitted``/``running``, tracking ``stream``: open the provider's event stream in a task of
  its own; when the stream breaks, poll once and open it again;
- ``poll``: ask the provider, then sleep as long as ``bridge.polling`` says;
- ``callback``: wait for the provider to call back, with a safety-net poll at the time the
  provider's guidance says the job should be done.

Every answer is folded into the job by the pure rules of ``bridge.jobs`` inside one store
transaction, so a callback, a stream message and a poll racing on one job cannot undo each
other, and a terminal state is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from bridge import inline, metrics, polling
from bridge.coalesce import Coalescer
from bridge.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    ProviderError,
    SubmitOutcomeUnknown,
    Unauthorized,
)
from bridge.jobs import MediaLink, apply_snapshot, apply_submission, due_in, end_job
from bridge.logs import log_status_change
from bridge.models import TERMINAL, Event, Job, JobError, JobStatus, Tracking, utcnow
from bridge.providers.base import (
    CallbackProvider,
    JobRequest,
    Provider,
    Snapshot,
    StreamingProvider,
    Submission,
    TrackedJob,
)
from bridge.signing import Signer
from bridge.store import Change, Store
from bridge.supervisor import Beat, Supervisor
from bridge.timings import Timings

log = logging.getLogger("bridge.tracking")

MAX_STREAM_BREAKS = 3  # after this many breaks a job is followed by polling alone
MAX_SUBMIT_ATTEMPTS = 12  # retryable submit failures before the job fails

EventListener = Callable[[Event], None]


class Tracker:
    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider],
        signer: Signer,
        *,
        public_url: str,
        media_link: MediaLink,
        confirm_callbacks: bool = True,
        streams: bool = True,
        concurrency: int = 32,
        timings: Timings | None = None,
        allow_http_results: bool = False,
    ) -> None:
        self.store = store
        self.timings = timings or Timings()
        self.providers = providers
        self.signer = signer
        self.public_url = public_url
        self.media_link = media_link
        self.confirm_callbacks = confirm_callbacks
        self.streams_enabled = streams
        self.allow_http_results = allow_http_results  # else only https result links
        self.listeners: list[EventListener] = []
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._wake = asyncio.Event()
        self._streams: dict[str, asyncio.Task[None]] = {}
        self._stream_breaks: dict[str, int] = {}
        self._poll_first: set[str] = set()
        self._confirming = Coalescer[None]()  # by job id: one confirmation at a time
        self._work: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self.supervisor = Supervisor(*self.timings.restart_backoff)

    @functools.cached_property
    def _callback_parsers(self) -> dict[str, Callable[[bytes], tuple[str, Snapshot]]]:
        """Looked up once (at the first callback: the adapters are made when first used): a
        runtime Protocol check costs more than the rest of a callback's parsing."""
        return {name: provider.parse_callback for name, provider in self.providers.items()
                if isinstance(provider, CallbackProvider)}

    # -- running -------------------------------------------------------------------------
    async def start(self, supervisor: Supervisor | None = None) -> None:
        """Resume after a restart, then run the claim loop in the background, under
        ``supervisor`` (restarted if it raises)."""
        if supervisor is not None:
            self.supervisor = supervisor
        now = utcnow()
        for job in await self.store.unfinished_jobs():
            if job.tracking is Tracking.STREAM and job.status is not JobStatus.QUEUED:
                # Its stream died with the previous process: follow it again now.
                await self.store.release_job(job.id, now)
        self._loop_task = self.supervisor.spawn("tracker", self._loop)

    @property
    def running(self) -> bool:
        """Whether the claim loop runs (between ``start`` and ``stop``)."""
        return self._loop_task is not None and not self._loop_task.done()

    async def stop(self, grace: float = 0.0) -> None:
        """Stop claiming; let the jobs being worked finish for up to ``grace`` seconds, then
        cut off the rest (their leases lapse and another worker takes them up)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._work and grace > 0:
            await asyncio.wait(list(self._work), timeout=grace)
        tasks = [*self._streams.values(), *self._work, *self._confirming.tasks()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self, beat: Beat) -> None:
        while True:
            free = self._concurrency - len(self._work)
            claimed = 0
            if free > 0:
                lease = self.timings.job_lease
                for job in await self.store.claim_due_jobs(utcnow(), free, lease):
                    claimed += 1
                    task = asyncio.create_task(self._guarded(job), name=f"job:{job.id}")
                    self._work.add(task)
                    task.add_done_callback(self._work.discard)
                beat()
            if claimed == 0:
                self._wake.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
                # comes as the wake does, and stop() would wait for a loop that goes on.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.timings.tracker_idle):
                        await self._wake.wait()
                # Wakes that come in a burst (a job finishing per callback) share one claim.
                await asyncio.sleep(self.timings.wake_coalesce)

    async def run_once(self, limit: int) -> int:
        """Claim up to ``limit`` due jobs and work them to the end of this round."""
        jobs = await self.store.claim_due_jobs(utcnow(), limit, self.timings.job_lease)
        await asyncio.gather(*(self._guarded(job) for job in jobs))
        return len(jobs)

    async def _guarded(self, job: Job) -> None:
        async with self._slots:
            try:
                await self.process(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Neither a bug nor a database fault stops the loop: the job is tried again.
                self.supervisor.failed("follower", exc)
                await self._retry_soon(job.id)

    async def _retry_soon(self, job_id: str) -> None:
        """After a failure, make the job due again shortly; if even that cannot be
        written, its lease lapses and the job comes back then."""
        with contextlib.suppress(Exception):
            await self.store.release_job(job_id, due_in(utcnow(), self.timings.failed_retry))

    async def process(self, job: Job) -> None:
        if job.status is JobStatus.QUEUED:
            await self._submit(job)
        elif job.status not in TERMINAL:
            await self._follow(job)

    # -- submission ----------------------------------------------------------------------
    async def _submit(self, job: Job) -> None:
        provider = self.providers.get(job.provider)
        if provider is None:
            await self._end(job.id, JobStatus.FAILED, JobError(
                "provider_unavailable", f"provider {job.provider} is not enabled"))
            return
        if job.submit_started_at is not None:
            await self._recover_submission(job, provider)
            return
        whole = await self._whole(job)  # read before the submission is marked as begun
        now = utcnow()
        if not await self.store.begin_submit(job.id, job.provider, provider.max_concurrent, now,
                                             wait_until=due_in(now, self.timings.capacity_wait)):
            return  # waiting for a slot: a job of the provider that ends makes it due
        callback_url = self.callback_url(job) if job.tracking is Tracking.CALLBACK else None
        try:
            submission = await provider.submit(whole, callback_url=callback_url)
        except SubmitOutcomeUnknown:
            log.warning("submit of %s to %s: outcome unknown, looking it up", job.id, job.provider)
            await self._recover_submission(job.evolve(submit_started_at=now), provider)
            return
        except ProviderError as exc:
            await self._submit_failed(job, exc)
            return
        await self._accepted(job, provider, submission)

    async def _submit_failed(self, job: Job, exc: ProviderError) -> None:
        attempts = job.error_streak + 1
        if not exc.retryable or attempts >= MAX_SUBMIT_ATTEMPTS:
            await self._end(job.id, JobStatus.FAILED, _job_error(exc))
            return
        now = utcnow()
        delay = polling.submit_retry_delay(attempts, exc.retry_after, random.uniform(-1, 1))
        log.info("submit of %s to %s failed (%s); again in %.0fs", job.id, job.provider,
                 exc.code, delay)

        def requeue(current: Job) -> Change:
            return Change(current.evolve(submit_started_at=None, error_streak=attempts,
                                  next_check_at=due_in(now, delay), updated_at=now))

        await self._update(job.id, requeue, release=True)

    async def _recover_submission(self, job: Job, provider: Provider) -> None:
        """A submission was sent but its answer never recorded: find the task, or fail."""
        sent_at = job.submit_started_at or utcnow()
        try:
            found = await provider.find_submission(await self._whole(job), sent_at)
        except SubmitOutcomeUnknown as exc:
            await self._end(job.id, JobStatus.FAILED, JobError(
                "submit_outcome_unknown",
                "the connection to the provider broke after the job was sent; it was not "
                f"sent again, so that it is not paid twice ({exc.message})",
            ))
            return
        except ProviderError as exc:
            if not exc.retryable:
                await self._end(job.id, JobStatus.FAILED, _job_error(exc))
                return
            delay = polling.submit_retry_delay(job.error_streak + 1, exc.retry_after)
            await self.store.release_job(job.id, due_in(utcnow(), delay))
            return
        if found is None:
            # The provider surely has no such task: it is safe to submit.
            now = utcnow()
            await self._update(job.id, lambda current: Change(current.evolve(
                submit_started_at=None, next_check_at=now, updated_at=now)),
                release=True)
            self.wake()
            return
        owner = await self.store.adopted_provider_job(job.provider, found.provider_job_id)
        if owner is not None and owner != job.id:
            await self._end(job.id, JobStatus.FAILED, JobError(
                "submit_outcome_unknown",
                "the submission's outcome is unknown and the provider task it matched "
                "belongs to another job; it was not sent again",
            ))
            return
        await self._accepted(job, provider, found)

    async def _whole(self, job: Job) -> TrackedJob:
        """``tracked(job)`` with the ``data:`` URLs of its request, which only its
        submission reads."""
        media = await self.store.job_media(job.id) if inline.shows_media(job.request) else []
        return tracked(job, inline.join(job.request, media) if media else None)

    async def _accepted(self, job: Job, provider: Provider, submission: Submission) -> None:
        now = utcnow()
        start_stream = self._streams_for(provider, job)

        def accept(current: Job) -> Change:
            change = apply_submission(current, submission, now)
            return Change(change.job.evolve(next_check_at=self._first_check(change.job, now)),
                          change.event_type)

        result = await self._update(job.id, accept, release=True)
        if result is None:
            # Canceled while the submission was on its way: stop the task if we can.
            if provider.can_cancel:
                late = job.evolve(provider_job_id=submission.provider_job_id,
                               provider_data=submission.provider_data)
                with contextlib.suppress(ProviderError):
                    await provider.cancel(tracked(late))
            return
        if submission.snapshot.status is not JobStatus.SUBMITTED:
            await self._apply(job.id, submission.snapshot)
        if start_stream:
            self._open_stream(job.id)

    def _first_check(self, job: Job, now: datetime) -> datetime:
        if job.tracking is Tracking.STREAM and self.streams_enabled:
            return due_in(now, self.timings.stream_hold)
        state = polling.PollState(provider=job.provider, tracking=job.tracking, elapsed=0.0,
                                  checks=0)
        return due_in(now, self._next_check(state))

    def _next_check(self, state: polling.PollState) -> float:
        """The polling policy's next check, within this tracker's bounds."""
        t = self.timings
        delay = polling.next_check_delay(state, random.uniform(-1, 1),
                                         safety_net=(t.safety_net_ratio, t.safety_net_min_gap))
        return min(max(delay, t.poll_bounds[0]), t.poll_bounds[1])

    # -- following -----------------------------------------------------------------------
    def _streams_for(self, provider: Provider, job: Job) -> bool:
        return (
            self.streams_enabled
            and job.tracking is Tracking.STREAM
            and isinstance(provider, StreamingProvider)
            and self._stream_breaks.get(job.id, 0) < MAX_STREAM_BREAKS
        )

    async def _follow(self, job: Job) -> None:
        provider = self.providers.get(job.provider)
        if provider is None:
            await self._end(job.id, JobStatus.FAILED, JobError(
                "provider_unavailable", f"provider {job.provider} is not enabled"))
            return
        if self._past_deadline(job):
            await self._end(job.id, JobStatus.FAILED, JobError(
                "timeout", "the provider did not finish the job in time"))
            return
        if self._streams_for(provider, job) and job.id not in self._poll_first:
            if job.id not in self._streams:
                self._open_stream(job.id)
            await self.store.release_job(job.id, due_in(utcnow(), self.timings.stream_hold))
            return
        resume_stream = job.id in self._poll_first
        self._poll_first.discard(job.id)
        done = await self.check(job, provider)
        if resume_stream and not done and self._streams_for(provider, job):
            self._open_stream(job.id)

    def _past_deadline(self, job: Job) -> bool:
        if job.submitted_at is None:
            return False
        elapsed = (utcnow() - job.submitted_at).total_seconds()
        return elapsed > polling.MAX_TRACKING_SECONDS[job.provider]

    async def check(self, job: Job, provider: Provider) -> bool:
        """Ask the provider for the job's state and fold it in. Returns whether it ended."""
        try:
            snapshot = await provider.status(tracked(job))
        except ProviderError as exc:
            await self._check_failed(job, exc)
            return False
        result = await self._apply(job.id, snapshot, schedule=True, release=True, checked=True)
        return result is None or result.status.terminal

    async def _check_failed(self, job: Job, exc: ProviderError) -> None:
        streak = job.error_streak + 1
        if streak > polling.MAX_ERROR_STREAK:
            await self._end(job.id, JobStatus.FAILED, JobError(
                exc.code if not exc.retryable else "provider_unavailable",
                f"the provider kept failing to answer: {exc.message}",
                provider_code=exc.provider_code,
            ))
            return
        now = utcnow()
        state = self._poll_state(job, now, error_streak=streak, retry_after=exc.retry_after)
        delay = self._next_check(state)
        log.info("status of %s at %s failed (%s); again in %.0fs", job.id, job.provider,
                 exc.code, delay)
        await self._update(job.id, lambda current: Change(current.evolve(
            error_streak=streak, check_count=current.check_count + 1,
            next_check_at=due_in(now, delay))), release=True)

    def _poll_state(self, job: Job, now: datetime, *, error_streak: int = 0,
                    retry_after: float | None = None,
                    snapshot: Snapshot | None = None) -> polling.PollState:
        started = job.submitted_at or job.created_at
        # A stream job polled here is one whose stream broke: poll at the stream-fallback pace.
        return polling.PollState(
            provider=job.provider,
            tracking=job.tracking,
            elapsed=max(0.0, (now - started).total_seconds()),
            checks=job.check_count + 1,
            hints=snapshot.hints if snapshot is not None else None,
            error_streak=error_streak,
            retry_after=retry_after,
        )

    async def _apply(
        self,
        job_id: str,
        snapshot: Snapshot,
        *,
        schedule: bool = False,
        hold: float | None = None,
        release: bool = False,
        checked: bool = False,
        guard: Callable[[Job], None] | None = None,
    ) -> Job | None:
        """Fold ``snapshot`` into the job; with ``schedule``, set its next check by the
        polling policy; with ``hold``, put it that many seconds ahead (an open stream)."""
        now = utcnow()

        def decide(current: Job) -> Change:
            if guard is not None:
                guard(current)
            change = apply_snapshot(current, snapshot, now, self.media_link,
                                    allow_http=self.allow_http_results)
            job = change.job
            if checked:
                job = job.evolve(check_count=current.check_count + 1, error_streak=0)
            if schedule and job.status not in TERMINAL:
                state = self._poll_state(current, now, snapshot=snapshot)
                delay = self._next_check(state)
                job = job.evolve(next_check_at=due_in(now, delay))
            elif hold is not None and job.status not in TERMINAL:
                job = job.evolve(next_check_at=due_in(now, hold))
            return Change(job, change.event_type)

        return await self._update(job_id, decide, release=release)

    # -- streams -------------------------------------------------------------------------
    def _open_stream(self, job_id: str) -> None:
        if job_id in self._streams:
            return
        task = asyncio.create_task(self._stream(job_id), name=f"stream:{job_id}")
        self._streams[job_id] = task
        task.add_done_callback(lambda _: self._streams.pop(job_id, None))

    async def _stream(self, job_id: str) -> None:
        try:
            job = await self.store.get_job(job_id)
            if job is None or job.status in TERMINAL:
                return
            provider = self.providers[job.provider]
            assert isinstance(provider, StreamingProvider)
            async for snapshot in provider.stream(tracked(job)):
                result = await self._apply(job_id, snapshot, hold=self.timings.stream_hold)
                if result is None or result.status in TERMINAL:
                    return
            raise ProviderError("provider_unavailable", "stream ended before the job did",
                                retryable=True)
        except ProviderError as exc:
            breaks = self._stream_breaks.get(job_id, 0) + 1
            self._stream_breaks[job_id] = breaks
            log.info("stream of %s broke (%s, %d so far): polling", job_id, exc.message, breaks)
        except Exception as exc:  # a database fault, say: follow the job by polling
            self.supervisor.failed("stream", exc)
        self._poll_first.add(job_id)
        # If even this cannot be written, the job comes back when its stream hold ends.
        with contextlib.suppress(Exception):
            await self.store.release_job(job_id, utcnow())
        self.wake()

    # -- callbacks -----------------------------------------------------------------------
    def callback_url(self, job: Job) -> str:
        token = self.signer.callback_token(job.provider, job.id)
        return f"{self.public_url}/callbacks/{job.provider}/{token}"

    async def on_callback(self, provider_name: str, job_id: str, body: bytes) -> None:
        """A provider called back about ``job_id`` (whose token was already verified)."""
        provider = self.providers.get(provider_name)
        if provider is None:
            raise NotFound("provider not enabled")
        parse_callback = self._callback_parsers.get(provider_name)
        if not self.confirm_callbacks and parse_callback is not None:
            try:
                task_id, snapshot = parse_callback(body)
            except ValueError:
                raise InvalidRequest("not a callback body this provider sends",
                                     status_code=400) from None

            def guard(current: Job) -> None:
                # Checked inside the transaction: one read of the job, not two.
                if current.provider != provider_name:
                    raise NotFound("no such job")
                if current.provider_job_id is not None and task_id != current.provider_job_id:
                    raise InvalidRequest("the callback names another task", field="taskId",
                                         status_code=400)

            if await self._apply(job_id, snapshot, guard=guard) is None:
                await self._known_job(job_id, provider_name)  # finished: a repeat is harmless
            return
        job = await self._known_job(job_id, provider_name)
        if job.status in TERMINAL:
            return  # a repeated callback: already known
        if job.provider_job_id is None:
            # The provider answered our submission and called back before we recorded it;
            # a 409 makes it call again shortly.
            raise Conflict("the job's submission is still being recorded; call again")
        # One status call per job at a time: a callback that comes while one is in flight
        # (a burst, a provider's retries) waits for its answer instead of asking again.
        await self._confirming.run(job.id, lambda: self._confirm(job, provider))

    async def _confirm(self, job: Job, provider: Provider) -> None:
        try:
            snapshot = await provider.status(tracked(job))
        except ProviderError as exc:
            # Trust nothing unconfirmed: check again soon by polling.
            log.info("could not confirm callback for %s (%s): polling", job.id, exc.code)
            await self.store.release_job(job.id, due_in(utcnow(), 5.0))
            self.wake()
            return
        await self._apply(job.id, snapshot, schedule=True)

    async def _known_job(self, job_id: str, provider_name: str) -> Job:
        """The job a callback token names; 401 once the token has expired (the job reached
        its final state more than ``callback_token_ttl`` ago)."""
        job = await self.store.get_job(job_id)
        if job is None or job.provider != provider_name:
            raise NotFound("no such job")
        if job.status in TERMINAL:
            ended = job.completed_at or job.updated_at
            if (utcnow() - ended).total_seconds() >= self.timings.callback_token_ttl:
                raise Unauthorized("expired callback token: its job has ended")
        return job

    # -- cancel --------------------------------------------------------------------------
    async def cancel(self, job: Job) -> Job:
        """Cancel at the provider where it can; elsewhere stop following. 409 if finished."""
        if job.status in TERMINAL:
            raise Conflict(f"job is already {job.status}")
        provider = self.providers.get(job.provider)
        if provider is not None and provider.can_cancel and job.provider_job_id is not None:
            try:
                await provider.cancel(tracked(job))
            except ProviderError as exc:
                if exc.retryable:
                    raise Conflict(
                        f"the provider could not be reached to cancel ({exc.code}); try again"
                    ) from None
                # The provider refuses: usually the job finished meanwhile. Ask it.
                await self.check(job, provider)
                current = await self.store.get_job(job.id)
                if current is not None and current.status in TERMINAL:
                    raise Conflict(f"job is already {current.status}") from None
                raise Conflict(f"the provider refused to cancel: {exc.message}") from None
        result = await self._end(job.id, JobStatus.CANCELED, None)
        if result is None:
            current = await self.store.get_job(job.id)
            status = current.status if current else "gone"
            raise Conflict(f"job is already {status}")
        return result

    # -- writing -------------------------------------------------------------------------
    async def _end(self, job_id: str, status: JobStatus, error: JobError | None) -> Job | None:
        now = utcnow()
        return await self._update(job_id, lambda current: end_job(current, status, error, now),
                                  release=True)

    async def _update(
        self, job_id: str, decide: Callable[[Job], Change | None], *, release: bool = False
    ) -> Job | None:
        before: list[JobStatus] = []  # the status decided from (the last try's, if retried)

        def deciding(current: Job) -> Change | None:
            before[:] = [current.status]
            return decide(current)

        result = await self.store.update_job(job_id, deciding, release_lease=release)
        if result is None:
            return None
        job, event = result
        if event is not None:
            for listener in self.listeners:
                listener(event)
        if before and before[0] != job.status:  # stored: told once
            log_status_change(job, before[0])
            if job.status in TERMINAL:
                finished = job.completed_at or job.updated_at
                metrics.count_job_finished(job.provider, str(job.status),
                                           (finished - job.created_at).total_seconds())
        if job.status in TERMINAL:
            self._stream_breaks.pop(job_id, None)
            self._poll_first.discard(job_id)
            stream = self._streams.get(job_id)
            if stream is not None and stream is not asyncio.current_task():
                stream.cancel()
            self.wake()  # the store made the provider's waiting jobs due
        return job


def tracked(job: Job, request: dict[str, Any] | None = None) -> TrackedJob:
    """What an adapter sees of a job; its ``request`` as shown (``data:`` URLs summarized)
    unless the whole one is given."""
    return TrackedJob(
        id=job.id,
        request=JobRequest.from_json(job.request if request is None else request),
        provider_job_id=job.provider_job_id,
        provider_data=job.provider_data,
        submitted_at=job.submitted_at,
    )


def _job_error(exc: ProviderError) -> JobError:
    return JobError(exc.code, exc.message, provider_code=exc.provider_code, details=exc.details)
