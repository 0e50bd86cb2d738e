"""Flag benchmark regressions: compare two sets of JSON lines from ``bench/run.py`` or
``htcgrid bench`` and exit 1 when a metric got worse by more than a threshold.

    python bench/compare.py bench/results/sqlite-2x1.jsonl new.jsonl
    python bench/compare.py old.jsonl new.jsonl --threshold 0.10
    python bench/compare.py --against-last bench/results/ new.jsonl

Lines are matched by what was measured (workload, backend, layout, codec, grid, task count,
where the grid's files lived, and W6's churn settings); when a file holds several lines for
the same match, the last one counts. For each metric both lines have, a change in the bad
direction by more than the threshold (default 15 %) is a regression: throughput
(tasks/s, efficiency, MB/s) that fell, or latency, wall time, memory (peak RSS of the client,
the largest worker and executor, W5's sampled maxima) or W6's detection time that rose. A
W6 line whose tasks no longer all succeeded is always one. Lines found on one side only
are listed, not counted. Exit status: 0 nothing got worse, 1 something did, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: What makes two lines measurements of the same thing.
MATCH_KEYS = ("workload", "backend", "layout", "codec", "grid", "n", "grid_dir")
#: W6's settings, part of the match when present.
CHURN_KEYS = ("kill_every_s", "lease_ttl_s", "reaper_period_s")
#: What ``grid`` means on lines written before the field existed.
DEFAULT_GRID = "fresh embedded"

Record = dict[str, Any]


class BadInput(Exception):
    """A file that cannot be read as benchmark JSON lines."""


def _max(values: Any) -> float | None:
    return max(values) if isinstance(values, list) and values else None


def _path(*keys: str) -> Callable[[Record], float | None]:
    def get(record: Record) -> float | None:
        value: Any = record
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    return get


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    get: Callable[[Record], float | None]
    higher_is_better: bool


METRICS = (
    Metric("tasks_per_s", _path("tasks_per_s"), True),
    Metric("efficiency", _path("efficiency"), True),
    Metric("mb_per_s", _path("mb_per_s"), True),
    Metric("seconds", _path("seconds"), False),
    Metric("p50_ms", _path("p50_ms"), False),
    Metric("p99_ms", _path("p99_ms"), False),
    Metric("client peak RSS MB", _path("peak_rss_mb", "client"), False),
    Metric(
        "worker peak RSS MB", lambda r: _max((r.get("peak_rss_mb") or {}).get("workers")), False
    ),
    Metric(
        "executor peak RSS MB", lambda r: _max((r.get("peak_rss_mb") or {}).get("executors")), False
    ),
    Metric("W5 client RSS max MB", _path("rss_sampled_mb", "client", "max"), False),
    Metric("W5 workers RSS max MB", _path("rss_sampled_mb", "workers", "max"), False),
    Metric("W5 executors RSS max MB", _path("rss_sampled_mb", "executors", "max"), False),
    Metric("W5 store RSS max MB", _path("store_rss_mb", "max"), False),
    Metric("W6 detect s (max)", _path("detect_s", "max"), False),
)


def load(path: Path, exclude: Path | None = None) -> list[Record]:
    """The records of one JSON-lines file, or of every ``*.jsonl`` in a directory but
    ``exclude``, oldest ``date`` first (so the last of each match is the newest)."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if exclude is not None:
        files = [f for f in files if f.resolve() != exclude.resolve()]
    records: list[Record] = []
    for file in files:
        try:
            text = file.read_text()
        except OSError as exc:
            raise BadInput(f"cannot read {file}: {exc.strerror}") from None
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInput(f"{file}:{number}: not JSON: {exc}") from None
            if isinstance(record, dict) and "workload" in record:
                records.append(record)
    if len(files) > 1:
        records.sort(key=lambda r: str(r.get("date") or ""))
    return records


def key(record: Record) -> tuple[Any, ...]:
    values = [record.get(k) for k in MATCH_KEYS]
    values[MATCH_KEYS.index("grid")] = record.get("grid") or DEFAULT_GRID
    return (*values, *(record.get(k) for k in CHURN_KEYS))


