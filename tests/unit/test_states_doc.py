"""docs/states.md must show exactly the transition table in states.py, causes included."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from htcgrid.core.states import TERMINAL_STATES, TRANSITIONS, TaskState, parse_state

DOC = Path(__file__).resolve().parents[2] / "docs" / "states.md"

_MERMAID_RE = re.compile(r"```mermaid\n(.*?)```", re.DOTALL)
_EDGE_RE = re.compile(r"^\s*(\S+)\s*-->\s*(\S+)\s*(?::\s*(.*?))?\s*$")

Edge = tuple[str, str, str]


def _diagram(text: str) -> list[str]:
    blocks = _MERMAID_RE.findall(text)
    assert len(blocks) == 1, "docs/states.md should hold exactly one mermaid diagram"
    lines: list[str] = blocks[0].splitlines()
    assert lines[0].strip() == "stateDiagram-v2"
    return lines[1:]


def _edges(lines: list[str]) -> list[Edge]:
    edges = []
    for line in lines:
        if not line.strip() or line.strip().startswith("%%"):
            continue
        match = _EDGE_RE.match(line)
        assert match, f"not an edge of the diagram: {line!r}"
        src, dst, label = match.groups()
        edges.append((src, dst, label or ""))
    return edges


def _table(text: str) -> list[Edge]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert rows, "docs/states.md should hold a table of the transitions"
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    assert cells[0][:3] == ["from", "to", "cause"]
    assert set("".join(cells[1])) <= set("- ")  # the header's rule
    return [(row[0], row[1], row[2]) for row in cells[2:]]


def _state(name: str) -> TaskState:
    state = parse_state(name)
    assert name == state.label, f"write states as their label: {state.label!r}, not {name!r}"
    return state


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_diagram_edges_are_the_transition_table(doc: str) -> None:
    edges = [e for e in _edges(_diagram(doc)) if "[*]" not in e[:2]]
    drawn = {(_state(src), _state(dst)): label for src, dst, label in edges}
    assert len(drawn) == len(edges), "an edge is drawn twice"
    assert drawn == TRANSITIONS


def test_diagram_starts_at_pending_and_ends_at_the_terminal_states(doc: str) -> None:
    edges = _edges(_diagram(doc))
    starts = [_state(dst) for src, dst, _ in edges if src == "[*]"]
    ends = [_state(src) for src, dst, _ in edges if dst == "[*]"]
    assert starts == [TaskState.PENDING]
    assert sorted(ends) == sorted(TERMINAL_STATES)
    assert len(ends) == len(set(ends))


def test_table_rows_are_the_transition_table(doc: str) -> None:
    rows = _table(doc)
    listed = {(_state(src), _state(dst)): cause for src, dst, cause in rows}
    assert len(listed) == len(rows), "a transition is listed twice"
    assert listed == TRANSITIONS


def test_edge_parser_reads_labels_and_bare_edges() -> None:
    lines = ["    a --> b : x, y", "b-->c", "  ", "%% a comment", "c --> [*]"]
    assert _edges(lines) == [("a", "b", "x, y"), ("b", "c", ""), ("c", "[*]", "")]


def test_edge_parser_refuses_what_it_cannot_read() -> None:
    with pytest.raises(AssertionError, match="not an edge"):
        _edges(["state running {"])
