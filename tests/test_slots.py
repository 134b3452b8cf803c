"""A provider's slots, table-driven: who of the jobs asking together gets one."""

from __future__ import annotations

import pytest

from bridge.slots import grant


@pytest.mark.parametrize(("asking", "limit", "busy", "granted"), [
    (["a", "b", "c"], 4, 0, ["a", "b", "c"]),
    (["a", "b", "c"], 4, 2, ["a", "b"]),  # first come, first served
    (["a", "b"], 4, 4, []),
    (["a"], 4, 9, []),  # more busy than the limit (another process's count): none
    ([], 4, 0, []),
])
def test_the_first_asking_get_the_free_slots(
    asking: list[str], limit: int, busy: int, granted: list[str]
) -> None:
    chosen, refused = grant(asking, limit, busy)
    assert chosen == granted
    assert chosen + refused == asking
