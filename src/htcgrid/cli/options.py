"""Options shared by the CLI's commands, and the config file that gives their defaults.

Precedence, highest first: the command line, the environment (``HTCGRID_STORE``), the config
file, the built-in defaults. The config file is ``--config FILE``, else ``$HTCGRID_CONFIG``,
else ``./htcgrid.toml``, else ``~/.config/htcgrid/config.toml``; its top-level keys apply to
every command that has that option, and a ``[command]`` table to that command only::

    store = "redis://grid-store:6379/0"

    [worker]
    concurrency = 4
    lease_ttl = 20
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from htcgrid.backends.registry import STORE_ENV, default_store_url
from htcgrid.core.errors import InvalidInput

F = TypeVar("F", bound=Callable[..., Any])

STORE_HELP = (
    "Store URL: sqlite:///path, redis://host:port/db, postgresql://host/db "
    "[$HTCGRID_STORE, else the embedded grid in ~/.htcgrid]."
)
CONFIG_ENV = "HTCGRID_CONFIG"


def store_option(f: F) -> F:
    """``--store URL``, also read from ``$HTCGRID_STORE`` and the config file."""
    return click.option("--store", envvar=STORE_ENV, help=STORE_HELP)(f)


def store_url(url: str | None) -> str:
    """The store to use: the one given, else the default embedded one."""
    return url or default_store_url()


def config_path(explicit: Path | None) -> Path | None:
    """The config file in force, or None when there is none."""
    if explicit is not None:
        return explicit
    if env := os.environ.get(CONFIG_ENV):
        return Path(env)
    for candidate in (Path("htcgrid.toml"), Path.home() / ".config" / "htcgrid" / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def default_map(path: Path, commands: Mapping[str, click.Command]) -> dict[str, dict[str, Any]]:
    """Click's ``default_map`` from a config file; InvalidInput naming any unknown key."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"cannot read config file {path}: {exc}") from None
    shared = {k: v for k, v in data.items() if not isinstance(v, dict)}
    sections = {k: v for k, v in data.items() if isinstance(v, dict)}
    for name in sections:
        if name not in commands:
            raise InvalidInput(f"{path}: unknown command table [{name}]")
    known_anywhere = {p.name for c in commands.values() for p in c.params if p.name}
    for key in shared:
        if key.replace("-", "_") not in known_anywhere:
            raise InvalidInput(f"{path}: unknown option {key!r}")
    result: dict[str, dict[str, Any]] = {}
    for name, command in commands.items():
        params = {p.name for p in command.params if p.name}
        values = {k.replace("-", "_"): v for k, v in shared.items()}
        values = {k: v for k, v in values.items() if k in params}
        for key, value in sections.get(name, {}).items():
            if key.replace("-", "_") not in params:
                raise InvalidInput(f"{path}: [{name}] has no option {key!r}")
            values[key.replace("-", "_")] = value
        result[name] = values
    return result