def label(k: tuple[Any, ...]) -> str:
    named = dict(zip((*MATCH_KEYS, *CHURN_KEYS), k, strict=True))
    parts = [str(named["workload"]), str(named["backend"]), str(named["layout"])]
    if named["codec"] not in (None, "pickle"):
        parts.append(f"codec {named['codec']}")
    if named["grid"] != DEFAULT_GRID:
        parts.append(str(named["grid"]))
    if named["grid_dir"] not in (None, "/tmp"):
        parts.append(f"in {named['grid_dir']}")
    parts.append(f"n={named['n']}")
    return ", ".join(parts)


def latest(records: list[Record]) -> dict[tuple[Any, ...], Record]:
    """The last record of each match key, in first-seen order."""
    kept: dict[tuple[Any, ...], Record] = {}
    for record in records:
        kept[key(record)] = record
    return kept


@dataclass(frozen=True, slots=True)
class Row:
    line: str
    metric: str
    old: float | str
    new: float | str
    change: float | None  # relative, signed in the metric's own direction
    is_worse: bool


def compare(old: list[Record], new: list[Record], threshold: float) -> tuple[list[Row], list[str]]:
    """Rows for every metric of every matched line, and notes on unmatched lines."""
    before, after = latest(old), latest(new)
    rows: list[Row] = []
    notes = [f"only in old: {label(k)}" for k in before if k not in after]
    notes += [f"only in new: {label(k)}" for k in after if k not in before]
    for k, rec in after.items():
        if k not in before:
            continue
        was = before[k]
        if "all_succeeded" in rec or "all_succeeded" in was:
            ok_before, ok_after = was.get("all_succeeded"), rec.get("all_succeeded")
            worse = ok_after is not True and ok_before is True
            rows.append(
                Row(label(k), "all tasks succeeded", str(ok_before), str(ok_after), None, worse)
            )
        for metric in METRICS:
            a, b = metric.get(was), metric.get(rec)
            if a is None or b is None:
                continue
            change = (b - a) / a if a else (0.0 if b == a else float("inf"))
            bad = -change if metric.higher_is_better else change
            rows.append(Row(label(k), metric.name, a, b, change, bad > threshold))
    return rows, notes


def render(rows: list[Row], notes: list[str], threshold: float) -> str:
    def num(v: float | str) -> str:
        if isinstance(v, str):
            return v
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3g}"

    table = [("line", "metric", "old", "new", "change", "verdict")]
    for r in rows:
        change = "" if r.change is None else f"{r.change:+.1%}"
        table.append(
            (r.line, r.metric, num(r.old), num(r.new), change, "WORSE" if r.is_worse else "ok")
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    out = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    worse = sum(r.is_worse for r in rows)
    out.append("")
    out += notes
    out.append(
        f"{worse} of {len(rows)} comparisons worse by more than {threshold:.0%}"
        if rows
        else "no line matched: nothing compared"
    )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="OLD.jsonl NEW.jsonl (or NEW.jsonl)")
    parser.add_argument(
        "--threshold", type=float, default=0.15, help="worse by more than this fails (0.15)"
    )
    parser.add_argument(
        "--against-last",
        type=Path,
        metavar="DIR_OR_FILE",
        help="compare NEW.jsonl with the last line per match in this file or directory",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.threshold < 10:
        parser.error("--threshold is a fraction, e.g. 0.15 for 15 %")
    if args.against_last is not None:
        if len(args.files) != 1:
            parser.error("with --against-last give only NEW.jsonl")
        old_path, new_path = args.against_last, args.files[0]
    else:
        if len(args.files) != 2:
            parser.error("give OLD.jsonl NEW.jsonl")
        old_path, new_path = args.files
    for path in (old_path, new_path):
        if not path.exists():
            parser.error(f"no such file or directory: {path}")
    try:
        old = load(old_path, exclude=new_path)  # a file is never its own baseline
        new = load(new_path)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows, notes = compare(old, new, args.threshold)
    sys.stdout.write(render(rows, notes, args.threshold))
    return 1 if any(r.is_worse for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
