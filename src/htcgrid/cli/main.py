"""``htcgrid``: run an embedded grid, workers and a reaper; submit, inspect and cancel sessions."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

import click

from htcgrid.backends.registry import default_home
from htcgrid.cli.api import api, start_up_api, token
from htcgrid.cli.bench import bench
from htcgrid.cli.demo import demo
from htcgrid.cli.options import config_path, default_map, store_option, store_url
from htcgrid.cli.sessions import cancel, delete, results, status, submit
from htcgrid.core.errors import GridError


class GridCommand(click.Group):
    """Turns grid errors into one clear line and exit code 2 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GridError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=GridCommand)
@click.version_option(package_name="htcgrid")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file [$HTCGRID_CONFIG, ./htcgrid.toml, ~/.config/htcgrid/config.toml].",
)
@click.pass_context
def main(ctx: click.Context, verbose: int, config: Path | None) -> None:
    """htcgrid: a high-throughput compute grid, from a laptop to a cluster."""
    path = config_path(config)
    if path is not None:
        assert isinstance(ctx.command, click.Group)
        ctx.default_map = default_map(path, ctx.command.commands)
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
    )


@main.command()
@click.option("--home", type=click.Path(path_type=Path), help="Grid directory [~/.htcgrid].")
@click.option(
    "--store",
    envvar="HTCGRID_STORE",
    help="Serve a shared store (redis://, postgresql://) instead of the SQLite file in --home.",
)
@click.option("--workers", type=click.IntRange(1), default=None, help="Worker processes [cores].")
@click.option("--concurrency", type=click.IntRange(1), default=1, help="Executors per worker.")
@click.option("--lease-ttl", type=click.FloatRange(0.5), default=15.0, help="Lease TTL, seconds.")
@click.option("--no-pickle", is_flag=True, help="Refuse shipped functions and pickled inputs.")
@click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Serve the HTTP API on 127.0.0.1:PORT (0: don't).",
)
@click.option(
    "--tokens",
    "tokens_file",
    envvar="HTCGRID_API_TOKENS",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="API tokens file [$HTCGRID_API_TOKENS; else an admin token in <home>/api-token].",
)
def up(
    home: Path | None,
    store: str | None,
    workers: int | None,
    concurrency: int,
    lease_ttl: float,
    no_pickle: bool,
    api_port: int,
    tokens_file: Path | None,
) -> None:
    """Run a grid in the foreground: reaper and workers on this machine, on the embedded
    SQLite store (or a shared one with --store), and the HTTP API for it on 127.0.0.1.
    Ctrl-C drains and stops."""
    from htcgrid.embedded import EmbeddedGrid

    # handlers first: a Ctrl-C while the grid or the API is starting still drains and stops
    stop = {"asked": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["asked"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    home = home or default_home()
    grid = EmbeddedGrid(
        home,
        store_url=store,
        workers=workers,
        concurrency=concurrency,
        lease_ttl_s=lease_ttl,
        allow_pickle=not no_pickle,
    )
    # the API first: once the grid's lock says it serves, its API answers too
    served = start_up_api(grid.url, home, api_port, tokens_file) if api_port else None
    try:
        grid.start()
    except BaseException:
        if served is not None:
            served[0].stop()
        raise
    click.echo(
        f"htcgrid up: store {grid.url}, {grid.workers} worker(s) x {concurrency} executor(s). "
        "Ctrl-C to drain and stop."
    )
    if served is not None:
        click.echo(served[1])
    while not stop["asked"]:
        time.sleep(0.2)
    if served is not None:
        served[0].stop()
    click.echo("draining: no new tasks are claimed; running ones finish ...")
    grid.stop()
    click.echo("stopped.")


@main.command()
@store_option
@click.option("--concurrency", type=click.IntRange(1), default=1, help="Executor processes.")
@click.option("--lease-ttl", type=click.FloatRange(0.5), default=15.0, help="Lease TTL, seconds.")
@click.option("--max-memory-mb", type=click.IntRange(16), default=None, help="Per executor.")
@click.option("--no-pickle", is_flag=True, help="Refuse shipped functions and pickled inputs.")
@click.option("--worker-id", default=None, help="Name in leases and logs [host-pid-random].")
@click.option("--drain-timeout", type=click.FloatRange(0), default=60.0, help="Seconds.")
@click.option("--log-level", default="INFO", show_default=True, help="htcgrid log level.")
@click.option(
    "--parent-pid",
    type=click.IntRange(1),
    default=None,
    help="Drain and exit when this process, the one that started the worker, dies (Linux).",
)
def worker(
    store: str | None,
    concurrency: int,
    lease_ttl: float,
    max_memory_mb: int | None,
    no_pickle: bool,
    worker_id: str | None,
    drain_timeout: float,
    log_level: str,
    parent_pid: int | None,
) -> None:
    """Run a worker agent against a store until SIGTERM or Ctrl-C (then it drains)."""
    from htcgrid.worker import WorkerSettings, run_worker

    logging.getLogger("htcgrid").setLevel(log_level.upper())
    settings = WorkerSettings(
        store_url=store_url(store),
        concurrency=concurrency,
        lease_ttl_s=lease_ttl,
        max_memory_mb=max_memory_mb,
        allow_pickle=not no_pickle,
        worker_id=worker_id,
        drain_timeout_s=drain_timeout,
    )
    raise SystemExit(run_worker(settings, parent_pid=parent_pid))


@main.command()
@store_option
@click.option("--period", type=click.FloatRange(0.05), default=1.0, help="Seconds between passes.")
def reaper(store: str | None, period: float) -> None:
    """Run a reaper: expired leases become retries or failures. Several may run at once."""
    from htcgrid.backends.registry import open_backend
    from htcgrid.reaper import Reaper

    backend = open_backend(store_url(store))
    r = Reaper(backend, period)
    signal.signal(signal.SIGTERM, lambda *_: r.stop())
    try:
        r.run()
    except KeyboardInterrupt:
        pass
    finally:
        backend.close()


for command in (submit, status, results, cancel, delete, demo, api, token, bench):
    main.add_command(command)
