"""Queue depth follows the slowest handler held or claimed recently."""

from __future__ import annotations

from htcgrid.worker.pacing import (
    GROUP_TASKS,
    MAX_COMPLETE_DELAY_S,
    QUEUED_BYTES,
    QUEUED_WORK_S,
    RECENT_S,
    Pacer,
)


def test_unmeasured_handlers_start_at_depth_one() -> None:
    p = Pacer(max_batch=256)
    assert p.depth(0.0) == 1
    p.claimed("import:m:noop", 0.0)
    assert p.depth(0.0) == 1


def test_fast_handlers_fill_batches_and_slow_ones_are_not_hoarded() -> None:
    p = Pacer(max_batch=256)
    p.claimed("import:m:noop", 0.0)
    p.observe("import:m:noop", 0.00002)
    assert p.depth(0.5) == 256
    p.claimed("import:m:slow", 2.0)
    p.observe("import:m:slow", 10.0)
    assert p.depth(2.0) == 1
    p.observe("import:m:medium", 0.005)
    p.claimed("import:m:medium", 2.0 + RECENT_S)
    assert p.depth(2.0 + RECENT_S) == round(QUEUED_WORK_S / 0.005)  # the medium one rules


def test_a_slow_handler_held_keeps_the_depth_low_and_stops_once_released() -> None:
    p = Pacer(max_batch=256)
    p.observe("import:m:noop", 0.00002)
    p.observe("import:m:slow", 0.02)
    p.claimed("import:m:slow", 0.0)
    assert p.depth(5.0, held=["import:m:slow", "import:m:noop"]) == round(QUEUED_WORK_S / 0.02)
    # the slow session ended: nothing of it held, its last claim long ago
    assert p.depth(5.0, held=["import:m:noop"]) == 256


def test_completion_delay_groups_short_tasks_and_is_capped() -> None:
    p = Pacer(max_batch=256)
    p.observe("import:m:noop", 0.00002)
    p.claimed("import:m:noop", 0.0)
    assert p.complete_delay(0.0) == GROUP_TASKS * 0.00002  # no-ops: effectively at once
    p.observe("import:m:five", 0.005)
    p.claimed("import:m:five", 0.0)
    assert GROUP_TASKS * 0.005 < MAX_COMPLETE_DELAY_S  # so this case is grouped, not capped
    assert p.complete_delay(0.0) == GROUP_TASKS * 0.005  # ~GROUP_TASKS tasks per store call
    p.observe("import:m:slow", 5.0)
    assert p.complete_delay(0.0, held=["import:m:slow"]) == MAX_COMPLETE_DELAY_S


def test_large_inputs_bound_the_depth_by_bytes() -> None:
    p = Pacer(max_batch=256)
    p.observe("import:m:echo", 0.001)  # fast enough to queue QUEUED_WORK_S / 0.001 by time...
    p.claimed("import:m:echo", 0.0, size=4 * 1024 * 1024)
    assert QUEUED_WORK_S / 0.001 > QUEUED_BYTES / (4 * 1024 * 1024)
    assert p.depth(0.0) == QUEUED_BYTES // (4 * 1024 * 1024)  # ...but the bytes rule
    p.claimed("import:m:echo", 0.0, size=0)  # inputs read by the executor: time rules again
    for _ in range(60):
        p.claimed("import:m:echo", 0.0, size=0)
    assert p.depth(0.0) == min(256, int(QUEUED_WORK_S / 0.001))
    p.claimed("import:m:huge", 0.0, size=QUEUED_BYTES * 2)
    p.observe("import:m:huge", 0.001)
    assert p.depth(0.0) == 1  # never less than one
