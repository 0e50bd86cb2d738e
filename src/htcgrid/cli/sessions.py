"""Session commands: submit, status, results, cancel, delete."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console
from rich.table import Table

from htcgrid.cli.options import store_option, store_url
from htcgrid.client import Command, Grid, TaskResult, connect
from htcgrid.core.errors import InvalidInput
from htcgrid.embedded import is_serving


def _connect(store: str | None) -> Grid:
    url = store_url(store)
    if url.startswith("sqlite://") and not is_serving(Path(url.removeprefix("sqlite://"))):
        click.echo(
            f"note: no grid is serving {url}; tasks wait until you run 'htcgrid up'.", err=True
        )
    return connect(url, start_workers=False)


def _inputs(values: tuple[str, ...], inputs_file: IO[str] | None) -> Iterator[Any]:
    for i, text in enumerate(values):
        yield _json(text, f"input {i + 1}")
    if inputs_file is not None:
        for n, line in enumerate(inputs_file, start=1):
            if line.strip():
                yield _json(line, f"line {n} of {inputs_file.name}")


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{where} is not valid JSON ({exc.msg}): {text.strip()[:80]!r}"
        ) from None


@click.command()
@click.argument("handler")
@click.argument("values", nargs=-1)
@click.option("--inputs", "inputs_file", type=click.File("r"), help="JSON lines, one input each.")
@click.option("--command", "is_command", is_flag=True, help="HANDLER is a command line.")
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--max-attempts", type=click.IntRange(1), default=3, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Per task, seconds.")
@click.option("--wait", "should_wait", is_flag=True, help="Wait and print results as JSON lines.")
@store_option
def submit(
    handler: str,
    values: tuple[str, ...],
    inputs_file: IO[str] | None,
    is_command: bool,
    priority: int,
    max_attempts: int,
    timeout: float | None,
    should_wait: bool,
    store: str | None,
) -> None:
    """Submit tasks: HANDLER ('pkg.module:function', or a command line with --command) once
    per input. Inputs are JSON values given as arguments or in a JSON-lines file ('-' = stdin);
    a command's input is a list of extra arguments. Prints the session id."""
    fn: str | Command = Command(shlex.split(handler)) if is_command else handler
    with _connect(store) as grid:
        session = grid.session(
            priority=priority, max_attempts=max_attempts, timeout_s=timeout, codec="msgpack"
        )
        futures = session.submit_many(fn, _inputs(values, inputs_file))
        if not futures:
            raise InvalidInput("no inputs: give JSON values as arguments or --inputs FILE")
        click.echo(session.session_id)
        click.echo(f"submitted {len(futures)} task(s)", err=True)
        if should_wait:
            for r in session.results():
                click.echo(_result_line(r))


@click.command()
@click.argument("session_id", required=False)
@store_option
def status(session_id: str | None, store: str | None) -> None:
    """Counts per state of one session, or of every session."""
    with connect(store_url(store), start_workers=False) as grid:
        infos = [grid.backend.get_session(session_id)] if session_id else grid.sessions()
    table = Table("session", "name", "priority", *[s for s in _STATES], "total")
    for info in infos:
        counts = info.counts.as_dict()
        name = info.spec.name + (" (cancelled)" if info.is_cancelled else "")
        row = [str(counts[s]) for s in _STATES]
        table.add_row(info.session_id, name, str(info.spec.priority), *row, str(info.counts.total))
    # when piped, don't squeeze the ids to 80 columns: scripts read this
    Console(width=None if sys.stdout.isatty() else 200).print(table)


_STATES = ("pending", "running", "succeeded", "failed", "cancelled")


@click.command()
@click.argument("session_id")
@click.option("--wait/--no-wait", "should_wait", default=False, help="Wait for unfinished tasks.")
@store_option
def results(session_id: str, should_wait: bool, store: str | None) -> None:
    """Print a session's finished tasks as JSON lines, in the order they finished."""
    with connect(store_url(store), start_workers=False) as grid:
        session = grid.attach(session_id)
        if should_wait:
            for r in session.results():
                click.echo(_result_line(r))
            return
        cursor = 0
        while records := grid.backend.finished(session_id, cursor, 2000):
            for record in records:
                click.echo(_result_line(session.result_of(record)))
            cursor = records[-1].done_seq or cursor + len(records)


def _result_line(r: TaskResult) -> str:
    line: dict[str, Any] = {"task_id": r.task_id, "state": r.state.label}
    if r.is_ok:
        line["result"] = r.value
    else:
        err = r.error
        line["error"] = {
            "type": getattr(err, "error_type", type(err).__name__),
            "message": str(err),
        }
    return json.dumps(line, default=repr)


@click.command()
@click.argument("session_id")
@click.argument("task_ids", nargs=-1)
@store_option
def cancel(session_id: str, task_ids: tuple[str, ...], store: str | None) -> None:
    """Cancel a session (or only the given tasks of it). Finished tasks are untouched."""
    with connect(store_url(store), start_workers=False) as grid:
        n = grid.attach(session_id).cancel(list(task_ids) or None)
    click.echo(f"cancelled {n} task(s)")


@click.command()
@click.argument("session_id")
@store_option
def delete(session_id: str, store: str | None) -> None:
    """Delete a session with its tasks, results and blobs."""
    with connect(store_url(store), start_workers=False) as grid:
        grid.delete_session(session_id)
    click.echo(f"deleted {session_id}")


__all__ = ["cancel", "delete", "results", "status", "submit"]
