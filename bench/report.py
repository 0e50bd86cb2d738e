"""Turn the JSON lines of ``bench/run.py`` into the markdown tables of docs/benchmarks.md.

    python bench/report.py bench/results/results.jsonl > table.md
    python bench/report.py --latest bench/results/*.jsonl

The machine, date and command come from the lines themselves (``run.py`` records them); a
line without them is described with this machine. W7 (scale-out) lines also get a second
table: W1 and W3 tasks/s per worker count, and W3's efficiency against the worker count.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = (
    ("workload", "workload"),
    ("layout", "workers"),
    ("backend", "backend"),
    ("options", "options"),
    ("n", "tasks"),
    ("seconds", "wall s"),
    ("tasks_per_s", "tasks/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("efficiency", "efficiency"),
    ("mb_per_s", "MB/s"),
    ("peak_rss_mb", "peak RSS MB: client / worker / executor"),
    ("store_cpu_s", "store CPU s"),
    ("foreign_cpu_s", "other CPU s"),
)


def load(paths: list[Path]) -> list[dict[str, Any]]:
    records = []
    for path in paths:
        try:
            text = path.read_text()
        except OSError as exc:
            raise SystemExit(f"cannot read {path}: {exc.strerror}") from None
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise SystemExit(f"{path}:{number}: not JSON: {exc}") from None
    return records


def latest(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last record of each (workload, backend, layout, codec), in first-seen order."""
    kept: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        key = (r.get("workload"), r.get("backend"), r.get("layout"), r.get("codec"))
        kept.pop(key, None)
        kept[key] = r
    return sorted(kept.values(), key=lambda r: str(r.get("workload")))


def options(record: dict[str, Any]) -> str:
    """What differs from the defaults: codec, where the grid's files live."""
    opts = [f"codec {record['codec']}"] if record.get("codec", "pickle") != "pickle" else []
    if record.get("grid_dir") not in {None, "/tmp"}:
        opts.append(f"grid in {record['grid_dir']}")
    return ", ".join(opts)


def cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "peak_rss_mb":
        if isinstance(value, dict):
            parts = [value.get("client"), _max(value.get("workers")), _max(value.get("executors"))]
            return " / ".join("?" if p is None else f"{p:.0f}" for p in parts)
        return f"{value:.0f}"
    if key == "efficiency":
        return f"{value:.0%}"
    if key in {"seconds", "foreign_cpu_s", "store_cpu_s"}:
        return f"{value:.2f}"
    if key in {"p50_ms", "p99_ms"}:
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _max(values: Any) -> float | None:
    return max(values) if isinstance(values, list) and values else None


def this_machine() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import machine  # the same description run.py records

    return machine()


def render(records: list[dict[str, Any]]) -> str:
    lines = []
    machines = sorted({r.get("machine") or this_machine() for r in records})
    dates = sorted({str(r["date"]) for r in records if r.get("date")}) or ["unrecorded"]
    commands = list(dict.fromkeys(str(r["command"]) for r in records if r.get("command")))
    lines.append(f"Machine: {'; '.join(machines)}  ")
    lines.append(f"Date: {dates[0]}" + (f" to {dates[-1]}" if len(dates) > 1 else "") + "  ")
    lines.append("Commands: " + (", ".join(f"`{c}`" for c in commands) or "unrecorded"))
    lines.append("")
    lines.append("| " + " | ".join(title for _, title in COLUMNS) + " |")
    lines.append(
        "|"
        + "|".join(
            "---" if k in {"workload", "layout", "backend", "options"} else "---:"
            for k, _ in COLUMNS
        )
        + "|"
    )
    for r in records:
        cpu = r.get("cpu_s", {})
        store = cpu.get("store") if r.get("backend") != "sqlite" else None
        row = {**r, "options": options(r), "foreign_cpu_s": cpu.get("foreign")}
        row["store_cpu_s"] = store
        lines.append("| " + " | ".join(cell(k, row.get(k)) for k, _ in COLUMNS) + " |")
    scale_out = [r for r in records if str(r.get("workload", "")).startswith("W7:")]
    if scale_out:
        lines += ["", render_scale_out(scale_out).rstrip("\n")]
    return "\n".join(lines) + "\n"


def render_scale_out(records: list[dict[str, Any]]) -> str:
    """W7 as one row per (backend, worker count): W1 and W3 tasks/s, W3's efficiency against
    the number of executors (10 ms x tasks / executors / wall), and W3's speed-up over the
    smallest worker count of the same backend."""
    rows: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in records:
        key = (str(r.get("backend")), int(r.get("workers", 0)))
        rows.setdefault(key, {})[str(r["workload"]).removeprefix("W7:")] = r
    lines = [
        "| backend | workers | W1 tasks/s | W3 tasks/s | W3 efficiency vs workers "
        "| W3 speed-up | W3 p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    base: dict[str, float] = {}
    order = list(dict.fromkeys(backend for backend, _ in rows))  # first seen first
    for backend, workers in sorted(rows, key=lambda k: (order.index(k[0]), k[1])):
        row = rows[backend, workers]
        w1, w3 = row.get("W1", {}), row.get("W3", {})
        speed = ""
        if "tasks_per_s" in w3:
            first = base.setdefault(backend, w3["tasks_per_s"])
            speed = f"{w3['tasks_per_s'] / first:.2f}x"
        cells = [
            backend,
            str(workers),
            cell("tasks_per_s", w1.get("tasks_per_s")),
            cell("tasks_per_s", w3.get("tasks_per_s")),
            cell("efficiency", w3.get("efficiency")),
            speed,
            cell("p50_ms", w3.get("p50_ms")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="JSON-lines files from run.py")
    parser.add_argument("--latest", action="store_true", help="keep the last line per workload")
    args = parser.parse_args()
    records = load(args.files)
    if not records:
        print("no records", file=sys.stderr)
        return 1
    sys.stdout.write(render(latest(records) if args.latest else records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
