"""A provider's submission slots, as pure rules: who of the jobs asking together gets one
of the slots left (first come, first served), and how many waiting jobs a freed slot wakes
(one each, the longest waiting first: the store's ``slots_wake`` takes them in that order)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def grant(requests: Sequence[T], limit: int, busy: int) -> tuple[list[T], list[T]]:
    """The requests that get a slot and those that wait, when ``busy`` of the provider's
    ``limit`` slots are taken by others: the first ones, as many as are free."""
    free = max(0, limit - busy)
    return list(requests[:free]), list(requests[free:])
