"""The HTTP control plane: a stateless FastAPI app over the backend port, with bearer tokens
mapped to tenants. ``create_app(settings)`` builds it; ``htcgrid api`` serves it.

The wire schemas (:mod:`htcgrid.api.wire`) and the error table (:mod:`htcgrid.api.errors`)
are shared with the remote client, which must not need the server's dependencies: so the
names below that pull in FastAPI are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from htcgrid.api.app import create_app
    from htcgrid.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from htcgrid.api.app import create_app

        return create_app
    if name == "ApiSettings":
        from htcgrid.api.settings import ApiSettings

        return ApiSettings
    raise AttributeError(f"module 'htcgrid.api' has no attribute {name!r}")
