"""The reaper: expired leases become retries or failures, with the reason recorded."""

from htcgrid.reaper.reaper import Reaper, reap_once

__all__ = ["Reaper", "reap_once"]
