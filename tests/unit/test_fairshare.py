"""Splitting a batch claim between sessions: strict priority, then an equal share."""

from __future__ import annotations

from itertools import groupby

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from htcgrid.core.fairshare import Candidate, plan_claim


def c(session_id: str, pending: int, *, priority: int = 0, last_served: float = 0.0) -> Candidate:
    return Candidate(session_id, priority, pending, last_served)


CASES = {
    "nothing to claim": ([], 10, []),
    "zero budget": ([c("a", 5)], 0, []),
    "negative budget": ([c("a", 5)], -3, []),
    "one session takes what it has": ([c("a", 3)], 10, [("a", 3)]),
    "one session takes the budget": ([c("a", 30)], 10, [("a", 10)]),
    "sessions with nothing pending are left out": (
        [c("a", 0), c("b", 4, last_served=1.0)],
        10,
        [("b", 4)],
    ),
    "higher priority first, lower fills what is left": (
        [c("lo", 10, priority=0), c("hi", 3, priority=5, last_served=99.0)],
        10,
        [("hi", 3), ("lo", 7)],
    ),
    "higher priority takes the whole budget": (
        [c("lo", 10, priority=0), c("hi", 20, priority=1, last_served=99.0)],
        10,
        [("hi", 10)],
    ),
    "negative priorities come last": (
        [c("neg", 5, priority=-1), c("zero", 2, priority=0, last_served=9.0)],
        4,
        [("zero", 2), ("neg", 2)],
    ),
    "three levels": (
        [
            c("p0", 9, priority=0),
            c("p2", 1, priority=2, last_served=5.0),
            c("p1", 2, priority=1, last_served=3.0),
        ],
        5,
        [("p2", 1), ("p1", 2), ("p0", 2)],
    ),
    "equal split among equal priority": (
        [c("a", 10, last_served=1.0), c("b", 10, last_served=2.0), c("c", 10, last_served=3.0)],
        9,
        [("a", 3), ("b", 3), ("c", 3)],
    ),
    "remainder to the least recently served": (
        [c("a", 10, last_served=3.0), c("b", 10, last_served=1.0), c("c", 10, last_served=2.0)],
        5,
        [("b", 2), ("c", 2), ("a", 1)],
    ),
    "budget below the number of sessions": (
        [c("a", 10, last_served=3.0), c("b", 10, last_served=1.0), c("c", 10, last_served=2.0)],
        2,
        [("b", 1), ("c", 1)],
    ),
    "ties on last served broken by session id": (
        [c("b", 10), c("a", 10), c("c", 10)],
        4,
        [("a", 2), ("b", 1), ("c", 1)],
    ),
    "a small session gives the rest of its share to others": (
        [c("small", 1, last_served=0.0), c("b", 10, last_served=1.0), c("c", 10, last_served=2.0)],
        7,
        [("small", 1), ("b", 3), ("c", 3)],
    ),
    "what a small session leaves is split equally, not to the first again": (
        [c("small", 1, last_served=0.0), c("b", 10, last_served=1.0), c("c", 10, last_served=2.0)],
        5,
        [("small", 1), ("b", 2), ("c", 2)],
    ),
    "several small sessions in a row": (
        [
            c("one", 1, last_served=0.0),
            c("two", 2, last_served=1.0),
            c("big", 100, last_served=2.0),
            c("huge", 100, last_served=3.0),
        ],
        12,
        [("one", 1), ("two", 2), ("big", 5), ("huge", 4)],
    ),
    "a huge session does not starve one that arrived later": (
        [c("huge", 1_000_000, last_served=50.0), c("new", 10, last_served=0.0)],
        8,
        [("new", 4), ("huge", 4)],
    ),
    "less pending than budget: everyone takes everything": (
        [c("a", 2, priority=1), c("b", 3, last_served=1.0), c("d", 1, last_served=2.0)],
        100,
        [("a", 2), ("b", 3), ("d", 1)],
    ),
    "higher level full, lower level shares the rest": (
        [
            c("h1", 2, priority=1, last_served=1.0),
            c("h2", 2, priority=1, last_served=2.0),
            c("l1", 10, last_served=1.0),
            c("l2", 10, last_served=2.0),
            c("l3", 10, last_served=3.0),
        ],
        10,
        [("h1", 2), ("h2", 2), ("l1", 2), ("l2", 2), ("l3", 2)],
    ),
}


@pytest.mark.parametrize(("candidates", "budget", "expected"), CASES.values(), ids=CASES.keys())
def test_plan_claim(
    candidates: list[Candidate], budget: int, expected: list[tuple[str, int]]
) -> None:
    assert plan_claim(candidates, budget) == expected


@pytest.mark.parametrize(("candidates", "budget", "expected"), CASES.values(), ids=CASES.keys())
def test_plan_claim_ignores_input_order(
    candidates: list[Candidate], budget: int, expected: list[tuple[str, int]]
) -> None:
    assert plan_claim(list(reversed(candidates)), budget) == expected


def _order(cand: Candidate) -> tuple[int, float, str]:
    return (-cand.priority, cand.last_served, cand.session_id)


@st.composite
def candidate_lists(draw: st.DrawFn) -> list[Candidate]:
    rows = draw(
        st.lists(
            st.tuples(
                st.integers(min_value=-2, max_value=2),  # priority
                st.integers(min_value=0, max_value=25),  # pending
                st.integers(min_value=0, max_value=4),  # last served, with ties
            ),
            max_size=12,
        )
    )
    return [Candidate(f"s{i:02d}", p, n, float(t)) for i, (p, n, t) in enumerate(rows)]


@settings(database=None, deadline=None, max_examples=300)
@given(candidates=candidate_lists(), budget=st.integers(min_value=-2, max_value=80), data=st.data())
def test_plan_claim_properties(
    candidates: list[Candidate], budget: int, data: st.DataObject
) -> None:
    plan = plan_claim(candidates, budget)
    by_id = {cand.session_id: cand for cand in candidates}
    got = dict(plan)

    # each session once, something to take, never more than it has
    assert len(got) == len(plan)
    assert all(0 < n <= by_id[sid].pending for sid, n in plan)

    # the budget is never exceeded, and never left unused while tasks remain
    assert sum(got.values()) == min(max(budget, 0), sum(cand.pending for cand in candidates))

    # taken in priority order, then least recently served first
    assert [sid for sid, _ in plan] == sorted(got, key=lambda sid: _order(by_id[sid]))

    levels = [
        [cand for cand in level if cand.pending > 0]
        for _, level in groupby(sorted(candidates, key=_order), key=lambda x: x.priority)
    ]
    is_budget_left = True
    for level in levels:
        taken = [got.get(cand.session_id, 0) for cand in level]
        if not is_budget_left:
            # strict priority: a lower level gets nothing while a higher one wanted more
            assert taken == [0] * len(level)
            continue
        hungry = [n for cand, n in zip(level, taken, strict=True) if n < cand.pending]
        if hungry:
            is_budget_left = False
            # equal share: every session still wanting more got the same, give or take one,
            # and nobody got more than one above them
            assert max(hungry) - min(hungry) <= 1
            assert max(taken) <= min(hungry) + 1
            # the one extra goes to the least recently served of those wanting more
            assert hungry == sorted(hungry, reverse=True)

    # the plan depends on the candidates, not on the order the backend listed them in
    shuffled = data.draw(st.permutations(candidates))
    assert plan_claim(shuffled, budget) == plan
