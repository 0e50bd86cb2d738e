"""State stores behind one port (:mod:`htcgrid.backends.base`), opened by URL."""

from htcgrid.backends.base import Backend, Capabilities, ClientStore, LeaseKey
from htcgrid.backends.registry import default_store_url, open_backend

__all__ = [
    "Backend",
    "Capabilities",
    "ClientStore",
    "LeaseKey",
    "default_store_url",
    "open_backend",
]
