"""Options and helpers shared by the CLI's commands."""

from __future__ import annotations

from htcgrid.backends.registry import default_store_url

STORE_HELP = "Store URL (default: $HTCGRID_STORE, else the embedded grid in ~/.htcgrid)."


def store_url(url: str | None) -> str:
    """The store to use: the one given, else the default embedded one."""
    return url or default_store_url()
