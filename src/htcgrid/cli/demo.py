"""``htcgrid demo``: the mock-computation workload with a progress bar and a check of every
result, on a fresh embedded grid or on a running one (a store URL or the HTTP API)."""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from htcgrid.client import Grid, connect
from htcgrid.core.model import Counts
from htcgrid.embedded import EmbeddedGrid
from htcgrid.workloads import expected_mock_result, mock_computation


@click.command()
@click.option("--tasks", type=click.IntRange(1), default=10_000, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=None, help="Worker processes [cores].")
@click.option("--sleep-ms", type=click.FloatRange(0), default=0.0, help="Each task sleeps this.")
@click.option("--burn-ms", type=click.FloatRange(0), default=0.0, help="Each task burns CPU.")
@click.option("--hold-mb", type=click.FloatRange(0), default=0.0, help="Each task holds memory.")
@click.option(
    "--grid",
    "grid_url",
    default=None,
    help="A running grid to use instead of a fresh one: a store URL, or http(s):// (the API).",
)
@click.option("--token", envvar="HTCGRID_TOKEN", help="API bearer token [$HTCGRID_TOKEN].")
def demo(
    tasks: int,
    workers: int | None,
    sleep_ms: float,
    burn_ms: float,
    hold_mb: float,
    grid_url: str | None,
    token: str | None,
) -> None:
    """Run HTC-Grid's mock computation as TASKS tasks, check every result, print the
    throughput. By default on a fresh embedded grid (a temporary SQLite store and local
    worker processes); with --grid on a running grid, through its API when it is a URL."""
    console = Console()
    task = {"sleep_ms": sleep_ms, "burn_ms": burn_ms, "hold_mb": hold_mb}
    if grid_url is not None:
        console.print(f"[bold]htcgrid demo[/]: {tasks:,} mock-computation tasks on {grid_url}")
        with connect(grid_url, token=token, start_workers=False) as grid:
            _run(console, grid, tasks, task)
        return
    n_workers = workers or os.cpu_count() or 1
    console.print(f"[bold]htcgrid demo[/]: {tasks:,} mock-computation tasks, {n_workers} workers")
    with tempfile.TemporaryDirectory(prefix="htcgrid-demo-") as tmp:
        home = Path(tmp)
        with EmbeddedGrid(home, workers=n_workers, log_dir=home / "logs") as eg:
            console.print(f"embedded grid up: store {eg.url}")
            with connect(eg.url, start_workers=False) as grid:
                _run(console, grid, tasks, task)


def _run(console: Console, grid: Grid, tasks: int, task: dict[str, float]) -> None:
    with grid.session(name="demo") as session:
        console.print(f"session {session.session_id}")
        inputs = [{"index": i, **task} for i in range(tasks)]
        start = time.perf_counter()
        with Progress(*_COLUMNS, console=console) as progress:
            bar = progress.add_task("running", total=tasks, rate=0.0)
            futures = session.submit_many(mock_computation, inputs)
            expected = {f.task_id: inp for f, inp in zip(futures, inputs, strict=True)}
            wrong: list[str] = []
            states: Counter[str] = Counter()
            for r in session.results():
                states[r.state.label] += 1
                if not r.is_ok or r.value != expected_mock_result(expected[r.task_id]):
                    wrong.append(r.task_id)
                done = sum(states.values())
                if done % 100 == 0 or done == tasks:
                    rate = done / max(1e-9, time.perf_counter() - start)
                    progress.update(bar, completed=done, rate=rate)
        seconds = time.perf_counter() - start
        _report(console, tasks, seconds, session.counts(), wrong)


_COLUMNS = (
    TextColumn("[progress.description]{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TextColumn("{task.fields[rate]:>8,.0f} tasks/s"),
    TimeElapsedColumn(),
)


def _report(console: Console, tasks: int, seconds: float, counts: Counts, wrong: list[str]) -> None:
    rate = tasks / seconds
    console.print(f"finished {tasks:,} tasks in {seconds:.2f} s: [bold]{rate:,.0f} tasks/s[/]")
    console.print("per state: " + ", ".join(f"{k} {v:,}" for k, v in counts.as_dict().items()))
    if wrong or counts.succeeded != tasks:
        console.print(f"[bold red]check failed[/]: {len(wrong):,} wrong or missing results")
        raise SystemExit(1)
    console.print(f"[bold green]check passed[/]: all {tasks:,} results are right")
