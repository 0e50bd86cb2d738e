"""How a batch claim is split between sessions: strict priority, then fair share.

Higher priority sessions are served first. Sessions of the same priority share each claim
equally, the least recently served first, so a huge session cannot starve a small one that
arrived later: the small one gets its share of the very next claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby


@dataclass(frozen=True, slots=True)
class Candidate:
    """A session with claimable tasks, as the backend sees it at claim time."""

    session_id: str
    priority: int
    pending: int
    last_served: float


def plan_claim(candidates: list[Candidate], max_tasks: int) -> list[tuple[str, int]]:
    """Return (session id, how many tasks to take) pairs, in the order to take them."""
    plan: list[tuple[str, int]] = []
    left = max_tasks
    ordered = sorted(candidates, key=lambda c: (-c.priority, c.last_served, c.session_id))
    for _, level in groupby(ordered, key=lambda c: c.priority):
        if left <= 0:
            break
        share = _share_level([c for c in level if c.pending > 0], left)
        plan.extend(share)
        left -= sum(n for _, n in share)
    return plan


def _share_level(level: list[Candidate], budget: int) -> list[tuple[str, int]]:
    """Water-fill ``budget`` across one priority level; earlier sessions get the remainder."""
    taken = dict.fromkeys((c.session_id for c in level), 0)
    active = list(level)
    while budget > 0 and active:
        each, extra = divmod(budget, len(active))
        still: list[Candidate] = []
        for i, c in enumerate(active):
            want = each + (1 if i < extra else 0)
            room = c.pending - taken[c.session_id]
            got = min(want, room)
            taken[c.session_id] += got
            budget -= got
            if taken[c.session_id] < c.pending:
                still.append(c)
        active = still
    return [(c.session_id, taken[c.session_id]) for c in level if taken[c.session_id] > 0]
