"""``htcgrid bench``: the benchmark workloads against a fresh embedded grid, a store or a
running grid's HTTP API, so users can measure their own deployment the way
docs/benchmarks.md measures ours. One JSON line per workload on stdout, progress on stderr.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click
from rich.console import Console

#: The API token's environment variable (read by the remote client as well).
TOKEN_ENV = "HTCGRID_TOKEN"
DEFAULT_WORKERS = 2


@click.command()
@click.argument("workloads", nargs=-1, required=True)
@click.option(
    "--store",
    "store",  # not $HTCGRID_STORE: a benchmark runs on a grid only when told so
    metavar="URL",
    help="Run over this store (sqlite:///..., redis://..., postgresql://...) with --workers "
    "fresh local workers, or with the workers already serving it (--workers 0).",
)
@click.option("--api", "api_url", metavar="URL", help="Run through a running grid's HTTP API.")
@click.option("--token", envvar=TOKEN_ENV, help=f"API bearer token [${TOKEN_ENV}].")
@click.option(
    "--workers",
    type=click.IntRange(0),
    default=None,
    help=f"Local worker processes [{DEFAULT_WORKERS}]; 0: the store's own workers.",
)
@click.option(
    "--concurrency", type=click.IntRange(1), default=None, help="Executors per worker [1]."
)
@click.option(
    "--repeat", type=click.IntRange(1), default=3, show_default=True, help="Runs (median)."
)
@click.option(
    "--scale",
    type=click.FloatRange(0, min_open=True),
    default=1.0,
    show_default=True,
    help="Multiply every task count (0.01 for a smoke run).",
)
@click.option(
    "--codec", type=click.Choice(["pickle", "msgpack"]), default="pickle", show_default=True
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also append the JSON lines to this file.",
)
@click.option(
    "--kill-every",
    type=click.FloatRange(0.1),
    default=2.0,
    hidden=True,
    help="W6: seconds between worker kills (shorter for tests).",
)
def bench(
    workloads: tuple[str, ...],
    store: str | None,
    api_url: str | None,
    token: str | None,
    workers: int | None,
    concurrency: int | None,
    repeat: int,
    scale: float,
    codec: str,
    out: Path | None,
    kill_every: float,
) -> None:
    """Run benchmark WORKLOADS (W1-W7, see docs/benchmarks.md) and print one JSON line each.

    \b
    W1 20,000 no-op tasks          W5 1,000,000 no-op tasks in one session
    W2 300 sequential round trips  W6 5 ms tasks while a worker is SIGKILLed every 2 s
    W3 2,000 x 10 ms of CPU        W7 W1 and W3 with 1, 2, 4 and 8 workers
    W4 2,000 x 1 MB in and out

    By default every repetition runs in a fresh process on a fresh embedded grid (a SQLite
    store in a temporary directory). With --store or --api the store outlives the run: each
    repetition uses fresh sessions on it (deleted afterwards) and the record says so.
    """
    # imported here: ``htcgrid --help`` and every other command start faster without it
    from htcgrid.benchmark.driver import BenchError, Options, Target, plan, redact, run_plan
    from htcgrid.benchmark.measure import append_line
    from htcgrid.core.errors import InvalidInput

    names = [w.strip().upper() for arg in workloads for w in arg.split(",") if w.strip()]
    if store and api_url:
        raise click.UsageError("--store and --api exclude each other: pick one grid")
    if api_url:
        if workers is not None or concurrency is not None:
            raise click.UsageError(
                "--workers and --concurrency start local workers; through --api the grid's "
                "own workers run the tasks"
            )
        if not token:
            raise click.UsageError(f"--api needs --token (or ${TOKEN_ENV})")
        target = Target(mode="api", url=api_url, token=token)
    elif store:
        target = Target(mode="store", url=store)
    else:
        if workers == 0:
            raise click.UsageError("--workers 0 uses a store's own workers: give --store URL")
        target = Target()
    n_workers = DEFAULT_WORKERS if workers is None else workers
    if n_workers == 0 and concurrency is not None:
        raise click.UsageError("--concurrency applies to local workers, not with --workers 0")
    options = Options(
        workers=n_workers,
        concurrency=concurrency or 1,
        codec=codec,
        scale=scale,
        repeat=repeat,
        kill_every_s=kill_every,
    )
    try:
        steps = plan(names, target, options)
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    where = {
        "embedded": "a fresh embedded grid per run (SQLite in a temporary directory)",
        "store": f"store {redact(store or '')}, fresh sessions per run",
        "api": f"the API at {redact(api_url or '')}, fresh sessions per run",
    }[target.mode]
    console.print(
        f"[bold]htcgrid bench[/]: {', '.join(names)} on {where}; "
        f"{len(steps)} record(s), median of {repeat}"
    )
    command = _command(names, store, api_url, workers, concurrency, repeat, scale, codec)
    failed = 0
    for outcome in run_plan(
        names,
        target,
        options,
        command=command,
        progress=lambda line: console.print(f"  {line}"),
    ):
        if isinstance(outcome, BenchError):
            console.print(f"[bold red]error[/]: {outcome}")
            failed += 1
            continue
        line = json.dumps(outcome)
        click.echo(line)
        append_line(out, line)
    if failed:
        raise SystemExit(1)


def _command(
    names: list[str],
    store: str | None,
    api_url: str | None,
    workers: int | None,
    concurrency: int | None,
    repeat: int,
    scale: float,
    codec: str,
) -> str:
    """The command as the record shows it: the options that matter, never a password or a
    token (it is rebuilt from the options, not copied from the command line)."""
    from htcgrid.benchmark.driver import redact

    parts = ["htcgrid", "bench", *names]
    if store:
        parts += ["--store", redact(store)]
    if api_url:
        parts += ["--api", redact(api_url)]
    if workers is not None:
        parts += ["--workers", str(workers)]
    if concurrency is not None:
        parts += ["--concurrency", str(concurrency)]
    parts += ["--repeat", str(repeat)]
    if scale != 1.0:
        parts += ["--scale", f"{scale:g}"]
    if codec != "pickle":
        parts += ["--codec", codec]
    return shlex.join(parts)
