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
    """Water-fill ``budget`` across one priority level; earlier sessions get the remainder.

    Sessions wanting no more than an equal share take all they want first; what is left is
    then split equally among the rest, whose takes so differ by at most one task.
    """
    taken = dict.fromkeys((c.session_id for c in level), 0)
    active = list(level)
    while budget > 0 and active:
        each = budget // len(active)
        small = [c for c in active if c.pending <= each]
        if not small:
            extra = budget - each * len(active)
            for i, c in enumerate(active):
                taken[c.session_id] = each + (1 if i < extra else 0)
            break
        for c in small:
            taken[c.session_id] = c.pending
            budget -= c.pending
        active = [c for c in active if c.pending > each]
    return [(c.session_id, taken[c.session_id]) for c in level if taken[c.session_id] > 0]
