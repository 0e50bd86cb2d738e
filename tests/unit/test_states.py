"""The transition table, checked against an expected table written out here in full."""

from __future__ import annotations

import pytest

from htcgrid.core.errors import InvalidInput, InvalidTransition
from htcgrid.core.states import (
    TERMINAL_STATES,
    TRANSITIONS,
    TaskState,
    check_transition,
    is_allowed,
    parse_state,
)

S = TaskState

#: Where each state may go. Written out by hand so a change to states.py fails here first.
EXPECTED: dict[TaskState, set[TaskState]] = {
    S.PENDING: {S.RUNNING, S.CANCELLED},
    S.RUNNING: {S.SUCCEEDED, S.PENDING, S.FAILED, S.CANCELLED},
    S.SUCCEEDED: set(),
    S.FAILED: set(),
    S.CANCELLED: set(),
}

ALL_PAIRS = [(src, dst) for src in S for dst in S]


def _pair_id(pair: tuple[TaskState, TaskState]) -> str:
    return f"{pair[0].label}->{pair[1].label}"


def test_expected_table_covers_every_state() -> None:
    assert set(EXPECTED) == set(S)


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=_pair_id)
def test_is_allowed_matches_expected_table(pair: tuple[TaskState, TaskState]) -> None:
    src, dst = pair
    assert is_allowed(src, dst) is (dst in EXPECTED[src])


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=_pair_id)
def test_check_transition_raises_exactly_for_forbidden_pairs(
    pair: tuple[TaskState, TaskState],
) -> None:
    src, dst = pair
    if dst in EXPECTED[src]:
        check_transition(src, dst)
    else:
        with pytest.raises(InvalidTransition, match=f"from {src.label} to {dst.label}$"):
            check_transition(src, dst)


def test_table_holds_no_pair_beyond_expected() -> None:
    expected_pairs = {(src, dst) for src, dsts in EXPECTED.items() for dst in dsts}
    assert set(TRANSITIONS) == expected_pairs


@pytest.mark.parametrize("pair", sorted(TRANSITIONS), ids=_pair_id)
def test_every_transition_names_its_cause(pair: tuple[TaskState, TaskState]) -> None:
    cause = TRANSITIONS[pair]
    assert isinstance(cause, str)
    assert cause.strip() == cause != ""


@pytest.mark.parametrize("state", list(S), ids=lambda s: s.label)
def test_no_state_moves_to_itself(state: TaskState) -> None:
    assert not is_allowed(state, state)


def test_terminal_states() -> None:
    assert {S.SUCCEEDED, S.FAILED, S.CANCELLED} == TERMINAL_STATES


@pytest.mark.parametrize(
    ("state", "is_terminal"),
    [
        (S.PENDING, False),
        (S.RUNNING, False),
        (S.SUCCEEDED, True),
        (S.FAILED, True),
        (S.CANCELLED, True),
    ],
    ids=lambda v: v.label if isinstance(v, TaskState) else str(v),
)
def test_is_terminal(state: TaskState, is_terminal: bool) -> None:
    assert state.is_terminal is is_terminal


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES), ids=lambda s: s.label)
def test_terminal_states_have_no_way_out(state: TaskState) -> None:
    assert [dst for dst in S if is_allowed(state, dst)] == []
    for dst in S:
        with pytest.raises(InvalidTransition):
            check_transition(state, dst)


def _reachable(start: TaskState) -> set[TaskState]:
    seen = {start}
    todo = [start]
    while todo:
        src = todo.pop()
        for dst in S:
            if is_allowed(src, dst) and dst not in seen:
                seen.add(dst)
                todo.append(dst)
    return seen


def test_every_state_is_reachable_from_pending() -> None:
    assert _reachable(S.PENDING) == set(S)


@pytest.mark.parametrize("state", [S.PENDING, S.RUNNING], ids=lambda s: s.label)
def test_every_live_state_can_finish(state: TaskState) -> None:
    assert _reachable(state) & TERMINAL_STATES


@pytest.mark.parametrize(
    ("state", "value"),
    [(S.PENDING, 0), (S.RUNNING, 1), (S.SUCCEEDED, 2), (S.FAILED, 3), (S.CANCELLED, 4)],
    ids=lambda v: v.label if isinstance(v, TaskState) else str(v),
)
def test_state_values_are_stable(state: TaskState, value: int) -> None:
    # stores keep the integers: renumbering would misread every stored task
    assert int(state) == value


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("pending", S.PENDING),
        ("running", S.RUNNING),
        ("succeeded", S.SUCCEEDED),
        ("failed", S.FAILED),
        ("cancelled", S.CANCELLED),
        ("FAILED", S.FAILED),
        ("Running", S.RUNNING),
        ("  cancelled\n", S.CANCELLED),
    ],
)
def test_parse_state(text: str, state: TaskState) -> None:
    assert parse_state(text) is state


@pytest.mark.parametrize("state", list(S), ids=lambda s: s.label)
def test_parse_state_reads_label_and_name(state: TaskState) -> None:
    assert parse_state(state.label) is state
    assert parse_state(state.name) is state


@pytest.mark.parametrize(
    "text", ["", "  ", "done", "pend", "canceled", "0", "1", "pending running", "is_terminal"]
)
def test_parse_state_rejects_unknown_names(text: str) -> None:
    with pytest.raises(InvalidInput, match="unknown task state") as info:
        parse_state(text)
    for state in S:
        assert state.label in str(info.value)
