"""Keeps the background workers running: a worker that raises is logged, counted,
restarted after a backoff, and reported as down until it completes a round again.

A worker is a coroutine function taking a ``beat`` callable, which it calls after each
round that went well; ``/readyz`` answers 503 naming every worker that is down. A worker
that keeps failing the same way logs its traceback once, then one line per failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bridge.metrics import count_worker_restart

log = logging.getLogger("bridge.supervisor")

FIRST_BACKOFF = 0.5  # seconds before the first restart
MAX_BACKOFF = 5.0  # the longest wait between restarts: work resumes soon after a fault ends

Beat = Callable[[], None]
Worker = Callable[[Beat], Awaitable[None]]


class Supervisor:
    def __init__(self, first_backoff: float = FIRST_BACKOFF,
                 max_backoff: float = MAX_BACKOFF) -> None:
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self._down: dict[str, str] = {}  # worker -> what stopped it
        self._last: dict[str, str] = {}  # worker -> the last failure logged in full
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def spawn(self, name: str, worker: Worker) -> asyncio.Task[None]:
        """Run ``worker`` under supervision until it returns or the task is cancelled."""
        task = asyncio.create_task(self._supervise(name, worker), name=f"bridge.{name}")
        self._tasks[name] = task
        task.add_done_callback(lambda done: self._ended(name, done))
        return task

    def failed(self, name: str, exc: BaseException) -> None:
        """Count and log a failure of ``name`` (also of per-job tasks, which are not
        restarted here but taken up again another way): with its traceback, unless it is
        the same failure as the last one logged for ``name``."""
        count_worker_restart(name)
        described = _describe(exc)
        if self._last.get(name) != described:
            self._last[name] = described
            log.error("worker %s failed: %s", name, described, exc_info=exc)
        else:
            log.warning("worker %s failed again: %s", name, described)

    def down(self) -> dict[str, str]:
        """The workers that are down, each with what stopped it."""
        return dict(self._down)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]
            self._down.pop(name, None)

    async def _supervise(self, name: str, worker: Worker) -> None:
        backoff = self.first_backoff

        def beat() -> None:
            nonlocal backoff
            if name in self._down:
                log.info("worker %s is running again", name)
                del self._down[name]
                self._last.pop(name, None)
            backoff = self.first_backoff

        while True:
            try:
                await worker(beat)
                return
            except Exception as exc:  # the worker is restarted; a BaseException ends it
                self.failed(name, exc)
                self._down[name] = _describe(exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
