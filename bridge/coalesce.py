"""One task per key at a time: callers that come while a key's task runs wait for its
outcome instead of starting another (``Tracker`` confirms a burst of callbacks for one job
with one provider status call)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task[T]] = {}

    async def run(self, key: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """The outcome of ``work()`` (its result or its exception), or of the one for ``key``
        already running. It runs in a task of its own, so that a caller cancelled while it
        waits does not cut it short for the others."""
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(work(), name=f"coalesced:{key}")
            self._running[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        return await asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # seen, even if every caller waiting for it went away

    def tasks(self) -> list[asyncio.Task[T]]:
        """The tasks running now (to cancel them on shutdown)."""
        return list(self._running.values())
