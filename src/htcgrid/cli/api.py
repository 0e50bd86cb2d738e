"""API commands: ``htcgrid api`` serves the HTTP control plane, ``htcgrid token`` manages its
bearer tokens, and :func:`start_up_api` lets ``htcgrid up`` serve it next to its grid."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import click

from htcgrid.cli.options import store_option, store_url
from htcgrid.core.errors import InvalidInput

if TYPE_CHECKING:
    from htcgrid.api.serve import ApiThread

TOKENS_HELP = "Tokens file (TOML, hashed tokens) [$HTCGRID_API_TOKENS]."
#: File of the admin token ``htcgrid up`` makes when no tokens file is configured.
UP_TOKEN_FILE = "api-token"


def _need_api_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "the HTTP API needs its extra: pip install 'htcgrid[api]'"
        ) from None


@click.command()
@store_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option(
    "--tokens",
    "tokens_file",
    envvar="HTCGRID_API_TOKENS",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help=TOKENS_HELP,
)
@click.option("--ssl-certfile", type=click.Path(dir_okay=False, exists=True), help="TLS cert.")
@click.option("--ssl-keyfile", type=click.Path(dir_okay=False, exists=True), help="TLS key.")
@click.option("--workers", type=click.IntRange(1), default=1, help="uvicorn processes.")
@click.option("--max-body-bytes", type=click.IntRange(1024), default=None, help="Per request.")
@click.option("--max-batch-tasks", type=click.IntRange(1), default=None, help="Per submit.")
@click.option("--max-payload-bytes", type=click.IntRange(1), default=None, help="Inline, per task.")
@click.option(
    "--handlers",
    default="import,pickle,command",
    show_default=True,
    help="Handler kinds tenants may submit (comma-separated).",
)
@click.option("--root-path", default="", help="Path prefix a reverse proxy strips (/grid).")
@click.option("--no-access-log", is_flag=True, help="Don't log one line per request.")
def api(
    store: str | None,
    host: str,
    port: int,
    tokens_file: Path,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    workers: int,
    max_body_bytes: int | None,
    max_batch_tasks: int | None,
    max_payload_bytes: int | None,
    handlers: str,
    root_path: str,
    no_access_log: bool,
) -> None:
    """Serve the HTTP API for a store. Stateless: run several (here with --workers, or on
    several machines) against one shared store and they behave as one."""
    _need_api_extra()
    import msgspec

    from htcgrid.api.auth import TokenFile
    from htcgrid.api.serve import Listen, serve
    from htcgrid.api.settings import ApiSettings
    from htcgrid.api.wire import Limits
    from htcgrid.core.handlers import HandlerKind

    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise InvalidInput("give both --ssl-certfile and --ssl-keyfile, or neither")
    given = {
        "max_body_bytes": max_body_bytes,
        "max_batch_tasks": max_batch_tasks,
        "max_payload_bytes": max_payload_bytes,
    }
    limits = msgspec.structs.replace(Limits(), **{k: v for k, v in given.items() if v})
    try:
        kinds = frozenset(HandlerKind(k.strip()) for k in handlers.split(",") if k.strip())
    except ValueError:
        raise InvalidInput(f"--handlers takes import, pickle, command; not {handlers!r}") from None
    settings = ApiSettings(
        store_url=store_url(store),
        tokens=TokenFile(tokens_file),
        limits=limits,
        handler_kinds=kinds,
        root_path=root_path,
    )
    scheme = "https" if ssl_certfile else "http"
    click.echo(f"htcgrid api: {scheme}://{host}:{port} -> {settings.store_url}", err=True)
    listen = Listen(
        host=host,
        port=port,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        workers=workers,
        access_log=not no_access_log,
    )
    serve(settings, listen, tokens_file)


@click.group()
def token() -> None:
    """Bearer tokens of the HTTP API: each maps to a tenant, stored only as a hash."""


@token.command("create")
@click.option("--tenant", required=True, help="Owner of the sessions made with the token.")
@click.option("--admin", is_flag=True, help="May see and act on every tenant's sessions.")
@click.option(
    "--file",
    "tokens_file",
    envvar="HTCGRID_API_TOKENS",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help=TOKENS_HELP,
)
def token_create(tenant: str, admin: bool, tokens_file: Path) -> None:
    """Make a token: print it once (it is not stored) and append its hash to the file."""
    from htcgrid.api.auth import Role, create_token

    secret = create_token(tokens_file, tenant, Role.ADMIN if admin else Role.USER)
    click.echo(secret)
    role = "admin" if admin else "user"
    click.echo(f"token for tenant {tenant!r} ({role}) added to {tokens_file}", err=True)


@token.command("list")
@click.option(
    "--file",
    "tokens_file",
    envvar="HTCGRID_API_TOKENS",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help=TOKENS_HELP,
)
def token_list(tokens_file: Path) -> None:
    """Tenants and roles in a tokens file (hash prefixes tell tokens apart)."""
    from htcgrid.api.auth import load_tokens

    for entry in load_tokens(tokens_file).entries:
        p = entry.principal
        click.echo(f"{p.tenant}\t{p.role.value}\tsha256:{entry.digest.hex()[:12]}")


def start_up_api(
    store: str, home: Path, port: int, tokens_file: Path | None
) -> tuple[ApiThread, str] | None:
    """Serve the API for ``htcgrid up`` on 127.0.0.1:``port``; return it and a line saying
    how to reach it, or None (with a warning) when it cannot run."""
    try:
        _need_api_extra()
    except click.ClickException as exc:
        click.echo(f"warning: not serving the API: {exc.message}", err=True)
        return None
    from htcgrid.api.auth import Role, TokenFile, TokenTable
    from htcgrid.api.serve import ApiThread, Listen
    from htcgrid.api.settings import ApiSettings

    tokens: TokenFile | TokenTable
    if tokens_file is not None:
        tokens, where = TokenFile(tokens_file), f"tokens from {tokens_file}"
    else:
        secret_path = home / UP_TOKEN_FILE
        tokens = TokenTable.of({_up_token(secret_path): ("admin", Role.ADMIN)})
        where = f"admin token in {secret_path}"
    settings = ApiSettings(store_url=store, tokens=tokens)
    try:
        thread = ApiThread(settings, Listen(port=port, log_level="warning")).start()
    except (OSError, RuntimeError) as exc:
        click.echo(f"warning: not serving the API on port {port}: {exc}", err=True)
        return None
    return thread, f"API on {thread.url} ({where})"


def _up_token(path: Path) -> str:
    """The admin token of ``htcgrid up``: kept across restarts in a 0600 file."""
    if path.exists():
        secret = path.read_text().strip()
        if secret:
            return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = "htc_" + secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(secret + "\n")
    return secret
